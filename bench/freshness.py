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
- `configured`: the repository's dagster.yaml and the settings given with `--set NAME=VALUE`.

    .venv/bin/python bench/freshness.py [--tries 5] [--baseline-yaml PATH] [--set EMBEDDINGS_SENSOR_INTERVAL=5]
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
    ap.add_argument("--timeout", type=float, default=180, help="seconds one try may take")
    ap.add_argument("--baseline-yaml", type=Path, help="run a first phase with this dagster.yaml and defaults")
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
        phases = [("baseline", args.baseline_yaml, before)] if args.baseline_yaml else []
        phases.append(("configured", ROOT / "dagster.yaml", dict(s.split("=", 1) for s in args.set)))
        out["phases"] = {}
        for name, yaml, settings in phases:
            dagster_home = home / f"dagster-{name}"
            dagster_home.mkdir()
            shutil.copyfile(yaml, dagster_home / "dagster.yaml")
            env = {**os.environ, **settings, "DAGSTER_HOME": str(dagster_home)}
            subprocess.run([str(CLI), "materialize", "--tenant", TENANT], env=env, check=True, capture_output=True)
            log = open(home / f"dagster-dev-{name}.log", "w")  # noqa: SIM115
            ui = free_port()
            dev = subprocess.Popen([str(CLI), "dev", "--port", str(ui)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)  # fmt: skip
            procs.append(dev)
            wait_http(f"http://127.0.0.1:{ui}/server_info", dev, 240)
            first_tick_after(dagster_home, "new_content_sensor", time.time(), 120)  # the daemon is ticking
            tries = []
            for i in range(args.tries):
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
            out["phases"][name] = {"settings": settings, "instance_yaml": str(yaml), **summarize(tries), "tries": tries}
    return out


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


def _instance(dagster_home: Path):
    import dagster as dg

    return dg.DagsterInstance.from_config(str(dagster_home))


def _ticks(instance, sensor: str, after: float) -> list:
    after = float(after)
    states = [s for s in instance.all_instigator_state() if s.instigator_name == sensor]
    ticks = [t for s in states for t in instance.get_ticks(s.instigator_origin_id, s.selector_id, after=after)]
    return sorted(ticks, key=lambda t: t.timestamp)


def _cursor_moved(ticks: list, after: float):
    """The first tick after `after` that moved the sensor's cursor (it reported changes; such a tick reports
    asset events and requests no run, so Dagster files it as skipped with an empty result)."""
    previous = None
    for t in ticks:
        if t.timestamp > after and previous is not None and t.cursor != previous:
            return t
        previous = t.cursor
    return None


def first_tick_after(dagster_home: Path, sensor: str, after: float, timeout: float) -> None:
    end = time.time() + timeout
    while time.time() < end:
        with _instance(dagster_home) as instance:
            if any(t.end_timestamp for t in _ticks(instance, sensor, after)):
                return
        time.sleep(0.5)
    raise SystemExit(f"{sensor} did not tick within {timeout:.0f} s")


def breakdown(dagster_home: Path, tenant: str, written: float, found: float) -> dict[str, object]:
    """Where the seconds between the write and the first dense hit went (each figure from the instance)."""
    import dagster as dg

    end = time.time() + 120  # the run's last events (its checks, its end) come after the row is searchable
    while time.time() < end:
        with _instance(dagster_home) as instance:
            records = instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": tenant}))
            if all(r.end_time for r in records if r.create_timestamp.timestamp() >= written):
                break
        time.sleep(0.5)
    with _instance(dagster_home) as instance:
        sensed = _cursor_moved(_ticks(instance, "new_content_sensor", written - 120), written)
        records = instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": tenant}))
        runs = sorted(
            (r for r in records if r.create_timestamp.timestamp() >= written), key=lambda r: r.create_timestamp
        )
        if sensed is None or not runs:
            return {"breakdown": "no sensor tick or run found"}
        run = runs[0]
        requested = next((t for t in _ticks(instance, "embeddings_automation", written)
                          if run.dagster_run.run_id in t.run_ids), None)  # fmt: skip
        events = instance.all_logs(run.dagster_run.run_id)
        created = run.create_timestamp.timestamp()
        out: dict[str, object] = {
            "sensor_tick_s": round(sensed.timestamp - written, 2),  # waiting for the tick (interval, lag)
            "sensor_tick_run_s": round((sensed.end_timestamp or sensed.timestamp) - sensed.timestamp, 2),
        }
        sensed_end = sensed.end_timestamp or sensed.timestamp
        between = [t for t in _ticks(instance, "embeddings_automation", sensed.timestamp) if requested is None or
                   t.timestamp <= requested.timestamp]  # fmt: skip
        out["automation_ticks"] = [[round(t.timestamp - written, 1), round((t.end_timestamp or t.timestamp)
                                    - t.timestamp, 1), t.status.value] for t in between]  # fmt: skip
        if requested is not None:
            out["automation_tick_s"] = round(requested.timestamp - sensed_end, 2)
            out["automation_tick_run_s"] = round(created - requested.timestamp, 2)
        out["queued_to_started_s"] = round((run.start_time or created) - created, 2)  # dequeue, launch, worker start
        steps: dict[str, float] = {}
        starts: dict[str, float] = {}
        first_step = last_step = None
        for e in events:
            kind = e.dagster_event_type
            if kind == dg.DagsterEventType.STEP_START:
                starts[e.step_key] = e.timestamp
                first_step = first_step or e.timestamp
            elif kind in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE) and e.step_key in starts:
                steps[e.step_key] = round(e.timestamp - starts[e.step_key], 2)
                last_step = e.timestamp
            elif kind == dg.DagsterEventType.ASSET_MATERIALIZATION and e.step_key == "embeddings":
                meta = {k: getattr(v, "value", v) for k, v in e.asset_materialization.metadata.items()}
                rate, n = float(meta.get("texts_per_second") or 0), int(meta.get("embedded") or 0)
                out["embed_calls_s"] = round(n / rate, 3) if rate else 0.0
                out["materialized_to_found_s"] = round(found - e.timestamp, 2)  # the vector is written before
        out["worker_start_to_first_step_s"] = round((first_step or created) - (run.start_time or created), 2)
        out["steps_s"] = steps
        out["step_gaps_s"] = round((last_step or 0) - (first_step or 0) - sum(steps.values()), 2)
        out["run_s"] = round((run.end_time or found) - (run.start_time or created), 2)
        out["run_id"] = run.dagster_run.run_id
    return out


def summarize(tries: list[dict]) -> dict[str, object]:
    """p50 of each figure over the tries."""

    def p50(key: str) -> float | None:
        values = [t[key] for t in tries if isinstance(t.get(key), (int, float))]
        return round(statistics.median(values), 2) if values else None

    keys = dict.fromkeys(k for t in tries for k, v in t.items() if isinstance(v, (int, float)))
    steps: dict[str, list[float]] = {}
    for t in tries:
        for step, seconds in t.get("steps_s", {}).items():
            steps.setdefault(step, []).append(seconds)
    return {"p50": {k: p50(k) for k in keys},
            "p50_steps_s": {s: round(statistics.median(v), 2) for s, v in steps.items()}}  # fmt: skip


if __name__ == "__main__":
    main()
