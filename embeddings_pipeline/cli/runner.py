"""Running tenant partitions through Dagster from the CLI, on the persistent local instance."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import dagster_home

if TYPE_CHECKING:
    import dagster as dg

_REPO_INSTANCE_YAML = Path(__file__).resolve().parents[2] / "dagster.yaml"
_DEFAULT_INSTANCE_YAML = "telemetry:\n  enabled: false\n"
# The CLI shows its own progress; Dagster's console logger speaks only of problems (the UI keeps everything).
_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def ensure_dagster_home() -> Path:
    """DAGSTER_HOME with a dagster.yaml in it, so CLI runs and `dagster dev` share one instance."""
    home = dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        if _REPO_INSTANCE_YAML.exists():
            shutil.copyfile(_REPO_INSTANCE_YAML, config)
        else:
            config.write_text(_DEFAULT_INSTANCE_YAML)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def local_instance() -> dg.DagsterInstance:
    import dagster as dg

    ensure_dagster_home()
    return dg.DagsterInstance.get()


def sync_tenant_partitions(instance: dg.DagsterInstance, tenants: Sequence[str]) -> list[str]:
    """Add tenants that have no partition yet; returns the ones added."""
    from ..defs.partitions import tenant_partitions

    assert tenant_partitions.name is not None
    known = set(instance.get_dynamic_partitions(tenant_partitions.name))
    new = [t for t in tenants if t not in known]
    if new:
        instance.add_dynamic_partitions(tenant_partitions.name, new)
    return new


@dataclass
class TenantRun:
    tenant: str
    success: bool
    run_id: str
    metadata: dict[str, object] = field(default_factory=dict)
    error: str | None = None
    checks: dict[str, bool] = field(default_factory=dict)  # check name -> passed


def _metadata_of(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, object]:
    mats = [m for m in result.get_asset_materialization_events() if m.asset_key and m.asset_key.path == [asset]]
    if not mats:
        return {}
    return {k: v.value for k, v in mats[-1].materialization.metadata.items()}


def _failure_of(result: dg.ExecuteInProcessResult) -> str:
    """The reason a person needs: a failed check's own explanation, else the failing step's error (the first in
    its cause chain that is not one of Dagster's own wrappers)."""
    from ..retry import causes

    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed and evaluation.blocking:
            meta = evaluation.metadata
            why = meta.get("run_error") or meta.get("count")
            return f"check {evaluation.check_name} failed" + (f": {why.value}" if why is not None else "")
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            err = event.step_failure_data.error
            for cause in causes(event.step_failure_data.error, follow_context=False):
                err = cause
                if not cause.message.startswith("dagster."):
                    break
            return f"{event.step_key}: {err.message.strip()}"
    return "run failed"


def materialize_tenants(
    tenants: Sequence[str],
    instance: dg.DagsterInstance | None = None,
    on_done: Callable[[TenantRun], None] | None = None,
    tags: dict[str, str] | None = None,
) -> list[TenantRun]:
    """One Dagster run per tenant (blocks, chunks, embeddings). A failing tenant never stops the others."""
    from ..definitions import defs as load_defs

    instance = instance or local_instance()
    sync_tenant_partitions(instance, tenants)
    job = load_defs().resolve_job_def("embed_tenant")
    runs = []
    for tenant in tenants:
        result = job.execute_in_process(
            partition_key=tenant, instance=instance, raise_on_error=False, run_config=_QUIET, tags=tags
        )
        run = TenantRun(
            tenant=tenant,
            success=result.success,
            run_id=result.run_id,
            metadata=_metadata_of(result, "embeddings"),
            error=None if result.success else _failure_of(result),
            checks={e.check_name: e.passed for e in result.get_asset_check_evaluations()},
        )
        runs.append(run)
        if on_done:
            on_done(run)
    return runs
