"""EMBEDDINGS_RUN_EXECUTOR: how Dagster runs execute their steps (in the run's own process unless told otherwise)."""

from __future__ import annotations

import pytest

from embeddings_pipeline.config import run_executor

SETTINGS = [(None, "in_process"), ("", "in_process"), ("multiprocess", "multiprocess"), ("in_process", "in_process")]


@pytest.mark.parametrize(("value", "expected"), SETTINGS)
def test_the_executor_setting(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("EMBEDDINGS_RUN_EXECUTOR", raising=False)
    else:
        monkeypatch.setenv("EMBEDDINGS_RUN_EXECUTOR", value)
    assert run_executor() == expected


def test_an_unknown_executor_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("EMBEDDINGS_RUN_EXECUTOR", "celery")
    with pytest.raises(ValueError, match="EMBEDDINGS_RUN_EXECUTOR='celery' must be one of in_process, multiprocess"):
        run_executor()


@pytest.mark.parametrize("value", ["in_process", "multiprocess"])
def test_every_job_of_the_code_location_uses_the_chosen_executor(monkeypatch, value):
    from embeddings_pipeline.definitions import defs

    monkeypatch.setenv("EMBEDDINGS_RUN_EXECUTOR", value)
    loaded = defs()
    jobs = [loaded.resolve_implicit_global_asset_job_def(), loaded.resolve_job_def("embed_tenant")]
    assert {job.executor_def.name for job in jobs} == {value}
