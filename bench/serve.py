"""The HTTP service against the work it saves: a real `embeddings-pipeline serve` (uvicorn, started here on a free
port of 127.0.0.1) over an embedded PostgreSQL under a temporary EMBEDDINGS_HOME, with the bundled model.

Two tenants of one model hold `--vectors` vectors between them (default 100,000: a small tenant of
`--small-vectors`, 2,000, in the shared partition with exact scans, and a large one with a partition and an HNSW
graph of its own). SciFact documents are parsed, chunked and embedded by the real model, then varied into copies
whose vectors are their originals' plus noise, all written by the pipeline's own steps (`bench/serve_corpus.py`).
Then for each mode (dense, text, hybrid) and tenant:

- warm `/v1/search` latency, p50 and p95 over `--queries` of the dataset's queries, each asked twice (one client,
  keep-alive), against the same queries through `search_mode` in this process: `service_over_in_process_p50`.
  Where the difference goes: `client_mean_ms` (the client's wall time), `server_mean_ms` (the service's own time per
  request, from its /metrics latency histogram read before and after each block) and `in_process_mean_ms`;
  Every query is asked once through each path before the clock starts (the model's first call on a new input
  length costs several times a warm one, in each process). `--client stdlib` (default) asks over one keep-alive
  `http.client` connection, whose own cost per request is ~0.1 ms; `--client httpx` over an `httpx.Client`, which
  adds ~0.4 ms of its own per request (measured against `/live` on 2 cores);
  with `--baseline-src DIR` (a source tree of an earlier commit: `git archive REV embeddings_pipeline | tar -x -C
  DIR`) a second service from DIR on the same database is measured in the same blocks (`baseline_*`);
- `relevant_at_10`: the share of queries with a relevant SciFact document (or a copy of one) in the top 10;
- a cold CLI call, `embeddings-pipeline search ...` in a fresh process (`--cli-tries`, median), alone and through
  the service (EMBEDDINGS_SERVICE_URL): `cli_cold_over_service_p50`, `cli_via_service_over_service_p50`;
- throughput with `--clients` concurrent clients (threads, one httpx client each) against one client:
  `qps_concurrent_over_1`.

Absolute times depend on the machine (and whoever else uses its cores); the ratios are measured in one run.
One JSON object is printed.

    .venv/bin/python bench/serve.py [--vectors 100000] [--small-vectors 2000] [--base-docs 600] [--queries 50]
                                    [--clients 16] [--cli-tries 3] [--baseline-src DIR] [--client stdlib|httpx]
                                    [--modes dense,text,hybrid] [--home DIR]

`--home DIR` keeps the embedded database in DIR and reuses the corpus an earlier run built there with the same sizes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# bench/ itself off the path (a bench/profile.py would shadow the standard library's), the repository on it
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT.parent / "shared" / "datasets" / "scifact"
MODES = ("dense", "text", "hybrid")
TENANTS = ("small", "large")
K = 10
ADMIN_TOKEN = "bench-admin-" + os.urandom(8).hex()  # the services' /metrics: their own time per request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vectors", type=int, default=100_000, help="vectors of both tenants together")
    parser.add_argument("--small-vectors", type=int, default=2000)
    parser.add_argument("--base-docs", type=int, default=600, help="documents embedded by the real model")
    parser.add_argument("--baseline-src", type=Path, help="also serve from this source tree, in the same run")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--cli-tries", type=int, default=3)
    parser.add_argument("--client", choices=("stdlib", "httpx"), default="stdlib", help="the latency client")
    parser.add_argument("--dataset", type=Path, default=DATASET)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated: which modes to measure")
    parser.add_argument("--home", type=Path, help="keep the database here; a corpus built there before is reused")
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="bench-serve-"))
    home.mkdir(parents=True, exist_ok=True)
    os.environ.update({"EMBEDDINGS_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
                       "EMBEDDINGS_SCHEMA": "bench", "EMBEDDINGS_RATE_LIMIT": "0",
                       "EMBEDDINGS_ADMIN_TOKEN": ADMIN_TOKEN})  # fmt: skip
    os.environ.pop("EMBEDDINGS_SERVICE_URL", None)
    from embeddings_pipeline.store.server import start_embedded, stop_embedded

    os.environ["EMBEDDINGS_DATABASE_URL"] = start_embedded(home)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill still stops the services and the database
    try:
        print(json.dumps(run(args), indent=2))
    finally:
        stop_embedded(home)
        if args.home is None:
            shutil.rmtree(home, ignore_errors=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def run(args: argparse.Namespace) -> dict[str, object]:
    from bench.serve_corpus import build, load
    from embeddings_pipeline.pipeline.model_change import default_loader, search_provider
    from embeddings_pipeline.store.scope import Scope
    from embeddings_pipeline.store.session import Database
    from embeddings_pipeline.store.status import tenant_status
    from embeddings_pipeline.store.tokens import create_token
    from embeddings_pipeline.store.vector_tables import own_partitions

    database = Database()
    docs, picked, relevant = load(args.dataset, args.queries, args.base_docs)
    queries = [text for _, text in picked]
    out: dict[str, object] = {"queries": len(queries), "clients": args.clients, "cpus": os.cpu_count(), "k": K,
                              "client": args.client}  # fmt: skip
    with database.connect() as conn:
        schema = database.schema
        real = default_loader()
        real.load()
        t0 = time.perf_counter()
        sizes = {"small": args.small_vectors, "large": args.vectors - args.small_vectors}
        built = Path(os.environ["EMBEDDINGS_HOME"]) / f"corpus-{sizes['small']}-{sizes['large']}-{args.base_docs}.json"
        if built.exists():  # --home: the same corpus, built by an earlier run
            out["corpus"] = json.loads(built.read_text())
        else:
            out["corpus"] = build(conn, schema, real, docs, sizes)
            if args.home is not None:
                built.write_text(json.dumps(out["corpus"]))
        out["build_s"] = round(time.perf_counter() - t0, 1)
        providers = {t: search_provider(Scope(conn, schema, t)) for t in TENANTS}
        for t in TENANTS:
            st = tenant_status(conn, schema, t, providers[t].identity.model_key)
            out["corpus"][t].update(vectors=st.vectors, missing=st.missing, stale=st.stale)
        out["own_partitions"] = len(own_partitions(conn, schema, providers["large"].identity.model_key))
        print(json.dumps({k: out[k] for k in ("corpus", "build_s", "own_partitions")}), file=sys.stderr, flush=True)
        tokens = {t: create_token(conn, schema, t)[1] for t in TENANTS}
        wanted = [relevant[qid] for qid, _ in picked]
        baseline = serving(args.baseline_src) if args.baseline_src else contextlib.nullcontext()
        with serving() as url, baseline as base:
            urls = {"service": url, **({"baseline": base} if base else {})}
            out["modes"] = modes = {}
            for mode in [m for m in MODES if m in args.modes.split(",")]:
                for t in TENANTS:
                    modes.setdefault(mode, {})[t] = measure(args, urls, tokens[t], conn, schema, providers[t], t,
                                                            mode, queries, wanted)  # fmt: skip
                    print(json.dumps({mode: {t: modes[mode][t]}}), file=sys.stderr, flush=True)  # progress
    return out


class serving:
    """`embeddings-pipeline serve` on a free port of 127.0.0.1, until /ready answers 200; stopped on exit. With
    `src`, the service of that source tree (run from it, so its package is the one imported)."""

    def __init__(self, src: Path | None = None) -> None:
        self.src = src

    def __enter__(self) -> str:
        import httpx

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        command = [sys.executable, "-m", "embeddings_pipeline.cli", "serve", "--port", str(port), "--log-level",
                   "warning"]  # fmt: skip
        path = [str(self.src or ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]  # the source tree first
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, cwd=self.src or ROOT, env=env)
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


def measure(args, urls, token, conn, schema, provider, tenant, mode, queries, wanted) -> dict[str, object]:
    import httpx

    from embeddings_pipeline.search import search_mode

    headers = {"Authorization": f"Bearer {token}"}
    lean = args.client == "stdlib"
    clients = {name: LeanClient(u, headers) if lean else httpx.Client(base_url=u, headers=headers, timeout=60)
               for name, u in urls.items()}  # fmt: skip
    found = []

    def ask(name: str, query: str) -> float:
        t0 = time.perf_counter()
        r = clients[name].post("/v1/search", json={"query": query, "k": K, "mode": mode})
        elapsed = time.perf_counter() - t0
        r.raise_for_status()
        return elapsed

    def here(query: str) -> float:
        t0 = time.perf_counter()
        hits = search_mode(conn, schema, provider, tenant, query, K, mode)
        elapsed = time.perf_counter() - t0
        found.append({h.doc_id.split("~", 1)[0] for h in hits})
        return elapsed

    for q in queries:  # warm: connections, caches, and the model on each query's input length in each process
        for name in clients:
            ask(name, q)
        here(q)
    found.clear()
    # blocks in the order service, (baseline), here, here, (baseline), service: drift in the machine's load is shared
    # alike, and one model's threads still spinning never slow the other's next call (they would, call by call)
    times: dict[str, list[float]] = {name: [] for name in (*clients, "here")}
    walls = {name: 0.0 for name in clients}
    inside = {name: [0.0, 0.0] for name in clients}  # the service's own seconds and requests (its /metrics)
    names = list(clients)
    for name in [*names, "here", "here", *reversed(names)]:
        before = None if name == "here" else server_seconds(urls[name])
        t0 = time.perf_counter()
        times[name].extend(here(q) if name == "here" else ask(name, q) for q in queries)
        if before is not None:
            walls[name] += time.perf_counter() - t0
            after = server_seconds(urls[name])
            inside[name] = [inside[name][i] + after[i] - before[i] for i in (0, 1)]
    for c in clients.values():
        c.close()
    local = percentile(times["here"], 0.5)
    hit = sum(bool(f & w) for f, w in zip(found, wanted * 2, strict=True))
    out: dict[str, object] = {"in_process_p50_ms": ms(local), "in_process_p95_ms": ms(percentile(times["here"], 0.95)),
                              "relevant_at_10": round(hit / len(found), 3),
                              "in_process_mean_ms": ms(statistics.mean(times["here"]))}  # fmt: skip
    for name in clients:
        p50, prefix = percentile(times[name], 0.5), "" if name == "service" else f"{name}_"
        qps_1 = len(times[name]) / walls[name]  # one client, back to back
        qps_n, failed = concurrent_qps(urls[name], headers, mode, queries, args.clients)
        server_mean = inside[name][0] / max(inside[name][1], 1)
        out.update({f"{prefix}service_p50_ms": ms(p50), f"{prefix}service_p95_ms": ms(percentile(times[name], 0.95)),
                    f"{prefix}client_mean_ms": ms(statistics.mean(times[name])),
                    f"{prefix}server_mean_ms": ms(server_mean),
                    f"{prefix}service_over_in_process_p50": round(p50 / local, 2), f"{prefix}qps_1": round(qps_1, 1),
                    f"{prefix}qps_{args.clients}": round(qps_n, 1), f"{prefix}failed_{args.clients}": failed,
                    f"{prefix}qps_concurrent_over_1": round(qps_n / qps_1, 2)})  # fmt: skip
    p50 = percentile(times["service"], 0.5)
    if args.cli_tries:
        cli = cli_seconds(queries[0], tenant, mode, args.cli_tries)
        via = cli_seconds(queries[0], tenant, mode, args.cli_tries, {"EMBEDDINGS_SERVICE_URL": urls["service"],
                                                                       "EMBEDDINGS_SERVICE_TOKEN": token})  # fmt: skip
        out.update({"cli_cold_s": round(cli, 2), "cli_cold_over_service_p50": round(cli / p50, 1),
                    "cli_via_service_s": round(via, 2),
                    "cli_via_service_over_service_p50": round(via / p50, 1)})  # fmt: skip
    return out


def server_seconds(url: str) -> tuple[float, float]:
    """(seconds, requests) the service has spent answering `/v1/search` so far, from the latency histogram of its
    /metrics (its Timing middleware: from the request's arrival in the app to its last byte sent)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30).text
    found = {"_sum": 0.0, "_count": 0.0}
    for family in text_string_to_metric_families(text):
        if family.name == "embeddings_service_request_duration_seconds":
            for sample in family.samples:
                suffix = sample.name.removeprefix(family.name)
                if suffix in found and sample.labels.get("endpoint") == "/v1/search":
                    found[suffix] += sample.value
    return found["_sum"], found["_count"]


class LeanClient:
    """One keep-alive HTTP/1.1 connection (`http.client`), posting JSON: `post(path, json=...)` like httpx's,
    connecting again when the server closed it."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        import http.client
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
        self.headers = {**headers, "Content-Type": "application/json"}

    def post(self, path: str, json: object) -> LeanClient.Answer:
        import http.client
        import json as _json

        body = _json.dumps(json)
        for attempt in (1, 2):  # uvicorn closes a connection idle for 5 s: connect again, as httpx does
            try:
                self.conn.request("POST", path, body, self.headers)
                response = self.conn.getresponse()
                return LeanClient.Answer(response.status, response.read())
            except (ConnectionError, http.client.RemoteDisconnected):
                self.conn.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()

    class Answer:
        def __init__(self, status: int, body: bytes) -> None:
            self.status_code, self.body = status, body

        def raise_for_status(self) -> None:
            if self.status_code != 200:
                raise RuntimeError(f"/v1/search answered {self.status_code}: {self.body[:200]!r}")


def concurrent_qps(url: str, headers: dict[str, str], mode: str, queries: list[str], clients: int) -> tuple[float, int]:
    """Answers per second with `clients` threads, each with its own keep-alive client, sharing one list of work
    (every query twice, at least two requests per client), and how many requests failed (an overloaded service
    answers 503 once a request waited 10 s for a database connection)."""
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
    return (done[0] - len(errors)) / elapsed, len(errors)


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
