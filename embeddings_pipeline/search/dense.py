"""Dense (cosine, HNSW) search within one tenant's vectors of its active model."""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from ..config import validate_tenant_id
from ..store.db import table

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

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@functools.lru_cache(maxsize=16)
def _supports_iterative_scan(version: str) -> bool:
    major, minor = (int(x) for x in version.split(".")[:2])
    return (major, minor) >= (0, 8)


def search_vector(
    conn: psycopg.Connection,
    schema: str,
    vector_table: str,
    tenant_id: str,
    query: np.ndarray,
    k: int = 10,
    chunk_set: str | None = None,
) -> list[SearchHit]:
    """Top-k chunks of `tenant_id` by cosine similarity, from one chunk set (all of the model's when None).
    Only that tenant's rows are ever read."""
    validate_tenant_id(tenant_id)
    if k < 1:
        raise ValueError("k must be at least 1")
    version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    with conn.transaction():
        # HNSW returns ef_search candidates before the tenant filter; widen it and, where pgvector can,
        # keep scanning until k rows of this tenant are found.
        conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(min(1000, max(40, 2 * k))),))
        if version and _supports_iterative_scan(version[0]):
            conn.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
        rows = conn.execute(
            sql.SQL(
                """
                SELECT c.chunk_id, c.doc_id, c.text, 1 - v.distance, v.model_key, v.run_id
                  FROM (SELECT chunk_id, content_hash, model_key, run_id, embedding <=> %(q)s AS distance
                          FROM {v} WHERE tenant_id = %(t)s AND embedding IS NOT NULL
                         ORDER BY embedding <=> %(q)s LIMIT %(k)s) v
                  JOIN {chunks} c ON c.tenant_id = %(t)s AND c.chunk_id = v.chunk_id
                                 AND c.content_hash = v.content_hash
                                 AND (%(chunk_set)s::text IS NULL OR c.chunker_version = %(chunk_set)s)
                 ORDER BY v.distance
                """
            ).format(v=table(schema, vector_table), chunks=table(schema, "chunks")),
            {"q": query, "t": tenant_id, "k": k, "chunk_set": chunk_set},
        ).fetchall()
    return [SearchHit(r[0], r[1], r[2], float(r[3]), r[4], r[5]) for r in rows]
