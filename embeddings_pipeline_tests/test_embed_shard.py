"""`embed-shard`: one large tenant embedded by several OS processes (pods), each shard I of N of its pending chunks,
then one ordinary run that embeds only what they left (the real database, the real CLI in subprocesses, the
stand-in Ollama server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter

import pytest

from embeddings_pipeline.pipeline import model_change, steps
from embeddings_pipeline.providers import load_provider
from embeddings_pipeline.providers.ollama import PROBE_TEXT
from embeddings_pipeline.store import vectors
from embeddings_pipeline.store.db import connection, tenant_lock
from embeddings_pipeline.store.scope import Scope
from embeddings_pipeline.store.status import tenant_status
from embeddings_pipeline.store.vector_tables import own_partitions, register_model
from embeddings_pipeline.store.vectors import Shard

from .helpers import count, seed, vector_rows
from .standin_server import StandinServer

TENANT = "big"
MODEL = "ollama:nomic-embed-text"


def paragraphs(n: int) -> str:
    return "\n\n".join(f"Row {i}: pallet {i} of lot {i % 11} left bay {i % 7} on day {i % 23}." for i in range(n))


@pytest.fixture()
def standin(monkeypatch, schema):
    with StandinServer(dims=384) as srv:
        monkeypatch.setenv("OLLAMA_HOST", srv.url)
        monkeypatch.setenv("EMBEDDINGS_MODEL", MODEL)
        monkeypatch.setenv("EMBEDDINGS_RETRY_BASE_DELAY", "0.01")
        monkeypatch.setenv("EMBEDDINGS_RETRY_ATTEMPTS", "2")
        yield srv


class FailsAfterProbe(StandinServer):
    """The same model (same digest), reachable, whose every embedding after the probe answers 500."""

    def _ollama_embed(self, *, body, record, **rest):
        if body.get("input") != [PROBE_TEXT]:
            return 500, {"error": "internal server error (injected)"}, {}
        return super()._ollama_embed(body=body, record=record, **rest)


def chunked(conn, schema, n: int):
    """`n` one-paragraph chunks of TENANT, chunked for the stand-in model (no vector yet): (provider, chunk set)."""
    seed(conn, schema, TENANT, {"log.txt": paragraphs(n)}, fmt="text")
    provider = load_provider(MODEL)
    scope = Scope(conn, schema, TENANT)
    steps.build_blocks(scope)
    plan = model_change.plan(scope, target=provider)
    steps.build_chunks(scope, plan)
    return provider, plan.chunk_set


def start_shard(spec: str, run_id: str, **env: str) -> subprocess.Popen:
    """`embeddings-pipeline embed-shard` in a process of its own, as a pod would run it."""
    command = [sys.executable, "-m", "embeddings_pipeline.cli", "embed-shard", "--tenant", TENANT, "--shard", spec,
               "--run-id", run_id, "--batch-size", "32", "--json"]  # fmt: skip
    return subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip


def finish(proc: subprocess.Popen) -> tuple[int, dict]:
    out, err = proc.communicate(timeout=300)
    lines = out.strip().splitlines()
    assert lines, err
    return proc.returncode, json.loads(lines[-1])


def embedded_texts(srv: StandinServer) -> Counter:
    return Counter(text for batch in srv.embed_batches for text in batch if text != PROBE_TEXT)


def vector_count(conn, schema, provider) -> int:
    """The tenant's vectors of the model (its table registered first: a shard that wrote nothing may not have)."""
    return count(conn, schema, register_model(conn, schema, provider.identity, provider.spec), TENANT)


def run_ids(conn, schema, vt: str) -> Counter:
    return Counter(row[1] for row in vector_rows(conn, schema, vt, TENANT).values())


