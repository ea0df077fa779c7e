"""new_content_sensor against the real database: the runs it requests, and the automation beside it."""

from __future__ import annotations

import dagster as dg
import pytest

from embeddings_pipeline.defs.sensors import new_content_sensor
from embeddings_pipeline.store.changes import Watermark, changes_since

from .helpers import seed


@pytest.fixture(autouse=True)
def no_lag(monkeypatch):
    monkeypatch.setenv("EMBEDDINGS_SENSOR_LAG_SECONDS", "0")


def tick(instance, store, cursor=None):
    with dg.build_sensor_context(instance=instance, resources={"store": store}, cursor=cursor) as ctx:
        result = new_content_sensor(ctx)
    # the daemon stores the returned cursor; a skipped tick keeps the old one
    return result, result.cursor if isinstance(result, dg.SensorResult) else cursor


def reported(result) -> dict[str, int]:
    return {e.partition: e.metadata["documents_changed"].value for e in result.asset_events}


def test_new_tenant_changed_tenant_and_no_change(conn, schema, store):
    instance = dg.DagsterInstance.ephemeral()
    seed(conn, schema, "acme", {"a.md": "one", "b.md": "two"})
    result, cursor = tick(instance, store)
    assert isinstance(result, dg.SensorResult)
    assert reported(result) == {"acme": 2}
    assert result.dynamic_partitions_requests[0].partition_keys == ["acme"]
    instance.add_dynamic_partitions("tenant", ["acme"])  # what the daemon does with the request

    skip, cursor2 = tick(instance, store, cursor)
    assert isinstance(skip, dg.SkipReason)

    seed(conn, schema, "globex", {"g.md": "new tenant"})
    seed(conn, schema, "acme", {"a.md": "one, edited"})
    result, _ = tick(instance, store, cursor2)
    assert reported(result) == {"acme": 1, "globex": 1}
    assert result.dynamic_partitions_requests[0].partition_keys == ["globex"]


def test_unchanged_reingest_is_not_reported(conn, schema, store):
    instance = dg.DagsterInstance.ephemeral()
    seed(conn, schema, "acme", {"a.md": "one"})
    _, cursor = tick(instance, store)
    seed(conn, schema, "acme", {"a.md": "one"})
    assert isinstance(tick(instance, store, cursor)[0], dg.SkipReason)


def test_equal_timestamps_across_pages_are_not_skipped(conn, schema):
    seed(conn, schema, "t1", {f"d{i}.md": f"doc {i}" for i in range(3)})
    seed(conn, schema, "t2", {f"d{i}.md": f"doc {i}" for i in range(3)})
    conn.execute(f"UPDATE {schema}.documents SET updated_at = '2026-01-01T00:00:00Z'")  # noqa: S608
    seen, mark = [], Watermark()
    for _ in range(10):
        page = changes_since(conn, schema, mark, limit=2, lag_seconds=0)
        if not page.rows:
            break
        seen.extend((t, c.documents) for t, c in page.tenants.items())
        mark = Watermark.parse(page.watermark.dump())
    assert sum(n for _, n in seen) == 6
    assert {t for t, _ in seen} == {"t1", "t2"}


def test_many_tenants_are_paged_not_looped(conn, schema, store, monkeypatch):
    conn.execute(
        f"INSERT INTO {schema}.documents (tenant_id, doc_id, body) "  # noqa: S608
        "SELECT 'tenant-' || i, 'doc', 'body ' || i FROM generate_series(1, 3000) i"
    )
    monkeypatch.setattr("embeddings_pipeline.defs.sensors.ROWS_PER_TICK", 1000)
    instance = dg.DagsterInstance.ephemeral()
    cursor, total, ticks = None, 0, 0
    while True:
        result, cursor = tick(instance, store, cursor)
        if isinstance(result, dg.SkipReason):
            break
        ticks += 1
        assert len(result.asset_events) <= 1000
        total += len(result.asset_events)
        for request in result.dynamic_partitions_requests:
            instance.add_dynamic_partitions("tenant", list(request.partition_keys))
    assert (total, ticks) == (3000, 3)
    assert len(instance.get_dynamic_partitions("tenant")) == 3000


