"""One large tenant embedded by 1 and by 2 `embed-shard` PROCESSES (what 1 and 2 pods of deploy/k8s/shard-job.yaml
run), through the CLI, against the stand-in Ollama server taking 1 ms per text (a remote model: the time is the
provider's, not this machine's CPU), served from a process of its own.

    .venv/bin/python bench/shard_pods.py [--chunks 20000] [--rounds 2] [--delay 0.001] [--json]

Each attempt is a fresh tenant with the same documents (nothing reusable across tenants), its blocks and chunks
built first (`steps`, not timed); then, timed from the first spawn to the last exit (CLI start, model identity,
embedding, commits: what a pod pays):

- `cli_1`: one process, `embed-shard --shard 0/1`;
- `cli_2`: two processes at once, `--shard 0/2` and `--shard 1/2`;
- `inrun_2`: for reference, the in-run path (`steps.fill(processes=2)`: the run's process and one worker).

Variants are interleaved (cli_1, cli_2, inrun_2, cli_1, ...), so load from other processes on the machine hits each
alike, and the best of `--rounds` is kept (every time is printed too). After each attempt the tenant's coverage is
exact and a fill embeds 0 (checked). Printed: seconds and texts/s per variant and time(cli_1) / time(cli_2); each
shard's lock wait and embedding time on stderr as it ends.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from curve import _env, _ingest  # noqa: E402

VARIANTS = ("cli_1", "cli_2", "inrun_2")


def _shards(tenant: str, count: int) -> list[dict]:
    """`count` embed-shard processes of TENANT at once; their JSON summaries."""
    command = [sys.executable, "-m", "embeddings_pipeline.cli", "embed-shard", "--tenant", tenant, "--json"]
    procs = [
        subprocess.Popen(
            [*command, "--shard", f"{i}/{count}", "--run-id", f"bench-{tenant}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(count)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"embed-shard failed ({proc.returncode}): {err[-2000:]} {out[-500:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def run(chunks: int, rounds: int, delay: float) -> dict[str, object]:
    from embeddings_pipeline.pipeline import model_change, steps
    from embeddings_pipeline.store import vectors
    from embeddings_pipeline.store.scope import Scope
    from embeddings_pipeline.store.session import Database

    schema = f"pods_{uuid.uuid4().hex[:8]}"
    _env(schema)
    server = subprocess.Popen([sys.executable, str(ROOT / "bench" / "curve.py"), "--serve-standin", str(delay)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert server.stdout is not None
    os.environ["OLLAMA_HOST"] = server.stdout.readline().strip()
    os.environ["EMBEDDINGS_SHARD_MIN_CHUNKS"] = "1000"
    store = Database()
    best = dict.fromkeys(VARIANTS, float("inf"))
    sizes: list[int] = []
    every: dict[str, list[float]] = {v: [] for v in VARIANTS}
    try:
        with store.connect() as conn:
            provider = model_change.default_loader()
            for attempt in range(rounds * len(VARIANTS)):
                variant = VARIANTS[attempt % len(VARIANTS)]
                tenant = f"big-{attempt}"
                _ingest(conn, schema, tenant, 0, chunks)
                scope = Scope(conn, schema, tenant)
                steps.build_blocks(scope)
                plan = model_change.plan(scope, target=provider)
                steps.build_chunks(scope, plan)
                t0 = time.perf_counter()
                if variant == "inrun_2":
                    report = steps.fill(scope, provider, plan.chunk_set, f"run-{attempt}", processes=2,
                                        database_url=store.url())  # fmt: skip
                    assert report.failed == 0
                else:
                    results = _shards(tenant, int(variant[-1]))
                    assert all(r["ok"] for r in results)
                    inside = ", ".join(
                        f"{r['total_seconds']:.1f}s (lock wait {r['lock_wait_seconds']:.1f}s, embedding "
                        f"{r['embed_seconds']:.1f}s)"
                        for r in results
                    )
                took = time.perf_counter() - t0
                best[variant] = min(best[variant], took)
                every[variant].append(round(took, 1))
                vt = provider.identity.vector_table
                total, current = vectors.coverage(conn, schema, vt, tenant, plan.chunk_set)
                assert total == current and total > 0, (total, current)
                assert steps.fill(scope, provider, plan.chunk_set, "final").embedded == 0  # the final run's embed
                detail = f"; in the shards: {inside}" if variant != "inrun_2" else ""
                print(f"# {variant}: {took:.1f}s for {total} chunks{detail}", file=sys.stderr, flush=True)
                sizes.append(total)
    finally:
        server.kill()
        with psycopg.connect(store.url(), autocommit=True) as c:
            c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    chunks = sizes[0]
    out: dict[str, object] = {"chunks": chunks, "delay_per_text_s": delay, "rounds": rounds}
    for variant, took in best.items():
        out[f"{variant}_s"] = round(took, 1)
        out[f"{variant}_texts_per_s"] = round(chunks / took)
        out[f"{variant}_every_s"] = every[variant]
    out["speedup_cli_2_over_1"] = round(best["cli_1"] / best["cli_2"], 2)
    out["cli_2_over_inrun_2"] = round(best["inrun_2"] / best["cli_2"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--delay", type=float, default=0.001, help="stand-in seconds per text")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    result = run(args.chunks, args.rounds, args.delay)
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:>28}: {value}")


if __name__ == "__main__":
    main()
