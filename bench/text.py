"""Text (BM25) search cost against the table's size: does a tenant's query cost follow its own size?

    .venv/bin/python bench/text.py [--sizes 50000,150000,300000] [--queries 40] [--k 10,100] [--json]

One `chunks` table (the pipeline's own, migrated) holds a large (--large chunks), a medium and a small tenant,
plus filler tenants of 1,000 chunks each, all cut from the same SciFact sentences, so every tenant's words are
also every other tenant's (the worst case for an index shared by all tenants). The table grows through --sizes;
at each size the same SciFact test queries run for each tenant and each k (10: a text search; 100: the text
ranking hybrid search fuses), the variants interleaved query by query:

- v9: the BM25 query before migration 10 (GIN matches of any tenant, then filtered by tenant_id), kept here;
- counted: `search_text` before migration 11 (bench/text_previous.py): each term's df counted from its postings
  within the tenant's lexeme, then the rarest terms' pass and, unless the MaxScore bound over every other term
  proves it, a pass over every match;
- now: `search_text`: df from the statistics the triggers keep (store/terms.py), each tsvector cut to the
  query's lexemes, and a second pass over only the chunks holding a combination of common terms whose bounds
  can beat the first pass's k-th score.

Printed: p50/p95 ms per tenant class and variant, counted/now ratios, and whether all return the same hits (the same
scores in rank order, the same chunks at each score).
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


def timed(fn, q: str) -> tuple[float, list[str]]:
    t0 = time.perf_counter()
    hits = fn(q)
    return (time.perf_counter() - t0) * 1000, hits


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


VARIANTS = ("v9", "counted", "now")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="50000,150000,300000", help="total chunks in the table, growing")
    ap.add_argument("--large", type=int, default=30000)
    ap.add_argument("--medium", type=int, default=2000)
    ap.add_argument("--small", type=int, default=30)
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--k", default="10,100", help="result counts to measure (100: hybrid's text candidates)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from psycopg import sql
    from text_previous import search_text_counted

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
                v9_sql = sql.SQL(BEFORE).format(chunks=table(schema, "chunks"))
                for name in classes:
                    for k in (int(x) for x in args.k.split(",")):
                        tenant = f"{name}-tenant"
                        fns = {
                            "v9": lambda q, t=tenant, k=k, v9=v9_sql: [
                                (r[0], r[3]) for r in conn.execute(v9, {"text": q, "t": t, "chunk_set": None, "k": k})
                            ],
                            "counted": lambda q, t=tenant, k=k: [
                                (r[0], r[3]) for r in search_text_counted(conn, schema, t, q, k)
                            ],
                            "now": lambda q, t=tenant, k=k: [
                                (h.chunk_id, h.score) for h in search_text(conn, schema, t, q, k)
                            ],
                        }
                        for q in qs[:5]:  # warm the cache for every variant
                            for fn in fns.values():
                                fn(q)
                        ms: dict[str, list[float]] = {v: [] for v in VARIANTS}
                        same = True
                        for i, q in enumerate(qs):  # interleaved, the order rotating: load hits all alike
                            hits = {}
                            for v in VARIANTS[i % 3 :] + VARIANTS[: i % 3]:
                                took, hits[v] = timed(fns[v], q)
                                ms[v].append(took)
                            same = same and _ranking(hits["v9"]) == _ranking(hits["counted"]) == _ranking(hits["now"])
                        conn.rollback()
                        r: dict[str, object] = {"table_chunks": total, "tenant": name, "tenant_chunks": classes[name],
                                                "k": k}  # fmt: skip
                        for v in VARIANTS:
                            r[f"{v}_p50_ms"] = round(statistics.median(ms[v]), 2)
                            r[f"{v}_p95_ms"] = round(p(ms[v], 95), 2)
                        r["counted_over_now_p50"] = round(
                            statistics.median(ms["counted"]) / statistics.median(ms["now"]), 2
                        )
                        r["counted_over_now_p95"] = round(p(ms["counted"], 95) / p(ms["now"], 95), 2)
                        r["same_hits"] = same
                        results.append(r)
                        print(json.dumps(r) if args.json else _line(r), flush=True)
        finally:
            conn.rollback()
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
            conn.commit()


def _ranking(hits: list[tuple[str, float]]) -> list[tuple[float, str]]:
    """Scores in rank order and the chunks at each score: exact ties (chunks of one text) in any order, and the
    float noise of a different summation order, compare equal."""
    return sorted((-round(float(score), 6), chunk) for chunk, score in hits)


def _line(r: dict[str, object]) -> str:
    cells = " | ".join(f"{v} {r[f'{v}_p50_ms']:>7}/{r[f'{v}_p95_ms']:>7}" for v in VARIANTS)
    return (
        f"table {r['table_chunks']:>7} | {r['tenant']:<6} ({r['tenant_chunks']:>6}) k {r['k']:>3} | "
        f"p50/p95 ms {cells} | "
        f"counted/now {r['counted_over_now_p50']:>5}x/{r['counted_over_now_p95']:>5}x | same hits {r['same_hits']}"
    )


if __name__ == "__main__":
    main()
