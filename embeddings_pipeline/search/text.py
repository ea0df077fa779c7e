"""Full-text BM25 search within one tenant's chunk set (PostgreSQL tsvector and a GIN index, no extension)."""

from __future__ import annotations

import math

import psycopg
from psycopg import sql

from ..config import validate_tenant_id
from ..store.db import relation_exists, table
from .dense import SearchHit

# BM25 in SQL over PostgreSQL's own full-text index, within one tenant's chunk set. Terms are the query's words
# stemmed like the chunks ('english'); each becomes a tsquery literally (quoted, never parsed again), so no query
# text can act as tsquery syntax. k1 = 0.9, b = 0.4: the BM25 parameters of the BEIR baselines (Anserini).
# Every match is ANDed with the tenant's own lexeme (migration 10: 'tenant ' || md5(tenant_id), in every chunk's
# tsvector), so the GIN index intersects a term's postings with the tenant's; the tenant_id predicate stays as
# the exact filter. Document frequencies and the corpus size come from the statistics the triggers on `chunks`
# keep exact (migration 11, store/terms.py): a primary-key probe per term instead of counting its postings.

# Each query term with its df in the chunk set, and the set's size and average length (tokens). The average is
# avg(token_count) as PostgreSQL computes it (numeric sum / count), so the scores equal those of counting rows.
_STATS = r"""
WITH terms AS (
    SELECT DISTINCT lexeme FROM unnest(tsvector_to_array(to_tsvector('english'::regconfig, %(text)s))) AS lexeme
), corpus AS (
    SELECT sum(s.n) AS n, sum(s.tokens) AS tokens FROM {corpus} s
     WHERE s.tenant_id = %(t)s AND (%(chunk_set)s::text IS NULL OR s.chunk_set = %(chunk_set)s)
)
SELECT t.lexeme,
       coalesce((SELECT sum(s.df) FROM {terms} s
                  WHERE s.tenant_id = %(t)s AND s.lexeme = t.lexeme
                    AND (%(chunk_set)s::text IS NULL OR s.chunk_set = %(chunk_set)s)), 0)::float8,
       corpus.n::float8, greatest(corpus.tokens / corpus.n, 1)::float8
  FROM terms t CROSS JOIN corpus
"""

