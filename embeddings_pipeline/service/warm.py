"""Providers the service keeps warm: loaded on first use per (model spec, key reference), kept for the process.

Which model a tenant searches or embeds with is still `pipeline.model_change`'s answer, asked on every request
(one small read of the tenant's settings), so a model switch takes effect at once; only the loading is cached.
Search gets each provider with its queries batched across concurrent requests (`batching.py`).
"""

from __future__ import annotations

import threading

import psycopg

from ..pipeline.model_change import ProviderLoader, default_loader, embedding_provider, search_provider
from ..providers import EmbeddingProvider, ProviderError
from ..store.scope import Scope
from ..store.tenants import TenantSettings
from .batching import BatchedQueries, QueryBatcher
from .model_thread import pin_provider


class WarmProviders:
    """Providers by (model spec, key reference), loaded on first use and kept for the life of the process."""

    def __init__(self, load: ProviderLoader = default_loader) -> None:
        self._load = load
        self._by_spec: dict[tuple[str | None, str | None], EmbeddingProvider] = {}
        self._by_key: dict[str, EmbeddingProvider] = {}
        self._batchers: dict[int, tuple[EmbeddingProvider, QueryBatcher]] = {}  # id(provider): providers are kept
        self._lock = threading.Lock()

    def load(self, spec: str | None, key_env: str | None) -> EmbeddingProvider:
        with self._lock:
            found = self._by_spec.get((spec, key_env))
        if found is None:
            found = pin_provider(self._load(spec, key_env))  # a local model computes on the model thread
            with self._lock:
                found = self._by_spec.setdefault((spec, key_env), found)
        return found

    def remember(self, provider: EmbeddingProvider) -> EmbeddingProvider:
        key = provider.identity.model_key
        with self._lock:
            self._by_key.setdefault(key, provider)
        return provider

    def search(self, conn: psycopg.Connection, schema: str, tenant: str) -> EmbeddingProvider:
        """The tenant's search model, its `embed_query` batched with every other search of that model."""
        provider = self.remember(search_provider(Scope(conn, schema, tenant), self.load))
        with self._lock:
            held = self._batchers.get(id(provider))
            if held is None:
                held = self._batchers[id(provider)] = (provider, QueryBatcher(provider))
        return BatchedQueries(provider, held[1])  # type: ignore[return-value]

    def batchers(self) -> list[QueryBatcher]:
        with self._lock:
            return [b for _, b in self._batchers.values()]

    def embedding(self, conn: psycopg.Connection, schema: str, tenant: str) -> EmbeddingProvider:
        return self.remember(embedding_provider(Scope(conn, schema, tenant), self.load))

    def model_key_of(self, settings: TenantSettings) -> str:
        """The model a tenant without an active model embeds with; 'unknown' when it cannot be loaded."""
        try:
            return self.load(settings.model, settings.key_env).identity.model_key
        except ProviderError:
            return "unknown"

    def held(self) -> list[tuple[str, EmbeddingProvider]]:
        with self._lock:
            return sorted(self._by_key.items(), key=lambda kv: kv[0])
