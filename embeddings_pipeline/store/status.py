"""Per-tenant counts: the numbers `status`, the demo and the checks speak in."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from .db import source_relation, table
from .models import chunk_set_of, vector_table_of
from .tenants import last_successes


@dataclass(frozen=True)
class TenantStatus:
    tenant: str
    documents: int
    blocks: int
    chunks: int
    vectors: int
    missing: int
    stale: int
    errors: int
    model_key: str
    chunker_version: str | None = None
    documents_not_chunked: int = 0  # live documents with no place in the chunk set yet (counted in `missing`)
    document_errors: int = 0  # source rows that cannot be parsed (see `document_errors`)
    last_success_at: str | None = None  # the last successful run (ISO 8601; None: none yet), see `record_success`
    last_success_run_id: str | None = None
    seconds_since_success: float | None = None  # by the database's clock when counted

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def tenant_status(
    conn: psycopg.Connection, schema: str, tenant_id: str, model_key: str, chunk_set: str | None = None
) -> TenantStatus:
    """Counts for one tenant against one model and its chunk set (by default the set its vectors belong to, see
    `chunk_set_of`). `chunks` = live chunks of that set; `vectors` = current non-NULL vectors; `missing` =
    chunks without one (none, NULL, or stale) plus `documents_not_chunked`, the live documents never chunked into
    the set (a failed run, a provider down, a row that cannot be parsed: their vectors are missing too, though no
    chunk says so); `stale` = vectors whose text hash differs from their chunk's; `document_errors` = source rows
    that cannot be parsed."""
    chunk_set = chunk_set or chunk_set_of(conn, schema, tenant_id, model_key)
    q = {
        "documents": "SELECT count(*) FROM {documents} WHERE tenant_id = %(t)s AND deleted_at IS NULL",
        "blocks": "SELECT count(*) FROM {blocks} WHERE tenant_id = %(t)s",
        "chunks": "SELECT count(*) FROM {chunks} c WHERE c.tenant_id = %(t)s AND {in_set}",
        "errors": "SELECT count(*) FROM {embedding_errors} WHERE tenant_id = %(t)s AND model_key = %(m)s",
        "not_chunked": """
            SELECT count(DISTINCT d.doc_id) FROM {documents} d
             WHERE d.tenant_id = %(t)s AND d.deleted_at IS NULL AND NOT EXISTS (
                   SELECT 1 FROM {chunked_documents} c
                    WHERE c.tenant_id = d.tenant_id AND c.doc_id = d.doc_id AND {in_set})
            """,
        "document_errors": "SELECT count(*) FROM {document_errors} WHERE tenant_id = %(t)s",
    }
    derived = ("blocks", "chunks", "chunked_documents", "embedding_errors", "document_errors")
    names = {n: table(schema, n) for n in derived} | {
        "documents": source_relation(schema),
        "in_set": sql.SQL("(%(chunk_set)s::text IS NULL OR c.chunker_version = %(chunk_set)s)"),
    }
    params = {"t": tenant_id, "m": model_key, "chunk_set": chunk_set}
    counts = {k: _count(conn, sql.SQL(v).format(**names), params) for k, v in q.items()}
    vt = vector_table_of(conn, schema, model_key)
    vectors = stale = 0
    missing = counts["chunks"]
    if vt is not None:
        row = conn.execute(
            sql.SQL(
                """
                SELECT count(*) FILTER (WHERE v.embedding IS NOT NULL AND v.content_hash = c.content_hash),
                       count(*) FILTER (WHERE v.chunk_id IS NOT NULL AND v.content_hash IS DISTINCT FROM c.content_hash)
                  FROM {chunks} c
                  LEFT JOIN {v} v ON v.tenant_id = c.tenant_id AND v.chunk_id = c.chunk_id
                 WHERE c.tenant_id = %(t)s AND {in_set}
                """
            ).format(chunks=names["chunks"], v=table(schema, vt), in_set=names["in_set"]),
            {"t": tenant_id, "chunk_set": chunk_set},
        ).fetchone()
        assert row is not None
        vectors, stale = int(row[0]), int(row[1])
        missing = counts["chunks"] - vectors
    missing += counts["not_chunked"]
    return TenantStatus(
        tenant_id,
        counts["documents"],
        counts["blocks"],
        counts["chunks"],
        vectors,
        missing,
        stale,
        counts["errors"],
        model_key,
        chunk_set,
        counts["not_chunked"],
        counts["document_errors"],
        *success_fields(last_successes(conn, schema, [tenant_id]).get(tenant_id)),
    )


def success_fields(success: tuple[datetime, str | None, float] | None) -> tuple[str | None, str | None, float | None]:
    """`last_successes`' entry as TenantStatus's last three fields."""
    if success is None:
        return None, None, None
    when, run_id, seconds = success
    return when.isoformat(), run_id, round(seconds, 3)


def _count(conn: psycopg.Connection, query: sql.Composable, params: dict[str, object]) -> int:
    row = conn.execute(query, params).fetchone()
    return int(row[0]) if row else 0
