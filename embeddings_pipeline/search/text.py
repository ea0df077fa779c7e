"""Full-text BM25 search within one tenant's chunk set (PostgreSQL tsvector and a GIN index, no extension)."""

from __future__ import annotations

import math

import psycopg
from psycopg import sql

from ..config import validate_tenant_id
from ..store import text_index
from ..store.db import table
from . import documents as docs
from .dense import SearchHit

# BM25 in SQL over PostgreSQL's own full-text index, within one tenant's chunk set. Terms are the query's words
# stemmed like the chunks ('english'); each becomes a tsquery literally (quoted, never parsed again), so no query
# text can act as tsquery syntax. k1 = 0.9, b = 0.4: the BM25 parameters of the BEIR baselines (Anserini).
# Every match is ANDed with the tenant's own lexeme (migration 10: 'tenant ' || md5(tenant_id), in every chunk's
# tsvector), so the GIN index intersects a term's postings with the tenant's; the tenant_id predicate stays as
# the exact filter. A large tenant with a GIN index of its own (store/text_index.py) is matched there instead,
# without the lexeme: only its own postings are read. Document frequencies and the corpus size come from the
# statistics the triggers on `chunks` keep exact (migration 11, store/terms.py): a primary-key probe per term
# instead of counting its postings.

# Each query term with its df in the chunk set, and the set's size and average length (tokens). The average is
# avg(token_count) as PostgreSQL computes it (numeric sum / count), so the scores equal those of counting rows.
# Also each term's bounds (migration 13): its most occurrences in one chunk and the fewest tokens of such a chunk.
_STATS = r"""
WITH terms AS (
    SELECT DISTINCT lexeme FROM unnest(tsvector_to_array(to_tsvector('english'::regconfig, %(text)s))) AS lexeme
), corpus AS (
    SELECT sum(s.n) AS n, sum(s.tokens) AS tokens FROM {corpus} s
     WHERE s.tenant_id = %(t)s AND (%(chunk_set)s::text IS NULL OR s.chunk_set = %(chunk_set)s)
)
SELECT t.lexeme, coalesce(s.df, 0)::float8,
       corpus.n::float8, greatest(corpus.tokens / corpus.n, 1)::float8,
       coalesce((SELECT x.indisvalid FROM pg_index x WHERE x.indexrelid = to_regclass(%(own)s)), false),
       s.max_tf::float8, s.min_tokens::float8
  FROM terms t CROSS JOIN corpus
  LEFT JOIN LATERAL (SELECT sum(s.df) AS df, max(s.max_tf) AS max_tf, min(s.min_tokens) AS min_tokens
                       FROM {terms} s
                      WHERE s.tenant_id = %(t)s AND s.lexeme = t.lexeme
                        AND (%(chunk_set)s::text IS NULL OR s.chunk_set = %(chunk_set)s)) s ON true
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
       corpus.n, corpus.avglen,
       coalesce((SELECT x.indisvalid FROM pg_index x WHERE x.indexrelid = to_regclass(%(own)s)), false),
       NULL::float8, NULL::float8
  FROM terms t CROSS JOIN (
       SELECT count(*)::float8 AS n, greatest(avg(c.token_count), 1)::float8 AS avglen FROM {chunks} c
        WHERE c.tenant_id = %(t)s AND (%(chunk_set)s::text IS NULL OR c.chunker_version = %(chunk_set)s)) corpus
"""

