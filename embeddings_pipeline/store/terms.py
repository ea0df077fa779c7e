"""BM25 term statistics per tenant and chunk set, kept exact by the database itself.

`chunk_terms` holds, for every (tenant, lexeme, chunk set), the number of chunks whose tsvector holds the lexeme
(its document frequency) and bounds on its score (`BOUNDS`, migration 13); `chunk_corpus` holds each chunk set's
size and total token count (BM25's n and average length). Text search reads a query term's df with one primary-key
probe instead of counting its postings.

Statement-level triggers on `chunks` with transition tables keep both exact for every writer (the chunk step's
COPY, orphan and chunk-set deletes, a tenant's erasure, an UPDATE or TRUNCATE behind the pipeline's back): one
aggregate per statement, not per row. The tenant's own lexeme ('tenant ' || md5(tenant_id), migration 10) is
counted like any other; no query word parses to it (it holds a space), so it only costs one row per chunk set.
Drift repair calls `ensure_stats`: lost triggers or a damaged statistics table are rebuilt from the chunks.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

TABLES = ("chunk_terms", "chunk_corpus")
TRIGGERS = ("chunk_stats_insert", "chunk_stats_update", "chunk_stats_delete", "chunk_stats_truncate")

# Templates with `{s}` for the schema identifier (as in migrations.py).
CREATE_TABLES = """
CREATE TABLE IF NOT EXISTS {s}.chunk_terms (
    tenant_id text NOT NULL,
    lexeme    text NOT NULL,
    chunk_set text NOT NULL,
    df        bigint NOT NULL,
    max_tf     integer NOT NULL DEFAULT 256,
    min_tokens integer NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, lexeme, chunk_set)
) WITH (fillfactor = 80);
CREATE TABLE IF NOT EXISTS {s}.chunk_corpus (
    tenant_id text NOT NULL,
    chunk_set text NOT NULL,
    n         bigint NOT NULL,
    tokens    bigint NOT NULL,
    PRIMARY KEY (tenant_id, chunk_set)
);
"""

# One function for the four triggers: old rows are taken out, then new rows counted in (an UPDATE does both).
# Rows are upserted in key order, so two statements on one tenant lock its rows in the same order.
MAINTAIN = """
CREATE OR REPLACE FUNCTION {s}.chunk_stats() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    spent_tenant text[];
    spent_lexeme text[];
    spent_set    text[];
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM {s}.chunk_terms;
        DELETE FROM {s}.chunk_corpus;
        RETURN NULL;
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        WITH gone AS (
            SELECT o.tenant_id, u.lexeme, o.chunker_version AS chunk_set, count(*) AS df
              FROM old_rows o CROSS JOIN LATERAL unnest(tsvector_to_array(o.tsv)) AS u(lexeme)
             GROUP BY 1, 2, 3
        ), updated AS (
            UPDATE {s}.chunk_terms t SET df = t.df - gone.df FROM gone
             WHERE t.tenant_id = gone.tenant_id AND t.lexeme = gone.lexeme AND t.chunk_set = gone.chunk_set
            RETURNING t.tenant_id, t.lexeme, t.chunk_set, t.df
        )
        SELECT array_agg(tenant_id), array_agg(lexeme), array_agg(chunk_set)
          INTO spent_tenant, spent_lexeme, spent_set FROM updated WHERE df <= 0;
        DELETE FROM {s}.chunk_terms t USING unnest(spent_tenant, spent_lexeme, spent_set) AS x(tenant_id, lexeme, cs)
         WHERE t.tenant_id = x.tenant_id AND t.lexeme = x.lexeme AND t.chunk_set = x.cs AND t.df <= 0;
        UPDATE {s}.chunk_corpus t SET n = t.n - gone.n, tokens = t.tokens - gone.tokens
          FROM (SELECT tenant_id, chunker_version, count(*) AS n, sum(token_count) AS tokens FROM old_rows
                 GROUP BY 1, 2) gone
         WHERE t.tenant_id = gone.tenant_id AND t.chunk_set = gone.chunker_version;
        DELETE FROM {s}.chunk_corpus t USING (SELECT DISTINCT tenant_id FROM old_rows) gone
         WHERE t.tenant_id = gone.tenant_id AND t.n <= 0;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO {s}.chunk_terms AS t (tenant_id, lexeme, chunk_set, df, max_tf, min_tokens)
        SELECT n.tenant_id, u.lexeme, n.chunker_version, count(*),
               max(coalesce(cardinality(u.positions), 0)), min(n.token_count)
          FROM new_rows n CROSS JOIN LATERAL unnest(n.tsv) AS u(lexeme, positions, weights)
         GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (tenant_id, lexeme, chunk_set) DO UPDATE SET df = t.df + EXCLUDED.df,
               max_tf = greatest(t.max_tf, EXCLUDED.max_tf), min_tokens = least(t.min_tokens, EXCLUDED.min_tokens);
        INSERT INTO {s}.chunk_corpus AS t (tenant_id, chunk_set, n, tokens)
        SELECT tenant_id, chunker_version, count(*), sum(token_count) FROM new_rows GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (tenant_id, chunk_set) DO UPDATE SET n = t.n + EXCLUDED.n, tokens = t.tokens + EXCLUDED.tokens;
    END IF;
    RETURN NULL;
