"""The default source relation: `documents`, written by `embeddings-pipeline ingest` or by the application."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

import psycopg

from ..config import validate_tenant_id
from ..text.blocks import sanitize
from .db import source_relation, table

FORMATS = ("markdown", "text")


@dataclass(frozen=True)
class SourceDocument:
    doc_id: str
    body: str
    title: str = ""
    format: str = "markdown"
    metadata: dict[str, object] = field(default_factory=dict)


@dataclass
class IngestReport:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0


def ensure_tenant(conn: psycopg.Connection, schema: str, tenant_id: str) -> None:
    conn.execute(
        psycopg.sql.SQL("INSERT INTO {} (tenant_id) VALUES (%s) ON CONFLICT DO NOTHING").format(
            table(schema, "tenants")
        ),
        (validate_tenant_id(tenant_id),),
    )


def upsert_documents(
    conn: psycopg.Connection, schema: str, tenant_id: str, docs: Iterable[SourceDocument]
) -> IngestReport:
    """Insert new documents, update changed ones (bumping updated_at), leave unchanged ones untouched.

    NUL bytes (which PostgreSQL text cannot hold) become U+FFFD; nothing else of the text is altered.
    """
    validate_tenant_id(tenant_id)
    report = IngestReport()
    query = psycopg.sql.SQL(
        """
        INSERT INTO {t} AS d (tenant_id, doc_id, title, body, format, metadata)
        VALUES (%s, %s, %s, %s, %s, %s::jsonb)
        ON CONFLICT (tenant_id, doc_id) DO UPDATE
           SET title = EXCLUDED.title, body = EXCLUDED.body, format = EXCLUDED.format,
               metadata = EXCLUDED.metadata, updated_at = clock_timestamp(), deleted_at = NULL
         WHERE (d.title, d.body, d.format, d.metadata, d.deleted_at IS NULL)
               IS DISTINCT FROM (EXCLUDED.title, EXCLUDED.body, EXCLUDED.format, EXCLUDED.metadata, true)
        RETURNING (xmax = 0) AS inserted
        """
    ).format(t=table(schema, "documents"))
    with conn.transaction():
        ensure_tenant(conn, schema, tenant_id)
        with conn.cursor() as cur:
            for doc in docs:
                if doc.format not in FORMATS:
                    raise ValueError(f"document {doc.doc_id!r}: format must be one of {FORMATS}, not {doc.format!r}")
                if not doc.doc_id:
                    raise ValueError("a document needs a non-empty doc_id")
                cur.execute(
                    query,
                    (
                        tenant_id,
                        sanitize(doc.doc_id),
                        sanitize(doc.title),
                        sanitize(doc.body),
                        doc.format,
                        json.dumps(doc.metadata).replace("\\u0000", "\\ufffd"),
                    ),
                )
                row = cur.fetchone()
                if row is None:
                    report.unchanged += 1
                elif row[0]:
                    report.inserted += 1
                else:
                    report.updated += 1
    return report


def delete_documents(conn: psycopg.Connection, schema: str, tenant_id: str, doc_ids: list[str]) -> int:
    """Soft-delete: the pipeline removes the documents' blocks, chunks and vectors on its next run."""
    with conn.transaction():
        cur = conn.execute(
            psycopg.sql.SQL(
                "UPDATE {} SET deleted_at = clock_timestamp(), updated_at = clock_timestamp() "
                "WHERE tenant_id = %s AND doc_id = ANY(%s) AND deleted_at IS NULL"
            ).format(table(schema, "documents")),
            (validate_tenant_id(tenant_id), doc_ids),
        )
        return cur.rowcount


def source_tenants(conn: psycopg.Connection, schema: str) -> list[str]:
    """Every tenant that has (or had) documents or settings."""
    rows = conn.execute(
        psycopg.sql.SQL("SELECT tenant_id FROM {} UNION SELECT DISTINCT tenant_id FROM {} ORDER BY 1").format(
            table(schema, "tenants"), source_relation(schema)
        )
    ).fetchall()
    return [r[0] for r in rows]
