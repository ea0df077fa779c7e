"""Ollama embedding models through the official ``ollama`` client: ``/api/embed`` with batched input.

Nothing touches the network until the identity is needed (``load()``, ``identity`` or the first embedding call).
The identity is resolved then:

- ``revision``: the model's digest from ``GET /api/tags`` (``name`` or ``name:latest``), so pulling a new version of
  the same tag is a model change. A model that ``/api/tags`` does not list (a remote or proxied one) falls back to
  ``show-<sha256 of the /api/show record>``, which changes when the model record does, not necessarily when the
  weights do.
- ``dims``: discovered from one short probe embedding and checked against ``<arch>.embedding_length`` of
  ``POST /api/show`` when the record has one.
- ``max_tokens``: explicit, else ``<arch>.context_length`` from ``/api/show``, else 512. The tokenizer is the
  approximate ``WhitespaceTokenizer`` (Ollama does not expose the model's), which undercounts subword tokens: pass
  a smaller ``max_tokens`` when chunks must never be truncated by the server (Ollama truncates overlong input).
- ``normalized``: whether the probe vector has unit length (``/api/embed`` returns L2-normalized vectors; the
  probe confirms it for the model at hand).

Every call goes through the shared resilience layer (retries with backoff, Retry-After, one circuit breaker per
endpoint). Errors name the provider, model, host and HTTP status; a response with a wrong count or dimension is
rejected before anything is returned.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from ..text.tokens import WhitespaceTokenizer
from .base import ModelIdentity
from .resilience import (
    CallStats,
    CircuitBreaker,
    ErrorKind,
    ProviderCallError,
    RetryPolicy,
    breaker_for,
    call_with_retries,
)

if TYPE_CHECKING:
    import ollama

T = TypeVar("T")

DEFAULT_HOST = "http://localhost:11434"
DEFAULT_MAX_TOKENS = 512
PROBE_TEXT = "dimension probe"


def _normalize_host(host: str) -> str:
    """``localhost:11434`` / ``http://h`` / ``h:1234/path`` -> the URL the ollama client will use."""
    try:
        from ollama._client import _parse_host  # the client's own rule, so the breaker key matches its target

        return _parse_host(host)
    except Exception:  # a private helper: fall back to the raw value
        return host.rstrip("/")


def display_url(url: str) -> str:
    """``url`` without user info, query or fragment: safe to show in messages, logs and breaker names."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    netloc = parts.hostname or ""
    if ":" in netloc:  # IPv6
        netloc = f"[{netloc}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port:
        netloc = f"{netloc}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def server_detail(exc: BaseException, redact: tuple[str, ...] = ()) -> str | None:
    """A short, credential-free description of what the server or transport said, from ``exc``'s chain."""
    import httpx

    seen: set[int] = set()
    e: BaseException | None = exc
    detail: str | None = None
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        error = getattr(e, "error", None)  # ollama.ResponseError: the server's {"error": ...}
        if isinstance(error, str) and getattr(e, "status_code", None) is not None:
            detail = error
            break
        if isinstance(e, httpx.HTTPStatusError):
            detail = _error_message(e.response)
            break
        if isinstance(e, httpx.TransportError | ConnectionError | TimeoutError | OSError):
            detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            break
        e = e.__cause__ or e.__context__
    if not detail:
        return None
    for secret in redact:
        if secret:
            detail = detail.replace(secret, "[redacted]")
    detail = " ".join(detail.split())
    return detail[:300] + ("..." if len(detail) > 300 else "")


def _error_message(response: Any) -> str | None:
    try:
        payload = response.json()
    except Exception:
        return None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        error = error.get("message")
    return error if isinstance(error, str) else None


def with_detail(exc: ProviderCallError, detail: str | None) -> ProviderCallError:
    if not detail:
        return exc
    return ProviderCallError(f"{exc}: {detail}", kind=exc.kind, status=exc.status, retry_after=exc.retry_after)


