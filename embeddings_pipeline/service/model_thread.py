"""One thread for every local model call the service makes (torch's CPU kernels), whichever request asks.

torch runs its CPU kernels on OpenMP thread teams, one team per thread that calls it. libgomp keeps a team's idle
workers spinning between two parallel regions only while it manages no more threads than the machine has CPUs;
past that it spins ~100 times and then sleeps in the kernel, so every region of every later call pays a wake-up.
A service whose request threads called the model themselves had a team per thread after one burst of concurrent
requests, and every call stayed slower for as long as those threads lived (MiniLM, one query, 2 cores: 12.4-13.7 ms
a call from one thread; 14-19 ms from either thread once a second one had called it). With every call here, one
team serves the whole process, as it does in a CLI or a pipeline run.

Remote providers (HTTP) are not pinned: their calls wait on the network, not on these cores, and must not queue
behind one another.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

_IDENT: list[int] = []  # the model thread's, once it runs


def _started() -> None:
    _IDENT.append(threading.get_ident())


_EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model", initializer=_started)


def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn(*args, **kwargs)` on the model thread (directly when already on it); its result or its exception."""
    if _IDENT and threading.get_ident() == _IDENT[0]:
        return fn(*args, **kwargs)
    return _EXECUTOR.submit(fn, *args, **kwargs).result()


class Pinned:
    """`target` with the methods named in `methods` run on the model thread; every other attribute is its own."""

    def __init__(self, target: Any, methods: tuple[str, ...]) -> None:
        self._target, self._methods = target, frozenset(methods)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if name not in self._methods:
            return value
        return lambda *args, **kwargs: run(value, *args, **kwargs)


def is_local(obj: Any) -> bool:
    """Whether `obj` computes on this machine's CPU (a sentence-transformers model or cross-encoder), not over
    HTTP: a local provider has no circuit breaker, a local reranker loads a folder."""
    from ..providers.rerank import CrossEncoderReranker
    from ..providers.sentence_transformers import SentenceTransformerProvider

    return isinstance(obj, SentenceTransformerProvider | CrossEncoderReranker)


def pin_provider(provider: T) -> T:
    """A local embedding provider with its loading and encoding on the model thread; a remote one as it is."""
    if not is_local(provider):
        return provider
    return Pinned(provider, ("load", "embed_documents", "embed_query"))  # type: ignore[return-value]


def pin_reranker(reranker: T) -> T:
    """A local cross-encoder with its loading and scoring on the model thread; an HTTP reranker as it is."""
    if reranker is None or not is_local(reranker):
        return reranker
    return Pinned(reranker, ("load", "rerank", "logits"))  # type: ignore[return-value]
