"""Full-text search within one tenant's chunk set (PostgreSQL tsvector and a GIN index, no extension needed)."""

from __future__ import annotations

import psycopg
from psycopg import sql

from ..config import validate_tenant_id
from ..store.db import table
from .dense import SearchHit

# The query's words, stemmed like the chunks and OR-ed: a chunk matching any word is a candidate and ts_rank_cd
# orders them (more and closer matches first, normalized by length). The lexemes become a tsquery literally
# (quoted, never parsed again), so no query text can act as tsquery syntax.
_SEARCH = r"""
WITH q AS (
    SELECT string_agg('''' || replace(replace(lexeme, '\', '\\'), '''', '''''') || '''', ' | ')::tsquery AS tsq
      FROM unnest(tsvector_to_array(to_tsvector('english'::regconfig, %(text)s))) AS lexeme
)
SELECT c.chunk_id, c.doc_id, c.text, ts_rank_cd(c.tsv, q.tsq, 1) AS score
  FROM {chunks} c, q
 WHERE q.tsq IS NOT NULL AND c.tenant_id = %(t)s AND c.tsv @@ q.tsq
   AND (%(cv)s::text IS NULL OR c.chunker_version = %(cv)s)
 ORDER BY score DESC, c.chunk_id
 LIMIT %(k)s
"""


def search_text(
    conn: psycopg.Connection,
    schema: str,
    tenant_id: str,
    query: str,
    k: int = 10,
    chunker_version: str | None = None,
) -> list[SearchHit]:
    """Top-k chunks of `tenant_id` by text match (score: ts_rank_cd); empty when no query word is indexed."""
    validate_tenant_id(tenant_id)
    if k < 1:
        raise ValueError("k must be at least 1")
    rows = conn.execute(
        sql.SQL(_SEARCH).format(chunks=table(schema, "chunks")),
        {"text": query.replace("\x00", " "), "t": tenant_id, "cv": chunker_version, "k": k},
    ).fetchall()
    return [SearchHit(r[0], r[1], r[2], float(r[3]), "", "") for r in rows]