def test_two_shard_processes_then_one_run_embed_each_chunk_once(conn, schema, standin, cli, monkeypatch):
    monkeypatch.setenv("EMBEDDINGS_TENANT_INDEX_THRESHOLD", "200")
    seed(conn, schema, TENANT, {"log.txt": paragraphs(400)}, fmt="text")
    out = cli("backfill", "--tenant", TENANT, "--chunks-only")  # a run of blocks and chunks, embedding nothing
    assert "ok big: blocks and chunks" in out.output, out.output
    provider = load_provider(MODEL)
    assert vector_count(conn, schema, provider) == 0 and not embedded_texts(standin)
    texts = Counter(r[0] for r in conn.execute(f"SELECT text FROM {schema}.chunks WHERE tenant_id = %s", (TENANT,)))  # noqa: S608
    assert sum(texts.values()) == 400

    procs = [start_shard(f"{i}/2", "job-7") for i in range(2)]  # two OS processes at once
    (code0, first), (code1, second) = (finish(p) for p in procs)
    assert (code0, code1) == (0, 0), (first, second)
    assert first["ok"] and second["ok"] and first["missing"] == second["missing"] == 0
    assert first["embedded"] + second["embedded"] == 400 and min(first["embedded"], second["embedded"]) > 0
    assert first["pending"] + second["pending"] == 400 and first["chunks"] == 400
    assert embedded_texts(standin) == texts  # every text sent once, by one shard or the other

    vt = provider.identity.vector_table
    assert run_ids(conn, schema, vt) == {"job-7:0/2": first["embedded"], "job-7:1/2": second["embedded"]}
    written = vector_rows(conn, schema, vt, TENANT)
    # the shards build no index: the tenant is still in the shared partition, past the threshold
    assert own_partitions(conn, schema, provider.identity.model_key) == []

    standin.embed_batches.clear()
    out = cli("materialize", "--tenant", TENANT)
    assert "embedded 0, reused 400" in out.output, out.output
    assert embedded_texts(standin) == Counter()  # the run embedded nothing the shards did
    assert vector_rows(conn, schema, vt, TENANT) == written  # and rewrote none of their rows
    assert len(own_partitions(conn, schema, provider.identity.model_key)) == 1  # partition + index: by the run
    status = tenant_status(conn, schema, TENANT, provider.identity.model_key)
    assert (status.chunks, status.vectors, status.missing, status.stale) == (400, 400, 0, 0)


def test_a_failing_shard_loses_only_its_own_chunks(conn, schema, standin, cli):
    provider, chunk_set = chunked(conn, schema, 240)
    vt = provider.identity.vector_table
    with FailsAfterProbe(dims=384) as broken:
        good = start_shard("0/2", "job-8")
        bad = start_shard("1/2", "job-8", OLLAMA_HOST=broken.url)
        (good_code, ok), (bad_code, failed) = finish(good), finish(bad)
    own = vectors.pending_count(conn, schema, vt, TENANT, chunk_set, Shard(1, 2))
    assert good_code == 0 and ok["ok"] and ok["embedded"] == 240 - own
    assert bad_code == 1 and not failed["ok"] and failed["embedded"] == 0 and failed["errors"]
    assert failed["missing"] == failed["pending"] == own > 0
    assert count(conn, schema, vt, TENANT) == 240 - own  # nothing the good shard wrote is lost
    kept = vector_rows(conn, schema, vt, TENANT)

    status = tenant_status(conn, schema, TENANT, provider.identity.model_key)
    assert status.missing == own  # what the run's coverage count finds missing

    standin.embed_batches.clear()
    out = cli("materialize", "--tenant", TENANT)
    assert f"embedded {own}, reused {240 - own}" in out.output, out.output
    assert sum(embedded_texts(standin).values()) == own  # only the failed shard's chunks
    rows = vector_rows(conn, schema, vt, TENANT)
    assert all(rows[cid] == row for cid, row in kept.items())
    assert tenant_status(conn, schema, TENANT, provider.identity.model_key).missing == 0


