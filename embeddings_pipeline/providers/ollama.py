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
import ipaddress
import json
import os
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np

from .base import ModelIdentity, spec_for
from .remote import RemoteProvider, display_url
from .remote import server_detail as server_detail  # re-exported: these helpers used to live here
from .remote import with_detail as with_detail
from .resilience import CircuitBreaker, RetryPolicy, breaker_for

if TYPE_CHECKING:
    import ollama

DEFAULT_HOST = "http://localhost:11434"
DEFAULT_PORT = 11434
DEFAULT_MAX_TOKENS = 512
PROBE_TEXT = "dimension probe"


def normalize_host(host: str | None) -> str:
    """``localhost:11434`` / ``http://h`` / ``h:1234/path`` -> the URL the ollama client will use, by the client's
    own rules (so the breaker key and messages name its real target): scheme http when none is given, host
    127.0.0.1 when empty, port 11434 without a scheme, 80 for ``http://`` and 443 for ``https://`` when none is
    given, brackets around an IPv6 address, the path kept without its slashes at either end, user info dropped.
    A value those rules cannot parse (a port that is not a number) is kept, less a trailing slash."""
    raw = host or ""
    try:
        scheme, _, hostport = raw.partition("://")
        port = DEFAULT_PORT
        if not hostport:
            scheme, hostport = "http", raw
        elif scheme == "http":
            port = 80
        elif scheme == "https":
            port = 443
        parts = urlsplit(f"{scheme}://{hostport}")
        name = parts.hostname or "127.0.0.1"
        port = parts.port or port
    except ValueError:
        return raw.rstrip("/")
    try:
        if isinstance(ipaddress.ip_address(name), ipaddress.IPv6Address):
            name = f"[{name}]"
    except ValueError:
        pass  # a host name
    path = parts.path.strip("/")
    return f"{scheme}://{name}:{port}" + (f"/{path}" if path else "")


class OllamaProvider(RemoteProvider):
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
        spec: str | None = None,
    ) -> None:
        """``host`` defaults to ``$OLLAMA_HOST``, then ``http://localhost:11434``; ``max_tokens`` to the model's
        context length (see the module's docstring); ``spec`` (the model spec it was loaded from) to one made of
        the name and the options given."""
        spec = spec or spec_for(
            "ollama",
            name,
            {"max_tokens": max_tokens, "query_prefix": query_prefix, "passage_prefix": passage_prefix},
        )
        super().__init__(name, batch_size, timeout, query_prefix, passage_prefix, policy, spec)
        self.host = normalize_host(host or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST)
        self.display_host = display_url(self.host)
        self.max_tokens = max_tokens
        self.breaker = breaker or breaker_for(f"ollama {self.display_host}")
        self.model_record: dict[str, Any] = {}  # architecture, context_length, embedding_length, digest

    def __repr__(self) -> str:
        return f"OllamaProvider(name={self.name!r}, host={self.display_host!r}, batch_size={self.batch_size})"

    @functools.cached_property
    def client(self) -> ollama.Client:
        import ollama

        return ollama.Client(host=self.host, timeout=self.timeout)

    # ------------------------------------------------------------------ identity

    def _describe(self, what: str) -> str:
        return f"ollama model {self.name!r} at {self.display_host}: {what}"

    def _resolve_identity(self) -> ModelIdentity:
        """From ``/api/tags``, ``/api/show`` and one probe embedding."""
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
        self._check_probe(probe.embeddings)
        vector = np.asarray(probe.embeddings[0], dtype=np.float32)
        dims = int(vector.shape[0])
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
                functools.partial(self.client.embed, model=self.name, input=batch),
                f"embed {len(batch)} texts (/api/embed)",
            )
            out[start : start + len(batch)] = self._check(response.embeddings, len(batch), dims)
        return out
