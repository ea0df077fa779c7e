"""Remote providers inside the real pipeline: Dagster runs, the real database, the stand-in Ollama/OpenAI server
on 127.0.0.1 with injected faults."""

from __future__ import annotations

import logging

import dagster as dg
import pytest

from embeddings_pipeline.cli.runner import materialize_tenants
from embeddings_pipeline.store.status import tenant_status
from embeddings_pipeline.store.tenants import last_successes, tenant_settings, update_tenant

from .helpers import count, seed
from .standin_server import StandinServer

SECRET = "sk-test-DO-NOT-LEAK-4f1c9e"


@pytest.fixture()
def fast_retries(monkeypatch):
    monkeypatch.setenv("EMBEDDINGS_RETRY_BASE_DELAY", "0.01")


def paragraphs(n: int, topic: str = "pallet") -> str:
    return "\n\n".join(f"Note {i}: the {topic} in rack {i} was moved to aisle {i % 7}." for i in range(n))


def test_ollama_tenant_embeds_fully_through_30_percent_faults(conn, schema, monkeypatch, fast_retries):
    with StandinServer(seed=7) as srv:
        monkeypatch.setenv("OLLAMA_HOST", srv.url)
        update_tenant(conn, schema, "olly", model="ollama:nomic-embed-text")
        seed(conn, schema, "olly", {"notes.txt": paragraphs(520)}, fmt="text")
        srv.faults.error_rate, srv.faults.rate_limit_rate = 0.15, 0.15
        (run,) = materialize_tenants(["olly"], instance=dg.DagsterInstance.ephemeral())
        assert run.success, run.error
        assert run.metadata["chunks"] == 520 and run.metadata["embedded"] == 520
        assert run.metadata["provider_retries"] > 0 and run.metadata["provider_rate_limited"] > 0
        assert srv.faults_injected["500"] > 0 and srv.faults_injected["429"] > 0
        key = tenant_settings(conn, schema, "olly").active_model_key
        assert key is not None and key.startswith("ol_nomic_embed_text_384_")
        st = tenant_status(conn, schema, "olly", key)
        assert (st.vectors, st.missing, st.stale) == (520, 0, 0)


def test_provider_down_fails_fast_and_other_tenants_are_unaffected(conn, schema, monkeypatch, fast_retries):
    with StandinServer() as srv:
        monkeypatch.setenv("OLLAMA_HOST", srv.url)
        srv.faults.down = True
        update_tenant(conn, schema, "remote", model="ollama:nomic-embed-text")
        seed(conn, schema, "remote", {"a.txt": paragraphs(20)}, fmt="text")
        seed(conn, schema, "local", {"b.txt": paragraphs(5, "crate")}, fmt="text")
        runs = {r.tenant: r for r in materialize_tenants(["remote", "local"], instance=dg.DagsterInstance.ephemeral())}
        assert runs["local"].success
        assert not runs["remote"].success
        assert "circuit" in runs["remote"].error.lower() or "503" in runs["remote"].error
        assert srv.requests.total() <= 6  # the breaker stopped the calls; nothing hammers a dead endpoint
        assert count(conn, schema, "chunks", "local") == 5
        successes = last_successes(conn, schema)  # only a run whose chunks all got vectors counts as a success
        assert set(successes) == {"local"} and successes["local"][1] == runs["local"].run_id


def test_wrong_dimension_is_rejected_before_anything_is_written(conn, schema, monkeypatch, fast_retries):
    with StandinServer() as srv:
        monkeypatch.setenv("OLLAMA_HOST", srv.url)
        update_tenant(conn, schema, "olly", model="ollama:nomic-embed-text")
        seed(conn, schema, "olly", {"a.txt": paragraphs(10)}, fmt="text")
        (first,) = materialize_tenants(["olly"], instance=dg.DagsterInstance.ephemeral())
        assert first.success
        table = tenant_settings(conn, schema, "olly").active_model_key
        seed(conn, schema, "olly", {"b.txt": paragraphs(4, "barrel")}, fmt="text")
        srv.faults.wrong_dims = 383
        (run,) = materialize_tenants(["olly"], instance=dg.DagsterInstance.ephemeral())
        assert not run.success and run.checks["no_missing_vectors"] is False
        assert last_successes(conn, schema)["olly"][1] == first.run_id  # the failed run is not a success
        written = conn.execute(f"SELECT count(*) FROM {schema}.vectors_{table}").fetchone()  # noqa: S608
        assert written == (10,)  # the first run's vectors only
        messages = [r[0] for r in conn.execute(f"SELECT message FROM {schema}.embedding_errors").fetchall()]  # noqa: S608
        assert len(messages) == 4 and all("383" in m for m in messages)


