"""Each hit's document title and metadata, from the source relation, within the hit's tenant.

Dense and text searches read them in their own final query (`query_parts`: k index probes, no round trip
of their own); a fused ranking (hybrid), whose candidates come from two searches, reads them for its top k only,
in one query (`with_documents`). A hit whose document is gone since its chunk was read gets "" and {}.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from ..store.db import source_relation

if TYPE_CHECKING:
    from .dense import SearchHit

# the two columns a search's final SELECT adds, and the join that provides them (`c` is the chunks alias; one row
# per chunk even where an app's source view repeats a (tenant, doc_id))
_COLUMNS = sql.SQL(", coalesce(d.title, ''), coalesce(d.metadata, '{}'::jsonb)")
_JOIN = """
LEFT JOIN LATERAL (SELECT s.title, s.metadata FROM {docs} s
                    WHERE s.tenant_id = %(t)s AND s.doc_id = c.doc_id LIMIT 1) d ON true
"""


def query_parts(schema: str, documents: bool) -> dict[str, sql.Composable]:
    """A search's `{doc_columns}` and `{doc_join}`: the document's title and metadata, or nothing."""
    if not documents:
        return {"doc_columns": sql.SQL(""), "doc_join": sql.SQL("")}
    return {"doc_columns": _COLUMNS, "doc_join": sql.SQL(_JOIN).format(docs=source_relation(schema))}


def document_metadata(
    conn: psycopg.Connection, schema: str, tenant_id: str, doc_ids: Sequence[str]
) -> dict[str, tuple[str, Any]]:
    """doc_id -> (title, metadata) of the tenant's documents `doc_ids`."""
    if not doc_ids:
        return {}
    rows = conn.execute(
        sql.SQL("SELECT doc_id, title, metadata FROM {} WHERE tenant_id = %s AND doc_id = ANY(%s)").format(
            source_relation(schema)
        ),
        (tenant_id, list(doc_ids)),
    ).fetchall()
    return {r[0]: (r[1] or "", r[2] if r[2] is not None else {}) for r in rows}


def with_documents(conn: psycopg.Connection, schema: str, tenant_id: str, hits: list[SearchHit]) -> list[SearchHit]:
    """`hits` with their documents' title and metadata (one query for those that have none yet)."""
    wanted = sorted({h.doc_id for h in hits if h.title is None})
    documents = document_metadata(conn, schema, tenant_id, wanted)
    out = []
    for h in hits:
        if h.title is None:
            title, metadata = documents.get(h.doc_id, ("", {}))
            h = replace(h, title=title, metadata=metadata)
        out.append(h)
    return out
