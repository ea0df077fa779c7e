"""The scale curve (issue 11): long-tail corpora of growing size, and one large tenant over 1 and 2 processes.

    .venv/bin/python bench/curve.py --sizes 10000,30000,90000 [--shard-tenant 30000] [--json]

Each corpus size runs in a process of its own (`--size N`), so its peak RSS is its own. A corpus of N chunks has
N / 1000 tenants (1,000,000 chunks -> 1,000 tenants) whose sizes follow Zipf's law (tenant i gets a share
proportional to 1 / (i + 1)): one or two large tenants with their own partition and HNSW graph, a long tail of
small ones in the shared partition. The model is the stand-in Ollama server with clustered vectors (topics and
subtopics, seeded by the text: real embeddings cluster, uniform ones hide recall problems). Every figure is a
ratio against a baseline of the same run:

- pipeline/provider: the stand-in alone over the very chunk texts (batches of 256) against every tenant
  through Dagster (blocks -> chunks -> embeddings, one run each);
- no-op/full: `backfill`'s check over every tenant with nothing changed (no run is started: `work_left`), and
  every tenant forced through a Dagster run again, against the full run;
- peak RSS of the process after the full run (ru_maxrss; the bench's own provider-alone pass comes after);
- search per size class (the smallest tenant with 100+ chunks, the median tenant, the largest): dense and hybrid
  p50/p95 over 30 queries, and dense recall@10 against an exact scan of the same tenant.

`--shard-tenant N`: one tenant of N chunks filled (`steps.fill`, after blocks and chunks) with 1 process, then an
identical tenant with 2 (`processes=2`), the stand-in serving from a process of its own: time(1) / time(2), for the
stand-in as it is (CPU-bound on the same 2 cores) and for the stand-in taking 1 ms per text (a remote model).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from scale import WORDS, document  # noqa: E402

CHUNKS_PER_DOC = 11  # a heading and 10 paragraphs
_RNG = np.random.default_rng(1)
_TOPICS, _SUBTOPICS = _RNG.normal(size=(32, 384)), _RNG.normal(size=(32, 64, 384))


def clustered(texts: list[str]) -> list[np.ndarray]:
    """A deterministic clustered vector per text (the stand-in's `embed_fn`)."""
    out = []
    for text in texts:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        rng = np.random.default_rng(seed)
        t, u = int(rng.integers(0, 32)), int(rng.integers(0, 64))
        v = _TOPICS[t] + 0.6 * _SUBTOPICS[t, u] + 0.25 * rng.normal(size=384)
        out.append((v / np.linalg.norm(v)).astype(np.float32))
    return out


def long_tail(total: int, tenants: int) -> list[int]:
    weights = [1 / (i + 1) for i in range(tenants)]
    return [max(CHUNKS_PER_DOC, round(total * w / sum(weights))) for w in weights]


def _env(schema: str) -> None:
    os.environ.setdefault("EMBEDDINGS_HOME", str(Path(tempfile.gettempdir()) / "embeddings-bench"))
    os.environ.update({
        "EMBEDDINGS_SCHEMA": schema, "DAGSTER_HOME": tempfile.mkdtemp(prefix="dagster-curve-"),
        "EMBEDDINGS_MODEL": "ollama:nomic-embed-text", "EMBEDDINGS_RETRY_BASE_DELAY": "0.05",
    })  # fmt: skip


def _ingest(conn, schema: str, tenant: str, t: int, chunks: int) -> None:
    from embeddings_pipeline.store.documents import SourceDocument, upsert_documents

    docs = [SourceDocument(f"log-{d}.md", document(t, d)) for d in range(max(1, chunks // CHUNKS_PER_DOC))]
    upsert_documents(conn, schema, tenant, docs)


def one_size(
    total: int, keep: bool = False, concurrent_runs: int = 1, instance_kind: str = "ephemeral"
) -> dict[str, object]:
    schema = f"curve_{uuid.uuid4().hex[:8]}"
    _env(schema)
    from embeddings_pipeline.cli.runner import materialize_tenants
    from embeddings_pipeline.pipeline import model_change
    from embeddings_pipeline.pipeline.backfill import work_left
    from embeddings_pipeline.store.scope import Scope
    from embeddings_pipeline.store.session import Database

    sizes = long_tail(total, max(5, total // 1000))
    tenants = [f"t{i:04d}" for i in range(len(sizes))]
    store = Database()
    out: dict[str, object] = {"target_chunks": total, "tenants": len(tenants), "largest_tenant": sizes[0]}
    # the stand-in serves from a process of its own: it keeps every text it was sent, which is not our memory
    server = subprocess.Popen([sys.executable, __file__, "--serve-standin", "0"], stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    os.environ["OLLAMA_HOST"] = server.stdout.readline().strip()
    instance = None
    try:
        with store.connect() as conn:
            for t, (tenant, n) in enumerate(zip(tenants, sizes, strict=True)):
                _ingest(conn, schema, tenant, t, n)
        instance = _instance(instance_kind, store.url())
        out.update({"concurrent_runs": concurrent_runs, "instance": instance_kind})
        t0 = time.perf_counter()
        runs = materialize_tenants(tenants, instance=instance, concurrent_runs=concurrent_runs)
        full_s = time.perf_counter() - t0
        assert all(r.success for r in runs), [r.error for r in runs if not r.success][:3]
        out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        chunks = sum(int(r.metadata["chunks"]) for r in runs)
        provider = model_change.default_loader()
        alone_s = _provider_alone(store, schema, provider, clients=1)
        if concurrent_runs > 1:  # the fair baseline: the provider as fast as it goes with as many clients
            alone_2 = _provider_alone(store, schema, provider, clients=concurrent_runs)
            out["provider_alone_1_client_s"], out["provider_alone_n_clients_s"] = round(alone_s, 1), round(alone_2, 1)
            alone_s = min(alone_s, alone_2)
        with store.connect() as conn:
            t0 = time.perf_counter()
            busy = [t for t in tenants if work_left(Scope(conn, schema, t), provider) is not None]
            noop_plan_s = time.perf_counter() - t0
            out.update(noop_parts(conn, schema, tenants, provider, chunks))
        assert not busy, busy[:3]
        t0 = time.perf_counter()
        noop = materialize_tenants(tenants, instance=instance, concurrent_runs=concurrent_runs)
        noop_runs_s = time.perf_counter() - t0
        assert all(r.success and r.metadata["embedded"] == 0 for r in noop)
        out.update({
            "chunks": chunks, "full_s": round(full_s, 1), "provider_alone_s": round(alone_s, 1),
            "pipeline_over_provider": round(alone_s / full_s, 3),
            "noop_backfill_check_s": round(noop_plan_s, 2), "noop_check_over_full": round(noop_plan_s / full_s, 4),
            "noop_forced_runs_s": round(noop_runs_s, 1), "noop_runs_over_full": round(noop_runs_s / full_s, 3),
        })  # fmt: skip
        with store.connect() as conn:
            big = [s for s in sizes if s >= 100]
            classes = {"small": tenants[sizes.index(big[-1])], "medium": tenants[len(big) // 2],
                       "largest": tenants[0]}  # fmt: skip
            for name, tenant in classes.items():
                out.update(_search(conn, schema, tenant, name, sizes[tenants.index(tenant)]))
    finally:
        server.kill()
        if instance is not None and instance_kind == "postgres":
            instance.dispose()
            with psycopg.connect(store.url(), autocommit=True) as c:
                c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(os.environ["DAGSTER_PG_DB"])))  # fmt: skip
        if keep:  # `--keep`: left for probing (drop it by hand afterwards)
            out["kept_schema"] = schema
        else:
            with psycopg.connect(store.url(), autocommit=True) as c:
                c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    return out


def _instance(kind: str, url: str):
    """The runs' Dagster instance: in memory (`ephemeral`, one process only), SQLite in a temporary DAGSTER_HOME,
    or `postgres`: deploy/dagster.yaml (as deployed) on a fresh database of the embedded server."""
    import dagster as dg
    from psycopg.conninfo import conninfo_to_dict

    if kind == "ephemeral":
        return dg.DagsterInstance.ephemeral()
    if kind == "sqlite":
        return dg.DagsterInstance.local_temp()
    name, info = f"dagster_{uuid.uuid4().hex[:8]}", conninfo_to_dict(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    host = str(info.get("host") or "")
    os.environ.update({
        "DAGSTER_PG_HOST": "" if host.startswith("/") else host or "localhost", "DAGSTER_PG_DB": name,
        "DAGSTER_PG_PORT": str(info.get("port") or 5432), "DAGSTER_PG_USER": str(info.get("user") or "postgres"),
        "DAGSTER_PG_PASSWORD": str(info.get("password") or ""), **({"PGHOST": host} if host.startswith("/") else {}),
    })  # fmt: skip
    home = Path(os.environ["DAGSTER_HOME"])
    (home / "dagster.yaml").write_text((ROOT / "deploy" / "dagster.yaml").read_text())
    return dg.DagsterInstance.from_config(str(home))


def _provider_alone(store, schema: str, provider, clients: int) -> float:
    """Wall seconds for the stand-in alone to embed every chunk text in batches of 256, from `clients` threads."""
    from concurrent.futures import ThreadPoolExecutor

    with store.connect() as conn:
        texts = [r[0] for r in conn.execute(sql.SQL("SELECT text FROM {}.chunks").format(sql.Identifier(schema)))]
    batches = [texts[i : i + 256] for i in range(0, len(texts), 256)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(provider.embed_documents, batches))
    return time.perf_counter() - t0


def noop_parts(conn, schema: str, tenants: list[str], provider, chunks: int) -> dict[str, object]:
    """Where `work_left`'s time goes with nothing changed: each of its reads timed on its own, summed over the
    tenants (s, and us per chunk of the corpus), and the largest tenant's share. `before`: the counting reads
    without the partial index `<model_key>_current` (dropped in a transaction rolled back afterwards); `after`:
    the reads `work_left` makes now; `after_chunks_idx`: the same with an index on chunks that a migration could
    add, `(tenant_id, chunker_version, chunk_id) INCLUDE (content_hash)`, so neither side reads a heap (made in a
    transaction rolled back afterwards). Interleaved, best of 2 per read."""
    from embeddings_pipeline.pipeline.model_change import target_chunk_set
    from embeddings_pipeline.store import backlog, parsing
    from embeddings_pipeline.store.tenants import tenant_settings

    vt, key = provider.identity.vector_table, provider.identity.model_key
    common = {
        "settings": lambda s, cs: (target_chunk_set(s, provider), tenant_settings(*s)),
        "documents_not_chunked": lambda s, cs: backlog.documents_not_chunked(*s, cs),
        "removed_documents": lambda s, cs: parsing.removed_documents(*s),
    }
    variants = {
        "before": {**common, "pending_vectors": lambda s, cs: backlog.pending_vectors(*s, vt, cs)},
        "after": {**common, "pending_vectors": lambda s, cs: backlog.has_pending_vectors(*s, vt, cs)},
    }
    variants["after_chunks_idx"] = variants["after"]
    setup = {
        "before": sql.SQL("DROP INDEX IF EXISTS {}.{}").format(
            sql.Identifier(schema), sql.Identifier(f"{key}_current")
        ),
        "after_chunks_idx": sql.SQL(
            "CREATE INDEX bench_chunks_current ON {}.chunks (tenant_id, chunker_version, chunk_id)"
            " INCLUDE (content_hash)"
        ).format(sql.Identifier(schema)),
    }
    best: dict[tuple[str, str], tuple[float, float]] = {}
    for variant in [*variants, *variants]:
        with conn.transaction(force_rollback=True):
            if variant in setup:
                conn.execute(setup[variant])
            took = _time_parts(conn, schema, tenants, provider, variants[variant])
        for name, (total, largest) in took.items():
            best[variant, name] = min(best.get((variant, name), (float("inf"), 0.0)), (total, largest))
    out: dict[str, object] = {}
    for (variant, name), (total, largest) in best.items():
        out[f"noop_{variant}_{name}_s"] = round(total, 3)
        out[f"noop_{variant}_{name}_us_per_chunk"] = round(1e6 * total / max(1, chunks), 2)
        out[f"noop_{variant}_{name}_largest_tenant_s"] = round(largest, 3)
    for variant in variants:
        total = sum(t for (v, _), (t, _) in best.items() if v == variant)
        out[f"noop_{variant}_total_s"] = round(total, 3)
        out[f"noop_{variant}_total_us_per_chunk"] = round(1e6 * total / max(1, chunks), 2)
    for variant in ("after", "after_chunks_idx"):
        over = out[f"noop_{variant}_total_s"] / max(1e-9, out["noop_before_total_s"])
        out[f"noop_{variant}_over_before"] = round(over, 3)
        over = out[f"noop_{variant}_pending_vectors_s"] / max(1e-9, out["noop_before_pending_vectors_s"])
        out[f"noop_{variant}_pending_over_before"] = round(over, 3)
    return out


def _time_parts(conn, schema: str, tenants: list[str], provider, parts) -> dict[str, tuple[float, float]]:
    """(seconds over every tenant, seconds for the first: the largest) per part."""
    from embeddings_pipeline.pipeline.model_change import target_chunk_set
    from embeddings_pipeline.store.scope import Scope

    took = {name: [0.0, 0.0] for name in parts}
    for i, tenant in enumerate(tenants):
        scope = Scope(conn, schema, tenant)
        chunk_set = target_chunk_set(scope, provider)
        for name, read in parts.items():
            t0 = time.perf_counter()
            read(scope, chunk_set)
            took[name][0] += time.perf_counter() - t0
            if i == 0:
                took[name][1] = time.perf_counter() - t0
    return {name: (t[0], t[1]) for name, t in took.items()}


def _search(conn, schema: str, tenant: str, name: str, size: int) -> dict[str, object]:
    from embeddings_pipeline.pipeline import model_change
    from embeddings_pipeline.search import search_mode
    from embeddings_pipeline.store.scope import Scope

    provider = model_change.search_provider(Scope(conn, schema, tenant))
    vt = sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(provider.identity.vector_table))
    took: dict[str, list[float]] = {"dense": [], "hybrid": []}
    queries = [f"{WORDS[q % len(WORDS)]} {WORDS[(q * 7 + 3) % len(WORDS)]} log {q}" for q in range(30)]
    found = []
    for query in queries:
        for mode in took:
            t0 = time.perf_counter()
            hits = search_mode(conn, schema, provider, tenant, query, 10, mode)
            took[mode].append(time.perf_counter() - t0)
            if mode == "dense":
                found.append({h.chunk_id for h in hits})
    # the exact scans after the timed searches: each reads every vector of the tenant, and between two searches
    # would evict their pages from shared buffers. `+ 0`: an order no index can serve (with enable_indexscan off
    # PostgreSQL 18 still walks the HNSW graph)
    recalls = []
    for query, got in zip(queries, found, strict=True):
        exact = conn.execute(
            sql.SQL("SELECT chunk_id FROM {} WHERE tenant_id = %s ORDER BY (embedding <=> %s) + 0 LIMIT 10").format(vt),
            (tenant, provider.embed_query(query)),
        ).fetchall()
        recalls.append(len(got & {r[0] for r in exact}) / max(1, len(exact)))
    out: dict[str, object] = {f"search_{name}_tenant_chunks": size}
    for mode, times in took.items():
        times.sort()
        out[f"search_{name}_{mode}_p50_ms"] = round(1000 * statistics.median(times), 1)
        out[f"search_{name}_{mode}_p95_ms"] = round(1000 * times[int(0.95 * len(times)) - 1], 1)
    out[f"search_{name}_recall_at_10"] = round(statistics.mean(recalls), 3)
    return out


def shard_tenant(chunks: int) -> dict[str, object]:
    """One tenant filled by 1 process, an identical one by 2, for two providers served from a process of their
    own: the stand-in as it is (its CPU is this machine's: the 2 cores are shared by it, the workers and
    PostgreSQL) and the stand-in taking 1 ms per text (a remote model: the time is the provider's, not ours)."""
    out: dict[str, object] = {"shard_tenant_chunks": chunks}
    for label, delay in (("cpu_bound", 0.0), ("remote_1ms", 0.001)):
        schema = f"shards_{uuid.uuid4().hex[:8]}"
        _env(schema)
        out.update({f"{label}_{k}": v for k, v in _one_vs_two(schema, chunks, delay).items()})
    return out


def _one_vs_two(schema: str, chunks: int, delay: float) -> dict[str, object]:
    from embeddings_pipeline.pipeline import model_change, steps
    from embeddings_pipeline.store.scope import Scope
    from embeddings_pipeline.store.session import Database

    serve = [sys.executable, __file__, "--serve-standin", str(delay)]
    server = subprocess.Popen(serve, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    os.environ["OLLAMA_HOST"] = server.stdout.readline().strip()
    os.environ["EMBEDDINGS_SHARD_MIN_CHUNKS"] = "1000"
    store = Database()
    out: dict[str, object] = {}
    try:
        with store.connect() as conn:
            provider = model_change.default_loader()
            best = {1: float("inf"), 2: float("inf")}
            for attempt, processes in enumerate((1, 2, 1, 2)):  # interleaved, best of 2: the machine is shared
                tenant = f"big-{attempt}"
                _ingest(conn, schema, tenant, 0, chunks)  # the same documents: nothing reusable across tenants
                scope = Scope(conn, schema, tenant)
                steps.build_blocks(scope)
                plan = model_change.plan(scope, target=provider)
                steps.build_chunks(scope, plan)
                t0 = time.perf_counter()
                report = steps.fill(scope, provider, plan.chunk_set, f"run-{attempt}", processes=processes,
                                    database_url=store.url())  # fmt: skip
                best[processes] = min(best[processes], time.perf_counter() - t0)
                assert report.failed == 0 and report.embedded == report.chunks
        for processes, took in best.items():
            out[f"fill_{processes}_process_s"] = round(took, 1)
            out[f"fill_{processes}_process_texts_per_s"] = round(chunks / took)
        out["speedup_2_over_1"] = round(best[1] / best[2], 2)
    finally:
        server.kill()
        with psycopg.connect(store.url(), autocommit=True) as c:
            c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    return out


def _serve_standin(delay: float) -> None:
    from embeddings_pipeline_tests.standin_server import StandinServer

    with StandinServer(dims=384, embed_fn=clustered) as srv:
        srv.faults.delay_per_input = delay
        srv.faults.paths = ("/api/embed",)
        print(srv.url, flush=True)
        while True:
            time.sleep(3600)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,30000,90000")
    ap.add_argument("--size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--keep", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--shard-tenant", type=int, default=0)
    ap.add_argument("--serve-standin", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--concurrent-runs", type=int, default=1, help="tenant runs at a time (worker processes)")
    ap.add_argument("--instance", choices=["ephemeral", "sqlite", "postgres"], default="ephemeral",
                    help="Dagster instance of the runs: in memory, SQLite, or deploy/dagster.yaml on PostgreSQL "
                    "(concurrent runs need one of the last two: sqlite unless given)")  # fmt: skip
    args = ap.parse_args()
    if args.serve_standin is not None:
        _serve_standin(args.serve_standin)
        return
    if args.size:
        kind = "sqlite" if args.concurrent_runs > 1 and args.instance == "ephemeral" else args.instance
        print(json.dumps(one_size(args.size, args.keep, args.concurrent_runs, kind)))
        return
    results: dict[str, object] = {}
    if args.shard_tenant:
        results["shards"] = shard_tenant(args.shard_tenant)
    for size in (int(s) for s in args.sizes.split(",") if s):
        cmd = [sys.executable, __file__, "--size", str(size), "--concurrent-runs", str(args.concurrent_runs),
               "--instance", args.instance]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"size {size} failed:\n{done.stderr[-3000:]}")
        results[str(size)] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"# {size}: {json.dumps(results[str(size)])}", file=sys.stderr, flush=True)  # as each size ends
    if args.json:
        print(json.dumps(results))
        return
    for name, figures in results.items():
        print(f"== {name}")
        for k, v in figures.items():
            print(f"{k:>40}: {v}")


if __name__ == "__main__":
    main()