class OllamaProvider:
    """An embedding model served by Ollama (``ollama:nomic-embed-text``)."""

    def __init__(
        self,
        name: str,
        *,
        host: str | None = None,
        batch_size: int = 64,
        timeout: float = 60.0,
        max_tokens: int | None = None,
        query_prefix: str = "",
        passage_prefix: str = "",
        policy: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.name = name
        self.host = _normalize_host(host or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST)
        self.display_host = display_url(self.host)
        self.batch_size = batch_size
        self.timeout = timeout
        self.max_tokens = max_tokens
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.policy = policy or RetryPolicy()
        self.breaker = breaker or breaker_for(f"ollama {self.display_host}")
        self.stats = CallStats()
        self.model_record: dict[str, Any] = {}  # architecture, context_length, embedding_length, digest
        self._identity: ModelIdentity | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OllamaProvider(name={self.name!r}, host={self.display_host!r}, batch_size={self.batch_size})"

    @functools.cached_property
    def client(self) -> ollama.Client:
        import ollama

        return ollama.Client(host=self.host, timeout=self.timeout)

    @functools.cached_property
    def tokenizer(self) -> WhitespaceTokenizer:
        return WhitespaceTokenizer()

    # ------------------------------------------------------------------ identity

    @property
    def identity(self) -> ModelIdentity:
        """Resolved on first use (tags, show and one probe embedding), then cached."""
        identity = self._identity
        if identity is None:
            with self._lock:
                if self._identity is None:
                    self._identity = self._resolve_identity()
                identity = self._identity
        return identity

    def load(self) -> None:
        """Resolve the identity now, so an unreachable server or a missing model fails before any work starts."""
        _ = self.identity

    def _describe(self, what: str) -> str:
        return f"ollama model {self.name!r} at {self.display_host}: {what}"

    def _call(self, fn: Callable[[], T], what: str) -> T:
        try:
            return call_with_retries(
                fn, policy=self.policy, breaker=self.breaker, stats=self.stats, describe=self._describe(what)
            )
        except ProviderCallError as exc:
            raise with_detail(exc, server_detail(exc)) from exc

    def _fatal(self, message: str) -> ProviderCallError:
        return ProviderCallError(self._describe(message), kind=ErrorKind.FATAL)

    def _resolve_identity(self) -> ModelIdentity:
        tags = self._call(self.client.list, "list models (/api/tags)")
        candidates = {self.name, self.name if ":" in self.name else f"{self.name}:latest"}
        if self.name.endswith(":latest"):
            candidates.add(self.name.removesuffix(":latest"))
        digest = next((m.digest for m in tags.models if m.model in candidates and m.digest), None)

        show = self._call(lambda: self.client.show(self.name), "show model (/api/show)")
        info = dict(show.modelinfo or {})
        arch = info.get("general.architecture")
        context_length = info.get(f"{arch}.context_length") if arch else None
        embedding_length = info.get(f"{arch}.embedding_length") if arch else None
        if digest is None:
            record = show.model_dump(mode="json", exclude={"modified_at"})
            blob = json.dumps(record, sort_keys=True, default=str).encode()
            digest = "show-" + hashlib.sha256(blob).hexdigest()[:16]

        probe = self._call(lambda: self.client.embed(model=self.name, input=[PROBE_TEXT]), "probe embedding")
        if len(probe.embeddings) != 1:
            raise self._fatal(f"the probe embedding returned {len(probe.embeddings)} vectors for 1 input")
        vector = np.asarray(probe.embeddings[0], dtype=np.float32)
        dims = int(vector.shape[0])
        if dims == 0:
            raise self._fatal("the probe embedding returned an empty vector")
        if isinstance(embedding_length, int) and embedding_length != dims:
            raise self._fatal(
                f"returned {dims} dimensions, expected {embedding_length} (the model record's embedding_length)"
            )
        self.model_record = {
            "architecture": arch,
            "context_length": context_length,
            "embedding_length": embedding_length,
            "digest": digest,
        }
        return ModelIdentity(
            provider="ollama",
            name=self.name,
            revision=digest,
            dims=dims,
            normalized=bool(np.isfinite(vector).all() and abs(float(np.linalg.norm(vector)) - 1.0) < 1e-3),
            max_tokens=int(self.max_tokens or context_length or DEFAULT_MAX_TOKENS),
            query_prefix=self.query_prefix,
            passage_prefix=self.passage_prefix,
        )

    # ------------------------------------------------------------------ embedding

    def _embed(self, inputs: list[str]) -> np.ndarray:
        dims = self.identity.dims
        out = np.empty((len(inputs), dims), dtype=np.float32)
        for start in range(0, len(inputs), self.batch_size):
            batch = inputs[start : start + self.batch_size]
            response = self._call(
                lambda batch=batch: self.client.embed(model=self.name, input=batch),
                f"embed {len(batch)} texts (/api/embed)",
            )
            vectors = response.embeddings
            if len(vectors) != len(batch):
                raise self._fatal(f"returned {len(vectors)} embeddings for {len(batch)} inputs")
            for vector in vectors:
                if len(vector) != dims:
                    raise self._fatal(f"returned {len(vector)} dimensions, expected {dims}")
            block = np.asarray(vectors, dtype=np.float32)
            if not np.isfinite(block).all():
                raise self._fatal("returned non-finite values (NaN or infinity)")
            out[start : start + len(batch)] = block
        return out

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        prefix = self.passage_prefix
        return self._embed([prefix + t for t in texts] if prefix else list(texts))

    def embed_query(self, text: str) -> np.ndarray:
        return self._embed([self.query_prefix + text])[0]

    def close(self) -> None:
        if "client" in self.__dict__:
            self.client.close()
