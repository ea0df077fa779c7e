"""Query embeddings batched across concurrent requests: one model call embeds every query waiting for that model.

A request that finds its model idle embeds its query at once (no added latency for a lone caller). Requests that
arrive while the model is busy queue up; when the running call ends, the first of them embeds the whole queue (at
most `max_batch`) in one call and hands each caller its own vector. On 2 cores, one call over 16 short queries
costs a fraction of 16 calls that also fight over the same cores and torch threads, so concurrent clients get more
answers per second instead of slower ones.

Only a model that embeds a query as a passage with a query prefix in front can be batched this way (no passage
prefix, or the same prefix for both; every bundled and remote provider here does that): `embed_documents` over
`query_prefix + query` then gives what `embed_query` gives. Any other model answers through `embed_query`, one call
per query, as before. A batch that fails fails each of its callers with the same exception.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from ..providers.base import EmbeddingProvider

MAX_BATCH = 32


@dataclass
class _Waiting:
    text: str
    done: threading.Event = field(default_factory=threading.Event)
    lead: bool = False  # woken to embed the queue itself, not with its answer
    vector: Any = None
    error: BaseException | None = None


def batchable(provider: EmbeddingProvider) -> bool:
    """Whether `embed_documents([query_prefix + q])` equals `embed_query(q)` for this model."""
    identity = provider.identity
    return identity.passage_prefix in ("", identity.query_prefix)


class QueryBatcher:
    """Embeds queries for one provider, batching the ones that wait for it (thread-safe; blocking)."""

    def __init__(self, provider: EmbeddingProvider, max_batch: int = MAX_BATCH) -> None:
        self.provider, self.max_batch = provider, max(1, max_batch)
        self._lock = threading.Lock()
        self._queue: list[_Waiting] = []
        self._busy = False
        self.calls = 0  # model calls made (for tests and benchmarks)
        self.largest = 0  # the largest batch so far

    def embed_query(self, text: str) -> np.ndarray:
        if not batchable(self.provider):
            return self.provider.embed_query(text)
        me = _Waiting(text)
        with self._lock:
            self._queue.append(me)
            lead, self._busy = not self._busy, True
        while not lead:
            me.done.wait()
            if not me.lead:
                break
            lead, me.lead = True, False
            me.done.clear()
        if lead:
            self._run(me)
        if me.error is not None:
            raise me.error
        return me.vector

    def _run(self, me: _Waiting) -> None:
        """Embed the queue, batch after batch, until `me` has its answer; then hand the queue to its first caller
        (or leave the model idle)."""
        while not me.done.is_set():
            with self._lock:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
            self._embed(batch)
        with self._lock:
            if self._queue:
                nxt = self._queue[0]
                nxt.lead = True
                nxt.done.set()
            else:
                self._busy = False

    def _embed(self, batch: list[_Waiting]) -> None:
        prefix = self.provider.identity.query_prefix
        try:
            self.calls += 1
            self.largest = max(self.largest, len(batch))
            if len(batch) == 1:
                vectors: Any = [self.provider.embed_query(batch[0].text)]
            else:
                vectors = self.provider.embed_documents([prefix + w.text for w in batch])
            for w, v in zip(batch, vectors, strict=True):
                w.vector = v
        except BaseException as exc:  # every caller of the batch gets the failure, none waits forever
            for w in batch:
                w.error = exc
        for w in batch:
            w.done.set()


class BatchedQueries:
    """`provider` with `embed_query` going through its batcher; everything else is the provider's own."""

    def __init__(self, provider: EmbeddingProvider, batcher: QueryBatcher) -> None:
        self._provider, self._batcher = provider, batcher

    def embed_query(self, text: str) -> np.ndarray:
        return self._batcher.embed_query(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._provider, name)