def test_unusable_tenant_ids_in_the_source_are_skipped_not_fatal(conn, schema, store, caplog):
    conn.execute(f"INSERT INTO {schema}.documents (tenant_id, doc_id, body) VALUES ('bad\nid', 'd', 'x')")  # noqa: S608
    seed(conn, schema, "good", {"a.md": "fine"})
    result, _ = tick(dg.DagsterInstance.ephemeral(), store)
    assert reported(result) == {"good": 1}


def _apply(instance: dg.DagsterInstance, result: dg.SensorResult) -> None:
    """What the daemon does with a tick's result before it submits the runs: events, then partitions."""
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions("tenant", list(request.partition_keys))


def requested(result) -> list[str]:
    return sorted(r.partition_key for r in result.run_requests)


def automation_runs(evaluation) -> dict[str, set[str]]:
    """Tenant partitions the automation requests, by asset (the all-tenant sweep check, which follows tenant runs
    at most once a minute, is no tenant run)."""
    keys = ("blocks", "chunks", "embeddings")
    found = {k: evaluation.get_requested_partitions(dg.AssetKey(k)) for k in keys}
    return {k: v for k, v in found.items() if v}


def test_a_change_is_one_run_for_exactly_the_changed_tenants_and_none_from_automation(conn, schema, store):
    from embeddings_pipeline.cli.runner import materialize_tenants
    from embeddings_pipeline.definitions import defs as load_defs
    from embeddings_pipeline.defs.assets import REASON_TAG

    defs = load_defs()
    instance = dg.DagsterInstance.ephemeral()
    seed(conn, schema, "initech", {"i.md": "unchanged"})
    assert materialize_tenants(["initech"], instance=instance)[0].success
    _, cursor = tick(instance, store)  # initech was processed by the CLI already: no change
    # the daemon has been evaluating all along: a first evaluation sets the baseline
    evaluation = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert automation_runs(evaluation) == {}

    seed(conn, schema, "acme", {"a.md": "one"})
    seed(conn, schema, "globex", {"g.md": "two"})
    result, cursor = tick(instance, store, cursor)
    assert requested(result) == ["acme", "globex"]
    assert {r.tags[REASON_TAG] for r in result.run_requests} == {"new_content"}
    assert len({r.run_key for r in result.run_requests}) == 2
    _apply(instance, result)
    # the runs are the sensor's: automation requests none for the same change, before or after they ran
    evaluation = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=evaluation.cursor)
    assert automation_runs(evaluation) == {}
    assert all(r.success for r in materialize_tenants(requested(result), instance=instance))
    evaluation = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=evaluation.cursor)
    assert automation_runs(evaluation) == {}

    before_edit = cursor
    seed(conn, schema, "globex", {"g.md": "two, edited"})
    result, cursor = tick(instance, store, before_edit)
    assert requested(result) == ["globex"]
    # the same tick again (the daemon died before it stored the cursor): the same run key, so no second run
    again, _ = tick(instance, store, before_edit)
    assert [r.run_key for r in again.run_requests] == [r.run_key for r in result.run_requests]
    _apply(instance, result)
    evaluation = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=evaluation.cursor)
    assert automation_runs(evaluation) == {}
    assert isinstance(tick(instance, store, cursor)[0], dg.SkipReason)


def test_a_tenant_whose_run_is_still_queued_gets_no_second_run(conn, schema, store):
    """A queued run reads the tenant's rows when it starts, so it covers a change seen while it waits."""
    from embeddings_pipeline.definitions import defs as load_defs

    instance = dg.DagsterInstance.ephemeral()
    seed(conn, schema, "acme", {"a.md": "one"})
    seed(conn, schema, "globex", {"g.md": "two"})
    result, cursor = tick(instance, store)
    _apply(instance, result)
    job = load_defs().resolve_job_def("embed_tenant")
    # created and not started (the daemon then queues it; a QUEUED run needs a code location to be created)
    instance.create_run_for_job(job, status=dg.DagsterRunStatus.NOT_STARTED, tags={"dagster/partition": "acme"})
    instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED, tags={"dagster/partition": "globex"})
    seed(conn, schema, "acme", {"a.md": "one, edited"})
    seed(conn, schema, "globex", {"g.md": "two, edited"})
    result, _ = tick(instance, store, cursor)
    assert reported(result) == {"acme": 1, "globex": 1}
    # globex's run may have read its rows already: a new run, which waits for it (one run per tenant at a time)
    assert requested(result) == ["globex"]