def test_openai_key_by_reference_never_leaks(conn, schema, monkeypatch, caplog, capsys, fast_retries):
    caplog.set_level(logging.DEBUG)
    with StandinServer(api_key=SECRET) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_url)
        monkeypatch.setenv("ACME_EMBEDDINGS_KEY", SECRET)
        update_tenant(conn, schema, "acme", model="openai:text-embedding-3-small", key_env="ACME_EMBEDDINGS_KEY")
        seed(conn, schema, "acme", {"a.txt": paragraphs(12)}, fmt="text")
        instance = dg.DagsterInstance.ephemeral()
        (ok,) = materialize_tenants(["acme"], instance=instance)
        assert ok.success, ok.error
        assert f"Bearer {SECRET}" in srv.auth_seen  # the key did reach the provider

        seed(conn, schema, "acme", {"b.txt": paragraphs(3, "drum")}, fmt="text")
        monkeypatch.setenv("ACME_EMBEDDINGS_KEY", SECRET + "-revoked")
        (bad,) = materialize_tenants(["acme"], instance=instance)
        assert not bad.success and "401" in (bad.error or "") + str(bad.metadata)

    stored = conn.execute(f"SELECT row_to_json(t)::text FROM {schema}.tenants t").fetchall()  # noqa: S608
    errors = conn.execute(f"SELECT row_to_json(e)::text FROM {schema}.embedding_errors e").fetchall()  # noqa: S608
    assert errors and all("fatal" in e[0] for e in errors)
    event_log = "\n".join(str(e) for run in (ok, bad) for e in instance.all_logs(run.run_id))
    haystacks = [caplog.text, *capsys.readouterr(), str(stored), str(errors), event_log, str(ok), str(bad)]
    assert all(SECRET not in h for h in haystacks)


def test_too_large_batches_are_split_and_a_bad_input_spares_its_neighbours(conn, schema, monkeypatch, fast_retries):
    with StandinServer(max_batch=16, bad_input="POISON") as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_url)
        monkeypatch.setenv("OPENAI_API_KEY", "unused-by-this-server")
        update_tenant(conn, schema, "acme", model="openai:text-embedding-3-small")
        seed(conn, schema, "acme", {"a.txt": paragraphs(40) + "\n\nPOISON\n\n" + paragraphs(3, "box")}, fmt="text")
        (run,) = materialize_tenants(["acme"], instance=dg.DagsterInstance.ephemeral())
        assert not run.success  # one chunk could not be embedded: loud, with its reason
        assert run.checks["no_missing_vectors"] is False
        assert max(len(b) for b in srv.embed_batches if "POISON" not in b) <= 16
    rows = conn.execute(f"SELECT c.text, e.error_kind FROM {schema}.embedding_errors e "  # noqa: S608
                        f"JOIN {schema}.chunks c USING (tenant_id, chunk_id)").fetchall()  # fmt: skip
    assert rows == [("POISON", "bad_input")]
    key = tenant_settings(conn, schema, "acme").active_model_key
    assert key is None  # never activated: coverage is not 100%
    (table,) = conn.execute(f"SELECT vector_table FROM {schema}.embedding_models WHERE provider = 'openai'").fetchone()  # noqa: S608
    assert conn.execute(f"SELECT count(*) FROM {schema}.{table}").fetchone() == (43,)  # noqa: S608


def test_status_survives_a_tenant_whose_provider_is_unreachable(conn, schema, monkeypatch, fast_retries):
    import json

    from click.testing import CliRunner

    from embeddings_pipeline.cli import main

    monkeypatch.setenv("EMBEDDINGS_RETRY_ATTEMPTS", "1")
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")  # nothing listens there
    update_tenant(conn, schema, "remote", model="ollama:nomic-embed-text")
    seed(conn, schema, "remote", {"a.txt": paragraphs(3)}, fmt="text")
    seed(conn, schema, "local", {"b.txt": paragraphs(2, "crate")}, fmt="text")
    out = CliRunner().invoke(main, ["status", "--json"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    rows = {r["tenant"]: r for r in json.loads(out.stdout)["tenants"]}
    assert rows["remote"]["model_key"] == "unknown" and rows["remote"]["documents"] == 1
    assert rows["local"]["model_key"].startswith("st_all_minilm_l6_v2_384_")
