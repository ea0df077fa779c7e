"""Tenant-aware vector storage against the one-table layout, in one run on the same data.

Synthetic clustered vectors (real embeddings cluster; uniform ones hide the problem) for a long tail of tenants:
a few large, some medium, many small. Both layouts get the same rows:
- `one_table`: the earlier layout, one table and one HNSW graph for every tenant, searched with a tenant filter
  (ef_search 40, iterative scan relaxed, as before);
- `partitioned`: this project's layout (store/vector_tables.py): small tenants in a shared partition without a
  graph (exact scans), tenants past the threshold in partitions with graphs of their own.
Reported per size class: dense p50/p95 latency, recall@10 against exact search (numpy), hits returned of k; and
the cost of writing the rows (COPY, graphs in place) as a ratio of the two layouts.

    .venv/bin/python bench/layout.py [--large 2] [--large-size 40000] [--medium 10] [--small 200] [--dims 384]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--large", type=int, default=2)
    parser.add_argument("--large-size", type=int, default=40_000)
    parser.add_argument("--medium", type=int, default=10)
    parser.add_argument("--medium-size", type=int, default=2_000)
    parser.add_argument("--small", type=int, default=200)
    parser.add_argument("--small-size", type=int, default=30)
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--queries", type=int, default=40)
    args = parser.parse_args()
    os.environ.setdefault("EMBEDDINGS_HOME", tempfile.mkdtemp(prefix="bench-layout-"))
    os.environ["EMBEDDINGS_SCHEMA"] = f"bench_{uuid.uuid4().hex[:8]}"

    from psycopg import sql

    from embeddings_pipeline.providers.base import ModelIdentity
    from embeddings_pipeline.search import search_vector
    from embeddings_pipeline.store import promotion, vector_tables, vectors
    from embeddings_pipeline.store.session import Database

    rng = np.random.default_rng(1)
    topics, subtopics = rng.normal(size=(32, args.dims)), rng.normal(size=(32, 64, args.dims))

    def clustered(n: int) -> np.ndarray:
        """Topics with subtopics and a little noise: nearest neighbours are meaningful, as in real embeddings
        (one level of uniform noise around a few centres makes every point of a cluster equidistant)."""
        t, u = rng.integers(0, 32, n), rng.integers(0, 64, n)
        v = topics[t] + 0.6 * subtopics[t, u] + 0.25 * rng.normal(size=(n, args.dims))
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    sizes = {f"large-{i}": args.large_size for i in range(args.large)}
    sizes |= {f"medium-{i}": args.medium_size for i in range(args.medium)}
    sizes |= {f"small-{i}": args.small_size for i in range(args.small)}
    data = {tenant: clustered(n) for tenant, n in sizes.items()}
    klass = {t: t.split("-")[0] for t in sizes}
    db = Database()
    schema = db.schema
    result: dict[str, object] = {"vectors": sum(sizes.values()), "tenants": len(sizes), "dims": args.dims,
                                 "threshold": vector_tables.tenant_index_threshold()}  # fmt: skip
    with db.connect() as conn:
        try:
            with conn.transaction(), conn.cursor().copy(sql.SQL(
                    "COPY {}.chunks (tenant_id, chunk_id, block_id, doc_id, ordinal, text, content_hash, token_count,"
                    " chunker_version) FROM STDIN").format(sql.Identifier(schema))) as copy:  # fmt: skip
                for tenant, n in sizes.items():
                    for i in range(n):
                        copy.write_row((tenant, f"{tenant}:{i}", f"b{i}", f"d{i}", 0, "x", f"h{i}", 1, "set"))
            layouts = {}
            for layout in ("one_table", "partitioned"):
                identity = ModelIdentity("sentence-transformers", f"bench-{layout}", "r", args.dims, True, 256)
                key, vt = identity.model_key, identity.vector_table
                vector_tables.register_model(conn, schema, identity)
                conn.execute(sql.SQL("INSERT INTO {}.tenants (tenant_id, active_model_key) SELECT t, %s FROM "
                                     "unnest(%s::text[]) t ON CONFLICT (tenant_id) DO UPDATE SET active_model_key = "
                                     "EXCLUDED.active_model_key").format(sql.Identifier(schema)),
                             (key, list(sizes)))  # fmt: skip
                if layout == "one_table":
                    _one_table(conn, schema, key, vt, args.dims)
                t0 = time.perf_counter()
                for tenant, vecs in data.items():  # written the way the pipeline writes: COPY per batch of 256
                    ids = [vectors.PendingChunk(f"{tenant}:{i}", f"h{i}", "") for i in range(len(vecs))]
                    for s in range(0, len(ids), 256):
                        vectors.write_vectors(conn, schema, identity, tenant, ids[s : s + 256], vecs[s : s + 256], "r")
                    if layout == "partitioned":
                        promotion.promote_large(conn, schema, key, tenant)
                write_s = time.perf_counter() - t0
                conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, vt)))
                layouts[layout] = (vt, write_s)
                print(f"{layout}: wrote {result['vectors']} vectors in {write_s:.1f}s", file=sys.stderr)

            qrng = np.random.default_rng(2)
            for layout, (vt, write_s) in layouts.items():
                per_class: dict[str, dict[str, list[float]]] = {}
                for tenant in [t for t in sizes if klass[t] == "large"] + [f"medium-{i}" for i in range(3)] + [
                        f"small-{i}" for i in range(3)]:  # fmt: skip
                    vecs = data[tenant]
                    for query in vecs[qrng.integers(0, len(vecs), args.queries)] + 0.05 * qrng.normal(
                            size=(args.queries, args.dims)).astype(np.float32):  # fmt: skip
                        exact = set(np.argsort(-(vecs @ query))[:10])
                        t0 = time.perf_counter()
                        if layout == "one_table":
                            hits = _old_search(conn, schema, vt, tenant, query)
                        else:
                            hits = [h.chunk_id for h in search_vector(conn, schema, vt, tenant, query, 10)]
                        took = (time.perf_counter() - t0) * 1000
                        got = {int(h.rsplit(":", 1)[1]) for h in hits}
                        m = per_class.setdefault(klass[tenant], {"ms": [], "recall": [], "hits": []})
                        m["ms"].append(took)
                        m["recall"].append(len(got & exact) / 10)
                        m["hits"].append(len(hits))
                result[layout] = {
                    "write_s": round(write_s, 2),
                    **{c: {"p50_ms": round(statistics.median(m["ms"]), 2),
                           "p95_ms": round(float(np.percentile(m["ms"], 95)), 2),
                           "recall_at_10": round(statistics.mean(m["recall"]), 4),
                           "min_hits_of_10": min(m["hits"])} for c, m in per_class.items()},
                }  # fmt: skip
            result["write_one_table_over_partitioned"] = round(layouts["one_table"][1] / layouts["partitioned"][1], 2)
        finally:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    print(json.dumps(result, indent=2))


def _one_table(conn, schema: str, key: str, vt: str, dims: int) -> None:
    """The earlier layout: one plain table, one HNSW graph for every tenant (in place while rows arrive)."""
    from psycopg import sql

    t = sql.Identifier(schema, vt)
    conn.execute(sql.SQL("DROP TABLE {}").format(t))
    conn.execute(sql.SQL(
        "CREATE TABLE {} (tenant_id text NOT NULL, chunk_id text NOT NULL, content_hash text, embedding vector({}),"
        " model_key text, run_id text, embedded_at timestamptz DEFAULT now(), PRIMARY KEY (tenant_id, chunk_id))"
    ).format(t, sql.Literal(dims)))  # fmt: skip
    conn.execute(sql.SQL("CREATE INDEX ON {} USING hnsw (embedding vector_cosine_ops)").format(t))


def _old_search(conn, schema: str, vt: str, tenant: str, query: np.ndarray) -> list[str]:
    """The earlier dense query: the shared graph, filtered by tenant (ef_search 40, iterative scan relaxed)."""
    from psycopg import sql

    with conn.transaction():
        conn.execute("SELECT set_config('hnsw.ef_search', '40', true)")
        conn.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
        rows = conn.execute(
            sql.SQL(
                """
                SELECT c.chunk_id FROM (SELECT chunk_id, content_hash, embedding <=> %(q)s AS distance FROM {v}
                                         WHERE tenant_id = %(t)s AND embedding IS NOT NULL
                                         ORDER BY embedding <=> %(q)s LIMIT 10) v
                  JOIN {chunks} c ON c.tenant_id = %(t)s AND c.chunk_id = v.chunk_id AND c.content_hash = v.content_hash
                 ORDER BY v.distance
                """
            ).format(v=sql.Identifier(schema, vt), chunks=sql.Identifier(schema, "chunks")),
            {"t": tenant, "q": query},
        ).fetchall()
    return [r[0] for r in rows]


if __name__ == "__main__":
    main()