def test_schema_change_rematerializes_every_tenant(conn, schema, store):
    from embeddings_pipeline.defs.sensors import schema_change_sensor

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", ["acme", "globex"])

        def look(cursor):
            with dg.build_sensor_context(instance=instance, resources={"store": store}, cursor=cursor) as ctx:
                return schema_change_sensor(ctx)

        baseline = look(None)
        assert not baseline.run_requests and baseline.cursor  # the first look is a baseline
        assert baseline.asset_events[0].tags["dagster/data_version"] == baseline.cursor
        assert look(baseline.cursor).skip_reason is not None  # nothing changed
        conn.execute(f"ALTER TABLE {schema}.documents ADD COLUMN summary text")
        changed = look(baseline.cursor)
        assert changed.cursor != baseline.cursor
        assert sorted(r.partition_key for r in changed.run_requests) == ["acme", "globex"]
        assert {r.tags["embeddings/reason"] for r in changed.run_requests} == {"schema_change"}


def _reloaded_defs() -> dg.Definitions:
    """The code location as a fresh process loads it: the modules of `defs/` that build assets are imported anew
    (resources and partitions are kept, as a code server keeps them across a reload)."""
    import sys

    from embeddings_pipeline.definitions import defs as load_defs

    kept = ("embeddings_pipeline.defs.resources", "embeddings_pipeline.defs.partitions")
    for name in [m for m in sys.modules if m.startswith("embeddings_pipeline.defs.") and m not in kept]:
        del sys.modules[name]
    return load_defs()


def test_a_new_default_model_rebuilds_every_tenant(monkeypatch):
    """EMBEDDINGS_MODEL is part of the code version of chunks and embeddings: changing it re-requests every
    tenant partition (the new model is then filled side by side)."""
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("tenant", ["acme", "globex"])
    for key in ("documents", "blocks", "chunks", "embeddings"):
        for t in ("acme", "globex"):
            instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=t))
    first = dg.evaluate_automation_conditions(defs=_reloaded_defs(), instance=instance)
    assert first.total_requested == 0
    try:
        monkeypatch.setenv("EMBEDDINGS_MODEL", "sentence-transformers:all-MiniLM-L6-v2?query_prefix=q: ")
        changed = _reloaded_defs()
        result = dg.evaluate_automation_conditions(defs=changed, instance=instance, cursor=first.cursor)
        for key in ("chunks", "embeddings"):
            assert result.get_requested_partitions(dg.AssetKey(key)) == {"acme", "globex"}
        assert result.get_requested_partitions(dg.AssetKey("blocks")) == set()
    finally:
        monkeypatch.delenv("EMBEDDINGS_MODEL")
        _reloaded_defs()


def test_the_first_tick_after_cli_runs_requests_nothing(conn, schema, store):
    """`make dev` right after `make demo`: what the CLI already embedded is no change to the sensor's first tick;
    an edit afterwards is reported for its tenant only."""
    from embeddings_pipeline.cli.runner import materialize_tenants

    instance = dg.DagsterInstance.ephemeral()
    seed(conn, schema, "acme", {"a.md": "Alpha notes.", "b.md": "Beta notes."})
    seed(conn, schema, "globex", {"g.md": "Gamma notes."})
    assert all(r.success for r in materialize_tenants(["acme", "globex"], instance=instance))
    first, cursor = tick(instance, store)
    assert isinstance(first, dg.SensorResult) and not first.asset_events and not first.run_requests
    assert first.skip_reason is not None and "3 rows already processed" in first.skip_reason.skip_message
    seed(conn, schema, "globex", {"g.md": "Gamma notes, edited."})
    second, _ = tick(instance, store, cursor)
    assert reported(second) == {"globex": 1}
