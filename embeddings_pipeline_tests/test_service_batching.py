"""Query embeddings batched across concurrent searches (`service/batching.py`): every caller gets its own query's
vector, concurrent callers share model calls, a failure reaches each caller of its batch, and an asymmetric model
(a passage prefix of its own) is never batched."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest

from embeddings_pipeline.service.batching import BatchedQueries, QueryBatcher, batchable

QUERIES = [f"question {i} about pumps, seals and impellers" for i in range(24)]


class Gate:
    """Wraps a provider so its first model call waits until `release` is set: the callers that arrive meanwhile
    queue up behind it, deterministically."""

    def __init__(self, provider, fail_on: str | None = None) -> None:
        self.provider, self.fail_on = provider, fail_on
        self.release, self.entered = threading.Event(), threading.Event()
        self.batches: list[int] = []

    @property
    def identity(self):
        return self.provider.identity

    def _wait(self) -> None:
        self.entered.set()
        assert self.release.wait(30)

    def embed_query(self, text: str) -> np.ndarray:
        self._wait()
        self.batches.append(1)
        return self.provider.embed_query(text)

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        self._wait()
        self.batches.append(len(texts))
        if self.fail_on is not None and any(self.fail_on in t for t in texts):
            raise RuntimeError("the model failed on this batch")
        return self.provider.embed_documents(texts)


def _run_concurrently(batcher: QueryBatcher, gate: Gate, queries: list[str]) -> list:
    with ThreadPoolExecutor(len(queries)) as pool:
        first = pool.submit(batcher.embed_query, queries[0])
        assert gate.entered.wait(30)  # the first call holds the model
        rest = [pool.submit(batcher.embed_query, q) for q in queries[1:]]
        while len(batcher._queue) < len(queries) - 1:  # every other caller is queued behind it
            threading.Event().wait(0.005)
        gate.release.set()
        futures = [first, *rest]
        return [f.exception() or f.result() for f in futures]


def test_concurrent_queries_share_model_calls_and_each_gets_its_own_vector(provider):
    gate = Gate(provider)
    batcher = QueryBatcher(gate, max_batch=16)
    vectors = _run_concurrently(batcher, gate, QUERIES[:20])
    assert gate.batches == [1, 16, 3]  # the lone first call, then the 19 queued ones in batches of at most 16
    assert batcher.calls == 3 and batcher.largest == 16
    for query, vector in zip(QUERIES[:20], vectors, strict=True):
        np.testing.assert_allclose(vector, provider.embed_query(query), atol=1e-5)
    assert not batcher._busy and not batcher._queue
    # a lone caller afterwards goes straight to embed_query: the very vector the in-process search uses
    lone = QueryBatcher(provider)
    assert np.array_equal(lone.embed_query(QUERIES[0]), provider.embed_query(QUERIES[0]))


def test_a_failed_batch_fails_each_of_its_callers_and_the_next_batch_still_runs(provider):
    gate = Gate(provider, fail_on="question 3 ")
    batcher = QueryBatcher(gate, max_batch=4)
    results = _run_concurrently(batcher, gate, QUERIES[:9])  # batches: [0], [1..4] fails, [5..8]
    assert gate.batches == [1, 4, 4]
    assert all(isinstance(r, RuntimeError) for r in results[1:5])
    assert all(isinstance(r, np.ndarray) for r in results[:1] + results[5:])
    assert not batcher._busy and not batcher._queue


def test_a_model_with_its_own_passage_prefix_is_never_batched(provider):
    class Asymmetric:
        identity = replace(provider.identity, query_prefix="query: ", passage_prefix="passage: ")
        calls: list[str] = []

        def embed_query(self, text: str) -> np.ndarray:
            self.calls.append(text)
            return provider.embed_query(text)

        def embed_documents(self, texts: list[str]) -> np.ndarray:
            raise AssertionError("a query must not be embedded as a passage")

    asym = Asymmetric()
    assert not batchable(asym) and batchable(provider)
    wrapped = BatchedQueries(asym, QueryBatcher(asym))
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(wrapped.embed_query, QUERIES[:8]))
    assert sorted(asym.calls) == sorted(QUERIES[:8])
    assert wrapped.identity is asym.identity  # everything but embed_query is the provider's own


@pytest.mark.parametrize("n", [1, 7])
def test_batched_vectors_match_embed_query(provider, n):
    gate = Gate(provider)
    batcher = QueryBatcher(gate)
    if n == 1:
        gate.release.set()
    vectors = _run_concurrently(batcher, gate, QUERIES[:n]) if n > 1 else [batcher.embed_query(QUERIES[0])]
    expected = np.stack([provider.embed_query(q) for q in QUERIES[:n]])
    np.testing.assert_allclose(np.stack(vectors), expected, atol=1e-5)
