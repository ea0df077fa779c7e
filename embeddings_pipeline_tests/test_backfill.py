"""`backfill`: a dry run writes nothing and estimates from measured throughput; a backfill killed with -9 resumes
and ends with every vector exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psycopg
from click.testing import CliRunner

from embeddings_pipeline.cli import main
from embeddings_pipeline.cli.runner import local_instance
from embeddings_pipeline.pipeline import model_change, steps
from embeddings_pipeline.store.scope import Scope
from embeddings_pipeline.store.status import tenant_status

from .helpers import count, seed


def paragraphs(n: int, word: str) -> str:
    return "\n\n".join(f"Entry {i}: the {word} on shelf {i} was counted on day {i % 30}." for i in range(n))


def test_dry_run_writes_nothing_and_estimates(conn, schema, provider):
    runner = CliRunner()
    seed(conn, schema, "acme", {"a.txt": paragraphs(20, "valve")}, fmt="text")
    assert runner.invoke(main, ["backfill", "--tenant", "acme"], catch_exceptions=False).exit_code == 0
    seed(conn, schema, "acme", {"b.txt": paragraphs(12, "gasket")}, fmt="text")
    scope = Scope(conn, schema, "acme")
    steps.build_blocks(scope)
    steps.build_chunks(scope, model_change.plan(scope, target=provider))
    seed(conn, schema, "acme", {"c.txt": "not chunked yet"}, fmt="text")
    vectors_before = count(conn, schema, provider.identity.vector_table, "acme")
    runs_before = local_instance().get_runs_count()

    out = runner.invoke(main, ["backfill", "--tenant", "acme", "--dry-run", "--json"], catch_exceptions=False)
    (plan,) = json.loads(out.output)["tenants"]
    assert (plan["chunks"], plan["to_embed"], plan["documents_not_chunked"]) == (32, 12, 1)
    assert plan["est_seconds"] > 0 and plan["model_key"] == provider.identity.model_key
    assert count(conn, schema, provider.identity.vector_table, "acme") == vectors_before
    assert local_instance().get_runs_count() == runs_before


def test_killed_backfill_resumes_without_duplicates_or_gaps(conn, schema, provider):
    seed(conn, schema, "big", {"log.txt": paragraphs(400, "pallet")}, fmt="text")
    table = provider.identity.vector_table
    proc = subprocess.Popen(
        [sys.executable, "-m", "embeddings_pipeline.cli", "backfill", "--tenant", "big", "--batch-size", "16"],
        env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    written = 0
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            written = count(conn, schema, table, "big")
        except psycopg.errors.UndefinedTable:  # the table appears with the first embeddings step
            written = 0
        if written >= 48:
            break
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = count(conn, schema, table, "big")
    assert 48 <= partial < 400, f"the kill should land mid-backfill ({partial} vectors)"

    result = CliRunner().invoke(main, ["backfill", "--tenant", "big"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    st = tenant_status(conn, schema, "big", provider.identity.model_key)
    assert (st.chunks, st.vectors, st.missing, st.stale) == (400, 400, 0, 0)
    distinct = conn.execute(f"SELECT count(*), count(DISTINCT chunk_id) FROM {schema}.{table}").fetchone()  # noqa: S608
    assert distinct == (400, 400)
    runs = {r[0] for r in conn.execute(f"SELECT DISTINCT run_id FROM {schema}.{table}").fetchall()}  # noqa: S608
    assert len(runs) == 2  # the killed run's committed batches were kept, the resumed run did the rest


def test_backfill_with_two_processes_embeds_each_chunk_once(conn, schema, cli, monkeypatch):
    from collections import Counter

    from embeddings_pipeline.providers.ollama import PROBE_TEXT

    from .standin_server import StandinServer

    with StandinServer(dims=384) as srv:
        monkeypatch.setenv("OLLAMA_HOST", srv.url)
        monkeypatch.setenv("EMBEDDINGS_SHARD_MIN_CHUNKS", "50")
        seed(conn, schema, "wide", {"log.txt": paragraphs(300, "carton")}, fmt="text")
        cli("tenants", "set", "wide", "--model", "ollama:nomic-embed-text")
        cli("backfill", "--tenant", "wide", "--processes", "2", "--batch-size", "20")
        sent = Counter(t for batch in srv.embed_batches for t in batch if t != PROBE_TEXT)
        identity_lookups = srv.requests["/api/tags"]
    texts = [r[0] for r in conn.execute(f"SELECT text FROM {schema}.chunks WHERE tenant_id = 'wide'")]  # noqa: S608
    assert len(texts) == 300 and sent == Counter(texts)  # every text sent exactly once
    assert identity_lookups == 2  # the run's own process (shard 0) and one worker (shard 1) resolved the model
    (key,) = [r[0] for r in conn.execute(f"SELECT active_model_key FROM {schema}.tenants WHERE tenant_id = 'wide'")]  # noqa: S608
    st = tenant_status(conn, schema, "wide", key)
    assert (st.chunks, st.vectors, st.missing, st.stale) == (300, 300, 0, 0)


def test_backfill_starts_no_run_for_tenants_already_up_to_date(conn, schema, cli, provider):
    seed(conn, schema, "done", {"a.txt": paragraphs(6, "valve")}, fmt="text")
    seed(conn, schema, "busy", {"b.txt": paragraphs(4, "gasket")}, fmt="text")
    cli("backfill")
    runs = local_instance().get_runs_count()
    again = cli("backfill")
    assert "2 of 2 tenants up to date" in again.output and local_instance().get_runs_count() == runs

    seed(conn, schema, "busy", {"c.txt": "A new note about the gasket."}, fmt="text")
    conn.execute(f"UPDATE {schema}.documents SET deleted_at = now() WHERE tenant_id = 'done'")  # noqa: S608
    out = cli("backfill")
    assert "up to date" not in out.output and local_instance().get_runs_count() == runs + 2
    conn.execute(f"DELETE FROM {schema}.{provider.identity.vector_table} WHERE tenant_id = 'busy'")  # noqa: S608
    assert "1 of 2 tenants up to date" in cli("backfill").output  # a missing vector is work too
    st = tenant_status(conn, schema, "busy", provider.identity.model_key)
    assert (st.chunks, st.vectors, st.missing) == (5, 5, 0)


def test_backfill_with_concurrent_runs_embeds_every_tenant_once(conn, schema, cli, monkeypatch):
    from collections import Counter

    from embeddings_pipeline.cli.runner import PID_TAG
    from embeddings_pipeline.providers.ollama import PROBE_TEXT

    from .standin_server import StandinServer

    tenants = ["north", "Tenant/ü 2", "south", "North"]  # odd ids stay apart
    with StandinServer(dims=384) as srv:
        monkeypatch.setenv("OLLAMA_HOST", srv.url)
        monkeypatch.setenv("EMBEDDINGS_MODEL", "ollama:nomic-embed-text")
        for i, tenant in enumerate(tenants):
            seed(conn, schema, tenant, {"log.txt": paragraphs(20 + i, f"part{i}")}, fmt="text")
        cli("backfill", "--concurrent-runs", "2")
        sent = Counter(t for batch in srv.embed_batches for t in batch if t != PROBE_TEXT)
    texts = [r[0] for r in conn.execute(f"SELECT text FROM {schema}.chunks")]  # noqa: S608
    assert len(texts) == sum(20 + i for i in range(len(tenants))) and sent == Counter(texts)
    runs = local_instance().get_runs()
    assert sorted(r.tags["dagster/partition"] for r in runs) == sorted(tenants)
    assert all(r.is_success for r in runs)
    workers = {r.tags[PID_TAG] for r in runs}
    assert len(workers) <= 2 and str(os.getpid()) not in workers  # two worker processes, not the CLI's own
    by_tenant = {r.tags["dagster/partition"]: r.run_id for r in runs}
    (key,) = {r[0] for r in conn.execute(f"SELECT active_model_key FROM {schema}.tenants")}  # noqa: S608
    for i, tenant in enumerate(tenants):
        st = tenant_status(conn, schema, tenant, key)
        assert (st.chunks, st.vectors, st.missing, st.stale) == (20 + i, 20 + i, 0, 0)
        vt = f"vectors_{key}"
        ids = {r[0] for r in conn.execute(f"SELECT run_id FROM {schema}.{vt} WHERE tenant_id = %s", (tenant,))}  # noqa: S608
        assert ids == {by_tenant[tenant]}


def test_concurrent_runs_need_an_instance_other_processes_can_open(conn, schema):
    import dagster as dg
    import pytest

    from embeddings_pipeline.cli.runner import materialize_tenants

    with pytest.raises(ValueError, match="instance other processes can open"):
        materialize_tenants(["a", "b"], instance=dg.DagsterInstance.ephemeral(), concurrent_runs=2)


def test_a_killed_worker_costs_no_tenant_its_run(conn, schema, monkeypatch):
    """A worker process killed mid-run (as the OOM killer would) breaks the pool: the tenants it had not finished
    run again in a fresh pool, the killed run is marked failed, and every tenant ends fully embedded."""
    import signal
    import threading

    import dagster as dg

    from embeddings_pipeline.cli.runner import PID_TAG, materialize_tenants

    from .standin_server import StandinServer

    tenants = ["one", "two", "three"]
    with StandinServer(dims=384) as srv:
        srv.faults.delay_per_input = 0.03  # ~1 s of embedding a run: time to kill it in the middle
        srv.faults.paths = ("/api/embed",)
        monkeypatch.setenv("OLLAMA_HOST", srv.url)
        monkeypatch.setenv("EMBEDDINGS_MODEL", "ollama:nomic-embed-text")
        for i, tenant in enumerate(tenants):
            seed(conn, schema, tenant, {"log.txt": paragraphs(30, f"crate{i}")}, fmt="text")
        instance = local_instance()
        out: list = []
        worker = threading.Thread(target=lambda: out.extend(materialize_tenants(tenants, instance, concurrent_runs=2)))
        worker.start()
        started = dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])
        deadline = time.monotonic() + 60
        while not (running := instance.get_runs(filters=started)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert running, "no run started"
        victim = running[0]
        os.kill(int(victim.tags[PID_TAG]), signal.SIGKILL)
        worker.join(timeout=300)
    assert [r.tenant for r in out] == tenants and all(r.success for r in out), [r.error for r in out]
    assert instance.get_run_by_id(victim.run_id).status == dg.DagsterRunStatus.FAILURE
    (key,) = {r[0] for r in conn.execute(f"SELECT active_model_key FROM {schema}.tenants")}  # noqa: S608
    for tenant in tenants:
        st = tenant_status(conn, schema, tenant, key)
        assert (st.chunks, st.vectors, st.missing) == (30, 30, 0)


def test_workers_exit_when_the_backfill_is_killed(conn, schema, monkeypatch):
    """`backfill --concurrent-runs` killed with -9: its worker processes do not keep running on their own."""
    import dagster as dg

    from embeddings_pipeline.cli.runner import PID_TAG, process_alive

    from .standin_server import StandinServer

    with StandinServer(dims=384) as srv:
        srv.faults.delay_per_input = 0.05
        srv.faults.paths = ("/api/embed",)
        monkeypatch.setenv("OLLAMA_HOST", srv.url)
        monkeypatch.setenv("EMBEDDINGS_MODEL", "ollama:nomic-embed-text")
        for tenant in ("left", "right", "centre"):
            seed(conn, schema, tenant, {"log.txt": paragraphs(60, tenant)}, fmt="text")
        proc = subprocess.Popen(
            [sys.executable, "-m", "embeddings_pipeline.cli", "backfill", "--concurrent-runs", "2"],
            env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        started = dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])
        deadline = time.monotonic() + 90
        while not (running := local_instance().get_runs(filters=started)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert running, "no run started"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        workers = {int(r.tags[PID_TAG]) for r in running}
        deadline = time.monotonic() + 10
        while any(process_alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert not any(process_alive(p) for p in workers)
