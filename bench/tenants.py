"""Many tenants in Dagster: the new-content sensor's tick and the automation's evaluation with 1,000 and 10,000
tenant partitions, most of them idle, on the real database and an in-memory Dagster instance (the events that
set the scene are written fast there; the evaluation reads them through the same storage API).

For each N: N tenants with one document each; the first sensor tick (every tenant new), then the state the daemon
leaves (partitions added, every tenant materialized), then a steady tick where 10 tenants changed and the
automation's evaluation of that tick (which must request exactly those 10). Times in seconds; the ratio
`steady_over_idle_tick` compares a tick with changes to the tick with none in the same run. With
--materialize-all, every tenant is then brought up to date (the stand-in Ollama server embeds) and
`materialize --all`'s check (no run for a tenant already up to date) is timed against one no-op Dagster run per
tenant, what it did before, and the service's `/metrics` scrape over every tenant (its exposition text: grouped
counts) against the same counts read one tenant at a time.

    .venv/bin/python bench/tenants.py [--sizes 1000 10000] [--materialize-all]
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
    parser.add_argument("--materialize-all", action="store_true",
                        help="also `materialize --all` with every tenant up to date (the stand-in embeds)")  # fmt: skip
    args = parser.parse_args()
    os.environ.setdefault("EMBEDDINGS_HOME", tempfile.mkdtemp(prefix="bench-tenants-"))
    os.environ["EMBEDDINGS_SENSOR_LAG_SECONDS"] = "0"
    if args.materialize_all:
        from embeddings_pipeline_tests.standin_server import StandinServer

        with StandinServer(dims=384) as server:
            os.environ.update({"EMBEDDINGS_MODEL": "ollama:nomic-embed-text", "OLLAMA_HOST": server.url})
            print(json.dumps([measure(n) for n in args.sizes], indent=2))
        return
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
            # the sensor requests the changed tenants' runs itself; the automation adds none
            requested = {r.partition_key for r in steady.run_requests}
            out["automation_requested"] = len(evaluation.get_requested_partitions(dg.AssetKey("embeddings")))
            out["runs_requested"] = len(requested)
            assert requested == set(changed) and not out["automation_requested"], sorted(requested)[:5]
            out |= {"first_tick_s": round(float(out["first_tick_s"]), 3), "idle_tick_s": round(idle_s, 4),
                    "steady_tick_s": round(steady_s, 4), "steady_over_idle_tick": round(steady_s / idle_s, 2)}
            if os.environ.get("OLLAMA_HOST"):
                out |= materialize_all_noop(conn, schema, tenants)
        finally:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    print(json.dumps(out), file=sys.stderr)
    return out


def materialize_all_noop(conn, schema: str, tenants: list[str]) -> dict[str, object]:
    """`materialize --all` with every tenant up to date: its check over all tenants (`work_left`, no run) against
    what it did before, one no-op Dagster run per tenant (one such run timed here, times the tenants)."""
    import dagster as dg

    from embeddings_pipeline.cli.backfill import tenants_with_work
    from embeddings_pipeline.cli.runner import materialize_tenants
    from embeddings_pipeline.pipeline import model_change, steps
    from embeddings_pipeline.store.scope import Scope

    provider = model_change.default_loader()
    t0 = time.perf_counter()
    for tenant in tenants:  # bring every tenant up to date without Dagster
        scope = Scope(conn, schema, tenant)
        steps.build_blocks(scope)
        plan = model_change.plan(scope, target=provider)
        steps.build_chunks(scope, plan)
        steps.build_embeddings(scope, plan, "bench")
    setup_s = time.perf_counter() - t0
    scraped = scrape(conn, schema, tenants, provider.identity.model_key)
    t0 = time.perf_counter()
    busy = tenants_with_work(tenants, None)
    check_s = time.perf_counter() - t0
    assert busy == [], busy[:5]
    instance = dg.DagsterInstance.ephemeral()
    materialize_tenants(tenants[:1], instance=instance)  # warm: definitions loaded once per process
    t0 = time.perf_counter()
    assert all(r.success for r in materialize_tenants(tenants[1:2], instance=instance))
    run_s = time.perf_counter() - t0
    return {
        "up_to_date_setup_s": round(setup_s, 1),
        "materialize_all_check_s": round(check_s, 2),
        "materialize_all_check_ms_per_tenant": round(1000 * check_s / len(tenants), 2),
        "noop_run_s": round(run_s, 2),
        "materialize_all_before_s_estimated": round(run_s * len(tenants), 1),
        "before_over_now": round(run_s * len(tenants) / check_s, 1),
        **scraped,
    }


def scrape(conn, schema: str, tenants: list[str], model_key: str, rounds: int = 3) -> dict[str, object]:
    """The service's `/metrics` over every tenant (the exposition text `generate_latest` writes from the per-tenant
    counts, `service/counts.py`: grouped queries), median of `rounds`, against the same counts one tenant at a
    time (`store.status.tenant_status`, what `status` runs), and the two must agree."""
    import statistics

    from prometheus_client import CollectorRegistry, generate_latest

    from embeddings_pipeline.service.counts import all_tenant_counts
    from embeddings_pipeline.service.metrics import TenantCollector
    from embeddings_pipeline.store.status import tenant_status

    registry = CollectorRegistry(auto_describe=False)
    registry.register(TenantCollector(lambda: all_tenant_counts(conn, schema, lambda _: model_key)))
    times, text = [], b""
    for _ in range(rounds):
        t0 = time.perf_counter()
        text = generate_latest(registry)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    one_by_one = [tenant_status(conn, schema, t, model_key) for t in tenants]
    per_tenant_s = time.perf_counter() - t0
    grouped = all_tenant_counts(conn, schema, lambda _: model_key)
    fields = ("documents", "chunks", "vectors", "missing", "stale")
    assert [[getattr(s, f) for f in fields] for s in grouped] == [[getattr(s, f) for f in fields] for s in one_by_one]
    scrape_s = statistics.median(times)
    return {
        "metrics_scrape_s": round(scrape_s, 3),
        "metrics_scrape_bytes": len(text),
        "status_one_tenant_at_a_time_s": round(per_tenant_s, 2),
        "one_at_a_time_over_scrape": round(per_tenant_s / scrape_s, 1),
    }


if __name__ == "__main__":
    main()
