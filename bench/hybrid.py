"""Hybrid search: its two rankings one after the other (`search_mode`) or at once on two connections
(`search.parallel.hybrid_parallel`), per tenant size class, over a corpus bench/search_scale.py kept.

    .venv/bin/python bench/search_scale.py --chunks 300000 --tenants 300 --keep --schema ss300   # once
    .venv/bin/python bench/hybrid.py --schema ss300 [--queries 40] [--json]

The corpus is search_scale's: Zipf-sized tenants, runs of SciFact sentences (a real vocabulary), clustered
vectors, its query vectors (no model: the embedding's own time, which the parallel variant also overlaps with the
text search, is left out). Per class (the median tenant, the one nearest 10k chunks, the largest), the same
SciFact queries, the variants interleaved query by query with the order rotating: dense and text alone (k=CANDIDATES,
what hybrid fuses), hybrid sequential and hybrid parallel (k=10). Printed: p50/p95 ms, parallel/sequential, and
whether both hybrids return the same hits.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VARIANTS = ("dense", "text", "sequential", "parallel")


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[94]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--schema", default="search_scale")
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("EMBEDDINGS_HOME", str(Path(tempfile.gettempdir()) / "embeddings-bench"))
    os.environ["EMBEDDINGS_SCHEMA"] = args.schema

    from psycopg import sql
    from search_scale import SCIFACT, ClusteredQueries, identity

    from embeddings_pipeline.search import search_mode
    from embeddings_pipeline.search.hybrid import CANDIDATES
    from embeddings_pipeline.search.parallel import hybrid_parallel
    from embeddings_pipeline.store.models import chunk_set_of
    from embeddings_pipeline.store.session import Database

    provider = ClusteredQueries(identity())
    queries = [json.loads(line)["text"] for line in (SCIFACT / "queries.jsonl").open()][: args.queries]
    database = Database()
    with database.connect() as conn, database.connect() as text_conn:
        corpus = sql.SQL("SELECT tenant_id, n FROM {} ORDER BY n").format(sql.Identifier(args.schema, "chunk_corpus"))
        sizes = dict(conn.execute(corpus).fetchall())
        names = list(sizes)
        classes = {"median": names[len(names) // 2], "near_10k": min(names, key=lambda t: abs(sizes[t] - 10_000)),
                   "largest": names[-1]}  # fmt: skip

        def parallel(tenant: str, query: str) -> list:
            chunk_set = chunk_set_of(conn, args.schema, tenant, provider.identity.model_key)
            return hybrid_parallel(conn, text_conn, args.schema, provider, tenant, chunk_set, query, 10)  # type: ignore[arg-type]

        fns = {
            "dense": lambda t, q: search_mode(conn, args.schema, provider, t, q, CANDIDATES, "dense"),  # type: ignore[arg-type]
            "text": lambda t, q: search_mode(conn, args.schema, provider, t, q, CANDIDATES, "text"),  # type: ignore[arg-type]
            "sequential": lambda t, q: search_mode(conn, args.schema, provider, t, q, 10, "hybrid"),  # type: ignore[arg-type]
            "parallel": parallel,
        }
        for name, tenant in classes.items():
            for q in queries[:5]:  # warm this tenant's pages for every variant
                for fn in fns.values():
                    fn(tenant, q)
            ms: dict[str, list[float]] = {v: [] for v in VARIANTS}
            same = True
            for i, q in enumerate(queries):
                hits = {}
                for v in VARIANTS[i % 4 :] + VARIANTS[: i % 4]:
                    t0 = time.perf_counter()
                    hits[v] = [h.chunk_id for h in fns[v](tenant, q)]
                    ms[v].append((time.perf_counter() - t0) * 1000)
                same = same and hits["sequential"] == hits["parallel"]
            r: dict[str, object] = {"class": name, "tenant_chunks": sizes[tenant]}
            for v in VARIANTS:
                r[f"{v}_p50_ms"], r[f"{v}_p95_ms"] = round(statistics.median(ms[v]), 1), round(p95(ms[v]), 1)
            r["parallel_over_sequential_p95"] = round(p95(ms["parallel"]) / p95(ms["sequential"]), 2)
            r["same_hits"] = same
            cells = " | ".join(f"{v} {r[f'{v}_p50_ms']}/{r[f'{v}_p95_ms']}" for v in VARIANTS)
            line = (f"{name:<9} ({sizes[tenant]:>6}) p50/p95 ms {cells} | "
                    f"parallel/sequential p95 {r['parallel_over_sequential_p95']} | same hits {same}")  # fmt: skip
            print(json.dumps(r) if args.json else line, flush=True)


if __name__ == "__main__":
    main()
