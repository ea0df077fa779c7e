"""What is still to embed for one tenant and model (read-only: the model's vector table may not exist yet)."""

from __future__ import annotations

import psycopg
from psycopg import sql

from . import vectors
from .db import relation_exists, source_relation, table


def documents_not_chunked(conn: psycopg.Connection, schema: str, tenant_id: str, chunk_set: str) -> int:
    """Live documents changed since they were last parsed, or not yet chunked into `chunk_set`: their chunks
    (and vectors) are still to come."""
    row = conn.execute(
        sql.SQL(
            """
            SELECT count(*) FROM {docs} d
              LEFT JOIN {parsed} p ON p.tenant_id = d.tenant_id AND p.doc_id = d.doc_id
              LEFT JOIN {done} s ON s.tenant_id = d.tenant_id AND s.doc_id = d.doc_id AND s.chunker_version = %s
             WHERE d.tenant_id = %s AND d.deleted_at IS NULL
               AND (p.doc_id IS NULL OR p.source_updated_at IS DISTINCT FROM d.updated_at
                    OR s.blocks_version IS DISTINCT FROM p.blocks_version)
            """
        ).format(
            docs=source_relation(schema),
            parsed=table(schema, "parsed_documents"),
            done=table(schema, "chunked_documents"),
        ),
        (chunk_set, tenant_id),
    ).fetchone()
    return int(row[0]) if row else 0


def chunk_count(conn: psycopg.Connection, schema: str, tenant_id: str, chunk_set: str) -> int:
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE tenant_id = %s AND chunker_version = %s").format(
            table(schema, "chunks")
        ),
        (tenant_id, chunk_set),
    ).fetchone()
    return int(row[0]) if row else 0


def texts_to_embed(
    conn: psycopg.Connection, schema: str, tenant_id: str, vector_table: str, chunk_set: str
) -> list[str]:
    """Texts of the chunks in `chunk_set` with no current vector in `vector_table` (every chunk if it is absent)."""
    if relation_exists(conn, schema, vector_table):
        return [p.text for p in vectors.pending_chunks(conn, schema, vector_table, tenant_id, chunk_set)]
    rows = conn.execute(
        sql.SQL("SELECT text FROM {} WHERE tenant_id = %s AND chunker_version = %s").format(table(schema, "chunks")),
        (tenant_id, chunk_set),
    ).fetchall()
    return [r[0] for r in rows]


def pending_vectors(conn: psycopg.Connection, schema: str, tenant_id: str, vector_table: str, chunk_set: str) -> int:
    """Chunks of `chunk_set` without a current vector in `vector_table` (every chunk when it is absent)."""
    if relation_exists(conn, schema, vector_table):
        return vectors.pending_count(conn, schema, vector_table, tenant_id, chunk_set)
    return chunk_count(conn, schema, tenant_id, chunk_set)


def has_pending_vectors(
    conn: psycopg.Connection, schema: str, tenant_id: str, vector_table: str, chunk_set: str
) -> bool:
    """Whether `pending_vectors` is above zero (`work_left`'s test: the vector rows themselves are not read)."""
    if relation_exists(conn, schema, vector_table):
        return vectors.has_pending(conn, schema, vector_table, tenant_id, chunk_set)
    return chunk_count(conn, schema, tenant_id, chunk_set) > 0
