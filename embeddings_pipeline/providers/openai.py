"""Any OpenAI-compatible ``/v1/embeddings`` endpoint (OpenAI, Gemini's compatible endpoint, vLLM, TEI, LiteLLM)
through httpx.

The API key is never held by the provider: ``api_key_env`` is the NAME of the environment variable that holds it
(the tenant's credential reference), read from ``os.environ`` on every request. The key is not in ``repr``, not
logged, and not in exception messages (servers' 401/403 messages, which may echo a masked key, are not forwarded;
other server messages are forwarded with the key redacted). User info in the base URL (``http://user:pass@host``)
is sent as basic auth, exactly as httpx would send it, but kept out of every URL the client builds, so it is in no
error, log line or breaker name either; errors carry no chained client exception (see ``RemoteProvider._call``).

Identity assumptions, since a remote API publishes no weights digest:

- ``revision`` is ``<host of base_url>/<model>`` (plus ``@<dimensions>d`` when ``dimensions`` is requested): the
  same model name at another endpoint is another model, but a provider silently updating the weights behind a
  name is not detected.
- ``dims`` is ``dimensions`` when given, else discovered from one short probe embedding; every response is checked.
- ``normalized`` is True: OpenAI's embeddings (and most compatible servers') are L2-normalized.
- ``max_tokens`` is the constructor's (8191 for OpenAI's models); the tokenizer is the approximate
  ``WhitespaceTokenizer``, so leave a margin.

Batches are bounded by item count (``batch_size``) and by an estimated token budget (``max_batch_tokens``, with
``ceil(1.3 * whitespace tokens)`` per text). A batch the server rejects for size (413) raises ``ProviderCallError``
with kind ``TOO_LARGE``: the caller splits it; the provider does not.
"""

from __future__ import annotations

import base64
import functools
import math
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np

from ..text.tokens import HuggingFaceTokenizer, Tokenizer, WhitespaceTokenizer
from .base import ModelIdentity, spec_for
from .remote import RemoteProvider, credential_forms, display_url, split_credentials
from .resilience import CircuitBreaker, ErrorKind, ProviderCallError, RetryPolicy, breaker_for

if TYPE_CHECKING:
    import httpx

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MAX_TOKENS = 8191  # OpenAI's embedding models
TOKENS_PER_WORD = 1.3
PROBE_TEXT = "dimension probe"


def estimate_tokens(text: str) -> int:
    """A rough token estimate for budgets: 1.3 per whitespace-separated word, at least 1."""
    return max(1, math.ceil(len(text.split()) * TOKENS_PER_WORD))


