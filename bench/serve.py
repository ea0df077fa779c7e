"""The HTTP service against the work it saves: a real `embeddings-pipeline serve` (uvicorn, started here on a free
port of 127.0.0.1) over an embedded PostgreSQL under a temporary EMBEDDINGS_HOME, with the bundled model.

The first `--n` documents of a BEIR corpus (SciFact) are split into a small tenant (a tenth) and a large one,
ingested and materialized by the pipeline's own Dagster job. Then for each mode (dense, text, hybrid) and tenant:

- warm `/v1/search` latency, p50 and p95 over `--queries` of the dataset's queries, each asked twice (one client,
  keep-alive), against the same queries through `search_mode` in this process: `service_over_in_process_p50`;
- a cold CLI call, `embeddings-pipeline search ...` in a fresh process (`--cli-tries`, median), alone and through
  the service (EMBEDDINGS_SERVICE_URL): `cli_cold_over_service_p50`, `cli_via_service_over_service_p50`;
- throughput with `--clients` concurrent clients (threads, one httpx client each) against one client:
  `qps_concurrent_over_1`.

Absolute times depend on the machine (and whoever else uses its cores); the ratios are measured in one run.
One JSON object is printed.

    .venv/bin/python bench/serve.py [--n 1200] [--queries 50] [--clients 16] [--cli-tries 3]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT.parent / "shared" / "datasets" / "scifact"
MODES = ("dense", "text", "hybrid")
TENANTS = ("small", "large")
K = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1200, help="documents (default embeds in ~2-3 min on 2 cores)")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--cli-tries", type=int, default=3)
    parser.add_argument("--dataset", type=Path, default=DATASET)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    os.environ.update({"EMBEDDINGS_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
                       "EMBEDDINGS_SCHEMA": "bench", "EMBEDDINGS_RATE_LIMIT": "0"})  # fmt: skip
    os.environ.pop("EMBEDDINGS_SERVICE_URL", None)
    from embeddings_pipeline.store.server import start_embedded, stop_embedded

    os.environ["EMBEDDINGS_DATABASE_URL"] = start_embedded(home)
    try:
        print(json.dumps(run(args), indent=2))
    finally:
        stop_embedded(home)
        shutil.rmtree(home, ignore_errors=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def run(args: argparse.Namespace) -> dict[str, object]:
    import dagster as dg

    from embeddings_pipeline.cli.runner import materialize_tenants
    from embeddings_pipeline.pipeline.ingest import read_beir_corpus
    from embeddings_pipeline.pipeline.model_change import search_provider
    from embeddings_pipeline.store.documents import upsert_documents
    from embeddings_pipeline.store.scope import Scope
    from embeddings_pipeline.store.session import Database
    from embeddings_pipeline.store.status import tenant_status
    from embeddings_pipeline.store.tokens import create_token

    database = Database()
    docs = list(itertools.islice(read_beir_corpus(args.dataset / "corpus.jsonl"), args.n))
    small = max(1, len(docs) // 10)
    with open(args.dataset / "queries.jsonl") as fh:
        queries = [json.loads(line)["text"] for line in itertools.islice(fh, args.queries)]
    out: dict[str, object] = {"documents": len(docs), "queries": len(queries), "clients": args.clients,
                              "cpus": os.cpu_count(), "k": K}  # fmt: skip
    with database.connect() as conn:
        schema = database.schema
        t0 = time.perf_counter()
        upsert_documents(conn, schema, "small", docs[:small])
        upsert_documents(conn, schema, "large", docs[small:])
        out["ingest_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        runs = materialize_tenants(list(TENANTS), instance=dg.DagsterInstance.ephemeral())
        out["materialize_s"] = round(time.perf_counter() - t0, 2)
        if not all(r.success for r in runs):
            raise SystemExit(f"materialization failed: {[r.error for r in runs]}")
        providers = {t: search_provider(Scope(conn, schema, t)) for t in TENANTS}
        sizes = {}
        for t in TENANTS:
            st = tenant_status(conn, schema, t, providers[t].identity.model_key)
            sizes[t] = {"documents": st.documents, "chunks": st.chunks, "vectors": st.vectors}
        out["tenants"] = sizes
        out["chunks_per_s"] = round(sum(s["chunks"] for s in sizes.values()) / out["materialize_s"], 1)
        tokens = {t: create_token(conn, schema, t)[1] for t in TENANTS}
        with serving() as url:
            out["modes"] = {mode: {t: measure(args, url, tokens[t], conn, schema, providers[t], t, mode, queries)
                                   for t in TENANTS} for mode in MODES}  # fmt: skip
    return out


class serving:
    """`embeddings-pipeline serve` on a free port of 127.0.0.1, until /ready answers 200; stopped on exit."""

    def __enter__(self) -> str:
        import httpx

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cli = Path(sys.executable).with_name("embeddings-pipeline")
        self.proc = subprocess.Popen([str(cli), "serve", "--port", str(port), "--log-level", "warning"],
                                     stdout=subprocess.DEVNULL)  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"serve exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise SystemExit("serve was not ready within 180 s")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def measure(args, url, token, conn, schema, provider, tenant, mode, queries) -> dict[str, object]:
    import httpx

    from embeddings_pipeline.search import search_mode

    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:

        def ask(query: str) -> float:
            t0 = time.perf_counter()
            r = client.post("/v1/search", json={"query": query, "k": K, "mode": mode})
            elapsed = time.perf_counter() - t0
            r.raise_for_status()
            return elapsed

        def here(query: str) -> float:
            t0 = time.perf_counter()
            search_mode(conn, schema, provider, tenant, query, K, mode)
            return time.perf_counter() - t0

        for q in queries[:3]:  # warm: connections, caches
            ask(q)
            here(q)
        # blocks in the order service, here, here, service: drift in the machine's load is shared alike, and one
        # model's threads still spinning never slow the other's next call (they would, call by call)
        service, local, service_wall = [], [], 0.0
        for measure_service in (True, False, False, True):
            t0 = time.perf_counter()
            (service if measure_service else local).extend((ask if measure_service else here)(q) for q in queries)
            service_wall += (time.perf_counter() - t0) if measure_service else 0.0
    qps_1 = len(service) / service_wall  # one client, back to back
    qps_n = concurrent_qps(url, headers, mode, queries, args.clients)
    cli = cli_seconds(queries[0], tenant, mode, args.cli_tries)
    via = cli_seconds(queries[0], tenant, mode, args.cli_tries, {"EMBEDDINGS_SERVICE_URL": url,
                                                                   "EMBEDDINGS_SERVICE_TOKEN": token})  # fmt: skip
    p50 = percentile(service, 0.5)
    return {
        "service_p50_ms": ms(p50), "service_p95_ms": ms(percentile(service, 0.95)),
        "in_process_p50_ms": ms(percentile(local, 0.5)), "in_process_p95_ms": ms(percentile(local, 0.95)),
        "service_over_in_process_p50": round(p50 / percentile(local, 0.5), 2),
        "cli_cold_s": round(cli, 2), "cli_cold_over_service_p50": round(cli / p50, 1),
        "cli_via_service_s": round(via, 2), "cli_via_service_over_service_p50": round(via / p50, 1),
        "qps_1": round(qps_1, 1), f"qps_{args.clients}": round(qps_n, 1),
        "qps_concurrent_over_1": round(qps_n / qps_1, 2),
    }  # fmt: skip


def concurrent_qps(url: str, headers: dict[str, str], mode: str, queries: list[str], clients: int) -> float:
    """Requests per second with `clients` threads, each with its own keep-alive client, sharing one list of work
    (every query twice, at least two requests per client)."""
    import httpx

    work = iter(queries * max(2, -(-2 * clients // len(queries))))
    lock, errors = threading.Lock(), []
    done = [0]
    barrier = threading.Barrier(clients + 1, timeout=120)

    def worker() -> None:
        with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
            client.get("/live")  # connect before the clock starts
            barrier.wait()
            while True:
                with lock:
                    query = next(work, None)
                if query is None:
                    return
                r = client.post("/v1/search", json={"query": query, "k": K, "mode": mode})
                with lock:
                    done[0] += 1
                    if r.status_code != 200:
                        errors.append(r.status_code)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"{len(errors)} concurrent requests failed: {sorted(set(errors))}")
    return done[0] / elapsed


def cli_seconds(query: str, tenant: str, mode: str, tries: int, extra_env: dict[str, str] | None = None) -> float:
    """Median wall time of `embeddings-pipeline search` in a fresh process (imports, model load, connection)."""
    cli = Path(sys.executable).with_name("embeddings-pipeline")
    env = {**os.environ, **(extra_env or {})}
    times = []
    for _ in range(tries):
        t0 = time.perf_counter()
        subprocess.run([str(cli), "search", query, "--tenant", tenant, "--mode", mode, "-k", str(K), "--json"],
                       env=env, check=True, capture_output=True)  # fmt: skip
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


if __name__ == "__main__":
    main()
