"""Model specs (`provider:name`) to provider instances, cached per process so a model loads once."""

from __future__ import annotations

import functools
import os

from .base import EmbeddingProvider, ProviderError
from .resilience import RetryPolicy

PROVIDERS = ("sentence-transformers", "ollama", "openai")


def parse_model_spec(spec: str) -> tuple[str, str]:
    """`sentence-transformers:all-MiniLM-L6-v2` -> (provider, name). A bare name means sentence-transformers."""
    provider, sep, name = spec.partition(":")
    if not sep:
        provider, name = "sentence-transformers", spec
    provider = provider.strip().lower()
    if provider not in PROVIDERS:
        raise ProviderError(f"unknown provider {provider!r} in model spec {spec!r}; expected one of {PROVIDERS}")
    if not name.strip():
        raise ProviderError(f"model spec {spec!r} names no model")
    return provider, name.strip()


def load_provider(
    spec: str, batch_size: int = 32, device: str = "cpu", key_env: str | None = None
) -> EmbeddingProvider:
    """The provider for `spec`; one instance per configuration in a process, so a local model loads once and a
    remote endpoint keeps one circuit breaker. Endpoints and retry settings come from the environment."""
    endpoint = tuple(os.environ.get(v, "") for v in _ENDPOINT_VARS)
    return _load(spec.strip(), int(batch_size), device, key_env or None, endpoint)


_ENDPOINT_VARS = ("OLLAMA_HOST", "OPENAI_BASE_URL", "EMBEDDINGS_RETRY_ATTEMPTS", "EMBEDDINGS_RETRY_BASE_DELAY")


def retry_policy() -> RetryPolicy:
    return RetryPolicy(
        attempts=int(os.environ.get("EMBEDDINGS_RETRY_ATTEMPTS", "6")),
        base_delay=float(os.environ.get("EMBEDDINGS_RETRY_BASE_DELAY", "0.5")),
    )


@functools.lru_cache(maxsize=32)
def _load(spec: str, batch_size: int, device: str, key_env: str | None, endpoint: tuple[str, ...]) -> EmbeddingProvider:
    provider, name = parse_model_spec(spec)
    if provider == "sentence-transformers":
        from .sentence_transformers import SentenceTransformerProvider

        return SentenceTransformerProvider(name, batch_size=batch_size, device=device)
    if provider == "ollama":
        from .ollama import OllamaProvider

        return OllamaProvider(name, policy=retry_policy())
    from .openai import OpenAICompatibleProvider

    return OpenAICompatibleProvider(name, api_key_env=key_env or "OPENAI_API_KEY", policy=retry_policy())
