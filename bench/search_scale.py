"""Search at 1M vectors (issue 11): dense, text and hybrid latency and dense recall per tenant size class.

    .venv/bin/python bench/search_scale.py [--chunks 1000000] [--tenants 1000] [--queries 40] [--keep] [--json]

The pipeline's own cost at scale is bench/curve.py's; this is the read side at a size the pipeline cannot fill on a
2-core machine in a session. The corpus is written through the pipeline's own store (chunks COPY with their
tsvector, `vectors.write_vectors`, `promotion.promote_large` giving each tenant over the threshold its own
partition and HNSW graph built in bulk), without a model:

- N chunks over T tenants whose sizes follow Zipf's law (1M over 1,000: the largest ~134k, the median ~270);
- texts: runs of 2-3 consecutive SciFact abstract sentences (a real vocabulary for BM25);
- vectors: clustered (32 topics x 64 subtopics, seeded by the text, as bench/curve.py), normalized;
- queries: SciFact test queries; a query's vector is clustered the same way.
Recall counts a hit as a true top-10 one when it is no farther than the exact 10th (repeated texts share vectors).

Per size class (the median tenant, the tenant nearest 10k chunks, the largest): `search_mode` p50/p95 in ms for
dense, text and hybrid (k=10), and dense recall@10 against an exact scan of the same tenant (ordered by an
expression no index serves). The baseline in the same run: that exact scan's own p50 (what every query would
cost without the layout), run after the timed searches (it reads every vector of the tenant and would evict
their pages from shared buffers between two queries).
`--shared-buffers 2GB` sizes the embedded server's buffer cache to the corpus first, as a production server would
(the printed header says which size the figures were taken with).
`--keep` leaves the schema (`--schema`, default search_scale) for another run, which then only measures.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SCIFACT = ROOT.parent / "shared" / "datasets" / "scifact"
CHUNK_SET = "bench-scale"
_RNG = np.random.default_rng(1)
_TOPICS, _SUBTOPICS = _RNG.normal(size=(32, 384)), _RNG.normal(size=(32, 64, 384))


def clustered(text: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    t, u = int(rng.integers(0, 32)), int(rng.integers(0, 64))
    v = _TOPICS[t] + 0.6 * _SUBTOPICS[t, u] + 0.25 * rng.normal(size=384)
    return (v / np.linalg.norm(v)).astype(np.float32)


class ClusteredQueries:
    """What `search_mode` needs of a provider: the registered identity, and a query vector."""

    def __init__(self, identity) -> None:
        self.identity = identity

    def embed_query(self, text: str) -> np.ndarray:
        return clustered(text)


def identity():
    from embeddings_pipeline.providers.base import ModelIdentity

    return ModelIdentity(provider="ollama", name="bench-clustered", revision="1", dims=384, normalized=True,
                         max_tokens=512)  # fmt: skip


def sentences() -> list[str]:
    out = []
    with (SCIFACT / "corpus.jsonl").open() as fh:
        for line in fh:
            out.extend(s.strip() for s in re.split(r"(?<=[.!?])\s+", json.loads(line)["text"]) if len(s) > 20)
    return out


def zipf_sizes(total: int, tenants: int) -> list[int]:
    weights = [1 / (i + 1) for i in range(tenants)]
    return [max(20, round(total * w / sum(weights))) for w in weights]


def load(conn: psycopg.Connection, schema: str, sizes: list[int]) -> dict[str, float]:
    from embeddings_pipeline.store import promotion, vector_tables, vectors
    from embeddings_pipeline.store.db import copy_rows
    from embeddings_pipeline.store.tenants import activate_model

    ident = identity()
    vector_tables.register_model(conn, schema, ident, "ollama:bench-clustered")
    pool = sentences()
    columns = ("tenant_id", "chunk_id", "block_id", "doc_id", "ordinal", "text", "content_hash", "token_count",
               "chunker_version")  # fmt: skip
    spent = {"chunks_s": 0.0, "vectors_s": 0.0}
    cursor = 0
    for t, size in enumerate(sizes):
        tenant = f"t{t:04d}"
        rows, pending = [], []
        for i in range(size):
            n = 2 + (cursor % 2)
            text = " ".join(pool[(cursor + j) % len(pool)] for j in range(n))
            cursor += n
            digest = hashlib.sha256(text.encode()).hexdigest()
            doc, ordinal = f"doc-{i // 10}.md", i % 10
            rows.append((tenant, f"{doc}#{ordinal}", f"{doc}#b{ordinal}", doc, ordinal, text, digest,
                         len(text.split()), CHUNK_SET))  # fmt: skip
            pending.append(vectors.PendingChunk(f"{doc}#{ordinal}", digest, text))
        t0 = time.perf_counter()
        with conn.transaction():
            copy_rows(conn, schema, "chunks", columns, rows)
        t1 = time.perf_counter()
        for start in range(0, size, 2048):
            batch = pending[start : start + 2048]
            vecs = np.stack([clustered(c.text) for c in batch])
            vectors.write_vectors(conn, schema, ident, tenant, batch, vecs, "bench-scale")
        spent["chunks_s"] += t1 - t0
        spent["vectors_s"] += time.perf_counter() - t1
        activate_model(conn, schema, tenant, ident.model_key, CHUNK_SET)
        if t % 100 == 0:
            print(f"loaded {t + 1}/{len(sizes)} tenants", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    promoted = promotion.promote_large(conn, schema, ident.model_key)
    spent["partitions_and_hnsw_s"] = time.perf_counter() - t0
    conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, "chunks")))
    spent["tenants_with_own_graph"] = len(promoted)
    return spent


@contextlib.contextmanager
def session11_text() -> Iterator[None]:
    """`search_text` as session 11 left it, for the same-run A/B (`--compare`): the shared GIN index only (no
    tenant's own), the first pass's rarest terms by postings alone, and past MAX_CLAUSES combinations a second
    pass over every chunk holding any term that can matter."""
    from embeddings_pipeline.search import text

    real = (text.term_stats, text._rarest, text._clauses)

    def stats(conn, schema, params):  # type: ignore[no-untyped-def]
        got = real[0](conn, schema, params)
        return None if got is None else (*got[:3], False, dict.fromkeys(got[4], text._MAX_TF_WEIGHT))

    def clauses(common, threshold):  # type: ignore[no-untyped-def]
        exact = text._cover(common, threshold, len(common))
        return exact if exact is not None else text._cover(common, threshold, 0)

    text.term_stats, text._rarest, text._clauses = stats, lambda terms, k: real[1](terms, 0), clauses
    try:
        yield
    finally:
        text.term_stats, text._rarest, text._clauses = real


def measure(conn: psycopg.Connection, schema: str, tenant: str, queries: list[str],
            compare: bool = False) -> dict[str, float]:  # fmt: skip
    from embeddings_pipeline.search import search_mode

    ident = identity()
    provider = ClusteredQueries(ident)
    vt = sql.Identifier(schema, ident.vector_table)
    variants = [("", contextlib.nullcontext)] + ([("s11_", session11_text)] if compare else [])
    took: dict[str, list[float]] = {f"{v}{m}": [] for v, _ in variants for m in ("dense", "text", "hybrid")}
    took["exact"] = []
    distances: list[list[float]] = []
    for i, query in enumerate(queries):
        got: list[float] = []
        for name, variant in variants if i % 2 else variants[::-1]:  # interleaved: load hits both alike
            for mode in ("dense", "text", "hybrid"):
                with variant():
                    t0 = time.perf_counter()
                    hits = search_mode(conn, schema, provider, tenant, query, 10, mode)  # type: ignore[arg-type]
                    took[name + mode].append(time.perf_counter() - t0)
                if mode == "dense" and not name:
                    got = [1.0 - h.score for h in hits]  # cosine distances
        distances.append(got)
    # exact, after the searches: it reads every vector of the tenant, which would push the pages the searches use
    # out of shared buffers between two queries (the largest tenant's vectors alone are ~200 MB). `+ 0` orders by
    # an expression no index can serve (PostgreSQL 18 still walks the HNSW graph with enable_indexscan off: it
    # only marks the plan "Disabled"), so every row of the tenant is compared
    recalls = []
    for query, got in zip(queries, distances, strict=True):
        t0 = time.perf_counter()
        exact = conn.execute(
            sql.SQL("SELECT embedding <=> %(q)s FROM {} WHERE tenant_id = %(t)s ORDER BY (embedding <=> %(q)s) + 0 "
                    "LIMIT 10").format(vt),
            {"t": tenant, "q": clustered(query)},
        ).fetchall()
        took["exact"].append(time.perf_counter() - t0)
        # tie-aware: a hit is one of the true top 10 when it is no farther than the exact 10th (texts repeat in this
        # corpus, so several chunks share a vector and which of them is "the" 10th is arbitrary)
        kth = float(exact[-1][0]) + 1e-6 if exact else 0.0
        recalls.append(sum(d <= kth for d in got[: len(exact)]) / max(1, len(exact)))
    out: dict[str, float] = {}
    for mode, times in took.items():
        times.sort()
        out[f"{mode}_p50_ms"] = round(1000 * statistics.median(times), 1)
        out[f"{mode}_p95_ms"] = round(1000 * times[max(0, int(0.95 * len(times)) - 1)], 1)
    out["recall_at_10"] = round(statistics.mean(recalls), 3)
    return out


def shared_buffers(database, size: str) -> None:
    """The embedded server's shared_buffers set to `size` (a production server sizes it to its data; the
    default 128 MB holds under a tenth of the 1M corpus's chunks table)."""
    from embeddings_pipeline.store import server

    if os.environ.get("EMBEDDINGS_DATABASE_URL"):
        raise SystemExit("--shared-buffers sets the embedded server's; set it on your own server yourself")
    with psycopg.connect(database.url(), autocommit=True) as c:
        if c.execute("SELECT %s::text = current_setting('shared_buffers')", (size,)).fetchone()[0]:
            return  # already so: a restart would only empty the cache
        c.execute(sql.SQL("ALTER SYSTEM SET shared_buffers = {}").format(sql.Literal(size)))
    server.restart_embedded()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=1_000_000)
    ap.add_argument("--tenants", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--schema", default="search_scale")
    ap.add_argument("--keep", action="store_true", help="keep the schema for a later run (which only measures)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--shared-buffers", metavar="SIZE",
                    help="set the embedded server's shared_buffers (e.g. 2GB; ALTER SYSTEM and a restart) first")
    ap.add_argument("--compare", action="store_true",
                    help="also time text and hybrid as session 11 left them, interleaved (s11_* columns)")
    args = ap.parse_args()
    os.environ.setdefault("EMBEDDINGS_HOME", str(Path(tempfile.gettempdir()) / "embeddings-bench"))
    os.environ["EMBEDDINGS_SCHEMA"] = args.schema
    from embeddings_pipeline.store.session import Database

    database = Database()
    sizes = zipf_sizes(args.chunks, args.tenants)
    result: dict[str, object] = {"chunks": sum(sizes), "tenants": len(sizes), "cpus": os.cpu_count()}
    if args.shared_buffers:
        shared_buffers(database, args.shared_buffers)
    with psycopg.connect(database.url(), autocommit=True) as c:
        result["shared_buffers"] = c.execute("SHOW shared_buffers").fetchone()[0]
        loaded = c.execute("SELECT to_regclass(%s) IS NOT NULL", (f'"{args.schema}".chunks',)).fetchone()[0]
        if loaded:
            have = c.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(args.schema, "chunks")))
            loaded = have.fetchone()[0] == sum(sizes)
        if not loaded:
            c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(args.schema)))
    with database.connect() as conn:
        if not loaded:
            t0 = time.perf_counter()
            result["load"] = load(conn, args.schema, sizes)
            result["load"]["total_s"] = round(time.perf_counter() - t0, 1)  # type: ignore[index]
        from embeddings_pipeline.store import text_index

        text_index.ensure_for_own_partitions(conn, args.schema, identity().model_key)  # a schema kept from before
        queries = [json.loads(line)["text"] for line in (SCIFACT / "queries.jsonl").open()][: args.queries]
        by_size = sorted(range(len(sizes)), key=lambda i: abs(sizes[i] - 10_000))
        classes = {"median": len(sizes) // 2, "near_10k": by_size[0], "largest": 0}
        for name, index in classes.items():
            tenant = f"t{index:04d}"
            measure(conn, args.schema, tenant, queries[:5], args.compare)  # warm the caches of this tenant
            result[name] = {"tenant_chunks": sizes[index], **measure(conn, args.schema, tenant, queries, args.compare)}
            print(f"{name}: {json.dumps(result[name])}", file=sys.stderr, flush=True)
    if not args.keep:
        with psycopg.connect(database.url(), autocommit=True) as c:
            c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(args.schema)))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['chunks']:,} chunks over {result['tenants']:,} tenants; shared_buffers {result['shared_buffers']}; "
          f"load: {result.get('load', 'reused')}")
    modes = ("dense", "text", "hybrid", "exact") + (("s11_text", "s11_hybrid") if args.compare else ())
    heads = "".join(f"{m.replace('exact', 'exact (no index)') + ' p50/p95':>20}" for m in modes)
    print(f"{'class':<10}{'chunks':>9}{heads}{'recall@10':>11}")
    for name in classes:
        r = result[name]
        assert isinstance(r, dict)
        cells = "".join(f"{r[m + '_p50_ms']:>11}/{r[m + '_p95_ms']:<8}" for m in modes)
        print(f"{name:<10}{r['tenant_chunks']:>9}{cells}{r['recall_at_10']:>11}")


if __name__ == "__main__":
    main()