END
$fn$;
DROP TRIGGER IF EXISTS chunk_stats_insert ON {s}.chunks;
DROP TRIGGER IF EXISTS chunk_stats_update ON {s}.chunks;
DROP TRIGGER IF EXISTS chunk_stats_delete ON {s}.chunks;
DROP TRIGGER IF EXISTS chunk_stats_truncate ON {s}.chunks;
CREATE TRIGGER chunk_stats_insert AFTER INSERT ON {s}.chunks REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.chunk_stats();
CREATE TRIGGER chunk_stats_update AFTER UPDATE ON {s}.chunks REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.chunk_stats();
CREATE TRIGGER chunk_stats_delete AFTER DELETE ON {s}.chunks REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.chunk_stats();
CREATE TRIGGER chunk_stats_truncate AFTER TRUNCATE ON {s}.chunks
    FOR EACH STATEMENT EXECUTE FUNCTION {s}.chunk_stats();
"""

# Recount from the chunks, under a lock that holds writers off meanwhile (their triggers then see the new rows).
BACKFILL = """
LOCK TABLE {s}.chunks IN SHARE ROW EXCLUSIVE MODE;
DELETE FROM {s}.chunk_terms;
DELETE FROM {s}.chunk_corpus;
INSERT INTO {s}.chunk_terms (tenant_id, lexeme, chunk_set, df, max_tf, min_tokens)
SELECT c.tenant_id, u.lexeme, c.chunker_version, count(*),
       max(coalesce(cardinality(u.positions), 0)), min(c.token_count)
  FROM {s}.chunks c CROSS JOIN LATERAL unnest(c.tsv) AS u(lexeme, positions, weights)
 GROUP BY 1, 2, 3;
INSERT INTO {s}.chunk_corpus (tenant_id, chunk_set, n, tokens)
SELECT tenant_id, chunker_version, count(*), sum(token_count) FROM {s}.chunks GROUP BY 1, 2;
"""

MIGRATION = CREATE_TABLES + MAINTAIN + BACKFILL

# Bounds per term for BM25's pruning (search/text.py): the most occurrences of the lexeme in one chunk and the
# fewest tokens of a chunk holding it. Writes only ever raise max_tf and lower min_tokens, so a delete leaves them
# loose but never wrong; the defaults (tsvector's 256 positions at most, 0 tokens) are the loosest bounds.
BOUNDS = """
ALTER TABLE {s}.chunk_terms ADD COLUMN IF NOT EXISTS max_tf integer NOT NULL DEFAULT 256;
ALTER TABLE {s}.chunk_terms ADD COLUMN IF NOT EXISTS min_tokens integer NOT NULL DEFAULT 0;
""" + MAINTAIN + BACKFILL

_TRIGGERS_ON = """
SELECT count(*) FROM pg_trigger
 WHERE tgrelid = to_regclass(%s) AND tgname = ANY(%s) AND tgenabled <> 'D' AND NOT tgisinternal
"""


def maintained(conn: psycopg.Connection, schema: str) -> bool:
    """Whether every statistics trigger is on `chunks` and enabled."""
    row = conn.execute(_TRIGGERS_ON, (f'"{schema}"."chunks"', list(TRIGGERS))).fetchone()
    return row is not None and row[0] == len(TRIGGERS)


def rebuild(conn: psycopg.Connection, schema: str) -> None:
    """(Re)create the statistics tables, their triggers, and recount them from the chunks, in one transaction."""
    with conn.transaction():
        conn.execute(sql.SQL(MIGRATION).format(s=sql.Identifier(schema)))  # type: ignore[arg-type]


def ensure_stats(conn: psycopg.Connection, schema: str, damaged_tables: list[str]) -> bool:
    """Rebuild the statistics when drift repair recreated `chunks` or a statistics table, or a trigger is gone or
    disabled; returns whether it did."""
    if set(damaged_tables) & {"chunks", *TABLES} or not maintained(conn, schema):
        rebuild(conn, schema)
        return True
    return False
