"""Text (BM25) search cost against the table's size: does a tenant's query cost follow its own size?

    .venv/bin/python bench/text.py [--sizes 50000,150000,300000] [--queries 40] [--json]

One `chunks` table (the pipeline's own, migrated) holds a large (--large chunks), a medium and a small tenant,
plus filler tenants of 1,000 chunks each, all cut from the same SciFact sentences, so every tenant's words are
also every other tenant's (the worst case for an index shared by all tenants). The table grows through --sizes;
at each size the same SciFact test queries run for each tenant with

- before: the BM25 query as it was (GIN matches of any tenant, then filtered by tenant_id), kept here;
- now: `search_text`, whose matches are ANDed with the tenant's own lexeme (migration 10).

Printed: p50/p95 ms per tenant class, before/now ratio, and whether both return the same hits. Text search is
bounded by the tenant's size when `now` stays flat as the table grows.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCIFACT = ROOT.parent / "shared" / "datasets" / "scifact"

BEFORE = r"""
WITH terms AS MATERIALIZED (
    SELECT DISTINCT lexeme, ('''' || replace(replace(lexeme, '\', '\\'), '''', '''''') || '''')::tsquery AS tsq
      FROM unnest(tsvector_to_array(to_tsvector('english'::regconfig, %(text)s))) AS lexeme
),
corpus AS MATERIALIZED (
    SELECT count(*)::float8 AS n, greatest(avg(c.token_count), 1)::float8 AS avglen FROM {chunks} c
     WHERE c.tenant_id = %(t)s AND (%(chunk_set)s::text IS NULL OR c.chunker_version = %(chunk_set)s)
),
df AS MATERIALIZED (
    SELECT t.lexeme, count(c.chunk_id)::float8 AS df
      FROM terms t JOIN {chunks} c ON c.tsv @@ t.tsq
     WHERE c.tenant_id = %(t)s AND (%(chunk_set)s::text IS NULL OR c.chunker_version = %(chunk_set)s)
     GROUP BY t.lexeme
),
candidates AS MATERIALIZED (
    SELECT c.chunk_id, c.doc_id, c.text, c.tsv, c.token_count FROM {chunks} c
     WHERE c.tenant_id = %(t)s AND (%(chunk_set)s::text IS NULL OR c.chunker_version = %(chunk_set)s)
       AND c.tsv @@ (SELECT tsquery_or_all FROM (SELECT string_agg(tsq::text, ' | ')::tsquery AS tsquery_or_all
                                                    FROM terms) q)
)
SELECT d.chunk_id, d.doc_id, d.text,
       sum(ln(1 + (corpus.n - df.df + 0.5) / (df.df + 0.5))
           * cardinality(u.positions) * (0.9 + 1)
           / (cardinality(u.positions) + 0.9 * (1 - 0.4 + 0.4 * d.token_count / corpus.avglen))) AS score
  FROM candidates d CROSS JOIN corpus
 CROSS JOIN LATERAL unnest(d.tsv) AS u(lexeme, positions, weights)
  JOIN df ON df.lexeme = u.lexeme
 GROUP BY d.chunk_id, d.doc_id, d.text
 ORDER BY score DESC, d.chunk_id
 LIMIT %(k)s
"""


def sentences() -> list[str]:
    out = []
    with open(SCIFACT / "corpus.jsonl") as f:
        for line in f:
            doc = json.loads(line)
            out += [s.strip() + "." for s in doc["text"].split(". ") if len(s.split()) >= 6]
    return out


def queries(n: int) -> list[str]:
    with open(SCIFACT / "queries.jsonl") as f:
        texts = [json.loads(line)["text"] for line in f]
    return random.Random(7).sample(texts, n)


def add_tenant(conn, schema: str, tenant: str, size: int, pool: list[str], rng: random.Random) -> None:
    from psycopg import sql

    from embeddings_pipeline.store.db import table

    cols = "tenant_id, chunk_id, block_id, doc_id, ordinal, text, content_hash, token_count, chunker_version"
    copy = sql.SQL("COPY {} (" + cols + ") FROM STDIN").format(table(schema, "chunks"))
    with conn.cursor() as cur, cur.copy(copy) as cp:
        for i in range(size):
            text = rng.choice(pool)
            doc = f"d{i // 10}"
            cp.write_row((tenant, f"c{i}", f"b{i}", doc, i % 10, text, f"h{i}", len(text.split()), "v1"))
    conn.commit()


def timed(fn, qs: list[str]) -> tuple[list[float], list[list[str]]]:
    ms, hits = [], []
    for q in qs:
        t0 = time.perf_counter()
        rows = fn(q)
        ms.append((time.perf_counter() - t0) * 1000)
        hits.append(rows)
    return ms, hits


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="50000,150000,300000", help="total chunks in the table, growing")
    ap.add_argument("--large", type=int, default=30000)
    ap.add_argument("--medium", type=int, default=2000)
    ap.add_argument("--small", type=int, default=30)
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from psycopg import sql

    from embeddings_pipeline.search.text import search_text
    from embeddings_pipeline.store.db import table
    from embeddings_pipeline.store.session import Database

    schema = f"textbench_{uuid.uuid4().hex[:8]}"
    pool, qs, rng = sentences(), queries(args.queries), random.Random(11)
    classes = {"small": args.small, "medium": args.medium, "large": args.large}
    results: list[dict[str, object]] = []
    with Database(schema_name=schema).connect() as conn:
        try:
            for name, size in classes.items():
                add_tenant(conn, schema, f"{name}-tenant", size, pool, rng)
            total, filler = sum(classes.values()), 0
            for target in (int(s) for s in args.sizes.split(",")):
                while total < target:
                    add_tenant(conn, schema, f"filler-{filler}", 1000, pool, rng)
                    total, filler = total + 1000, filler + 1
                conn.commit()
                conn.autocommit = True  # VACUUM: flush the GIN pending list, as autovacuum would
                conn.execute(sql.SQL("VACUUM ANALYZE {}").format(table(schema, "chunks")))
                conn.autocommit = False
                before_sql = sql.SQL(BEFORE).format(chunks=table(schema, "chunks"))
                for name in classes:
                    tenant = f"{name}-tenant"

                    def before(q: str, tenant: str = tenant, query: sql.Composed = before_sql) -> list[str]:
                        params = {"text": q, "t": tenant, "chunk_set": None, "k": 10}
                        return [r[0] for r in conn.execute(query, params).fetchall()]

                    def now(q: str, tenant: str = tenant) -> list[str]:
                        return [h.chunk_id for h in search_text(conn, schema, tenant, q, 10)]

                    timed(now, qs[:5])  # warm the cache for both
                    timed(before, qs[:5])
                    b_ms, b_hits = timed(before, qs)
                    n_ms, n_hits = timed(now, qs)
                    results.append({
                        "table_chunks": total, "tenant": name, "tenant_chunks": classes[name],
                        "before_p50_ms": round(statistics.median(b_ms), 2), "before_p95_ms": round(p(b_ms, 95), 2),
                        "now_p50_ms": round(statistics.median(n_ms), 2), "now_p95_ms": round(p(n_ms, 95), 2),
                        "before_over_now_p50": round(statistics.median(b_ms) / statistics.median(n_ms), 2),
                        "same_hits": b_hits == n_hits,
                    })  # fmt: skip
                    print(json.dumps(results[-1]) if args.json else _line(results[-1]), flush=True)
        finally:
            conn.rollback()
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
            conn.commit()


def _line(r: dict[str, object]) -> str:
    return (
        f"table {r['table_chunks']:>7} | {r['tenant']:<6} ({r['tenant_chunks']:>6}) | before p50/p95 "
        f"{r['before_p50_ms']:>7}/{r['before_p95_ms']:>7} ms | now {r['now_p50_ms']:>6}/{r['now_p95_ms']:>6} ms | "
        f"before/now {r['before_over_now_p50']:>5}x | same hits {r['same_hits']}"
    )


if __name__ == "__main__":
    main()