def test_bad_shard_specs_and_tenants_are_refused_clearly(conn, schema, standin, cli):
    seed(conn, schema, TENANT, {"a.txt": paragraphs(3)}, fmt="text")
    for spec, words in (("2/2", "between 0 and N - 1 = 1"), ("0/0", "at least 1"), ("1", "is not I/N"),
                        ("a/b", "is not I/N"), ("-1/2", "between 0")):  # fmt: skip
        out = cli("embed-shard", "--tenant", TENANT, "--shard", spec, ok=False)
        assert out.exit_code == 2 and words in out.output, (spec, out.output)
    out = cli("embed-shard", "--tenant", "nobody", "--shard", "0/2", ok=False)
    assert out.exit_code == 2 and "no tenant 'nobody'" in out.output
    # documents, but no chunks for the model yet: say how to build them, write nothing
    out = cli("embed-shard", "--tenant", TENANT, "--shard", "0/2", ok=False)
    assert out.exit_code == 1 and "has no chunks for model" in out.output and "--chunks-only" in out.output
    out = cli("embed-shard", "--tenant", TENANT, "--shard", "0/2", "--json", ok=False)
    assert out.exit_code == 1 and json.loads(out.output)["ok"] is False


def test_unreachable_provider_exits_1_and_writes_nothing(conn, schema, standin, cli, monkeypatch):
    provider, _ = chunked(conn, schema, 40)
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")  # nothing listens there
    out = cli("embed-shard", "--tenant", TENANT, "--shard", "0/2", ok=False)
    assert out.exit_code == 1 and "embedding provider" in out.output, out.output
    assert vector_count(conn, schema, provider) == 0


def test_shards_and_runs_never_overlap(conn, schema, standin, cli, pg_url, monkeypatch):
    provider, _ = chunked(conn, schema, 40)
    # a run holds the tenant: the shard waits, then gives up with a clear message, having written nothing
    with connection(pg_url) as run, tenant_lock(run, schema, TENANT):
        out = cli("embed-shard", "--tenant", TENANT, "--shard", "0/2", "--wait", "0.3", ok=False)
    assert out.exit_code == 1 and "locked by a run" in out.output, out.output
    assert vector_count(conn, schema, provider) == 0
    # shards hold it together (shared), and a run waits for them
    monkeypatch.setenv("EMBEDDINGS_LOCK_TIMEOUT", "0.3")
    with connection(pg_url) as shard_a, tenant_lock(shard_a, schema, TENANT, shared=True):
        out = cli("embed-shard", "--tenant", TENANT, "--shard", "1/2", "--json")
        assert json.loads(out.output)["ok"] is True
        out = cli("materialize", "--tenant", TENANT, ok=False)
        assert out.exit_code != 0 and "locked by another run or shard process" in out.output, out.output
    cli("embed-shard", "--tenant", TENANT, "--shard", "0/2")
    out = cli("materialize", "--tenant", TENANT)
    assert "embedded 0, reused 40" in out.output, out.output


def test_a_run_started_beside_the_shards_waits_for_them_and_embeds_nothing(conn, schema, standin, cli, monkeypatch):
    """The automation's run after `--chunks-only` may start while the pods embed: it waits for their shared lock
    and is then the final run."""
    provider, _ = chunked(conn, schema, 200)
    standin.faults.delay_per_input = 0.01  # ~2 s of embedding: the shards hold the tenant meanwhile
    standin.faults.paths = ("/api/embed",)
    procs = [start_shard(f"{i}/2", "job-9") for i in range(2)]
    held = """SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND mode = 'ShareLock' AND granted
                AND objsubid = 2 AND classid::text::bigint = hashtext(%s)::bigint & 4294967295
                AND objid::text::bigint = hashtext(%s)::bigint & 4294967295"""  # tenant_lock's key, shared
    deadline = time.monotonic() + 60
    while conn.execute(held, (f"{schema}:lock", TENANT)).fetchone()[0] < 2:  # type: ignore[index]
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "the shards never held it"
        time.sleep(0.05)
    monkeypatch.setenv("EMBEDDINGS_LOCK_TIMEOUT", "120")
    out = cli("materialize", "--tenant", TENANT)  # blocks until both shards are done
    results = [finish(p) for p in procs]
    assert [code for code, _ in results] == [0, 0] and sum(r["embedded"] for _, r in results) == 200
    assert "embedded 0, reused 200" in out.output, out.output
    assert tenant_status(conn, schema, TENANT, provider.identity.model_key).missing == 0
