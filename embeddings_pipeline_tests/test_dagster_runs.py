"""A tenant materialized the way the UI and the daemon run it: the multiprocess executor, each step in its own
process, resources resolved from the environment inside those processes."""

from __future__ import annotations

import dagster as dg

from embeddings_pipeline.store.status import tenant_status

from .helpers import seed


def _embed_tenant_job() -> dg.JobDefinition:
    from embeddings_pipeline.definitions import defs as load_defs

    defs = load_defs()

    return defs.resolve_job_def("embed_tenant")


def test_ui_style_run_in_worker_processes(conn, schema, provider):
    seed(conn, schema, "acme", {"a.md": "# Docks\n\nRobots charge at the docks overnight.\n\n- one\n- two\n"})
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenant", ["acme"])
        result = dg.execute_job(
            dg.reconstructable(_embed_tenant_job), instance=instance, tags={"dagster/partition": "acme"}
        )
        assert result.success
        steps = {e.step_key for e in result.all_events if e.is_step_success}
        assert steps == {"blocks", "chunks", "embeddings"}
        event = instance.get_latest_materialization_event(dg.AssetKey("embeddings"))
        assert event is not None and event.asset_materialization.partition == "acme"
        assert event.asset_materialization.metadata["coverage_pct"].value == 100.0
    st = tenant_status(conn, schema, "acme", provider.identity.model_key)
    assert st.chunks > 0 and st.missing == 0
