"""Dense (cosine, HNSW) search within one tenant's vectors of its active model."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from ..config import validate_tenant_id
from ..store.db import table
from . import documents as docs

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class SearchHit:
    chunk_id: str
    doc_id: str
    text: str
    score: float  # cosine similarity (dense), ts_rank_cd (text), reciprocal rank fusion (hybrid)
    model_key: str
    run_id: str
    title: str | None = None  # the document's (None: not read; `documents.with_documents` reads it)
    metadata: Any = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def ef_search(conn: psycopg.Connection, schema: str, vector_table: str, tenant_id: str, k: int) -> int:
    """HNSW candidates per search: at least 2k, more for a larger graph (its own partition's estimated rows)."""
    from ..store.vector_tables import tenant_partition

    row = conn.execute(
        "SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)",
        (f'"{schema}"."{tenant_partition(vector_table.removeprefix("vectors_"), tenant_id)}"',),
    ).fetchone()
    size = max(float(row[0]), 0.0) if row else 0.0
    floor = 100 if size < 20_000 else 256 if size < 200_000 else 400  # recall@10 >= 0.95: bench/layout.py
    return min(1000, max(2 * k, floor))


def search_vector(
    conn: psycopg.Connection,
    schema: str,
    vector_table: str,
    tenant_id: str,
    query: np.ndarray,
    k: int = 10,
    chunk_set: str | None = None,
    documents: bool = False,
) -> list[SearchHit]:
    """Top-k chunks of `tenant_id` by cosine similarity, from one chunk set (all of the model's when None), with
    their documents' title and metadata when `documents`. Only that tenant's rows are ever read."""
    validate_tenant_id(tenant_id)
    if k < 1:
        raise ValueError("k must be at least 1")
    with conn.transaction():
        # A small tenant's rows sit in the shared partition, which has no HNSW graph: an exact scan of its own
        # rows. A large tenant has a partition and a graph of its own vectors only, so nothing is filtered out of
        # its index scan (no iterative scan needed: its relaxed order would cost recall); ef_search grows with k
        # and the partition's size. Always a plan for this tenant (never the generic plan a prepared statement
        # may switch to after five runs: without the tenant it joins the whole chunks table, 85-263 ms at 100k).
        ef = str(ef_search(conn, schema, vector_table, tenant_id, k))
        conn.execute(
            "SELECT set_config('hnsw.ef_search', %s, true), set_config('plan_cache_mode', 'force_custom_plan', true)",
            (ef,),
        )
        rows = conn.execute(
            sql.SQL(
                """
                SELECT c.chunk_id, c.doc_id, c.text, 1 - v.distance, v.model_key, v.run_id {doc_columns}
                  FROM (SELECT chunk_id, content_hash, model_key, run_id, embedding <=> %(q)s AS distance
                          FROM {v} WHERE tenant_id = %(t)s AND embedding IS NOT NULL
                         ORDER BY embedding <=> %(q)s LIMIT %(k)s) v
                  JOIN {chunks} c ON c.tenant_id = %(t)s AND c.chunk_id = v.chunk_id
                                 AND c.content_hash = v.content_hash
                                 AND (%(chunk_set)s::text IS NULL OR c.chunker_version = %(chunk_set)s)
                  {doc_join}
                 ORDER BY v.distance
                """
            ).format(
                v=table(schema, vector_table),
                chunks=table(schema, "chunks"),
                **docs.query_parts(schema, documents),
            ),  # fmt: skip
            {"q": query, "t": tenant_id, "k": k, "chunk_set": chunk_set},
        ).fetchall()
    return [SearchHit(r[0], r[1], r[2], float(r[3]), r[4], r[5], *r[6:]) for r in rows]
