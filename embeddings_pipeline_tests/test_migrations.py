"""Migrations are versioned, idempotent and safe to run from several processes at once."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
from psycopg import sql

from embeddings_pipeline.store.db import connection
from embeddings_pipeline.store.migrations import LATEST_VERSION, MIGRATIONS, migrate


def test_concurrent_migrations_apply_each_version_once(pg_url):
    schema = f"m_{uuid.uuid4().hex[:10]}"

    def run(_: int) -> list[int]:
        with connection(pg_url) as conn:
            return migrate(conn, schema)

    try:
        with ThreadPoolExecutor(4) as pool:
            applied = list(pool.map(run, range(4)))
        assert sorted(v for a in applied for v in a) == [v for v, _, _ in MIGRATIONS]
        with connection(pg_url) as conn:
            assert migrate(conn, schema) == []
            versions = conn.execute(
                sql.SQL("SELECT version FROM {}.schema_migrations ORDER BY 1").format(sql.Identifier(schema))
            ).fetchall()
            assert versions[-1] == (LATEST_VERSION,)
            tables = {
                r[0]
                for r in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
                )
            }
            assert {"documents", "blocks", "chunks", "embedding_models", "embedding_errors", "tenants"} <= tables
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
