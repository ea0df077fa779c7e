"""The default source relation: `documents`, written by `embeddings-pipeline ingest` or by the application."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

import psycopg

from ..config import validate_tenant_id
from ..text.blocks import sanitize
from .db import source_parts, source_relation, table

FORMATS = ("markdown", "text")


@dataclass(frozen=True)
class SourceDocument:
    doc_id: str
    body: str
    title: str = ""
    format: str = "markdown"
    metadata: dict[str, object] = field(default_factory=dict)
    source: str | None = None  # where it was read from (a folder's resolved path): what a folder ingest syncs


@dataclass
class IngestReport:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: list[str] = field(default_factory=list)  # doc ids soft-deleted because their folder lost them


def unstorable(text: str) -> str | None:
    """Why TEXT cannot be stored as PostgreSQL text (NUL, or a lone surrogate, which is not UTF-8), else None."""
    if "\x00" in text:
        return "contains a NUL character, which PostgreSQL text cannot hold"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"contains a lone surrogate {text[exc.start]!r} at position {exc.start}, which is not UTF-8"
    return None


def check_doc_id(doc_id: object) -> str:
    """doc_ids are identifiers, stored exactly: refused (ValueError) when empty or not storable, never altered."""
    if not isinstance(doc_id, str) or not doc_id:
        raise ValueError("a document needs a non-empty doc_id")
    why = unstorable(doc_id)
    if why:
        raise ValueError(f"doc_id {doc_id!r} {why}")
    return doc_id


def ensure_tenant(conn: psycopg.Connection, schema: str, tenant_id: str) -> None:
    conn.execute(
        psycopg.sql.SQL("INSERT INTO {} (tenant_id) VALUES (%s) ON CONFLICT DO NOTHING").format(
            table(schema, "tenants")
        ),
        (validate_tenant_id(tenant_id),),
    )


def upsert_documents(
    conn: psycopg.Connection,
    schema: str,
    tenant_id: str,
    docs: Iterable[SourceDocument],
    *,
    sync: Collection[str] = (),
    keep: Collection[str] = (),
) -> IngestReport:
    """Insert new documents, update changed ones (bumping updated_at), leave unchanged ones untouched; each
    document read from a source is claimed by it. Then, for each source in `sync`, soft-delete its live documents
    that were not in `docs` (nor in `keep`, read after `docs` is exhausted). One transaction; the tenant row is
    created only when there is a document.

    doc_ids are stored exactly (a NUL or a lone surrogate is refused, never replaced); in titles and bodies NUL
    becomes U+FFFD (PostgreSQL text cannot hold it) and nothing else is altered.
    """
    validate_tenant_id(tenant_id)
    report = IngestReport()
    query = psycopg.sql.SQL(
        """
        INSERT INTO {t} AS d (tenant_id, doc_id, title, body, format, metadata, source)
        VALUES (%s, %s, %s, %s, %s, %s::jsonb, %s)
        ON CONFLICT (tenant_id, doc_id) DO UPDATE
           SET title = EXCLUDED.title, body = EXCLUDED.body, format = EXCLUDED.format,
               metadata = EXCLUDED.metadata, updated_at = clock_timestamp(), deleted_at = NULL
         WHERE (d.title, d.body, d.format, d.metadata, d.deleted_at IS NULL)
               IS DISTINCT FROM (EXCLUDED.title, EXCLUDED.body, EXCLUDED.format, EXCLUDED.metadata, true)
        RETURNING (xmax = 0) AS inserted
        """
    ).format(t=table(schema, "documents"))
    seen: dict[str | None, list[str]] = {}
    with conn.transaction():
        with conn.cursor() as cur:
            for doc in docs:
                if doc.format not in FORMATS:
                    raise ValueError(f"document {doc.doc_id!r}: format must be one of {FORMATS}, not {doc.format!r}")
                check_doc_id(doc.doc_id)
                title, body = sanitize(doc.title), sanitize(doc.body)
                for what, text in (("title", title), ("body", body)):
                    why = unstorable(text)
                    if why:
                        raise ValueError(f"document {doc.doc_id!r}: its {what} {why}")
                if not seen:
                    ensure_tenant(conn, schema, tenant_id)
                seen.setdefault(doc.source, []).append(doc.doc_id)
                metadata = json.dumps(doc.metadata).replace("\\u0000", "\\ufffd")
                cur.execute(query, (tenant_id, doc.doc_id, title, body, doc.format, metadata, doc.source))
                row = cur.fetchone()
                if row is None:
                    report.unchanged += 1
                elif row[0]:
                    report.inserted += 1
                else:
                    report.updated += 1
        for source, ids in seen.items():
            if source is not None:
                _claim(conn, schema, tenant_id, source, ids)
        for source in sync:
            report.deleted += _sync_source(conn, schema, tenant_id, source, [*seen.get(source, ()), *keep])
    return report


def _claim(conn: psycopg.Connection, schema: str, tenant_id: str, source: str, doc_ids: list[str]) -> None:
    """The documents just read from SOURCE are SOURCE's now (a file moved between folders changes hands)."""
    conn.execute(
        psycopg.sql.SQL(
            "UPDATE {} SET source = %s WHERE tenant_id = %s AND doc_id = ANY(%s) AND source IS DISTINCT FROM %s"
        ).format(table(schema, "documents")),
        (source, tenant_id, doc_ids, source),
    )


