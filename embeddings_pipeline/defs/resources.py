"""Resources: the pipeline's PostgreSQL and the embedding model. Both resolve lazily, inside runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import psycopg
from psycopg import sql
from pydantic import Field

from ..config import Settings, validate_identifier
from ..providers import EmbeddingProvider, ProviderError, load_provider
from ..store.db import connection, table
from ..store.migrations import migrate
from ..store.repair import ensure_schema
from ..store.server import database_url
from ..store.tenants import tenant_settings

_MIGRATED: set[tuple[str, str]] = set()


class PipelineStore(dg.ConfigurableResource):
    """The database holding documents, blocks, chunks and vectors.

    `database_url` unset: EMBEDDINGS_DATABASE_URL, else the embedded server under EMBEDDINGS_HOME.
    """

    database_url: str | None = Field(default=None, description="PostgreSQL URL; unset = env / embedded server")
    schema_name: str | None = Field(default=None, description="schema of the pipeline's tables")

    def settings(self) -> Settings:
        return Settings.from_env()

    @property
    def schema(self) -> str:
        return validate_identifier(self.schema_name, "schema_name") if self.schema_name else self.settings().schema

    def url(self) -> str:
        return self.database_url or database_url(self.settings())

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection]:
        """A connection to a migrated schema (migrations run once per process and schema) whose tables are as the
        migrations built them: anything dropped or altered since is repaired first (`store/repair.py`)."""
        url, schema = self.url(), self.schema
        with connection(url) as conn:
            if (url, schema) not in _MIGRATED:
                migrate(conn, schema)
                _MIGRATED.add((url, schema))
            ensure_schema(conn, schema)
            yield conn


class EmbeddingModel(dg.ConfigurableResource):
    """Which model embeds: a spec such as `sentence-transformers:all-MiniLM-L6-v2` (EMBEDDINGS_MODEL)."""

    model: str | None = Field(default=None, description="model spec; unset = EMBEDDINGS_MODEL or the default")
    batch_size: int | None = Field(default=None, description="texts per model batch; unset = EMBEDDINGS_BATCH_SIZE")
    device: str = "cpu"

    def provider(self, spec: str | None = None, key_env: str | None = None) -> EmbeddingProvider:
        settings = Settings.from_env()
        batch_size = self.batch_size or settings.batch_size
        return load_provider(spec or self.model or settings.model_spec, batch_size, self.device, key_env)

    def provider_for(
        self, conn: psycopg.Connection, schema: str, tenant_id: str, model_key: str | None = None
    ) -> EmbeddingProvider:
        """The model the tenant should be embedded with: its override (and key reference), else the default;
        or, for a backfill of a registered model, that model (`model_key`)."""
        tenant = tenant_settings(conn, schema, tenant_id)
        if model_key:
            return self.provider(_spec_of(conn, schema, model_key), tenant.key_env)
        return self.provider(tenant.model, tenant.key_env)

    def search_provider_for(self, conn: psycopg.Connection, schema: str, tenant_id: str) -> EmbeddingProvider:
        """The model search must use: the tenant's ACTIVE model. While a new model is still being filled, that
        is the old one, so search never mixes models and never sees a half-built index (blue/green)."""
        tenant = tenant_settings(conn, schema, tenant_id)
        wanted = self.provider(tenant.model, tenant.key_env)
        return self.active_provider_for(conn, schema, tenant_id, wanted) or wanted

    def active_provider_for(
        self, conn: psycopg.Connection, schema: str, tenant_id: str, target: EmbeddingProvider
    ) -> EmbeddingProvider | None:
        """The provider of the tenant's active model (`target` itself when that is the one), or None when the
        tenant has none yet. Raises ProviderError when it cannot be loaded."""
        tenant = tenant_settings(conn, schema, tenant_id)
        if tenant.active_model_key is None:
            return None
        if tenant.active_model_key == target.identity.model_key:
            return target
        return self.provider(_spec_of(conn, schema, tenant.active_model_key), tenant.key_env)


def _spec_of(conn: psycopg.Connection, schema: str, model_key: str) -> str:
    row = conn.execute(
        sql.SQL("SELECT spec FROM {} WHERE model_key = %s").format(table(schema, "embedding_models")), (model_key,)
    ).fetchone()
    if not row or not row[0]:
        raise ProviderError(f"model {model_key} is not registered with a spec; see `embeddings-pipeline models list`")
    return row[0]
