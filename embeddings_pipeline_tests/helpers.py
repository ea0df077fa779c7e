"""Small shared helpers for tests: seeding documents and reading rows back with plain SQL."""

from __future__ import annotations

import psycopg
from psycopg import sql

from embeddings_pipeline.store.db import table
from embeddings_pipeline.store.documents import SourceDocument, upsert_documents


def seed(conn: psycopg.Connection, schema: str, tenant: str, docs: dict[str, str], fmt: str = "markdown") -> None:
    upsert_documents(conn, schema, tenant, [SourceDocument(doc_id=d, body=b, format=fmt) for d, b in docs.items()])


def vector_rows(conn: psycopg.Connection, schema: str, vector_table: str, tenant: str) -> dict[str, tuple]:
    """chunk_id -> (content_hash, run_id, embedded_at, model_key) of the tenant's vectors."""
    rows = conn.execute(
        sql.SQL("SELECT chunk_id, content_hash, run_id, embedded_at, model_key FROM {} WHERE tenant_id = %s").format(
            table(schema, vector_table)
        ),
        (tenant,),
    ).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def count(conn: psycopg.Connection, schema: str, name: str, tenant: str) -> int:
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE tenant_id = %s").format(table(schema, name)), (tenant,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def chunks_of(conn: psycopg.Connection, schema: str, tenant: str) -> dict[str, tuple[str, str]]:
    """chunk_id -> (doc_id, text)."""
    rows = conn.execute(
        sql.SQL("SELECT chunk_id, doc_id, text FROM {} WHERE tenant_id = %s").format(table(schema, "chunks")),
        (tenant,),
    ).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}