# The same counted from the chunks (each term's postings within the tenant's lexeme): for a set with no
# statistics row (an empty set, or rows written while the triggers were off, until drift repair recounts them)
# or a schema without the statistics tables.
_COUNTED_STATS = r"""
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

# Top k of the chunks matching any of %(match)s, scored over every query term (%(lexemes)s with their idf). Each
# candidate's tsvector is cut to the query's lexemes first (setweight marks them, ts_filter keeps them with their
# positions, so tf is unchanged): the scoring join reads a few rows per chunk, not every lexeme the chunk holds.
_SCORE = r"""
WITH q AS (SELECT * FROM unnest(%(lexemes)s::text[], %(idf)s::float8[]) AS q(lexeme, idf)),
top AS (
    SELECT c.chunk_id,
           sum(q.idf * cardinality(u.positions) * (0.9 + 1)
               / (cardinality(u.positions) + 0.9 * (1 - 0.4 + 0.4 * c.token_count / %(avglen)s))) AS score
      FROM {chunks} c
     CROSS JOIN LATERAL unnest(ts_filter(setweight(c.tsv, 'A', %(lexemes)s::text[]), '{{a}}'))
           AS u(lexeme, positions, weights)
      JOIN q ON q.lexeme = u.lexeme
     WHERE c.tenant_id = %(t)s AND (%(chunk_set)s::text IS NULL OR c.chunker_version = %(chunk_set)s)
       AND c.tsv @@ (SELECT ('(' || string_agg('''' || replace(replace(m, '\', '\\'), '''', '''''') || '''', ' | ')
                             || ') & ''tenant ' || md5(%(t)s) || '''')::tsquery
                       FROM unnest(%(match)s::text[]) AS m)
     GROUP BY c.chunk_id
     ORDER BY score DESC, c.chunk_id
     LIMIT %(k)s
)
SELECT c.chunk_id, c.doc_id, c.text, top.score
  FROM top JOIN {chunks} c ON c.tenant_id = %(t)s AND c.chunk_id = top.chunk_id
 ORDER BY top.score DESC, top.chunk_id
"""

# Postings the first, pruned pass reads at most (its rarest terms').
PRUNED_POSTINGS = 2000
_MAX_TF_WEIGHT = 0.9 + 1  # tf * (k1 + 1) / (tf + k1 * norm) < k1 + 1

Terms = list[tuple[str, float]]  # (lexeme, df), rarest first


def search_text(
    conn: psycopg.Connection,
    schema: str,
    tenant_id: str,
    query: str,
    k: int = 10,
    chunk_set: str | None = None,
) -> list[SearchHit]:
    """Top-k chunks of `tenant_id` by BM25 over the chunk texts; empty when no query word is indexed.

    Exact, in at most two passes (MaxScore): first only the chunks holding one of the rarest terms are scored
    (over every term); their k-th score is a threshold. A term adds less than its idf times (k1 + 1), so a chunk
    holding only the commonest terms, whose bounds sum to no more than the threshold, cannot enter the top k: the
    second pass scores the chunks holding any other term, and is skipped when no term is left."""
    validate_tenant_id(tenant_id)
    if k < 1:
        raise ValueError("k must be at least 1")
    params: dict[str, object] = {"text": query.replace("\x00", " "), "t": tenant_id, "chunk_set": chunk_set}
    stats = term_stats(conn, schema, params)
    if stats is None:
        return []
    terms, n, avglen = stats
    idf = {lexeme: _idf(n, df) for lexeme, df in terms}
    params |= {"lexemes": list(idf), "idf": list(idf.values()), "avglen": avglen, "k": k}
    score = sql.SQL(_SCORE).format(chunks=table(schema, "chunks"))
    rare = _rarest(terms)
    rows = conn.execute(score, params | {"match": [lexeme for lexeme, _ in terms[:rare]]}).fetchall()
    threshold = float(rows[-1][3]) if len(rows) == k else 0.0
    essential = _essential(terms, idf, rare, threshold)
    if essential == rare:
        return _hits(rows)
    return _hits(conn.execute(score, params | {"match": [lexeme for lexeme, _ in terms[:essential]]}).fetchall())


def term_stats(conn: psycopg.Connection, schema: str, params: dict[str, object]) -> tuple[Terms, float, float] | None:
    """The query's terms that occur in the chunk set with their df, rarest first, and the set's size and average
    length; None when no query term occurs in it."""
    stats: list[tuple] = []
    if relation_exists(conn, schema, "chunk_corpus"):  # a schema before migration 11 counts, below
        names = {"terms": table(schema, "chunk_terms"), "corpus": table(schema, "chunk_corpus")}
        stats = conn.execute(sql.SQL(_STATS).format(**names), params).fetchall()
    if not stats or stats[0][2] is None:  # no statistics (row) for the set
        stats = conn.execute(sql.SQL(_COUNTED_STATS).format(chunks=table(schema, "chunks")), params).fetchall()
    terms = sorted(((lexeme, df) for lexeme, df, _, _ in stats if df > 0), key=lambda t: (t[1], t[0]))
    if not terms:
        return None
    return terms, float(stats[0][2]), float(stats[0][3])


def _rarest(terms: Terms) -> int:
    """How many of the rarest terms the first pass matches: at least one, at most PRUNED_POSTINGS postings."""
    count, postings = 0, 0.0
    for _, df in terms:
        if count and postings + df > PRUNED_POSTINGS:
            break
        count, postings = count + 1, postings + df
    return count


def _essential(terms: Terms, idf: dict[str, float], rare: int, threshold: float) -> int:
    """How many of the rarest terms a chunk must hold one of to reach `threshold`: the commonest terms are left
    out while their bounds sum to at most the threshold (never the first pass's own terms)."""
    essential, bound = len(terms), 0.0
    while essential > rare and bound + idf[terms[essential - 1][0]] * _MAX_TF_WEIGHT <= threshold:
        essential -= 1
        bound += idf[terms[essential][0]] * _MAX_TF_WEIGHT
    return essential


def _idf(n: float, df: float) -> float:
    return math.log(1 + (n - df + 0.5) / (df + 0.5))


def _hits(rows: list[tuple]) -> list[SearchHit]:
    return [SearchHit(r[0], r[1], r[2], float(r[3]), "", "") for r in rows]
