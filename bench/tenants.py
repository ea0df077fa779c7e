"""Many tenants in Dagster: the new-content sensor's tick and the automation's evaluation with 1,000 and 10,000
tenant partitions, most of them idle, on the real database and an in-memory Dagster instance (the events that
set the scene are written fast there; the evaluation reads them through the same storage API).

For each N: N tenants with one document each; the first sensor tick (every tenant new), then the state the daemon
leaves (partitions added, every tenant materialized), then a steady tick where 10 tenants changed and the
automation's evaluation of that tick (which must request exactly those 10). Times in seconds; the ratio
`steady_over_idle_tick` compares a tick with changes to the tick with none in the same run.

    .venv/bin/python bench/tenants.py [--sizes 1000 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    args = parser.parse_args()
    os.environ.setdefault("EMBEDDINGS_HOME", tempfile.mkdtemp(prefix="bench-tenants-"))
    os.environ["EMBEDDINGS_SENSOR_LAG_SECONDS"] = "0"
    print(json.dumps([measure(n) for n in args.sizes], indent=2))


def measure(n: int) -> dict[str, object]:
    import dagster as dg
    from psycopg import sql

    from embeddings_pipeline.definitions import defs as load_defs
    from embeddings_pipeline.defs.resources import PipelineStore
    from embeddings_pipeline.defs.sensors import new_content_sensor

    os.environ["EMBEDDINGS_SCHEMA"] = f"bench_{uuid.uuid4().hex[:8]}"
    store = PipelineStore()
    tenants = [f"tenant-{i:05d}" for i in range(n)]
    out: dict[str, object] = {"tenants": n}
    with store.connect() as conn:
        instance = dg.DagsterInstance.ephemeral()
        schema = store.schema
        try:
            with conn.transaction(), conn.cursor().copy(sql.SQL(
                    "COPY {}.documents (tenant_id, doc_id, body, updated_at) FROM STDIN").format(
                    sql.Identifier(schema))) as copy:  # fmt: skip
                now = datetime.now(UTC)
                for t in tenants:
                    copy.write_row((t, "doc.md", f"Notes of {t}.", now))

            def tick(cursor):
                t0 = time.perf_counter()
                with dg.build_sensor_context(instance=instance, resources={"store": store}, cursor=cursor) as ctx:
                    result = new_content_sensor(ctx)
                return result, time.perf_counter() - t0

            first, out["first_tick_s"] = tick(None)
            assert isinstance(first, dg.SensorResult) and len(first.asset_events) == n
            t0 = time.perf_counter()  # what the daemon does with the tick's result, then the runs' outcome
            instance.add_dynamic_partitions("tenant", tenants)
            for event in first.asset_events:
                instance.report_runless_asset_event(event)
            for key in ("blocks", "chunks", "embeddings"):
                for t in tenants:
                    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=t))
            out["setup_events_s"] = round(time.perf_counter() - t0, 2)
            defs = load_defs()
            t0 = time.perf_counter()
            evaluation = dg.evaluate_automation_conditions(defs=defs, instance=instance)
            out["automation_first_eval_s"] = round(time.perf_counter() - t0, 3)

            idle, idle_s = tick(first.cursor)
            assert isinstance(idle, dg.SkipReason)
            changed = tenants[:: max(1, n // 10)][:10]
            conn.execute(sql.SQL("UPDATE {}.documents SET body = body || ' edited', updated_at = clock_timestamp() "
                                 "WHERE tenant_id = ANY(%s)").format(sql.Identifier(schema)), (changed,))  # fmt: skip
            steady, steady_s = tick(first.cursor)
            assert isinstance(steady, dg.SensorResult) and len(steady.asset_events) == 10
            for event in steady.asset_events:
                instance.report_runless_asset_event(event)
            t0 = time.perf_counter()
            evaluation = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=evaluation.cursor)
            out["automation_steady_eval_s"] = round(time.perf_counter() - t0, 3)
            requested = evaluation.get_requested_partitions(dg.AssetKey("embeddings"))
            out["automation_requested"] = len(requested)
            assert requested == set(changed), sorted(requested)[:5]
            out |= {"first_tick_s": round(float(out["first_tick_s"]), 3), "idle_tick_s": round(idle_s, 4),
                    "steady_tick_s": round(steady_s, 4), "steady_over_idle_tick": round(steady_s / idle_s, 2)}
        finally:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    print(json.dumps(out), file=sys.stderr)
    return out


if __name__ == "__main__":
    main()
