"""`search_text` as it was before migration 11 (kept for bench/text.py, which runs it beside the current one).

Each query term's df counted from its postings within the tenant's lexeme, then at most two passes: the chunks
holding the rarest terms, and unless the MaxScore bound over all the other terms proves that top k, every chunk
holding any query term (a materialized candidate set, each tsvector unnested whole)."""

from __future__ import annotations

import psycopg
from psycopg import sql

from embeddings_pipeline.search.text import _COUNTED_STATS, _idf
from embeddings_pipeline.store.db import table

SCORE = r"""
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

PRUNED_POSTINGS = 2000


def search_text_counted(
    conn: psycopg.Connection, schema: str, tenant_id: str, query: str, k: int = 10, chunk_set: str | None = None
) -> list[tuple]:
    """(chunk_id, doc_id, text, score) rows, best first, as the previous `search_text` returned them."""
    chunks = table(schema, "chunks")
    params: dict[str, object] = {"text": query.replace("\x00", " "), "t": tenant_id, "chunk_set": chunk_set,
                                 "own": None}  # fmt: skip
    stats = conn.execute(sql.SQL(_COUNTED_STATS).format(chunks=chunks), params).fetchall()
    terms = sorted(((lexeme, df) for lexeme, df, *_ in stats if df > 0), key=lambda t: (t[1], t[0]))
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
    score = sql.SQL(SCORE).format(chunks=chunks)
    if len(rare) < len(terms):
        rows = conn.execute(score, params | {"match": rare}).fetchall()
        bound = sum(idf[lexeme] * 1.9 for lexeme, _ in terms[len(rare) :])
        if len(rows) == k and float(rows[-1][3]) >= bound:
            return rows
    return conn.execute(score, params | {"match": [lexeme for lexeme, _ in terms]}).fetchall()
