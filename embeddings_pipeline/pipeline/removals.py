"""Removing deleted documents' blocks, chunks and vectors at once, without a run (`ingest --materialize`).

A run removes what a deleted document left (`steps.build_blocks` forgets its blocks, `build_chunks` drops its
chunks, `fill` drops their vectors) but costs a Dagster run and, on a large tenant, the whole pass over it. When
an ingest only removed documents there is nothing to parse, chunk or embed, so the same store calls run here,
under the tenant's lock, in the ingesting process: the rows are gone when the command returns. A run that comes
later (the daemon sees the deleted rows) finds nothing left to remove.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

from ..store import content, parsing, vectors
from ..store.db import table, tenant_lock
from ..store.models import vector_table_of
from ..store.scope import Scope


@dataclass(frozen=True)
class Removal:
    documents: int
    blocks: int
    chunks: int
    vectors: int

    def as_dict(self) -> dict[str, int]:
        return {"documents": self.documents, "blocks": self.blocks, "chunks": self.chunks, "vectors": self.vectors}


def _vector_tables(scope: Scope) -> list[str]:
    """The vector tables of every model not retired (a tenant may hold vectors of several: a model change)."""
    keys = scope.conn.execute(
        sql.SQL("SELECT model_key FROM {} WHERE status <> 'retired' ORDER BY model_key").format(
            table(scope.schema, "embedding_models")
        )
    ).fetchall()
    found = (vector_table_of(scope.conn, scope.schema, key) for (key,) in keys)
    return [vt for vt in found if vt is not None]


def remove_deleted(scope: Scope) -> Removal:
    """Forget every document deleted from the tenant's source: its blocks, its chunks in every chunk set, their
    vectors of every model, and its recorded parse errors. The same store calls as a run's, so the result is the
    run's; documents that are live are not touched."""
    conn, schema, tenant_id = scope
    with tenant_lock(conn, schema, tenant_id):
        removed = parsing.removed_documents(*scope)
        blocks = parsing.forget_documents(*scope, removed) if removed else 0
        chunks = content.delete_orphan_chunks(*scope)
        dropped = sum(vectors.delete_orphans(conn, schema, vt, tenant_id) for vt in _vector_tables(scope))
        parsing.forget_gone_errors(*scope)
    return Removal(documents=len(removed), blocks=blocks, chunks=chunks, vectors=dropped)