# Top k of the chunks matching any of the tsqueries {match} (`_score`: one GIN scan each, ANDed with the tenant's
# lexeme: a short query per scan is cheap for the index, a long one is checked against every posting it reads),
# scored over every query term (%(lexemes)s with their idf). Each candidate's tsvector is cut to the query's
# lexemes first (setweight marks them, ts_filter keeps them with their positions, so tf is unchanged) and summed in
# its own lexeme order, whatever the plan: a chunk scores the same float in every pass, so passes merge exactly.
# Ties go by chunk_id in byte order (COLLATE "C", as Python sorts the merge). {tenant} is the tenant filter: kept
# off the btree indexes (`|| ''`) on the shared GIN index, where the lexeme bounds the scans and ANDing a bitmap
# of a large tenant's rows only costs; a plain equality where the tenant's own (partial) index serves the scans.
_SCORE = r"""
WITH top AS (
    SELECT c.chunk_id,
           (SELECT sum((%(idf)s::float8[])[array_position(%(lexemes)s::text[], u.lexeme)]
                       * cardinality(u.positions) * (0.9 + 1)
                       / (cardinality(u.positions) + 0.9 * (1 - 0.4 + 0.4 * c.token_count / %(avglen)s)))
              FROM unnest(ts_filter(setweight(c.tsv, 'A', %(lexemes)s::text[]), '{{a}}'))
                   AS u(lexeme, positions, weights)) AS score
      FROM {chunks} c
     WHERE {tenant} AND (%(chunk_set)s::text IS NULL OR c.chunker_version = %(chunk_set)s)
       AND ({match})
     ORDER BY score DESC, c.chunk_id COLLATE "C"
     LIMIT %(k)s
)
SELECT c.chunk_id, c.doc_id, c.text, top.score {doc_columns}
  FROM top JOIN {chunks} c ON c.tenant_id = %(t)s AND c.chunk_id = top.chunk_id
  {doc_join}
 ORDER BY top.score DESC, top.chunk_id COLLATE "C"
"""
# (tenant filter, one scan) on the shared index and on the tenant's own
_SHARED = ("(c.tenant_id || '') = %(t)s", "c.tsv @@ ('(' || {} || ') & ''tenant ' || md5(%(t)s) || '''')::tsquery")
_OWN = ("c.tenant_id = %(t)s", "c.tsv @@ {}::tsquery")

# Postings the first, pruned pass reads at most (its rarest terms'), and the most clauses of a second pass that
# matches only the combinations of common terms able to reach the first pass's k-th score.
PRUNED_POSTINGS = 2000
MAX_CLAUSES = 64
K1, B = 0.9, 0.4  # as written into the SQL above
_MAX_TF_WEIGHT = K1 + 1  # tf * (k1 + 1) / (tf + k1 * norm) < k1 + 1
_SLACK = 1 + 1e-9  # a bound a hair above the best score it allows: float rounding, and ties at the k-th score

Terms = list[tuple[str, float]]  # (lexeme, df), rarest first
Clause = tuple[list[str], list[str]]  # a chunk matches when it holds all of the first and (if any) one of the second


def search_text(
    conn: psycopg.Connection,
    schema: str,
    tenant_id: str,
    query: str,
    k: int = 10,
    chunk_set: str | None = None,
    documents: bool = False,
) -> list[SearchHit]:
    """Top-k chunks of `tenant_id` by BM25 over the chunk texts (with their documents' title and metadata when
    `documents`); empty when no query word is indexed.

    Exact, in at most two passes (MaxScore): first only the chunks holding one of the rarest terms are scored
    (over every term); their k-th score is a threshold. A term adds less than its bound (idf times the most its tf
    part reaches in the set: `tf_bound`, from its most occurrences in one chunk and the fewest tokens of such a
    chunk), so a chunk holding none of the rarest terms can enter the top k only if the bounds of the terms it
    holds sum above the threshold: the second pass scores only the chunks holding such a combination (the minimal
    ones, as a tsquery; when there are too many, their first terms and any one of the terms that can still reach
    it), and is skipped when none exists."""
    validate_tenant_id(tenant_id)
    if k < 1:
        raise ValueError("k must be at least 1")
    params: dict[str, object] = {"text": query.replace("\x00", " "), "t": tenant_id, "chunk_set": chunk_set,
                                 "own": text_index.qualified(schema, tenant_id)}  # fmt: skip
    stats = term_stats(conn, schema, params)
    if stats is None:
        return []
    terms, n, avglen, own, weights = stats
    idf = {lexeme: _idf(n, df) for lexeme, df in terms}
    params |= {"lexemes": list(idf), "idf": list(idf.values()), "avglen": avglen, "k": k}
    chunks, form = table(schema, "chunks"), _OWN if own else _SHARED
    extra = docs.query_parts(schema, documents)
    rare = _rarest(terms, k)
    rows = _score(conn, chunks, form, params, [" | ".join(_quoted(lexeme) for lexeme, _ in terms[:rare])], extra)
    threshold = float(rows[-1][3]) if len(rows) == k else 0.0
    common = sorted(((lexeme, idf[lexeme] * weights[lexeme]) for lexeme, _ in terms[rare:]), key=lambda t: -t[1])
    clauses = _clauses(common, threshold)
    if clauses == []:
        return _hits(rows)
    more = _score(conn, chunks, form, params, _grouped(clauses), extra)
    merged = {r[0]: r for r in rows} | {r[0]: r for r in more}
    return _hits(sorted(merged.values(), key=lambda r: (-float(r[3]), r[0].encode()))[:k])


