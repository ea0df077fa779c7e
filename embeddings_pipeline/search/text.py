"""Full-text BM25 search within one tenant's chunk set (PostgreSQL tsvector and a GIN index, no extension)."""

from __future__ import annotations

import psycopg
from psycopg import sql

from ..config import validate_tenant_id
from ..store.db import table
from .dense import SearchHit

# BM25 in SQL over PostgreSQL's own full-text index, within one tenant's chunk set. Terms are the query's words
# stemmed like the chunks ('english'); each becomes a tsquery literally (quoted, never parsed again), so no query
# text can act as tsquery syntax. Each (term, chunk) match is read once from the GIN index (`pairs`, with the term's
# frequency from the tsvector's positions); document frequencies come from those matches and the average length
# (in model tokens) from the same chunk set; only the top k fetch their text.
# k1 = 0.9, b = 0.4: the BM25 parameters of the BEIR baselines (Anserini).
# Every match is ANDed with the tenant's own lexeme (migration 10: 'tenant ' || md5(tenant_id), in every chunk's
# tsvector), so the GIN index intersects a term's postings with the tenant's, and the cost follows the tenant's
# size, not the table's; the tenant_id predicate stays as the exact filter.
_SEARCH = r"""
WITH terms AS MATERIALIZED (
    SELECT DISTINCT lexeme,
           ('''' || replace(replace(lexeme, '\', '\\'), '''', '''''') || '''')::tsquery
               && ('''tenant ' || md5(%(t)s) || '''')::tsquery AS scoped
      FROM unnest(tsvector_to_array(to_tsvector('english'::regconfig, %(text)s))) AS lexeme
),
corpus AS MATERIALIZED (
    SELECT count(*)::float8 AS n, greatest(avg(c.token_count), 1)::float8 AS avglen FROM {chunks} c
     WHERE c.tenant_id = %(t)s AND (%(chunk_set)s::text IS NULL OR c.chunker_version = %(chunk_set)s)
),
pairs AS MATERIALIZED (
    SELECT t.lexeme, c.chunk_id, c.token_count,
           (SELECT cardinality(u.positions) FROM unnest(c.tsv) AS u(lexeme, positions, weights)
             WHERE u.lexeme = t.lexeme) AS tf
      FROM terms t JOIN {chunks} c ON c.tsv @@ t.scoped
     WHERE c.tenant_id = %(t)s AND (%(chunk_set)s::text IS NULL OR c.chunker_version = %(chunk_set)s)
),
df AS (SELECT lexeme, count(*)::float8 AS df FROM pairs GROUP BY lexeme),
top AS (
    SELECT p.chunk_id,
           sum(ln(1 + (corpus.n - df.df + 0.5) / (df.df + 0.5)) * p.tf * (0.9 + 1)
               / (p.tf + 0.9 * (1 - 0.4 + 0.4 * p.token_count / corpus.avglen))) AS score
      FROM pairs p JOIN df USING (lexeme) CROSS JOIN corpus
     GROUP BY p.chunk_id
     ORDER BY score DESC, p.chunk_id
     LIMIT %(k)s
)
SELECT c.chunk_id, c.doc_id, c.text, top.score
  FROM top JOIN {chunks} c ON c.tenant_id = %(t)s AND c.chunk_id = top.chunk_id
 ORDER BY top.score DESC, top.chunk_id
"""


def search_text(
    conn: psycopg.Connection,
    schema: str,
    tenant_id: str,
    query: str,
    k: int = 10,
    chunk_set: str | None = None,
) -> list[SearchHit]:
    """Top-k chunks of `tenant_id` by BM25 over the chunk texts; empty when no query word is indexed."""
    validate_tenant_id(tenant_id)
    if k < 1:
        raise ValueError("k must be at least 1")
    rows = conn.execute(
        sql.SQL(_SEARCH).format(chunks=table(schema, "chunks")),
        {"text": query.replace("\x00", " "), "t": tenant_id, "chunk_set": chunk_set, "k": k},
    ).fetchall()
    return [SearchHit(r[0], r[1], r[2], float(r[3]), "", "") for r in rows]
