"""The pipeline's database as every client opens it (Dagster resources, CLI, service, benchmarks, tests)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg

from ..config import Settings, validate_identifier
from .db import connection
from .migrations import migrate
from .repair import ensure_schema
from .server import database_url

_MIGRATED: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Database:
    """The database holding documents, blocks, chunks and vectors, in schema `schema_name`.

    Unset values come from the environment: EMBEDDINGS_DATABASE_URL (else the embedded server under
    EMBEDDINGS_HOME, started on demand) and EMBEDDINGS_SCHEMA.
    """

    database_url: str | None = None
    schema_name: str | None = None

    @property
    def schema(self) -> str:
        if self.schema_name:
            return validate_identifier(self.schema_name, "schema_name")
        return Settings.from_env().schema

    def url(self) -> str:
        return self.database_url or database_url(Settings.from_env())

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
