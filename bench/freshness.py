"""Freshness: seconds from a new document row to its text being searchable, with nobody pressing a button.

As deployed, on this machine: the embedded PostgreSQL under a temporary EMBEDDINGS_HOME, `embeddings-pipeline serve`
(the bundled model, loaded once) and `embeddings-pipeline dev` (dagster dev, DAGSTER_HOME set up as `dev` does).
The tenant embeds through the service (`tenants set fresh --model openai:all-MiniLM-L6-v2?max_tokens=256 --key-env
FRESH_SERVICE_TOKEN`, OPENAI_BASE_URL at its /v1, a token of a tenant with the local model), so no run loads a model.

Each try writes one row and polls `/v1/search` every 0.2 s (dense: the row's own text is its nearest neighbour once
its vector is written; text: once its chunks are). The instance and the run's events split the seconds into the
new-content sensor's tick, the automation's tick, queue and launch, worker start, each step and the embedding calls.
Phases, each with a fresh `dagster dev` and DAGSTER_HOME on the same database and service:
- `--baseline-yaml PATH` (optional, first): that instance file, the sensors' default interval (15 s) and a
  process per step (EMBEDDINGS_RUN_EXECUTOR=multiprocess), as before `defs/executor.py`;
- `--baseline-ref REF` (optional, next): the package and its project files at that git ref (PYTHONPATH
  at a `git archive` copy) with `--baseline-set`s (default: those of `configured`): the code before a change
  against the code after it;
- `configured`: the repository's dagster.yaml and the settings given with `--set NAME=VALUE`.
With `--rounds R` the phases take turns R times, each turn a fresh `dagster dev` with that phase's share of the
tries. Each try also counts the tenant's runs created after the write (`runs_after_write`: 1 unless a change ran twice).
The phases and their order are in bench/freshness_events.py's `breakdown`.

    .venv/bin/python bench/freshness.py [--tries 5] [--rounds 1] [--baseline-yaml PATH] [--baseline-ref REF]
        [--set EMBEDDINGS_SENSOR_LAG_SECONDS=1]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLI = Path(sys.executable).with_name("embeddings-pipeline")
TENANT, EMBEDDER = "fresh", "embedder"
SPEC = "openai:all-MiniLM-L6-v2?max_tokens=256"
WORDS = "quokka zephyr lantern basalt marigold tundra cobalt heron saffron glacier meadow falcon".split()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    import httpx

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args[:3]} exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.25)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    """Stop a process this bench started, with its own process group (dagster dev's webserver and daemon)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tries", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=1, help="phases take turns this many times (tries split)")
    ap.add_argument("--timeout", type=float, default=180, help="seconds one try may take")
    ap.add_argument("--baseline-yaml", type=Path, help="run a first phase with this dagster.yaml and defaults")
    ap.add_argument("--baseline-ref", help="a phase before `configured` with the code of this git ref")
    ap.add_argument("--baseline-set", action="append", metavar="NAME=VALUE",
                    help="settings of the --baseline-ref phase (default: those of `configured`)")  # fmt: skip
    ap.add_argument("--keep", action="store_true", help="keep the temporary home (logs, instances) and say where")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="settings of `configured`")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-fresh-"))
    token_env = {"EMBEDDINGS_HOME": str(home), "EMBEDDINGS_SCHEMA": "fresh", "EMBEDDINGS_RATE_LIMIT": "0"}
    os.environ.update(token_env)
    for name in ("EMBEDDINGS_SERVICE_URL", "EMBEDDINGS_SENSOR_INTERVAL", "DAGSTER_HOME"):
        os.environ.pop(name, None)
    from embeddings_pipeline.store.server import start_embedded, stop_embedded

    os.environ["EMBEDDINGS_DATABASE_URL"] = start_embedded(home)
    procs: list[subprocess.Popen] = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill still stops what this bench started
    try:
        print(json.dumps(run(args, home, procs), indent=2))
    finally:
        for proc in procs:
            stop(proc)
        stop_embedded(home)
        if args.keep:
            print(f"kept {home}", file=sys.stderr)
        else:
            shutil.rmtree(home, ignore_errors=True)