class OpenAICompatibleProvider(RemoteProvider):
    """An embedding model behind an OpenAI-compatible ``/embeddings`` endpoint (``openai:text-embedding-3-small``)."""

    def __init__(
        self,
        name: str,
        *,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        dimensions: int | None = None,
        batch_size: int = 64,
        max_batch_tokens: int = 8000,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        timeout: float = 60.0,
        query_prefix: str = "",
        passage_prefix: str = "",
        policy: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
        spec: str | None = None,
        tokenizer: str | None = None,
    ) -> None:
        """``base_url`` defaults to ``$OPENAI_BASE_URL``, then OpenAI's; ``api_key_env`` names the key's variable;
        ``spec`` (the model spec it was loaded from) defaults to one made of the name and the options given;
        ``tokenizer`` (the bundled model's name or a local model folder) counts tokens exactly with that model's
        ``tokenizer.json`` instead of the approximate whitespace count (e.g. a server running that very model)."""
        spec = spec or spec_for(
            "openai",
            name,
            {
                "dimensions": dimensions,
                "max_tokens": None if max_tokens == DEFAULT_MAX_TOKENS else max_tokens,
                "query_prefix": query_prefix,
                "passage_prefix": passage_prefix,
                "tokenizer": tokenizer,
            },
        )
        super().__init__(name, batch_size, timeout, query_prefix, passage_prefix, policy, spec)
        if dimensions is not None and dimensions < 1:
            raise ValueError(f"dimensions must be >= 1, got {dimensions}")
        # user info in the URL (a gateway's basic auth) is taken out of it and sent as httpx would have sent it,
        # so no request URL, and so no client error or log line, carries the credential
        self.base_url, self._url_auth = split_credentials(
            (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        )
        self.display_url = display_url(self.base_url)
        self.api_key_env = api_key_env
        self.dimensions = dimensions
        self.max_batch_tokens = max_batch_tokens
        self.max_tokens = max_tokens
        self.breaker = breaker or breaker_for(f"openai {self.display_url}")
        self.prompt_tokens = 0  # as reported by the server's `usage`
        self._loaded = False
        self.tokenizer_name = tokenizer

    @functools.cached_property
    def tokenizer(self) -> Tokenizer:  # type: ignore[override]
        if not self.tokenizer_name:
            return WhitespaceTokenizer()
        from .sentence_transformers import resolve_model_dir

        return HuggingFaceTokenizer(resolve_model_dir(self.tokenizer_name) / "tokenizer.json")

    def __repr__(self) -> str:
        return (
            f"OpenAICompatibleProvider(name={self.name!r}, base_url={self.display_url!r}, "
            f"api_key_env={self.api_key_env!r}, dimensions={self.dimensions!r}, batch_size={self.batch_size})"
        )

    @functools.cached_property
    def client(self) -> httpx.Client:
        import httpx

        auth = httpx.BasicAuth(*self._url_auth) if self._url_auth else None
        return httpx.Client(timeout=self.timeout, headers={"User-Agent": "embeddings-pipeline"}, auth=auth)

    # ------------------------------------------------------------------ identity

    def load(self) -> None:
        """Resolve the identity and make one probe request, so a missing key, a wrong key or an unreachable
        endpoint fails before any work starts."""
        if self._loaded:
            return
        if self.dimensions is None:
            _ = self.identity  # the probe is the check
        else:
            vectors = self._request([PROBE_TEXT], "probe embedding")
            self._check(vectors, 1, self.identity.dims)
        self._loaded = True

    def _resolve_identity(self) -> ModelIdentity:
        """Built from the options; needs one probe request only when ``dimensions`` is not given."""
        parts = urlsplit(self.base_url)
        host = parts.hostname or "unknown-host"
        if parts.port:
            host = f"{host}:{parts.port}"
        revision = f"{host}/{self.name}" + (f"@{self.dimensions}d" if self.dimensions else "")
        dims = self.dimensions
        if dims is None:
            vectors = self._request([PROBE_TEXT], "probe embedding")
            self._check_probe(vectors)
            dims = len(vectors[0])
        return ModelIdentity(
            provider="openai",
            name=self.name,
            revision=revision,
            dims=int(dims),
            normalized=True,
            max_tokens=int(self.max_tokens),
            query_prefix=self.query_prefix,
            passage_prefix=self.passage_prefix,
        )

    # ------------------------------------------------------------------ calls

    def _describe(self, what: str) -> str:
        return f"openai model {self.name!r} at {self.display_url}: {what}"

    def _key(self) -> str:
        key = os.environ.get(self.api_key_env, "").strip()
        if not key:
            raise ProviderCallError(
                self._describe(
                    f"environment variable {self.api_key_env} (named by the tenant's credential reference) is not set"
                ),
                kind=ErrorKind.FATAL,
            )
        return key

    def _call_error(self, exc: ProviderCallError, redact: tuple[str, ...]) -> ProviderCallError:
        if exc.status in (401, 403):  # servers echo (masked) keys here: never forward their message
            return ProviderCallError(
                f"{exc}: the API key in environment variable {self.api_key_env} was refused",
                kind=exc.kind,
                status=exc.status,
            )
        return super()._call_error(exc, redact)

    def _request(self, inputs: list[str], what: str) -> list[Any]:
        """POST one batch; returns the embeddings in input order (unchecked dimensions)."""
        key = self._key()
        body: dict[str, Any] = {"model": self.name, "input": inputs}
        if self.dimensions is not None:
            body["dimensions"] = self.dimensions
        url = f"{self.base_url}/embeddings"

        def post() -> Any:
            response = self.client.post(url, json=body, headers={"Authorization": f"Bearer {self._key()}"})
            response.raise_for_status()
            return response.json()  # malformed JSON raises JSONDecodeError: transient, retried

        payload = self._call(post, what, redact=(key, *(credential_forms(*self._url_auth) if self._url_auth else ())))
        data = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(data, list):
            raise self._fatal(f"{what}: the response has no `data` list")
        if len(data) != len(inputs):
            raise self._fatal(f"{what}: returned {len(data)} embeddings for {len(inputs)} inputs")
        try:
            items = sorted(data, key=lambda item: int(item["index"]))
        except (KeyError, TypeError, ValueError):
            raise self._fatal(f"{what}: the response's `data` items lack a valid `index`") from None
        if [int(item["index"]) for item in items] != list(range(len(inputs))):
            raise self._fatal(f"{what}: the response's indices are not 0..{len(inputs) - 1}")
        usage = payload.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
            self.prompt_tokens += usage["prompt_tokens"]
        return [_decode(item.get("embedding")) for item in items]

    def batches(self, inputs: list[str]) -> Iterator[tuple[int, int]]:
        """``(start, end)`` ranges of ``inputs``: at most ``batch_size`` items and ``max_batch_tokens`` estimated
        tokens each (a single text over the budget goes alone)."""
        start, budget = 0, 0
        for i, text in enumerate(inputs):
            cost = estimate_tokens(text)
            if i > start and (i - start >= self.batch_size or budget + cost > self.max_batch_tokens):
                yield start, i
                start, budget = i, 0
            budget += cost
        if start < len(inputs):
            yield start, len(inputs)

    def _embed(self, inputs: list[str]) -> np.ndarray:
        dims = self.identity.dims
        out = np.empty((len(inputs), dims), dtype=np.float32)
        for start, end in self.batches(inputs):
            batch = inputs[start:end]
            vectors = self._request(batch, f"embed {len(batch)} texts (/embeddings)")
            out[start:end] = self._check(vectors, len(batch), dims)
        return out


def _decode(embedding: Any) -> Any:
    """A list of floats, or the base64 float32 form some servers answer with."""
    if isinstance(embedding, str):
        try:
            return np.frombuffer(base64.b64decode(embedding), dtype="<f4").tolist()
        except (ValueError, TypeError):
            return None
    return embedding