def _sync_source(conn: psycopg.Connection, schema: str, tenant_id: str, source: str, present: list[str]) -> list[str]:
    rows = conn.execute(
        psycopg.sql.SQL(
            "UPDATE {} SET deleted_at = clock_timestamp(), updated_at = clock_timestamp() "
            "WHERE tenant_id = %s AND source = %s AND deleted_at IS NULL AND NOT (doc_id = ANY(%s)) "
            "RETURNING doc_id"
        ).format(table(schema, "documents")),
        (tenant_id, source, present),
    ).fetchall()
    return sorted(r[0] for r in rows)


def delete_documents(conn: psycopg.Connection, schema: str, tenant_id: str, doc_ids: list[str]) -> int:
    """Soft-delete: the pipeline removes the documents' blocks, chunks and vectors on its next run."""
    return len(delete_document_ids(conn, schema, tenant_id, doc_ids))


def delete_document_ids(conn: psycopg.Connection, schema: str, tenant_id: str, doc_ids: list[str]) -> list[str]:
    """`delete_documents`, returning the ids it deleted (live documents among DOC_IDS, matched exactly)."""
    with conn.transaction():
        rows = conn.execute(
            psycopg.sql.SQL(
                "UPDATE {} SET deleted_at = clock_timestamp(), updated_at = clock_timestamp() "
                "WHERE tenant_id = %s AND doc_id = ANY(%s) AND deleted_at IS NULL RETURNING doc_id"
            ).format(table(schema, "documents")),
            (validate_tenant_id(tenant_id), list(doc_ids)),
        ).fetchall()
    return sorted(r[0] for r in rows)


def list_documents(
    conn: psycopg.Connection, schema: str, tenant_id: str, *, deleted: bool = False
) -> list[dict[str, object]]:
    """TENANT's documents as the pipeline reads them (live ones; soft-deleted ones too with `deleted`), by doc_id.
    `source` (the folder a document was ingested from) is known only for the pipeline's own `documents`."""
    own = source_parts(schema) == (schema, "documents")
    rows = conn.execute(
        psycopg.sql.SQL(
            "SELECT doc_id, title, format, updated_at, deleted_at, {source} FROM {docs} "
            "WHERE tenant_id = %s AND (%s OR deleted_at IS NULL) ORDER BY doc_id"
        ).format(
            source=psycopg.sql.Identifier("source") if own else psycopg.sql.SQL("NULL::text"),
            docs=source_relation(schema),
        ),
        (validate_tenant_id(tenant_id), deleted),
    ).fetchall()
    keys = ("doc_id", "title", "format", "updated_at", "deleted_at", "source")
    return [{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in zip(keys, r, strict=True)} for r in rows]


def source_tenants(conn: psycopg.Connection, schema: str) -> list[str]:
    """Every tenant that has (or had) documents or settings."""
    rows = conn.execute(
        psycopg.sql.SQL("SELECT tenant_id FROM {} UNION SELECT DISTINCT tenant_id FROM {} ORDER BY 1").format(
            table(schema, "tenants"), source_relation(schema)
        )
    ).fetchall()
    return [r[0] for r in rows]
