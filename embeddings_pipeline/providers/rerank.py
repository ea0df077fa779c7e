"""Rerankers: a second stage that scores (query, passage) pairs, for the service's `"rerank": true` searches.

One small protocol, ``Reranker``: ``name`` and ``rerank(query, texts) -> list[float]`` (one score per text, in order;
higher is more relevant). ``load_reranker(spec)`` builds one from ``EMBEDDINGS_RERANKER``:

- ``cross-encoder:PATH``: a sentence-transformers ``CrossEncoder`` from a local folder (``config.json``, weights,
  tokenizer files), loaded offline on first use (sentence_transformers and torch are imported then, never at module
  import). Scores are probabilities from the model's raw logits: one logit -> ``sigmoid(logit)`` (a softmax over a
  single logit would be 1.0 for every pair); two labels -> the softmax probability of label 1 (the "relevant"
  class of binary relevance classifiers); more labels (NLI-style heads) are refused at load: they are not rerankers.
- ``http:URL`` (or a bare ``http(s)://`` URL): a ``/rerank`` API through httpx, with a timeout and the shared
  resilience code (classified errors, retries with backoff, a circuit breaker per endpoint). A URL whose path does
  not end in ``rerank`` gets ``/rerank`` appended. Without ``EMBEDDINGS_RERANK_MODEL`` the body is TEI's
  ``{"query", "texts", "raw_scores": false}`` (TEI serves one model); with it, the Cohere / Jina / Infinity body
  ``{"model", "query", "documents", "top_n", "return_documents": false}``. Either answer is read: TEI's list of
  ``{index, score}`` or ``{"results": [{index, relevance_score}]}``; every index must come back exactly once.
  ``EMBEDDINGS_RERANK_API_KEY_ENV`` names the variable holding a bearer key (read per request, never stored or
  shown); ``EMBEDDINGS_RERANK_TIMEOUT`` (seconds, default 10), ``EMBEDDINGS_RERANK_RETRIES`` (attempts, default 2)
  and texts per request 32 (TEI's default ``max_client_batch_size``).
"""

from __future__ import annotations

import functools
import math
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .base import ProviderError
from .remote import display_url, server_detail, split_credentials
from .resilience import (
    CallStats,
    CircuitBreaker,
    ErrorKind,
    ProviderCallError,
    RetryPolicy,
    breaker_for,
    call_with_retries,
)  # fmt: skip

if TYPE_CHECKING:
    import httpx

HTTP_BATCH = 32


class Reranker(Protocol):
    name: str

    def rerank(self, query: str, texts: list[str]) -> list[float]:
        """One relevance score per text, in the order given (higher is more relevant)."""
        ...


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))  # no overflow either way


class CrossEncoderReranker:
    """A local cross-encoder folder, loaded offline on first use (``load()`` loads it now)."""

    def __init__(self, path: str | Path, *, device: str = "cpu", batch_size: int = 16) -> None:
        self.path = Path(path).expanduser()
        if not (self.path / "config.json").is_file():
            raise ProviderError(f"cross-encoder folder {str(path)!r} has no config.json; rerankers are loaded "
                                "offline from a local folder, never downloaded")  # fmt: skip
        self.name = f"cross-encoder:{self.path.resolve().name}"
        self.device, self.batch_size = device, batch_size
        self.stats = CallStats()
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                for var, value in (
                    ("HF_HUB_OFFLINE", "1"),
                    ("TRANSFORMERS_OFFLINE", "1"),
                    ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
                    ("TRANSFORMERS_VERBOSITY", "error"),
                ):
                    os.environ.setdefault(var, value)  # fmt: skip
                import torch
                from sentence_transformers import CrossEncoder

                model = CrossEncoder(str(self.path), device=self.device, local_files_only=True,
                                     activation_fn=torch.nn.Identity())  # fmt: skip
                if model.num_labels not in (1, 2):
                    raise ProviderError(f"{self.name} has {model.num_labels} labels; a reranker has one relevance "
                                        "logit (or two classes, label 1 relevant)")  # fmt: skip
                self._model = model
        return self._model

    def load(self) -> None:
        self._load()

    def logits(self, query: str, texts: list[str]) -> Any:
        """The model's raw logits for each (query, text) pair: shape (n,) for one label, (n, 2) for two."""
        import numpy as np
        import torch

        model = self._load()
        self.stats.calls += 1
        out = model.predict([(query, t) for t in texts], batch_size=self.batch_size, show_progress_bar=False,
                            activation_fn=torch.nn.Identity(), convert_to_numpy=True)  # fmt: skip
        return np.asarray(out, dtype=np.float64)

    def rerank(self, query: str, texts: list[str]) -> list[float]:
        import numpy as np

        if not texts:
            return []
        logits = self.logits(query, texts)
        if logits.ndim == 1:
            return [_sigmoid(float(x)) for x in logits]
        e = np.exp(logits - logits.max(axis=1, keepdims=True))  # two labels: softmax, the probability of label 1
        return [float(p) for p in (e / e.sum(axis=1, keepdims=True))[:, 1]]


