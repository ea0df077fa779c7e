"""bench/freshness.py's reading of the Dagster instance: where the seconds between a write and its first dense hit
went, from the sensors' ticks and the run's own events."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

CONTENT_SENSOR, AUTOMATION = "new_content_sensor", "embeddings_automation"


def _instance(dagster_home: Path):
    import dagster as dg

    return dg.DagsterInstance.from_config(str(dagster_home))


def _ticks(instance, sensor: str, after: float) -> list:
    after = float(after)
    states = [s for s in instance.all_instigator_state() if s.instigator_name == sensor]
    ticks = [t for s in states for t in instance.get_ticks(s.instigator_origin_id, s.selector_id, after=after)]
    return sorted(ticks, key=lambda t: t.timestamp)


def _cursor_moved(ticks: list, after: float):
    """The first tick after `after` that moved the sensor's cursor (it reported changes)."""
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


def _runs_since(instance, tenant: str, written: float) -> list:
    import dagster as dg

    records = instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": tenant}))
    return sorted((r for r in records if r.create_timestamp.timestamp() >= written), key=lambda r: r.create_timestamp)


def breakdown(dagster_home: Path, tenant: str, written: float, found: float) -> dict[str, object]:
    """Where the seconds between the write and the first dense hit went (each figure from the instance).

    In order: `sensor_tick_s` (the write to the tick that saw it), `automation_tick_s` (only when the automation
    requested the run: the sensor's tick end to the automation's), `tick_to_run_created_s` (the requesting tick's
    start to the run's creation), `queued_s` (to the queue daemon's dequeue), `launch_s` (to the launcher's start),
    `worker_start_s` (a fresh process: imports, the code location, the instance), then the steps."""
    end = time.time() + 120  # the run's last events (its checks, its end) come after the row is searchable
    while time.time() < end:
        with _instance(dagster_home) as instance:
            if all(r.end_time for r in _runs_since(instance, tenant, written)):
                break
        time.sleep(0.5)
    with _instance(dagster_home) as instance:
        sensed = _cursor_moved(_ticks(instance, CONTENT_SENSOR, written - 120), written)
        runs = _runs_since(instance, tenant, written)
        if sensed is None or not runs:
            return {"breakdown": "no sensor tick or run found"}
        out = {"runs_after_write": len(runs), **_requested(instance, runs[0], sensed, written)}
        out.update(_run_phases(instance, runs[0], found))
    return out


def _requested(instance, run, sensed, written: float) -> dict[str, object]:
    run_id, created = run.dagster_run.run_id, run.create_timestamp.timestamp()
    sensed_end = sensed.end_timestamp or sensed.timestamp
    out: dict[str, object] = {
        "sensor_tick_s": round(sensed.timestamp - written, 2),  # waiting for the tick (interval, lag)
        "sensor_tick_run_s": round(sensed_end - sensed.timestamp, 2),
    }
    for name in (CONTENT_SENSOR, AUTOMATION):
        tick = next((t for t in _ticks(instance, name, written - 1) if run_id in t.run_ids), None)
        if tick is not None:
            out["requested_by"] = name
            if name == AUTOMATION:
                out["automation_tick_s"] = round(tick.timestamp - sensed_end, 2)
            out["tick_to_run_created_s"] = round(created - tick.timestamp, 2)
            break
    return out


def _run_phases(instance, run, found: float) -> dict[str, object]:
    import dagster as dg

    kinds = dg.DagsterEventType
    created, started = run.create_timestamp.timestamp(), run.start_time or run.create_timestamp.timestamp()
    out: dict[str, object] = {"queued_to_started_s": round(started - created, 2)}  # dequeue, launch, worker start
    marks: dict[str, float] = {}
    steps: dict[str, float] = {}
    starts: dict[str, float] = {}
    first_step = last_step = None
    for e in instance.all_logs(run.dagster_run.run_id):
        kind = e.dagster_event_type
        if kind in (kinds.RUN_DEQUEUED, kinds.RUN_STARTING):
            marks.setdefault(kind.value, e.timestamp)
        elif kind == kinds.STEP_START:
            starts[e.step_key] = e.timestamp
            first_step = first_step or e.timestamp
        elif kind in (kinds.STEP_SUCCESS, kinds.STEP_FAILURE) and e.step_key in starts:
            steps[e.step_key] = round(e.timestamp - starts[e.step_key], 2)
            last_step = e.timestamp
        elif kind == kinds.ASSET_MATERIALIZATION and e.step_key == "embeddings":
            meta = {k: getattr(v, "value", v) for k, v in e.asset_materialization.metadata.items()}
            rate, n = float(meta.get("texts_per_second") or 0), int(meta.get("embedded") or 0)
            out["embed_calls_s"] = round(n / rate, 3) if rate else 0.0
            out["materialized_to_found_s"] = round(found - e.timestamp, 2)  # the vector is written before
    dequeued = marks.get(kinds.RUN_DEQUEUED.value, created)
    starting = marks.get(kinds.RUN_STARTING.value, dequeued)
    out.update(
        queued_s=round(dequeued - created, 2), launch_s=round(starting - dequeued, 2),
        worker_start_s=round(started - starting, 2),
        worker_start_to_first_step_s=round((first_step or started) - started, 2), steps_s=steps,
        step_gaps_s=round((last_step or 0) - (first_step or 0) - sum(steps.values()), 2),
        run_s=round((run.end_time or found) - started, 2), run_id=run.dagster_run.run_id,
    )  # fmt: skip
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
