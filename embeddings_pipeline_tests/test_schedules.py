"""The nightly reconcile: one run per tenant, and a full pass repairs rows removed behind the pipeline's back."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from embeddings_pipeline.cli.runner import materialize_tenants
from embeddings_pipeline.defs.assets import REASON_TAG
from embeddings_pipeline.defs.schedules import nightly_reconcile
from embeddings_pipeline.store.status import tenant_status

from .helpers import count, seed


def test_nightly_reconcile_requests_every_tenant_once():
    when = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", ["acme", "o'brien/ü"])
        with dg.build_schedule_context(instance=instance, scheduled_execution_time=when) as ctx:
            requests = nightly_reconcile(ctx)
    assert sorted(r.partition_key for r in requests) == ["acme", "o'brien/ü"]
    assert all(r.tags[REASON_TAG] == "reconcile" for r in requests)
    assert len({r.run_key for r in requests}) == 2


def test_reconcile_run_restores_rows_deleted_behind_the_pipelines_back(conn, schema, provider):
    from embeddings_pipeline.definitions import defs as load_defs

    defs = load_defs()

    seed(conn, schema, "acme", {"a.md": "# Dock\n\nRobots charge overnight.\n\nKeys are at the desk."})
    instance = dg.DagsterInstance.ephemeral()
    assert materialize_tenants(["acme"], instance=instance)[0].success
    blocks, chunks = count(conn, schema, "blocks", "acme"), count(conn, schema, "chunks", "acme")
    conn.execute(f"DELETE FROM {schema}.blocks WHERE text LIKE 'Keys%%'")  # noqa: S608
    conn.execute(f"DELETE FROM {schema}.chunks WHERE text LIKE 'Robots%%'")  # noqa: S608

    # an ordinary run trusts its bookkeeping and does not notice
    materialize_tenants(["acme"], instance=instance)
    assert count(conn, schema, "chunks", "acme") == chunks - 1

    result = defs.resolve_job_def("embed_tenant").execute_in_process(
        partition_key="acme", instance=instance, tags={REASON_TAG: "reconcile"}
    )
    assert result.success
    assert (count(conn, schema, "blocks", "acme"), count(conn, schema, "chunks", "acme")) == (blocks, chunks)
    assert tenant_status(conn, schema, "acme", provider.identity.model_key).missing == 0
