"""The provider's call for the next batch overlaps the write of the batch before it (`steps.embed_pending`), with
the serial error semantics kept: the real database, the stand-in Ollama/OpenAI server with faults mid-stream."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from embeddings_pipeline.pipeline import model_change, steps
from embeddings_pipeline.pipeline.reports import EmbeddingIncomplete
from embeddings_pipeline.providers import load_provider
from embeddings_pipeline.providers.ollama import PROBE_TEXT
from embeddings_pipeline.store import vector_tables
from embeddings_pipeline.store.scope import Scope

from .helpers import seed, vector_rows
from .standin_server import StandinServer

TENANT = "overlap"


def paragraphs(n: int, start: int = 0) -> str:
    return "\n\n".join(f"Row {i}: crate {i} of lot {i % 13} left dock {i % 5}." for i in range(start, start + n))


@pytest.fixture()
def fast_retries(monkeypatch):
    monkeypatch.setenv("EMBEDDINGS_RETRY_BASE_DELAY", "0.01")


def chunked(conn, schema, body: str, model: str):
    seed(conn, schema, TENANT, {"log.txt": body}, fmt="text")
    provider = load_provider(model)
    scope = Scope(conn, schema, TENANT)
    steps.build_blocks(scope)
    plan = model_change.plan(scope, target=provider)
    steps.build_chunks(scope, plan)
    return scope, provider, plan.chunk_set


def embedded_texts(srv: StandinServer) -> Counter:
    return Counter(text for batch in srv.embed_batches for text in batch if text != PROBE_TEXT)


def chunk_texts(conn, schema) -> dict[str, str]:
    rows = conn.execute(f"SELECT chunk_id, text FROM {schema}.chunks WHERE tenant_id = %s", (TENANT,)).fetchall()  # noqa: S608
    return dict(rows)


def errors(conn, schema) -> dict[str, str]:
    rows = conn.execute(f"SELECT chunk_id, error_kind FROM {schema}.embedding_errors WHERE tenant_id = %s",  # noqa: S608
                        (TENANT,)).fetchall()  # fmt: skip
    return dict(rows)


def test_every_chunk_is_embedded_once_through_transient_faults(conn, schema, monkeypatch, fast_retries):
    with StandinServer(dims=384, seed=3) as srv:
        monkeypatch.setenv("OLLAMA_HOST", srv.url)
        scope, provider, chunk_set = chunked(conn, schema, paragraphs(200), "ollama:nomic-embed-text")
        srv.faults.error_rate, srv.faults.rate_limit_rate = 0.2, 0.1
        report = steps.fill(scope, provider, chunk_set, "run-1", commit_every=16)
        assert srv.faults_injected["500"] > 0
        assert report.embedded == report.chunks == 200 and report.failed == 0
        sent = embedded_texts(srv)
        assert len(sent) == 200 and max(sent.values()) == 1  # nothing embedded twice
        assert len(srv.embed_batches) >= 13  # 13 batches of 16: the overlap had batches to overlap
    vt = provider.identity.vector_table
    assert set(vector_rows(conn, schema, vt, TENANT)) == set(chunk_texts(conn, schema))
    assert errors(conn, schema) == {}


def test_a_bad_input_mid_stream_spares_its_neighbours_and_the_later_batches(conn, schema, monkeypatch, fast_retries):
    with StandinServer(dims=384, bad_input="POISON") as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_url)
        monkeypatch.setenv("OPENAI_API_KEY", "unused-by-this-server")
        body = paragraphs(60) + "\n\nPOISON\n\n" + paragraphs(60, start=60)
        scope, provider, chunk_set = chunked(conn, schema, body, "openai:text-embedding-3-small")
        with pytest.raises(EmbeddingIncomplete) as failed:
            steps.fill(scope, provider, chunk_set, "run-1", commit_every=16)
        report = failed.value.report
        assert report.failed == 1 and report.embedded == 120
        sent = embedded_texts(srv)
        assert len(sent) == 120 and max(sent.values()) == 1 and "POISON" not in sent
    texts = chunk_texts(conn, schema)
    vt = vector_tables.register_model(conn, schema, provider.identity, provider.spec)
    written = set(vector_rows(conn, schema, vt, TENANT))
    assert {texts[c] for c in set(texts) - written} == {"POISON"}
    assert {texts[c]: kind for c, kind in errors(conn, schema).items()} == {"POISON": "bad_input"}


def test_an_open_circuit_mid_stream_stops_at_once_and_records_the_rest(conn, schema, monkeypatch, fast_retries):
    with StandinServer(dims=384) as srv:
        monkeypatch.setenv("OLLAMA_HOST", srv.url)
        scope, provider, chunk_set = chunked(conn, schema, paragraphs(320), "ollama:nomic-embed-text")
        srv.faults.delay = 0.05  # each call takes a while, so the provider goes down with batches still to come
        stop = threading.Event()

        def take_down() -> None:
            while not stop.is_set() and len(embedded_texts(srv)) < 4 * 16:
                time.sleep(0.005)
            srv.faults.down = True

        watcher = threading.Thread(target=take_down)
        watcher.start()
        try:
            with pytest.raises(EmbeddingIncomplete) as failed:
                steps.fill(scope, provider, chunk_set, "run-1", commit_every=16)
        finally:
            stop.set()
            watcher.join()
        report = failed.value.report
        answered = embedded_texts(srv)
        calls_after_down = srv.requests.total()
    assert report.errors[0].startswith("stopped early, provider circuit open")
    texts = chunk_texts(conn, schema)
    vt = provider.identity.vector_table
    written = set(vector_rows(conn, schema, vt, TENANT))
    recorded = errors(conn, schema)
    assert 4 * 16 <= len(written) < 320 and report.embedded == len(written)
    assert max(answered.values()) == 1 and {texts[c] for c in written} <= set(answered)  # nothing embedded twice
    assert set(texts) - written <= set(recorded)  # every chunk left without a vector is recorded
    assert {recorded[c] for c in set(texts) - written} <= {"circuit_open", "transient"}
    assert report.failed == 320 - len(written) and set(recorded) & written <= set()
    assert calls_after_down < 60  # the breaker stopped the calls: the rest were recorded, not sent
