"""What the HTTP embedding providers (Ollama, OpenAI-compatible) share: ``RemoteProvider`` and message helpers.

``RemoteProvider`` holds the common options, the approximate tokenizer, the lazily resolved and cached identity,
calls through the resilience layer (retries, circuit breaker, server detail in errors) and the checks every
response passes before anything is returned. Subclasses supply the client, ``_resolve_identity``, the requests and
batching (``_embed``) and ``_describe``.
"""

from __future__ import annotations

import base64
import functools
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import numpy as np

from ..retry import causes
from ..text.tokens import WhitespaceTokenizer
from .base import ModelIdentity
from .resilience import (
    CallStats,
    CircuitBreaker,
    ErrorKind,
    ProviderCallError,
    RetryPolicy,
    call_with_retries,
    provider_counters,
)

T = TypeVar("T")


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


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """``url`` without its user info, and the (user, password) it held (percent-decoded, as httpx reads them), so
    the credential travels as an auth setting and never inside a URL that errors and logs repeat."""
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
        if "@" not in parts.netloc:
            return url, None
        user, password = unquote(parts.username or ""), unquote(parts.password or "")
    except ValueError:
        return url, None
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment)), (user, password)


def credential_forms(user: str, password: str) -> tuple[str, ...]:
    """Every spelling of a URL credential that a server or gateway might echo back: the parts, ``user:password``
    and the Basic token httpx sends for it."""
    pair = f"{user}:{password}"
    token = base64.b64encode(pair.encode("utf-8")).decode("ascii")
    return tuple(s for s in (token, pair, password, user) if s)


_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]*@")
_AUTH_VALUE = re.compile(r"\b((?i:bearer)|Basic)\s+[A-Za-z0-9._~+/=-]{12,}")


def redact_text(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with each of ``secrets``, any URL's user info and any Authorization-style value removed."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):  # a longer form before its parts
        text = text.replace(secret, "[redacted]")
    text = _USERINFO.sub(r"\1[redacted]@", text)
    return _AUTH_VALUE.sub(r"\1 [redacted]", text)


def server_detail(exc: BaseException, redact: tuple[str, ...] = ()) -> str | None:
    """A short, credential-free description of what the server or transport said, from ``exc``'s chain."""
    import httpx

    detail: str | None = None
    for e in causes(exc):
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
    if not detail:
        return None
    detail = " ".join(redact_text(detail, redact).split())
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
    """``exc`` with ``: detail`` appended to its message (``exc`` itself when there is no detail)."""
    if not detail:
        return exc
    return ProviderCallError(f"{exc}: {detail}", kind=exc.kind, status=exc.status, retry_after=exc.retry_after)


class RemoteProvider(ABC):
    """Base of the providers that embed through an HTTP server. Subclasses set ``breaker`` in their constructor."""

    breaker: CircuitBreaker

    def __init__(
        self,
        name: str,
        batch_size: int,
        timeout: float,
        query_prefix: str,
        passage_prefix: str,
        policy: RetryPolicy | None,
        spec: str,
    ) -> None:
        """The options every remote provider has; ``policy`` defaults to ``RetryPolicy()``; ``spec`` is the model
        spec this provider was loaded from."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.spec = spec
        self.name = name
        self.batch_size = batch_size
        self.timeout = timeout
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.policy = policy or RetryPolicy()
        self.stats = CallStats()
        self._identity: ModelIdentity | None = None
        self._lock = threading.Lock()

    @functools.cached_property
    def tokenizer(self) -> WhitespaceTokenizer:
        return WhitespaceTokenizer()

    def counters(self) -> dict[str, int]:
        """Calls, retries, rate limits, transient errors, circuit rejections, and how often the circuit opened."""
        return provider_counters(self.stats, self.breaker)

    # ------------------------------------------------------------------ identity

    @property
    def identity(self) -> ModelIdentity:
        """Resolved on first use (see ``_resolve_identity``), then cached."""
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

    @abstractmethod
    def _resolve_identity(self) -> ModelIdentity:
        """Ask the server what the model is (called once, under the lock)."""

    # ------------------------------------------------------------------ calls and checks

    @abstractmethod
    def _describe(self, what: str) -> str:
        """``what`` prefixed with the provider, model and endpoint, for messages."""

    def _call(self, fn: Callable[[], T], what: str, *, redact: tuple[str, ...] = ()) -> T:
        """``fn()`` with retries and the circuit breaker; a failure names ``what`` and what the server said.

        The error raised has no cause and no context: the client's own exceptions repeat the request URL (and
        whatever a server answered), which must reach no log, event or table. Its message, kind and status say
        what happened."""
        try:
            return call_with_retries(
                fn, policy=self.policy, breaker=self.breaker, stats=self.stats, describe=self._describe(what)
            )
        except ProviderCallError as exc:
            error = self._call_error(exc, redact)
        error.__cause__ = error.__context__ = None
        raise error  # outside the except block, so Python chains nothing to it

    def _call_error(self, exc: ProviderCallError, redact: tuple[str, ...]) -> ProviderCallError:
        """The error ``_call`` raises for ``exc``: with the server's detail, ``redact`` values removed."""
        return with_detail(exc, server_detail(exc, redact=redact))

    def _fatal(self, message: str) -> ProviderCallError:
        return ProviderCallError(self._describe(message), kind=ErrorKind.FATAL)

    def _check_probe(self, vectors: Sequence[Any]) -> None:
        """The probe embedding answered exactly one non-empty vector."""
        if len(vectors) != 1:
            raise self._fatal(f"the probe embedding returned {len(vectors)} vectors for 1 input")
        if len(vectors[0]) == 0:
            raise self._fatal("the probe embedding returned an empty vector")

    def _check(self, vectors: Sequence[Any], expected_count: int, dims: int) -> np.ndarray:
        """``vectors`` as a float32 block, once the count, each dimension and every value are right."""
        if len(vectors) != expected_count:
            raise self._fatal(f"returned {len(vectors)} embeddings for {expected_count} inputs")
        for vector in vectors:
            if not isinstance(vector, list | tuple):
                raise self._fatal("returned an item without an `embedding` list")
            if len(vector) != dims:
                raise self._fatal(f"returned {len(vector)} dimensions, expected {dims}")
        try:
            block = np.asarray(vectors, dtype=np.float32).reshape(expected_count, dims)
        except (TypeError, ValueError):
            raise self._fatal("returned embeddings that are not numbers") from None
        if not np.isfinite(block).all():
            raise self._fatal("returned non-finite values (NaN or infinity)")
        return block

    # ------------------------------------------------------------------ embedding

    @abstractmethod
    def _embed(self, inputs: list[str]) -> np.ndarray:
        """One row per input, in order, checked."""

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        prefix = self.passage_prefix
        return self._embed([prefix + t for t in texts] if prefix else list(texts))

    def embed_query(self, text: str) -> np.ndarray:
        return self._embed([self.query_prefix + text])[0]

    def close(self) -> None:
        """Close the client, if one was ever made (``client`` is a cached property of the subclasses)."""
        client = self.__dict__.get("client")
        if client is not None:
            client.close()
