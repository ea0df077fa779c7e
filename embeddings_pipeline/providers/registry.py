"""Model specs (`provider:name?options`) to provider instances, cached per process so a model loads once."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote

from .base import EmbeddingProvider, ProviderError
from .resilience import RetryPolicy

PROVIDERS = ("sentence-transformers", "ollama", "openai")


_OPTIONS = {
    "sentence-transformers": {"query_prefix", "passage_prefix"},
    "ollama": {"query_prefix", "passage_prefix", "max_tokens"},
    "openai": {"query_prefix", "passage_prefix", "max_tokens", "dimensions", "tokenizer"},
}
_INT_OPTIONS = {"max_tokens", "dimensions"}


@dataclass(frozen=True)
class ModelSpec:
    provider: str
    name: str
    options: dict[str, str | int] = field(default_factory=dict)


def parse_model_spec(spec: str) -> ModelSpec:
    """`provider:name[?option=value&...]`, e.g. `sentence-transformers:all-MiniLM-L6-v2`,
    `ollama:nomic-embed-text?query_prefix=search_query: &passage_prefix=search_document: `,
    `openai:text-embedding-3-small?dimensions=512`. A bare name means sentence-transformers. Prefixes and
    dimensions change the vectors, so they are part of the model identity (model_key). Option values are
    URL-decoded (`+` or `%20` for a space)."""
    body, _, query = spec.partition("?")
    provider, sep, name = body.partition(":")
    if not sep:
        provider, name = "sentence-transformers", body
    provider = provider.strip().lower()
    if provider not in PROVIDERS:
        raise ProviderError(f"unknown provider {provider!r} in model spec {spec!r}; expected one of {PROVIDERS}")
    if not name.strip():
        raise ProviderError(f"model spec {spec!r} names no model")
    options: dict[str, str | int] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in _OPTIONS[provider]:
            raise ProviderError(f"model spec {spec!r}: unknown option {key!r} for {provider} "
                                f"(known: {', '.join(sorted(_OPTIONS[provider]))})")  # fmt: skip
        if key in _INT_OPTIONS:
            if not value.isdigit() or int(value) < 1:
                raise ProviderError(f"model spec {spec!r}: {key} must be a positive integer")
            options[key] = int(value)
        else:
            options[key] = value
    return ModelSpec(provider, name.strip(), options)


def canonical_spec(spec: str) -> str:
    """One spelling per spec (provider named, options sorted), so equal specs compare equal."""
    parsed = parse_model_spec(spec)
    options = "&".join(f"{k}={quote(str(v))}" for k, v in sorted(parsed.options.items()))
    return f"{parsed.provider}:{parsed.name}" + (f"?{options}" if options else "")


def load_provider(
    spec: str, batch_size: int = 32, device: str = "cpu", key_env: str | None = None
) -> EmbeddingProvider:
    """The provider for `spec`; one instance per configuration in a process, so a local model loads once and a
    remote endpoint keeps one circuit breaker. Endpoints and retry settings come from the environment."""
    endpoint = tuple(os.environ.get(v, "") for v in _ENDPOINT_VARS)
    return _load(spec, int(batch_size), device, key_env or None, endpoint)


_ENDPOINT_VARS = ("OLLAMA_HOST", "OPENAI_BASE_URL", "EMBEDDINGS_RETRY_ATTEMPTS", "EMBEDDINGS_RETRY_BASE_DELAY")


def retry_policy() -> RetryPolicy:
    return RetryPolicy(
        attempts=int(os.environ.get("EMBEDDINGS_RETRY_ATTEMPTS", "6")),
        base_delay=float(os.environ.get("EMBEDDINGS_RETRY_BASE_DELAY", "0.5")),
    )


def _text_option(options: dict[str, str | int], key: str) -> str:
    return str(options.get(key, ""))


def _int_option(options: dict[str, str | int], key: str) -> int | None:
    value = options.get(key)
    return None if value is None else int(value)  # parse_model_spec made it a positive int


@functools.lru_cache(maxsize=32)
def _load(spec: str, batch_size: int, device: str, key_env: str | None, endpoint: tuple[str, ...]) -> EmbeddingProvider:
    """The provider, with ``spec`` recorded on it (with the identity, to reload this model later)."""
    parsed = parse_model_spec(spec)
    opts = parsed.options
    query_prefix, passage_prefix = _text_option(opts, "query_prefix"), _text_option(opts, "passage_prefix")
    if parsed.provider == "sentence-transformers":
        from .sentence_transformers import SentenceTransformerProvider

        return SentenceTransformerProvider(
            parsed.name,
            batch_size=batch_size,
            device=device,
            query_prefix=query_prefix,
            passage_prefix=passage_prefix,
            spec=spec,
        )
    if parsed.provider == "ollama":
        from .ollama import OllamaProvider

        return OllamaProvider(
            parsed.name,
            max_tokens=_int_option(opts, "max_tokens"),
            query_prefix=query_prefix,
            passage_prefix=passage_prefix,
            policy=retry_policy(),
            spec=spec,
        )
    from .openai import DEFAULT_MAX_TOKENS, OpenAICompatibleProvider

    return OpenAICompatibleProvider(
        parsed.name,
        api_key_env=key_env or "OPENAI_API_KEY",
        dimensions=_int_option(opts, "dimensions"),
        max_tokens=_int_option(opts, "max_tokens") or DEFAULT_MAX_TOKENS,
        query_prefix=query_prefix,
        passage_prefix=passage_prefix,
        policy=retry_policy(),
        spec=spec,
        tokenizer=_text_option(opts, "tokenizer") or None,
    )
