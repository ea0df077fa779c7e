"""documents -> blocks in the store: what changed in the source since the last parse, source rows that cannot be
parsed (`document_errors`), and replacing or forgetting a document's blocks in bulk."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from ..text.blocks import Block
from .db import copy_rows, source_relation, table


@dataclass(frozen=True)
class ChangedDocument:
    doc_id: str
    title: str
    body: str
    format: str
    updated_at: datetime


@dataclass(frozen=True)
class RejectedDocument:
    """A live source row that cannot be parsed, and why (recorded in `document_errors`)."""

    doc_id: str
    reason: str


@dataclass
class ChangedBatch:
    documents: list[ChangedDocument]
    rejected: list[RejectedDocument]


def changed_documents(
    conn: psycopg.Connection, schema: str, tenant_id: str, batch: int = 500, *, everything: bool = False
) -> Iterator[ChangedBatch]:
    """Live documents never parsed, changed since they were parsed, or recorded as bad (all live ones with
    `everything`), in batches (bodies loaded per batch). Rows with a NULL body or updated_at, and doc ids that
    more than one live row carries (a view may yield duplicates), come back as rejected, not as documents."""
    docs, parsed, errors = source_relation(schema), table(schema, "parsed_documents"), table(schema, "document_errors")
    ids = conn.execute(
        sql.SQL(
            """
            SELECT DISTINCT d.doc_id FROM {docs} d
              LEFT JOIN {parsed} p ON p.tenant_id = d.tenant_id AND p.doc_id = d.doc_id
             WHERE d.tenant_id = %s AND d.deleted_at IS NULL AND d.doc_id IS NOT NULL
               AND (%s OR p.doc_id IS NULL OR p.source_updated_at IS DISTINCT FROM d.updated_at
                    OR EXISTS (SELECT 1 FROM {errors} e WHERE e.tenant_id = d.tenant_id AND e.doc_id = d.doc_id))
             ORDER BY d.doc_id
            """
        ).format(docs=docs, parsed=parsed, errors=errors),
        (tenant_id, everything),
    ).fetchall()
    query = sql.SQL(
        "SELECT doc_id, coalesce(title, ''), body, format, updated_at FROM {} "
        "WHERE tenant_id = %s AND doc_id = ANY(%s) AND deleted_at IS NULL ORDER BY doc_id"
    ).format(docs)
    for start in range(0, len(ids), batch):
        chunk = [r[0] for r in ids[start : start + batch]]
        rows: dict[str, list[tuple]] = {}
        for row in conn.execute(query, (tenant_id, chunk)).fetchall():
            rows.setdefault(row[0], []).append(row)
        out = ChangedBatch([], [])
        for doc_id, found in rows.items():
            reason = _problem(found)
            if reason:
                out.rejected.append(RejectedDocument(doc_id, reason))
            else:
                out.documents.append(ChangedDocument(*found[0]))
        yield out


def _problem(rows: Sequence[tuple]) -> str | None:
    """Why these live source rows of one doc id cannot be parsed (None: they can). The format is the parser's to
    judge."""
    if len(rows) > 1:
        return f"duplicate doc_id: {len(rows)} live rows in the source carry it"
    _, _, body, _, updated_at = rows[0]
    if body is None:
        return "body is NULL"
    if updated_at is None:
        return "updated_at is NULL"
    return None


def record_document_errors(
    conn: psycopg.Connection, schema: str, tenant_id: str, rejected: Sequence[RejectedDocument]
) -> None:
    """Record (or see again) the rejected rows; `first_seen_at` stays while a document stays bad."""
    if not rejected:
        return
    conn.cursor().executemany(
        sql.SQL(
            """
            INSERT INTO {} (tenant_id, doc_id, reason) VALUES (%s, %s, %s)
            ON CONFLICT (tenant_id, doc_id) DO UPDATE SET reason = EXCLUDED.reason, last_seen_at = now()
            """
        ).format(table(schema, "document_errors")),
        [(tenant_id, r.doc_id, r.reason) for r in rejected],
    )


def forget_gone_errors(conn: psycopg.Connection, schema: str, tenant_id: str) -> int:
    """Drop the errors of documents no longer live in the source (deleted, or their rows gone)."""
    return conn.execute(
        sql.SQL(
            """
            DELETE FROM {errors} e WHERE e.tenant_id = %s AND NOT EXISTS (
                   SELECT 1 FROM {docs} d WHERE d.tenant_id = e.tenant_id AND d.doc_id = e.doc_id
                      AND d.deleted_at IS NULL)
            """
        ).format(errors=table(schema, "document_errors"), docs=source_relation(schema)),
        (tenant_id,),
    ).rowcount


def removed_documents(conn: psycopg.Connection, schema: str, tenant_id: str) -> list[str]:
    """Parsed documents that were deleted (soft or hard) from the source."""
    rows = conn.execute(
        sql.SQL(
            """
            SELECT p.doc_id FROM {parsed} p
             WHERE p.tenant_id = %s AND NOT EXISTS (
                   SELECT 1 FROM {docs} d
                    WHERE d.tenant_id = p.tenant_id AND d.doc_id = p.doc_id AND d.deleted_at IS NULL)
            """
        ).format(docs=source_relation(schema), parsed=table(schema, "parsed_documents")),
        (tenant_id,),
    ).fetchall()
    return [r[0] for r in rows]


def replace_blocks(
    conn: psycopg.Connection,
    schema: str,
    tenant_id: str,
    parsed: Sequence[tuple[ChangedDocument, Sequence[Block]]],
) -> int:
    """Replace the blocks of these documents and record which source version they came from."""
    columns = ("tenant_id", "block_id", "doc_id", "ordinal", "block_type", "heading_path", "text", "content_hash")
    rows = (
        (tenant_id, b.block_id, b.doc_id, b.ordinal, b.block_type, list(b.heading_path), b.text, b.content_hash)
        for _, blocks in parsed
        for b in blocks
    )
    doc_ids = [doc.doc_id for doc, _ in parsed]
    with conn.transaction():
        for name in ("blocks", "document_errors"):  # a document parsed is no longer in error
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE tenant_id = %s AND doc_id = ANY(%s)").format(table(schema, name)),
                (tenant_id, doc_ids),
            )
        n = copy_rows(conn, schema, "blocks", columns, rows)
        conn.cursor().executemany(
            sql.SQL(
                """
                INSERT INTO {} AS p (tenant_id, doc_id, source_updated_at, blocks_version)
                VALUES (%s, %s, %s, 1)
                ON CONFLICT (tenant_id, doc_id) DO UPDATE
                   SET source_updated_at = EXCLUDED.source_updated_at, blocks_version = p.blocks_version + 1
                """
            ).format(table(schema, "parsed_documents")),
            [(tenant_id, doc.doc_id, doc.updated_at) for doc, _ in parsed],
        )
    return n


def forget_documents(conn: psycopg.Connection, schema: str, tenant_id: str, doc_ids: list[str]) -> int:
    """Remove the blocks of removed documents; the chunks step then drops their chunks."""
    delete = "DELETE FROM {} WHERE tenant_id = %s AND doc_id = ANY(%s)"
    with conn.transaction():
        for name in ("chunked_documents", "parsed_documents"):
            conn.execute(sql.SQL(delete).format(table(schema, name)), (tenant_id, doc_ids))
        return conn.execute(sql.SQL(delete).format(table(schema, "blocks")), (tenant_id, doc_ids)).rowcount
