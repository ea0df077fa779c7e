"""Pipeline throughput against the raw model, measured in the same run.

    .venv/bin/python bench/throughput.py [--n 5000] [--corpus ../shared/datasets/scifact/corpus.jsonl]

1. ingests N real paragraphs (BEIR abstracts by default) as documents of one tenant in a fresh schema;
2. materializes the tenant through Dagster (blocks -> chunks -> embeddings), model already loaded;
3. encodes exactly the chunk texts the pipeline produced with `SentenceTransformer.encode` alone;
4. materializes again with nothing changed (the no-op run).
Prints pipeline/raw throughput (target >= 0.85), no-op/full time (target < 0.05) and peak RSS.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "scifact" / "corpus.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000, help="paragraphs (documents) to embed")
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="BEIR corpus.jsonl")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    os.environ.setdefault("EMBEDDINGS_HOME", str(Path(tempfile.gettempdir()) / "embeddings-bench"))
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    os.environ["EMBEDDINGS_SCHEMA"] = schema
    os.environ["DAGSTER_HOME"] = tempfile.mkdtemp(prefix="dagster-bench-")

    import dagster as dg

    from embeddings_pipeline.cli.runner import materialize_tenants
    from embeddings_pipeline.pipeline import model_change
    from embeddings_pipeline.pipeline.ingest import read_beir_corpus
    from embeddings_pipeline.store.documents import upsert_documents
    from embeddings_pipeline.store.session import Database

    store, provider = Database(), model_change.default_loader()
    provider.load()
    provider.embed_documents(["warm up the model"] * 8)
    docs = list(itertools.islice(read_beir_corpus(args.corpus), args.n))
    instance = dg.DagsterInstance.ephemeral()
    try:
        with store.connect() as conn:
            upsert_documents(conn, store.schema, "bench", docs)

        t0 = time.perf_counter()
        (full,) = materialize_tenants(["bench"], instance=instance)
        full_s = time.perf_counter() - t0
        assert full.success, full.error

        t0 = time.perf_counter()
        (noop,) = materialize_tenants(["bench"], instance=instance)
        noop_s = time.perf_counter() - t0
        assert noop.success and noop.metadata["embedded"] == 0, noop.metadata

        with store.connect() as conn:
            texts = [
                r[0]
                for r in conn.execute(
                    sql.SQL("SELECT text FROM {}.chunks WHERE tenant_id = 'bench'").format(sql.Identifier(schema))
                )
            ]
        model = provider._load()  # the very SentenceTransformer the pipeline used
        t0 = time.perf_counter()
        model.encode(texts, batch_size=provider.batch_size, convert_to_numpy=True, show_progress_bar=False)
        raw_s = time.perf_counter() - t0
    finally:
        with psycopg.connect(store.url(), autocommit=True) as c:
            c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))

    n = len(texts)
    result = {
        "documents": len(docs),
        "chunks": n,
        "raw_texts_per_s": round(n / raw_s, 2),
        "pipeline_texts_per_s": round(n / full_s, 2),
        "pipeline_over_raw": round(raw_s / full_s, 3),
        "full_run_s": round(full_s, 2),
        "noop_run_s": round(noop_s, 3),
        "noop_over_full": round(noop_s / full_s, 4),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>22}: {v}")
        print(
            f"targets: pipeline_over_raw >= 0.85 ({'met' if result['pipeline_over_raw'] >= 0.85 else 'MISSED'}), "
            f"noop_over_full < 0.05 ({'met' if result['noop_over_full'] < 0.05 else 'MISSED'})",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