def run(args: argparse.Namespace, home: Path, procs: list[subprocess.Popen]) -> dict[str, object]:
    from bench.freshness_events import summarize
    from embeddings_pipeline.store.documents import SourceDocument, upsert_documents
    from embeddings_pipeline.store.session import Database
    from embeddings_pipeline.store.tokens import create_token

    database = Database()
    out: dict[str, object] = {"tries": args.tries, "cpus": os.cpu_count(), "spec": SPEC}
    with database.connect() as conn:
        schema = database.schema
        seed = [SourceDocument(doc_id=f"seed-{i}.txt", body=f"Seed note {i}: the loading dock opens at six.",
                               format="text") for i in range(3)]  # fmt: skip
        upsert_documents(conn, schema, TENANT, seed)
        upsert_documents(conn, schema, EMBEDDER, seed[:1])
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        os.environ.update(
            {"OPENAI_BASE_URL": f"{url}/v1", "FRESH_SERVICE_TOKEN": create_token(conn, schema, EMBEDDER)[1]}
        )
        search_token = create_token(conn, schema, TENANT)[1]
        serve = subprocess.Popen([str(CLI), "serve", "--port", str(port), "--log-level", "warning"],
                                 stdout=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        procs.append(serve)
        wait_http(f"{url}/ready", serve, 180)
        subprocess.run([str(CLI), "tenants", "set", TENANT, "--model", SPEC, "--key-env", "FRESH_SERVICE_TOKEN"],
                       check=True, capture_output=True)  # fmt: skip
        before = {"EMBEDDINGS_SENSOR_INTERVAL": "15", "EMBEDDINGS_RUN_EXECUTOR": "multiprocess"}  # as it was
        configured = dict(s.split("=", 1) for s in args.set)
        phases = [("baseline", args.baseline_yaml, before, None)] if args.baseline_yaml else []
        if args.baseline_ref:
            code = code_of(args.baseline_ref, home / "code-before")
            settings = dict(s.split("=", 1) for s in args.baseline_set) if args.baseline_set else configured
            phases.append((f"code@{args.baseline_ref}", code / "dagster.yaml", settings, code))
        phases.append(("configured", ROOT / "dagster.yaml", configured, None))
        results: dict[str, list[dict]] = {name: [] for name, *_ in phases}
        for r in range(args.rounds):  # the phases take turns, so the machine's load hits each alike
            for name, yaml, settings, code in phases:
                n = args.tries // args.rounds + (r < args.tries % args.rounds)
                ctx = (conn, schema, url, search_token)
                results[name] += phase_round(args, home, procs, ctx, name, yaml, settings, code, n, len(results[name]))
        out["phases"] = {name: {"settings": settings, "instance_yaml": str(yaml), **summarize(results[name]),
                                "tries": results[name]} for name, yaml, settings, _ in phases}  # fmt: skip
    return out


def phase_round(args: argparse.Namespace, home: Path, procs: list[subprocess.Popen], ctx: tuple, name: str,
                yaml: Path, settings: dict[str, str], code: Path | None, n: int, first: int) -> list[dict]:  # fmt: skip
    """`n` tries of one phase under a fresh `dagster dev` (the phase's DAGSTER_HOME is kept across rounds)."""
    from bench.freshness_events import breakdown, first_tick_after
    from embeddings_pipeline.store.documents import SourceDocument, upsert_documents

    conn, schema, url, search_token = ctx
    dagster_home = home / f"dagster-{name.replace('@', '-').replace('/', '-')}"
    dagster_home.mkdir(exist_ok=True)
    shutil.copyfile(yaml, dagster_home / "dagster.yaml")
    env = {**os.environ, **settings, "DAGSTER_HOME": str(dagster_home)}
    if code is not None:  # every process of the phase (CLI, webserver, daemon, run workers) runs that code
        env["PYTHONPATH"] = str(code)
    subprocess.run([str(CLI), "materialize", "--tenant", TENANT], env=env, check=True, capture_output=True)
    log = open(dagster_home.with_name(f"{dagster_home.name}.log"), "a")  # noqa: SIM115
    ui = free_port()
    dev = subprocess.Popen([str(CLI), "dev", "--port", str(ui)], env=env, stdout=log, stderr=subprocess.STDOUT,
                           start_new_session=True)  # fmt: skip
    procs.append(dev)
    wait_http(f"http://127.0.0.1:{ui}/server_info", dev, 240)
    first_tick_after(dagster_home, "new_content_sensor", time.time(), 120)  # the daemon is ticking
    tries = []
    for i in range(first, first + n):
        text = f"Note {name} {i}: " + " ".join(WORDS[(i * 5 + k) % len(WORDS)] for k in range(8)) + \
               f" checked on shift {uuid.uuid4().hex[:6]}."  # fmt: skip
        doc = SourceDocument(doc_id=f"new-{name}-{i}.txt", body=text, format="text")
        upsert_documents(conn, schema, TENANT, [doc])
        written = time.time()
        seen = poll(url, search_token, text, doc.doc_id, written, args.timeout)
        tries.append({"searchable_s": round(seen["dense"] - written, 2),
                      "text_searchable_s": round(seen["text"] - written, 2),
                      **breakdown(dagster_home, TENANT, written, seen["dense"])})  # fmt: skip
        time.sleep(1)
    stop(dev)
    log.close()
    return tries


def code_of(ref: str, where: Path) -> Path:
    """The package, dagster.yaml, workspace.yaml and pyproject.toml as they are at git `ref` (git archive: the
    checkout is not touched), for a phase that measures that code against the working tree's in the same run."""
    where.mkdir()
    paths = ["embeddings_pipeline", "dagster.yaml", "workspace.yaml", "pyproject.toml"]  # dg finds the project by it
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, *paths], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive.stdout, check=True)
    return where


def poll(url: str, token: str, text: str, doc_id: str, written: float, timeout: float) -> dict[str, float]:
    """When the new row was first found by text search and by dense search (its own text as the query)."""
    import httpx

    seen: dict[str, float] = {}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        while time.time() - written < timeout:
            for mode in ("text", "dense"):
                if mode in seen:
                    continue
                r = client.post("/v1/search", json={"query": text, "k": 3, "mode": mode})
                hits = r.json().get("hits", []) if r.status_code == 200 else []
                if hits and hits[0]["doc_id"] == doc_id:
                    seen[mode] = time.time()
            if "dense" in seen:
                seen.setdefault("text", seen["dense"])
                return seen
            time.sleep(0.2)
    raise SystemExit(f"{doc_id} not searchable within {timeout:.0f} s")


if __name__ == "__main__":
    main()
