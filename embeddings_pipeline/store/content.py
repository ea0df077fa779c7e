"""blocks -> chunks in the store: the documents a chunk set still has to chunk, their blocks, and replacing or
dropping chunks (per document, orphaned, or whole chunk sets)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from ..text.blocks import Block
from ..text.chunks import Chunk
from .db import copy_rows, source_relation, table


@dataclass(frozen=True)
class DocumentToChunk:
    doc_id: str
    title: str
    blocks_version: int


def documents_to_chunk(
    conn: psycopg.Connection, schema: str, tenant_id: str, chunk_set: str
) -> list[DocumentToChunk]:
    """Parsed documents whose blocks changed since `chunk_set` was built from them."""
    rows = conn.execute(
        sql.SQL(
            """
            SELECT p.doc_id, coalesce((SELECT d.title FROM {docs} d
                                        WHERE d.tenant_id = p.tenant_id AND d.doc_id = p.doc_id
                                        ORDER BY d.deleted_at IS NULL DESC, d.updated_at DESC NULLS LAST
                                        LIMIT 1), ''), p.blocks_version
              FROM {parsed} p
              LEFT JOIN {done} s ON s.tenant_id = p.tenant_id AND s.doc_id = p.doc_id AND s.chunker_version = %s
             WHERE p.tenant_id = %s AND s.blocks_version IS DISTINCT FROM p.blocks_version
             ORDER BY p.doc_id
            """
        ).format(
            parsed=table(schema, "parsed_documents"),
            docs=source_relation(schema),
            done=table(schema, "chunked_documents"),
        ),
        (chunk_set, tenant_id),
    ).fetchall()
    return [DocumentToChunk(*r) for r in rows]


def blocks_of(conn: psycopg.Connection, schema: str, tenant_id: str, doc_ids: list[str]) -> dict[str, list[Block]]:
    rows = conn.execute(
        sql.SQL(
            "SELECT block_id, doc_id, ordinal, block_type, heading_path, text, content_hash FROM {} "
            "WHERE tenant_id = %s AND doc_id = ANY(%s) ORDER BY doc_id, ordinal"
        ).format(table(schema, "blocks")),
        (tenant_id, doc_ids),
    ).fetchall()
    out: dict[str, list[Block]] = {d: [] for d in doc_ids}
    for block_id, doc_id, ordinal, block_type, heading_path, text, content_hash in rows:
        out[doc_id].append(Block(block_id, doc_id, ordinal, block_type, tuple(heading_path), text, content_hash))
    return out


def replace_chunks(
    conn: psycopg.Connection,
    schema: str,
    tenant_id: str,
    chunked: Sequence[tuple[DocumentToChunk, Sequence[Chunk]]],
    chunk_set: str,
) -> int:
    columns = ("tenant_id", "chunk_id", "block_id", "doc_id", "ordinal", "text", "content_hash", "token_count",
               "chunker_version")  # fmt: skip
    rows = (
        (tenant_id, c.chunk_id, c.block_id, c.doc_id, c.ordinal, c.text, c.content_hash, c.token_count, chunk_set)
        for _, chunks in chunked
        for c in chunks
    )
    with conn.transaction():
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE tenant_id = %s AND chunker_version = %s AND doc_id = ANY(%s)").format(
                table(schema, "chunks")
            ),
            (tenant_id, chunk_set, [doc.doc_id for doc, _ in chunked]),
        )
        n = copy_rows(conn, schema, "chunks", columns, rows)
        conn.cursor().executemany(
            sql.SQL(
                """
                INSERT INTO {} (tenant_id, doc_id, chunker_version, blocks_version) VALUES (%s, %s, %s, %s)
                ON CONFLICT (tenant_id, doc_id, chunker_version) DO UPDATE SET blocks_version = EXCLUDED.blocks_version
                """
            ).format(table(schema, "chunked_documents")),
            [(tenant_id, doc.doc_id, chunk_set, doc.blocks_version) for doc, _ in chunked],
        )
    return n


def chunk_count(conn: psycopg.Connection, schema: str, tenant_id: str, chunk_set: str, at_most: int) -> int:
    """How many chunks the tenant's chunk set holds, counted no further than `at_most`."""
    row = conn.execute(
        sql.SQL(
            "SELECT count(*) FROM (SELECT 1 FROM {} WHERE tenant_id = %s AND chunker_version = %s LIMIT %s) c"
        ).format(table(schema, "chunks")),
        (tenant_id, chunk_set, at_most),
    ).fetchone()
    return int(row[0]) if row else 0


def delete_orphan_chunks(conn: psycopg.Connection, schema: str, tenant_id: str) -> int:
    """Chunks of documents that are no longer parsed (deleted from the source)."""
    with conn.transaction():
        cur = conn.execute(
            sql.SQL(
                """
                DELETE FROM {chunks} c
                 WHERE c.tenant_id = %s AND NOT EXISTS (
                       SELECT 1 FROM {parsed} p WHERE p.tenant_id = c.tenant_id AND p.doc_id = c.doc_id)
                """
            ).format(chunks=table(schema, "chunks"), parsed=table(schema, "parsed_documents")),
            (tenant_id,),
        )
        return cur.rowcount


def drop_chunk_sets(conn: psycopg.Connection, schema: str, tenant_id: str, keep: Sequence[str]) -> int:
    """Delete the tenant's chunk sets other than `keep` (the set its active model searches and the set being
    built). Their vectors stay in each model's table until that model is retired, so a set rebuilt later (the
    same chunk ids) finds them again."""
    with conn.transaction():
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE tenant_id = %s AND NOT chunker_version = ANY(%s)").format(
                table(schema, "chunked_documents")
            ),
            (tenant_id, list(keep)),
        )
        return conn.execute(
            sql.SQL("DELETE FROM {} WHERE tenant_id = %s AND NOT chunker_version = ANY(%s)").format(
                table(schema, "chunks")
            ),
            (tenant_id, list(keep)),
        ).rowcount
