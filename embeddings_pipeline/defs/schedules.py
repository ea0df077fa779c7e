"""Schedules: the nightly reconcile of every tenant and the missing-vector sweep."""

from __future__ import annotations

import os

import dagster as dg

from .assets import REASON_TAG
from .checks import missing_vectors_sweep
from .partitions import tenant_partitions

SWEEP_CRON = os.environ.get("EMBEDDINGS_SWEEP_CRON", "*/15 * * * *")
RECONCILE_CRON = os.environ.get("EMBEDDINGS_RECONCILE_CRON", "0 3 * * *")

embed_tenant_job = dg.define_asset_job(
    "embed_tenant",
    # the all-tenant sweep has its own schedule; a tenant run evaluates only the per-tenant checks
    selection=dg.AssetSelection.assets("blocks", "chunks", "embeddings")
    - dg.AssetSelection.checks(missing_vectors_sweep),
    description="blocks -> chunks -> embeddings for one tenant partition.",
)

vector_sweep_job = dg.define_asset_job(
    "vector_sweep",
    selection=dg.AssetSelection.checks(missing_vectors_sweep),
    description="Counts missing or NULL vectors across all tenants.",
)

vector_sweep_schedule = dg.ScheduleDefinition(
    name="vector_sweep_schedule",
    job=vector_sweep_job,
    cron_schedule=SWEEP_CRON,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)


@dg.schedule(
    cron_schedule=RECONCILE_CRON,
    job=embed_tenant_job,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every tenant, in full: removes deleted documents' rows and orphans, fills anything missed.",
)
def nightly_reconcile(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    assert tenant_partitions.name is not None
    tenants = context.instance.get_dynamic_partitions(tenant_partitions.name)
    stamp = context.scheduled_execution_time.strftime("%Y%m%dT%H%M") if context.scheduled_execution_time else "now"
    return [
        dg.RunRequest(run_key=f"reconcile:{stamp}:{t}", partition_key=t, tags={REASON_TAG: "reconcile"})
        for t in tenants
    ]
