"""Resources: thin Dagster handles on the pipeline's database (`store.session.Database`) and on the embedding
model policy (`pipeline.model_change`). Settings given in the environment show in the UI as `EnvVar`s, resolved
inside runs; unset ones keep their documented defaults (the embedded server, the bundled model)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
import psycopg
from pydantic import Field

from ..config import Settings
from ..providers import EmbeddingProvider, load_provider
from ..store.session import Database


class PipelineStore(dg.ConfigurableResource):
    """The database holding documents, blocks, chunks and vectors.

    `database_url` unset: EMBEDDINGS_DATABASE_URL, else the embedded server under EMBEDDINGS_HOME.
    """

    database_url: str | None = Field(default=None, description="PostgreSQL URL; unset = the embedded server")
    schema_name: str | None = Field(default=None, description="schema of the pipeline's tables")

    @property
    def database(self) -> Database:
        return Database(self.database_url or None, self.schema_name or None)

    @property
    def schema(self) -> str:
        return self.database.schema

    def url(self) -> str:
        return self.database.url()

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection]:
        with self.database.connect() as conn:
            yield conn

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if context.instance is not None and context.run is not None:  # runs, not sensor ticks
            hold_connections(context.instance)


def hold_connections(instance: dg.DagsterInstance) -> None:
    """Let the instance's storage keep a database connection open, as the webserver's does, instead of opening one
    per query (dagster-postgres' default, NullPool): a run writes dozens of events, so it otherwise connects
    dozens of times (`bench/curve.py --instance postgres`: 1.2 s against 0.35 s a run with nothing to do). Called
    by the store resource at the start of every run, and once by processes that run runs one after another. No
    effect on SQLite or in-memory storage."""
    instance.optimize_for_webserver(statement_timeout=0, pool_recycle=3600, max_overflow=10)


class EmbeddingModel(dg.ConfigurableResource):
    """Which model embeds: a spec such as `sentence-transformers:all-MiniLM-L6-v2` (EMBEDDINGS_MODEL); per
    tenant, `model_change` decides between it, the tenant's override and the tenant's active model."""

    model: str | None = Field(default=None, description="model spec; unset = the bundled all-MiniLM-L6-v2")
    batch_size: int | None = Field(default=None, description="texts per model batch; unset = 32")
    device: str = "cpu"

    def provider(self, spec: str | None = None, key_env: str | None = None) -> EmbeddingProvider:
        """The provider of `spec` (default: this resource's model), with this resource's batch size and device."""
        defaults = Settings.from_env()
        spec = spec or self.model or defaults.model_spec
        return load_provider(spec, self.batch_size or defaults.batch_size, self.device, key_env)


def _env(name: str) -> Any:
    """`EnvVar(name)` when the variable is set where the code location loads, else None (the default)."""
    return dg.EnvVar(name) if os.environ.get(name) else None


def _env_int(name: str) -> Any:
    return dg.EnvVar.int(name) if os.environ.get(name) else None


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "store": PipelineStore(
                database_url=_env("EMBEDDINGS_DATABASE_URL"), schema_name=_env("EMBEDDINGS_SCHEMA")
            ),
            "model": EmbeddingModel(model=_env("EMBEDDINGS_MODEL"), batch_size=_env_int("EMBEDDINGS_BATCH_SIZE")),
        }
    )