def _score(
    conn: psycopg.Connection,
    chunks: sql.Composable,
    form: tuple[str, str],
    params: dict[str, object],
    match: list[str],
    extra: dict[str, sql.Composable],
) -> list:
    """`_SCORE` over the chunks matching any of the tsquery texts in `match` (each with the tenant's lexeme on the
    shared index; `extra`: `documents.query_parts`). Planned for these values every time (never a generic
    plan: a partial index needs the tenant)."""
    scans = sql.SQL(" OR ").join(sql.SQL(form[1]).format(sql.Placeholder(f"m{i}")) for i in range(len(match)))
    named = {f"m{i}": m for i, m in enumerate(match)}
    statement = sql.SQL(_SCORE).format(chunks=chunks, tenant=sql.SQL(form[0]), match=scans, **extra)
    return conn.execute(statement, params | {"match": match} | named, prepare=False).fetchall()


def term_stats(
    conn: psycopg.Connection, schema: str, params: dict[str, object]
) -> tuple[Terms, float, float, bool, dict[str, float]] | None:
    """The query's terms that occur in the chunk set with their df, rarest first, the set's size and average
    length, whether the tenant's own text index is there to use, and each term's bound on its tf weight
    (`tf_bound`); None when no query term occurs in it."""
    names = {"terms": table(schema, "chunk_terms"), "corpus": table(schema, "chunk_corpus")}
    stats = _try(conn, sql.SQL(_STATS).format(**names), params)  # None: a schema before migration 11 counts
    if not stats or stats[0][2] is None:  # no statistics (row) for the set
        stats = conn.execute(sql.SQL(_COUNTED_STATS).format(chunks=table(schema, "chunks")), params).fetchall()
    terms = sorted(((lexeme, df) for lexeme, df, *_ in stats if df > 0), key=lambda t: (t[1], t[0]))
    if not terms:
        return None
    avglen = float(stats[0][3])
    weights = {lexeme: tf_bound(max_tf, min_tokens, avglen) for lexeme, _, _, _, _, max_tf, min_tokens in stats}
    return terms, float(stats[0][2]), avglen, bool(stats[0][4]), weights


def tf_bound(max_tf: float | None, min_tokens: float | None, avglen: float) -> float:
    """The most a term's tf part of BM25, tf * (k1 + 1) / (tf + k1 * (1 - b + b * tokens / avglen)), reaches in a
    chunk of the set: at its most occurrences and the fewest tokens of a chunk holding it (it grows with tf and
    falls with length). Without bounds (a counted fallback), k1 + 1, which no tf reaches."""
    if max_tf is None or min_tokens is None:
        return _MAX_TF_WEIGHT
    return max_tf * (K1 + 1) / (max_tf + K1 * (1 - B + B * min_tokens / avglen)) * _SLACK


def _try(conn: psycopg.Connection, statement: sql.Composable, params: dict[str, object]) -> list[tuple] | None:
    """The rows of `statement`, or None when a table it reads does not exist: no round trip to ask first. Inside
    a transaction the attempt is a savepoint, so the failure leaves the caller's transaction usable."""
    try:
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            return conn.execute(statement, params).fetchall()
        with conn.transaction():
            return conn.execute(statement, params).fetchall()
    except psycopg.errors.UndefinedTable:
        return None


