"""Scale and faults: 100k+ chunks over many tenants, a kill -9 mid-run, a provider outage, search latency.

    .venv/bin/python bench/scale.py [--tenants 40] [--docs-per-tenant 250] [--json]

The model is the stand-in Ollama server (embeddings_pipeline_tests/standin_server.py: the real wire protocol on
127.0.0.1, a deterministic vector per text), so the figures are the pipeline's own costs at scale, which the
real model (25-75 texts/s on 2 cores) would hide. Every figure is a ratio against a baseline of the same run:

1. provider alone: OllamaProvider.embed_documents over the very chunk texts, in the pipeline's batch size;
2. all tenants through Dagster (blocks -> chunks -> embeddings, one run each): pipeline / provider alone;
3. no-op: every tenant again with nothing changed: no-op / full;
4. kill -9: `embeddings-pipeline materialize` of a fresh tenant in a subprocess, killed once some batches are
   committed, then run again: texts re-embedded / texts committed before the kill (0 = nothing lost or redone),
   and after it: missing vectors and vectors of no chunk (both must be 0);
5. outage: the provider answers 503 to everything during one tenant's run: seconds until that run fails (the
   circuit breaker), requests the dead endpoint received, and whether the next tenant's run is unaffected;
6. search over the largest tenant: p50/p95 latency of dense, text and hybrid queries.

`--curve 10000,30000,90000 [--shard-tenant 30000]` runs the scale curve instead (bench/curve.py): long-tail
corpora of those sizes (N / 1000 tenants, Zipf sizes), each in a process of its own, with pipeline/provider,
no-op/full, peak RSS and per-size-class search latency and recall; and one large tenant over 1 and 2 processes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = (
    "pallet dock forklift battery aisle rack shelf invoice order shipment carrier route driver depot sensor "
    "freezer vaccine label barcode scanner audit shift manager safety inspection conveyor robot charger"
).split()


def paragraph(tenant: int, doc: int, i: int) -> str:
    words = [WORDS[(tenant * 7 + doc * 13 + i * 17 + k * k) % len(WORDS)] for k in range(24)]
    return f"Note {doc}.{i} of site {tenant}: " + " ".join(words) + "."


def document(tenant: int, doc: int, paragraphs: int = 10) -> str:
    return f"# Site {tenant} log {doc}\n\n" + "\n\n".join(paragraph(tenant, doc, i) for i in range(paragraphs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tenants", type=int, default=40)
    ap.add_argument("--docs-per-tenant", type=int, default=250, help="10 paragraphs (+ a heading) each")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--curve", help="comma-separated corpus sizes: run bench/curve.py instead")
    ap.add_argument("--shard-tenant", default="0", help="with --curve: chunks of the 1-vs-2-process tenant")
    args = ap.parse_args()
    if args.curve:
        curve = [sys.executable, str(ROOT / "bench" / "curve.py"), "--sizes", args.curve]
        raise SystemExit(subprocess.call([*curve, "--shard-tenant", args.shard_tenant, *(["--json"] * args.json)]))

    home = Path(os.environ.setdefault("EMBEDDINGS_HOME", str(Path(tempfile.gettempdir()) / "embeddings-bench")))
    schema = f"scale_{uuid.uuid4().hex[:8]}"
    os.environ.update({
        "EMBEDDINGS_SCHEMA": schema,
        "DAGSTER_HOME": tempfile.mkdtemp(prefix="dagster-scale-"),
        "EMBEDDINGS_MODEL": "ollama:nomic-embed-text",
        "EMBEDDINGS_RETRY_BASE_DELAY": "0.05",
    })  # fmt: skip

    import dagster as dg

    from embeddings_pipeline.cli.runner import materialize_tenants
    from embeddings_pipeline.pipeline import model_change
    from embeddings_pipeline.search import search_mode
    from embeddings_pipeline.store.documents import SourceDocument, upsert_documents
    from embeddings_pipeline.store.scope import Scope
    from embeddings_pipeline.store.session import Database
    from embeddings_pipeline.store.status import tenant_status
    from embeddings_pipeline_tests.standin_server import StandinServer

    result: dict[str, object] = {}
    store = Database()
    with StandinServer(dims=384) as srv:
        os.environ["OLLAMA_HOST"] = srv.url
        tenants = [f"site-{t:03d}" for t in range(args.tenants)]
        try:
            with store.connect() as conn:
                for t, tenant in enumerate(tenants):
                    docs = [SourceDocument(f"log-{d}.md", document(t, d)) for d in range(args.docs_per_tenant)]
                    upsert_documents(conn, store.schema, tenant, docs)
            instance = dg.DagsterInstance.ephemeral()

            t0 = time.perf_counter()
            runs = materialize_tenants(tenants, instance=instance)
            full_s = time.perf_counter() - t0
            assert all(r.success for r in runs), [r.error for r in runs if not r.success][:3]
            chunks = sum(int(r.metadata["chunks"]) for r in runs)

            with store.connect() as conn:
                texts = [
                    r[0] for r in conn.execute(sql.SQL("SELECT text FROM {}.chunks").format(sql.Identifier(schema)))
                ]
            provider = model_change.default_loader()
            t0 = time.perf_counter()
            for i in range(0, len(texts), 256):  # the pipeline's commit batch
                provider.embed_documents(texts[i : i + 256])
            alone_s = time.perf_counter() - t0

            t0 = time.perf_counter()
            noop = materialize_tenants(tenants, instance=instance)
            noop_s = time.perf_counter() - t0
            assert all(r.success and r.metadata["embedded"] == 0 for r in noop)
            result.update({
                "tenants": len(tenants), "chunks": chunks,
                "provider_alone_texts_per_s": round(len(texts) / alone_s, 1),
                "pipeline_texts_per_s": round(chunks / full_s, 1),
                "pipeline_over_provider": round(alone_s / full_s * chunks / len(texts), 3),
                "full_s": round(full_s, 1), "noop_s": round(noop_s, 2), "noop_over_full": round(noop_s / full_s, 4),
            })  # fmt: skip

            result.update(_kill_and_resume(store, srv, home))
            result.update(_outage(store, srv, instance, tenants))

            big = tenants[0]
            with store.connect() as conn:
                search_provider = model_change.search_provider(Scope(conn, store.schema, big))
                for mode in ("dense", "text", "hybrid"):
                    took = []
                    for q in range(40):
                        query = f"{WORDS[q % len(WORDS)]} {WORDS[(q * 7) % len(WORDS)]} at site 0"
                        t0 = time.perf_counter()
                        search_mode(conn, store.schema, search_provider, big, query, 10, mode)
                        took.append(time.perf_counter() - t0)
                    took.sort()
                    result[f"search_{mode}_p50_ms"] = round(1000 * statistics.median(took), 1)
                    result[f"search_{mode}_p95_ms"] = round(1000 * took[int(0.95 * len(took)) - 1], 1)
                result["search_tenant_chunks"] = tenant_status(
                    conn, store.schema, big, provider.identity.model_key
                ).chunks
        finally:
            with psycopg.connect(store.url(), autocommit=True) as c:
                c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>32}: {v}")


def _kill_and_resume(store, srv, home: Path) -> dict[str, object]:
    """A fresh tenant embedded by the CLI in a subprocess; kill -9 once a few batches are committed; run again."""
    from embeddings_pipeline.store.documents import SourceDocument, upsert_documents
    from embeddings_pipeline.store.status import tenant_status

    tenant = "killed"
    with store.connect() as conn:
        docs = [SourceDocument(f"log-{d}.md", document(999, d)) for d in range(300)]
        upsert_documents(conn, store.schema, tenant, docs)
    vt = sql.SQL("{}.{}").format(sql.Identifier(store.schema), sql.Identifier(_identity().vector_table))
    srv.faults.delay_per_input = 0.001  # slow enough to be killed mid-run
    cli = [str(ROOT / ".venv" / "bin" / "embeddings-pipeline"), "materialize", "--tenant", tenant]
    proc = subprocess.Popen(cli, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    committed = 0
    deadline = time.monotonic() + 300
    with store.connect() as conn:
        while committed < 1000 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                committed = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE tenant_id = %s").format(vt),
                                         (tenant,)).fetchone()[0]  # fmt: skip
            except psycopg.errors.UndefinedTable:
                committed = 0
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    srv.faults.delay_per_input = 0.0
    count_by_run = sql.SQL("SELECT run_id, count(*) FROM {} WHERE tenant_id = %s GROUP BY 1").format(vt)
    with store.connect() as conn:
        before = dict(conn.execute(count_by_run, (tenant,)).fetchall())
    committed = sum(before.values())
    t0 = time.perf_counter()
    resumed = subprocess.run(cli, env=os.environ.copy(), capture_output=True, text=True)
    resume_s = time.perf_counter() - t0
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    with store.connect() as conn:
        st = tenant_status(conn, store.schema, tenant, _identity().model_key)
        after = dict(conn.execute(count_by_run, (tenant,)).fetchall())
        orphans = conn.execute(
            sql.SQL(
                "SELECT count(*) FROM {v} v WHERE v.tenant_id = %s AND NOT EXISTS "
                "(SELECT 1 FROM {s}.chunks c WHERE c.tenant_id = v.tenant_id AND c.chunk_id = v.chunk_id)"
            ).format(v=vt, s=sql.Identifier(store.schema)),
            (tenant,),
        ).fetchone()[0]
    kept = sum(n for run, n in after.items() if run in before)
    return {
        "kill9_chunks": st.chunks,
        "kill9_committed_before_kill": committed,
        "kill9_reembedded_over_committed": round((committed - kept) / max(committed, 1), 3),
        "kill9_missing_after_resume": st.missing,
        "kill9_orphan_vectors_after_resume": int(orphans),  # one row per chunk is the primary key
        "kill9_resume_s": round(resume_s, 1),
    }


def _outage(store, srv, instance, tenants: list[str]) -> dict[str, object]:
    from embeddings_pipeline.cli.runner import materialize_tenants
    from embeddings_pipeline.store.documents import SourceDocument, upsert_documents

    with store.connect() as conn:
        for tenant in tenants[:2]:
            upsert_documents(conn, store.schema, tenant, [SourceDocument("new.md", f"Fresh note for {tenant}.")])
    srv.reset_counters()
    srv.faults.down = True
    t0 = time.perf_counter()
    (down,) = materialize_tenants(tenants[:1], instance=instance)
    fail_s = time.perf_counter() - t0
    requests = srv.requests.total()
    srv.faults.down = False
    (after,) = materialize_tenants(tenants[1:2], instance=instance)
    return {
        "outage_run_failed": not down.success,
        "outage_seconds_to_fail": round(fail_s, 1),
        "outage_requests_to_dead_endpoint": requests,
        "outage_next_tenant_ok": after.success and after.metadata["embedded"] == 1,
    }


def _identity():
    from embeddings_pipeline.pipeline import model_change

    return model_change.default_loader().identity


if __name__ == "__main__":
    main()
