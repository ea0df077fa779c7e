"""Full-text BM25 search within one tenant's chunk set (PostgreSQL tsvector and a GIN index, no extension)."""

from __future__ import annotations

import math

import psycopg
from psycopg import sql

from ..config import validate_tenant_id
from ..store.db import table
from .dense import SearchHit

# BM25 in SQL over PostgreSQL's own full-text index, within one tenant's chunk set. Terms are the query's words
# stemmed like the chunks ('english'); each becomes a tsquery literally (quoted, never parsed again), so no query
# text can act as tsquery syntax. k1 = 0.9, b = 0.4: the BM25 parameters of the BEIR baselines (Anserini).
# Every match is ANDed with the tenant's own lexeme (migration 10: 'tenant ' || md5(tenant_id), in every chunk's
# tsvector), so the GIN index intersects a term's postings with the tenant's: the cost follows the tenant's size,
# not the table's; the tenant_id predicate stays as the exact filter.

# Each query term with its document frequency in the chunk set, and the set's size and average length (tokens).
_STATS = r"""
WITH terms AS (
    SELECT DISTINCT lexeme FROM unnest(tsvector_to_array(to_tsvector('english'::regconfig, %(text)s))) AS lexeme
)
SELECT t.lexeme,
       (SELECT count(*) FROM {chunks} c
         WHERE c.tenant_id = %(t)s AND (%(chunk_set)s::text IS NULL OR c.chunker_version = %(chunk_set)s)
           AND c.tsv @@ (('''' || replace(replace(t.lexeme, '\', '\\'), '''', '''''') || '''')::tsquery
                         && ('''tenant ' || md5(%(t)s) || '''')::tsquery))::float8,
       corpus.n, corpus.avglen
  FROM terms t CROSS JOIN (
       SELECT count(*)::float8 AS n, greatest(avg(c.token_count), 1)::float8 AS avglen FROM {chunks} c
        WHERE c.tenant_id = %(t)s AND (%(chunk_set)s::text IS NULL OR c.chunker_version = %(chunk_set)s)) corpus
"""

# Top k of the chunks matching any of %(match)s, scored over every query term (%(lexemes)s with their idf).
_SCORE = r"""
WITH q AS (SELECT * FROM unnest(%(lexemes)s::text[], %(idf)s::float8[]) AS q(lexeme, idf)),
cand AS MATERIALIZED (
    SELECT c.chunk_id, c.tsv, c.token_count FROM {chunks} c
     WHERE c.tenant_id = %(t)s AND (%(chunk_set)s::text IS NULL OR c.chunker_version = %(chunk_set)s)
       AND c.tsv @@ (SELECT ('(' || string_agg('''' || replace(replace(m, '\', '\\'), '''', '''''') || '''', ' | ')
                             || ') & ''tenant ' || md5(%(t)s) || '''')::tsquery
                       FROM unnest(%(match)s::text[]) AS m)
),
top AS (
    SELECT d.chunk_id,
           sum(q.idf * cardinality(u.positions) * (0.9 + 1)
               / (cardinality(u.positions) + 0.9 * (1 - 0.4 + 0.4 * d.token_count / %(avglen)s))) AS score
      FROM cand d CROSS JOIN LATERAL unnest(d.tsv) AS u(lexeme, positions, weights)
      JOIN q ON q.lexeme = u.lexeme
     GROUP BY d.chunk_id
     ORDER BY score DESC, d.chunk_id
     LIMIT %(k)s
)
SELECT c.chunk_id, c.doc_id, c.text, top.score
  FROM top JOIN {chunks} c ON c.tenant_id = %(t)s AND c.chunk_id = top.chunk_id
 ORDER BY top.score DESC, top.chunk_id
"""

# Postings the first, pruned pass reads at most (its rarest terms'); beyond, or when it cannot prove its top k
# exact, every chunk holding any query term is scored.
PRUNED_POSTINGS = 2000
_MAX_TF_WEIGHT = 0.9 + 1  # tf * (k1 + 1) / (tf + k1 * norm) < k1 + 1


def search_text(
    conn: psycopg.Connection,
    schema: str,
    tenant_id: str,
    query: str,
    k: int = 10,
    chunk_set: str | None = None,
) -> list[SearchHit]:
    """Top-k chunks of `tenant_id` by BM25 over the chunk texts; empty when no query word is indexed.

    Exact, in at most two passes (the MaxScore bound): first only the chunks holding one of the rarest terms are
    scored (over every term). A chunk holding none of them scores below the sum of the other terms' idf times
    (k1 + 1); when the k-th score found reaches that sum, no other chunk can enter the top k. Otherwise every chunk
    holding any query term is scored. Common words of a large tenant thus cost a count, not a scoring pass."""
    validate_tenant_id(tenant_id)
    if k < 1:
        raise ValueError("k must be at least 1")
    chunks = table(schema, "chunks")
    params = {"text": query.replace("\x00", " "), "t": tenant_id, "chunk_set": chunk_set}
    stats = conn.execute(sql.SQL(_STATS).format(chunks=chunks), params).fetchall()
    terms = sorted(((lexeme, df) for lexeme, df, _, _ in stats if df > 0), key=lambda t: (t[1], t[0]))
    if not terms:
        return []
    n, avglen = stats[0][2], stats[0][3]
    idf = {lexeme: _idf(n, df) for lexeme, df in terms}
    params |= {"lexemes": list(idf), "idf": list(idf.values()), "avglen": avglen, "k": k}
    rare, postings = [], 0.0
    for lexeme, df in terms:
        if rare and postings + df > PRUNED_POSTINGS:
            break
        rare.append(lexeme)
        postings += df
    score = sql.SQL(_SCORE).format(chunks=chunks)
    if len(rare) < len(terms):
        rows = conn.execute(score, params | {"match": rare}).fetchall()
        bound = sum(idf[lexeme] * _MAX_TF_WEIGHT for lexeme, _ in terms[len(rare) :])
        if len(rows) == k and float(rows[-1][3]) >= bound:
            return _hits(rows)
    return _hits(conn.execute(score, params | {"match": [lexeme for lexeme, _ in terms]}).fetchall())


def _idf(n: float, df: float) -> float:
    return math.log(1 + (n - df + 0.5) / (df + 0.5))


def _hits(rows: list[tuple]) -> list[SearchHit]:
    return [SearchHit(r[0], r[1], r[2], float(r[3]), "", "") for r in rows]