def _rarest(terms: Terms, k: int) -> int:
    """How many of the rarest terms the first pass matches: at least one, at most PRUNED_POSTINGS postings unless
    fewer than k postings would give it no k-th score (then every chunk holding any other term is a candidate)."""
    count, postings = 0, 0.0
    for _, df in terms:
        if count and postings >= k and postings + df > PRUNED_POSTINGS:
            break
        count, postings = count + 1, postings + df
    return count


def _clauses(common: list[tuple[str, float]], threshold: float) -> list[Clause]:
    """The chunks the second pass must score, as clauses: the minimal combinations of `common` terms whose bounds
    sum above `threshold` when there are at most MAX_CLAUSES of them; else the same walk cut at the deepest
    depth that gives at most MAX_CLAUSES clauses (each a combination's first terms, and one of the terms a chunk
    must then also hold to reach the threshold). Every chunk that can reach it matches one."""
    for depth in range(len(common), -1, -1):
        out = _cover(common, threshold, depth)
        if out is not None:
            return out
    raise AssertionError("depth 0 gives at most one clause")  # pragma: no cover


def _cover(common: list[tuple[str, float]], threshold: float, depth: int) -> list[Clause] | None:
    """Terms (lexeme, bound) are taken largest bound first: a chunk's terms in that order sum above
    `threshold` only if a prefix of them does. Up to `depth` terms the prefixes are spelled out; past it, a chunk
    whose first `depth` terms sum to t must hold a term j with t + (the bounds of j and every later term) above
    the threshold (its next term is such a j). None when there are more than MAX_CLAUSES clauses."""
    out: list[Clause] = []
    suffix = [0.0] * (len(common) + 1)
    for i in range(len(common) - 1, -1, -1):
        suffix[i] = suffix[i + 1] + common[i][1]

    def walk(i: int, chosen: list[str], total: float) -> bool:
        if total > threshold:  # adding in falling bound order, so removing any chosen term falls under it
            out.append((chosen, []))
        elif i < len(common) and total + suffix[i] > threshold:
            if len(chosen) == depth:
                out.append((chosen, [lexeme for j, (lexeme, _) in enumerate(common) if j >= i
                                     and total + suffix[j] > threshold]))  # fmt: skip
            else:
                return walk(i + 1, [*chosen, common[i][0]], total + common[i][1]) and walk(i + 1, chosen, total)
        return len(out) <= MAX_CLAUSES

    return out if walk(0, [], 0.0) else None


def _combinations(common: list[tuple[str, float]], threshold: float) -> list[list[str]] | None:
    """The minimal sets of `common` terms whose bounds sum above `threshold`; None past MAX_CLAUSES."""
    out = _cover(common, threshold, len(common))
    return None if out is None else [chosen for chosen, _ in out]


def _grouped(clauses: list[Clause]) -> list[str]:
    """The clauses as one tsquery per leading term, `a & ((b & c) | d)`: the same matches, and each scan reads its
    leading term's postings once (a scan per clause reads them again for every clause; one scan of them all checks
    the whole query against every posting of every term). A clause with no term of its own leads with each of
    its alternatives."""
    groups: dict[str, list[str | None]] = {}
    for chosen, either in clauses:
        if not chosen:
            for lexeme in either:
                groups.setdefault(lexeme, []).append(None)
            continue
        rest = [*map(_quoted, chosen[1:]), *(["(" + " | ".join(map(_quoted, either)) + ")"] if either else [])]
        groups.setdefault(chosen[0], []).append(" & ".join(rest) if rest else None)
    out = []
    for first, rests in groups.items():
        alone = any(rest is None for rest in rests)  # the lead alone matches: the other clauses add nothing
        out.append(_quoted(first) + ("" if alone else " & (" + " | ".join(f"({r})" for r in rests) + ")"))
    return out


def _quoted(lexeme: str) -> str:
    """A lexeme as a tsquery operand, literally (quoted; a backslash or quote inside escaped): never syntax."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def _idf(n: float, df: float) -> float:
    return math.log(1 + (n - df + 0.5) / (df + 0.5))


def _hits(rows: list[tuple]) -> list[SearchHit]:
    return [SearchHit(r[0], r[1], r[2], float(r[3]), "", "", *r[4:]) for r in rows]