class HttpReranker:
    """A ``/rerank`` endpoint (TEI, Infinity, Jina, Cohere-compatible) through httpx and the resilience layer."""

    def __init__(
        self,
        url: str,
        *,
        model: str | None = None,
        api_key_env: str | None = None,
        timeout: float = 10.0,
        policy: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        batch_size: int = HTTP_BATCH,
    ) -> None:
        url, self._url_auth = split_credentials(url.rstrip("/"))
        self.url = url if url.rsplit("?", 1)[0].endswith("rerank") else f"{url}/rerank"
        self.display_url = display_url(self.url)
        self.model, self.api_key_env, self.timeout, self.batch_size = model or None, api_key_env, timeout, batch_size
        self.name = f"http:{self.display_url}" + (f" ({self.model})" if self.model else "")
        self.policy = policy or RetryPolicy(attempts=2, base_delay=0.2, max_delay=1.0, max_retry_after=2.0)
        self.breaker = breaker or breaker_for(f"rerank {self.display_url}")
        self.stats = CallStats()

    def __repr__(self) -> str:
        return f"HttpReranker(url={self.display_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r})"

    @functools.cached_property
    def client(self) -> httpx.Client:
        import httpx

        auth = httpx.BasicAuth(*self._url_auth) if self._url_auth else None
        return httpx.Client(timeout=self.timeout, headers={"User-Agent": "embeddings-pipeline"}, auth=auth)

    def _fatal(self, what: str) -> ProviderCallError:
        return ProviderCallError(f"reranker {self.display_url}: {what}", kind=ErrorKind.FATAL)

    def _headers(self) -> dict[str, str]:
        if not self.api_key_env:
            return {}
        key = os.environ.get(self.api_key_env, "").strip()
        if not key:
            raise self._fatal(f"environment variable {self.api_key_env} (the reranker's key) is not set")
        return {"Authorization": f"Bearer {key}"}

    def _body(self, query: str, texts: list[str]) -> dict[str, Any]:
        if self.model:
            return {"model": self.model, "query": query, "documents": texts, "top_n": len(texts),
                    "return_documents": False}  # fmt: skip
        return {"query": query, "texts": texts, "raw_scores": False}

    def _post(self, query: str, texts: list[str]) -> list[float]:
        headers, body = self._headers(), self._body(query, texts)

        def post() -> Any:
            response = self.client.post(self.url, json=body, headers=headers)
            response.raise_for_status()
            return response.json()

        secrets = tuple(v for v in (*headers.values(), *(self._url_auth or ())) if v)
        try:
            payload = call_with_retries(post, policy=self.policy, breaker=self.breaker, stats=self.stats,
                                        describe=f"reranker {self.display_url}: rerank {len(texts)} texts")  # fmt: skip
        except ProviderCallError as exc:
            detail = None if exc.status in (401, 403) else server_detail(exc, redact=secrets)
            error = ProviderCallError(f"{exc}: {detail}" if detail else str(exc), kind=exc.kind, status=exc.status)
        else:
            return self._scores(payload, len(texts))
        raise error  # outside the except block: no chained client exception (it repeats URLs and answers)

    def _scores(self, payload: Any, n: int) -> list[float]:
        items = payload.get("results") if isinstance(payload, dict) else payload
        if not isinstance(items, list):
            raise self._fatal("the answer is neither a list of {index, score} nor {results: [...]}")
        scores: dict[int, float] = {}
        for item in items:
            index = item.get("index") if isinstance(item, dict) else None
            score = item.get("relevance_score", item.get("score")) if isinstance(item, dict) else None
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < n or index in scores:
                raise self._fatal(f"the answer has a bad or repeated index {index!r} for {n} texts")
            if isinstance(score, bool) or not isinstance(score, int | float) or not math.isfinite(score):
                raise self._fatal(f"the answer's score for index {index} is not a finite number")
            scores[index] = float(score)
        if len(scores) != n:
            raise self._fatal(f"the answer scores {len(scores)} of {n} texts")
        return [scores[i] for i in range(n)]

    def rerank(self, query: str, texts: list[str]) -> list[float]:
        out: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            out += self._post(query, texts[start : start + self.batch_size])
        return out

    def close(self) -> None:
        client = self.__dict__.get("client")
        if client is not None:
            client.close()


def load_reranker(spec: str, env: Callable[[str], str | None] = os.environ.get) -> Reranker:
    """The reranker of ``spec`` (``cross-encoder:PATH``, ``http:URL`` or a bare ``http(s)://`` URL); the HTTP
    reranker's model, key variable, timeout and attempts come from ``env`` (EMBEDDINGS_RERANK_*)."""
    spec = spec.strip()
    kind, sep, rest = spec.partition(":")
    kind = kind.lower()
    if kind in ("http", "https") and rest.startswith("//"):
        kind, rest = "http", spec
    if kind == "cross-encoder" and rest.strip():
        return CrossEncoderReranker(rest.strip())
    if kind == "http" and rest.strip().lower().startswith(("http://", "https://")):
        try:
            timeout = float(env("EMBEDDINGS_RERANK_TIMEOUT") or 10)
            attempts = int(env("EMBEDDINGS_RERANK_RETRIES") or 2)
        except ValueError:
            raise ProviderError("EMBEDDINGS_RERANK_TIMEOUT and EMBEDDINGS_RERANK_RETRIES must be numbers") from None
        policy = RetryPolicy(attempts=max(1, attempts), base_delay=0.2, max_delay=1.0, max_retry_after=2.0)
        return HttpReranker(rest.strip(), model=env("EMBEDDINGS_RERANK_MODEL"), timeout=timeout, policy=policy,
                            api_key_env=env("EMBEDDINGS_RERANK_API_KEY_ENV"))  # fmt: skip
    shown = display_url(spec) if "//" in spec else spec.split(":", 1)[0]
    raise ProviderError(f"reranker spec {shown!r}: expected cross-encoder:PATH or http:URL")
