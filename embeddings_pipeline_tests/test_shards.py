"""One tenant embedded by several processes: disjoint shards of its pending chunks, each embedded exactly once,
coverage exact at the end, and a failed shard costs only its own chunks (the real database, the stand-in Ollama
server, real worker processes)."""

from __future__ import annotations

from collections import Counter

import pytest

from embeddings_pipeline.pipeline import model_change, shards, steps
from embeddings_pipeline.providers import load_provider
from embeddings_pipeline.providers.ollama import PROBE_TEXT
from embeddings_pipeline.store import vectors
from embeddings_pipeline.store.scope import Scope
from embeddings_pipeline.store.vectors import Shard

from .helpers import seed, vector_rows
from .standin_server import StandinServer

TENANT = "big"


def paragraphs(n: int) -> str:
    return "\n\n".join(f"Row {i}: crate {i} of lot {i % 13} left dock {i % 5} on day {i % 29}." for i in range(n))


@pytest.fixture()
def standin(monkeypatch, schema):
    with StandinServer(dims=384) as srv:
        monkeypatch.setenv("OLLAMA_HOST", srv.url)
        monkeypatch.setenv("EMBEDDINGS_RETRY_BASE_DELAY", "0.01")
        yield srv


def chunked(conn, schema, n: int):
    """`n` one-paragraph chunks of TENANT, chunked for the stand-in model: (scope, provider, chunk set)."""
    seed(conn, schema, TENANT, {"log.txt": paragraphs(n)}, fmt="text")
    provider = load_provider("ollama:nomic-embed-text")
    scope = Scope(conn, schema, TENANT)
    steps.build_blocks(scope)
    plan = model_change.plan(scope, target=provider)
    steps.build_chunks(scope, plan)
    return scope, provider, plan.chunk_set


def embedded_texts(srv: StandinServer) -> Counter:
    return Counter(text for batch in srv.embed_batches for text in batch if text != PROBE_TEXT)


def test_shards_are_disjoint_and_cover_the_pending_chunks(conn, schema, standin):
    scope, provider, chunk_set = chunked(conn, schema, 300)
    vt = vector_tables_of(conn, schema, provider)
    everything = {p.chunk_id: p for p in vectors.pending_chunks(conn, schema, vt, TENANT, chunk_set)}
    assert len(everything) == 300
    seen: list[str] = []
    for index in range(3):
        shard = Shard(index, 3)
        part = vectors.pending_chunks(conn, schema, vt, TENANT, chunk_set, shard)
        assert part and all(shard.owns(p.content_hash) for p in part)  # SQL and Python agree on the slice
        assert vectors.pending_count(conn, schema, vt, TENANT, chunk_set, shard) == len(part)
        seen += [p.chunk_id for p in part]
    assert sorted(seen) == sorted(everything)  # disjoint, and together every pending chunk
    with pytest.raises(ValueError):
        Shard(3, 3)


def vector_tables_of(conn, schema, provider) -> str:
    from embeddings_pipeline.store import vector_tables

    return vector_tables.register_model(conn, schema, provider.identity, provider.spec)


def test_two_processes_embed_each_chunk_exactly_once(conn, schema, standin, monkeypatch):
    monkeypatch.setenv("EMBEDDINGS_SHARD_MIN_CHUNKS", "100")
    monkeypatch.setenv("EMBEDDINGS_TENANT_INDEX_THRESHOLD", "200")
    scope, provider, chunk_set = chunked(conn, schema, 400)
    texts = {r[0] for r in conn.execute(f"SELECT text FROM {schema}.chunks WHERE tenant_id = %s", (TENANT,))}  # noqa: S608
    assert shards.worker_count(2, 400) == 2 and shards.worker_count(8, 150) == 1

    report = steps.fill(scope, provider, chunk_set, "run-1", commit_every=32, processes=2)
    assert (report.chunks, report.embedded, report.failed, report.reused) == (400, 400, 0, 0)
    assert report.provider["calls"] >= 400 // 64  # the workers' provider calls are the run's
    assert embedded_texts(standin) == Counter(texts)  # every text sent once, by one worker or the other
    rows = vector_rows(conn, schema, provider.identity.vector_table, TENANT)
    assert len(rows) == 400 and {r[1] for r in rows.values()} == {"run-1"}
    # the partition of its own was made once, after both shards (here: past the 200-vector threshold)
    from embeddings_pipeline.store.vector_tables import own_partitions

    assert len(own_partitions(conn, schema, provider.identity.model_key)) == 1

    again = steps.fill(scope, provider, chunk_set, "run-2", processes=2)
    assert (again.embedded, again.failed) == (0, 0)


def test_a_failed_shard_loses_nothing_the_other_wrote(conn, schema, standin):
    scope, provider, chunk_set = chunked(conn, schema, 240)
    vt = vector_tables_of(conn, schema, provider)
    job = shards.job_for(provider, scope, chunk_set, "run-1", commit_every=16)
    assert load_provider(job["spec"], job["batch_size"], job["device"], job["key_env"]).identity == provider.identity
    standin.faults.wrong_dims = 8  # shard 0: every answer has the wrong size, so none of its vectors is written
    failed = shards.work({**job, "shard": [0, 2]})
    standin.faults.wrong_dims = None
    done = shards.work({**job, "shard": [1, 2]})
    shard0 = vectors.pending_count(conn, schema, vt, TENANT, chunk_set, Shard(0, 2))
    assert failed["embedded"] == 0 and failed["errors"] and shard0 > 0
    assert done["embedded"] == 240 - shard0 and not done["errors"]
    kept = vector_rows(conn, schema, vt, TENANT)

    total, current = vectors.coverage(conn, schema, vt, TENANT, chunk_set)
    assert (total, total - current) == (240, shard0)  # what the run's coverage count finds missing

    standin.embed_batches.clear()
    report = steps.fill(scope, provider, chunk_set, "run-2")
    assert (report.embedded, report.failed, report.chunks) == (shard0, 0, 240)  # only the failed shard's chunks
    assert len(embedded_texts(standin)) == shard0
    rows = vector_rows(conn, schema, vt, TENANT)
    assert all(rows[cid] == row for cid, row in kept.items())  # the other shard's vectors kept as written
    errors = conn.execute(f"SELECT count(*) FROM {schema}.embedding_errors WHERE tenant_id = %s", (TENANT,))  # noqa: S608
    assert errors.fetchone()[0] == 0


def test_dead_workers_are_named_and_their_chunks_stay_pending(conn, schema, standin, monkeypatch):
    monkeypatch.setenv("EMBEDDINGS_SHARD_MIN_CHUNKS", "50")
    scope, provider, chunk_set = chunked(conn, schema, 120)
    monkeypatch.setattr(shards.sys, "executable", "/bin/false")  # a worker that dies at once
    vt = vector_tables_of(conn, schema, provider)
    second = vectors.pending_count(conn, schema, vt, TENANT, chunk_set, Shard(1, 2))
    with pytest.raises(steps.EmbeddingIncomplete) as exc:
        steps.fill(scope, provider, chunk_set, "run-1", processes=2)
    # shard 0 is the run's own process: embedded; shard 1's worker died: its chunks, and only they, are missing
    assert exc.value.report.failed == second and exc.value.report.embedded == 120 - second
    assert any(e.startswith("shard 1/2: worker exited") for e in exc.value.report.errors), exc.value.report.errors
    assert vectors.pending_count(conn, schema, vt, TENANT, chunk_set, Shard(0, 2)) == 0
