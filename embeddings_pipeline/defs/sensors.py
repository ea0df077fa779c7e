"""Sensing new and changed source rows (a run per changed tenant), schema and model changes, and the automation
that rebuilds every tenant when the code version changes."""

from __future__ import annotations

import hashlib
import json
import os

import dagster as dg

from ..config import InvalidTenantId, Settings, validate_tenant_id
from ..providers.registry import canonical_spec
from ..store.changes import Watermark, changes_since
from ..store.fingerprint import schema_fingerprint
from ..store.tenants import model_states
from .assets import blocks, chunks, documents, embeddings, source_schema
from .partitions import tenant_partitions
from .resources import PipelineStore
from .schedules import REASON_TAG, embed_tenant_job

# The least seconds between two ticks. Dagster's sensor daemon passes over its sensors every 5 s and skips a sensor
# whose last tick is younger than its interval, so 5 means every other pass (10 s) and 1 (the default) every pass.
SENSOR_INTERVAL = int(os.environ.get("EMBEDDINGS_SENSOR_INTERVAL", "1"))
# the automation's own ticks (each evaluates every tenant partition; it acts on code-version changes only)
AUTOMATION_INTERVAL = int(os.environ.get("EMBEDDINGS_AUTOMATION_INTERVAL", "15"))
ROWS_PER_TICK = int(os.environ.get("EMBEDDINGS_SENSOR_ROWS_PER_TICK", "10000"))
SCHEMA_CHECK_INTERVAL = int(os.environ.get("EMBEDDINGS_SCHEMA_CHECK_INTERVAL", "300"))


@dg.sensor(
    job=embed_tenant_job,
    minimum_interval_seconds=SENSOR_INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Reports new and changed documents per tenant (a watermark over updated_at, tenant_id, doc_id), "
    "adds unseen tenants as partitions and requests one run for each changed tenant (none while one is queued).",
)
def new_content_sensor(context: dg.SensorEvaluationContext, store: PipelineStore) -> dg.SensorResult | dg.SkipReason:
    since = Watermark.parse(context.cursor)
    with store.connect() as conn:
        lag = float(os.environ.get("EMBEDDINGS_SENSOR_LAG_SECONDS", "2"))
        page = changes_since(conn, store.schema, since, limit=ROWS_PER_TICK, lag_seconds=lag)
    if not page.rows:
        return dg.SkipReason("no new or changed documents")
    if not page.tenants:  # every row read was already processed as it is: move the watermark, request nothing
        return dg.SensorResult(skip_reason=f"{page.already_done} rows already processed", cursor=page.watermark.dump())
    valid = []
    for tenant in page.tenants:
        try:
            valid.append(validate_tenant_id(tenant))
        except InvalidTenantId as exc:
            context.log.error(f"skipping documents of an unusable tenant id: {exc}")
    new = _unknown_tenants(context.instance, valid)
    # read after the changes: a run still queued now reads the tenant's rows later, these changes included
    waiting = _queued_tenants(context.instance) & set(valid)
    changed = page.rows - page.already_done
    context.log.info(f"{changed} changed documents in {len(valid)} tenants ({len(new)} new, {len(waiting)} queued)")
    mark = page.watermark.dump()
    return dg.SensorResult(
        dynamic_partitions_requests=[tenant_partitions.build_add_request(new)] if new else [],
        run_requests=[
            dg.RunRequest(run_key=_run_key(mark, t), partition_key=t, tags={REASON_TAG: "new_content"})
            for t in valid
            if t not in waiting
        ],
        asset_events=[
            dg.AssetMaterialization(
                asset_key=documents.key,
                partition=t,
                metadata={
                    "documents_changed": page.tenants[t].documents,
                    "latest_updated_at": str(page.tenants[t].latest),
                },
            )
            for t in valid
        ],
        cursor=mark,
    )


def _run_key(watermark: str, tenant: str) -> str:
    """One key per (tick's watermark, tenant): a tick retried after a crash requests no second run."""
    return f"content:{hashlib.sha256(watermark.encode()).hexdigest()[:16]}:{tenant}"


def _queued_tenants(instance: dg.DagsterInstance) -> set[str]:
    """Tenants with a tenant run that has not started yet (one query, whatever the number of tenants)."""
    assert embed_tenant_job.name is not None
    records = instance.get_run_records(
        dg.RunsFilter(job_name=embed_tenant_job.name, statuses=[dg.DagsterRunStatus.QUEUED,
                                                               dg.DagsterRunStatus.NOT_STARTED])
    )  # fmt: skip
    return {t for r in records if (t := r.dagster_run.tags.get("dagster/partition"))}


def _unknown_tenants(instance: dg.DagsterInstance, tenants: list[str]) -> list[str]:
    """The tenants that have no partition yet. A few changed tenants are looked up one by one, so a steady tick
    does not read every partition key (10,000 tenants: 0.20 s a tick by listing, see bench/tenants.py)."""
    assert tenant_partitions.name is not None
    if len(tenants) <= 50:
        return [t for t in tenants if not instance.has_dynamic_partition(tenant_partitions.name, t)]
    known = set(instance.get_dynamic_partitions(tenant_partitions.name))
    return [t for t in tenants if t not in known]


embeddings_automation = dg.AutomationConditionSensorDefinition(
    "embeddings_automation",
    target=dg.AssetSelection.assets(blocks, chunks, embeddings),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=AUTOMATION_INTERVAL,
    emit_backfills=False,  # plain runs, one per tenant partition, not a backfill
    description="Rebuilds chunks and embeddings of every tenant when their code version (chunker, default model) "
    "changes; new content is `new_content_sensor`'s to request.",
)


@dg.sensor(
    job=embed_tenant_job,
    minimum_interval_seconds=SCHEMA_CHECK_INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Fingerprints the source relation and the pipeline's tables; when the fingerprint changes (a "
    "migration, a dropped column or index) every tenant is re-materialized, and each run repairs the drift.",
)
def schema_change_sensor(context: dg.SensorEvaluationContext, store: PipelineStore) -> dg.SensorResult:
    with store.connect() as conn:
        fingerprint = schema_fingerprint(conn, store.schema)
    if context.cursor == fingerprint:
        return dg.SensorResult(skip_reason=dg.SkipReason("schema unchanged"))
    observation = dg.AssetObservation(
        asset_key=source_schema.key,
        metadata={"fingerprint": fingerprint, "previous": context.cursor or "none"},
        tags={"dagster/data_version": fingerprint},
    )
    if context.cursor is None:  # the first look is the baseline, not a change
        return dg.SensorResult(asset_events=[observation], cursor=fingerprint)
    assert tenant_partitions.name is not None
    tenants = context.instance.get_dynamic_partitions(tenant_partitions.name)
    context.log.warning(f"schema fingerprint changed ({context.cursor} -> {fingerprint}): {len(tenants)} tenants")
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(run_key=f"schema:{fingerprint}:{t}", partition_key=t, tags={REASON_TAG: "schema_change"})
            for t in tenants
        ],
        asset_events=[observation],
        cursor=fingerprint,
    )


@dg.sensor(
    job=embed_tenant_job,
    minimum_interval_seconds=SENSOR_INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests a run for each tenant whose model was changed (`tenants set --model`, or cleared back to "
    "the default): the new model is filled side by side and takes over at 100%. A change of EMBEDDINGS_MODEL "
    "itself is a new code version, which the automation rebuilds.",
)
def model_change_sensor(context: dg.SensorEvaluationContext, store: PipelineStore) -> dg.SensorResult:
    cursor = json.loads(context.cursor) if context.cursor else {}
    default = canonical_spec(Settings.from_env().model_spec)
    default_changed = cursor.get("default") not in (None, default)
    already: dict[str, str] = cursor.get("requested", {})
    assert tenant_partitions.name is not None
    known = set(context.instance.get_dynamic_partitions(tenant_partitions.name))
    with store.connect() as conn:
        states = model_states(conn, store.schema)
    pending: dict[str, str] = {}  # tenant -> the spec it is being moved to
    requests = []
    for state in states:
        if state.tenant_id not in known or state.active_model_key is None:
            continue  # no content yet, or its first run is still to finish: the new-content sensor has it
        wanted = canonical_spec(state.model) if state.model else default
        if state.active_spec is not None and canonical_spec(state.active_spec) == wanted:
            continue
        pending[state.tenant_id] = wanted
        if already.get(state.tenant_id) == wanted or (state.model is None and default_changed):
            continue
        requests.append(dg.RunRequest(partition_key=state.tenant_id, tags={REASON_TAG: "model_change"}))
    if requests:
        context.log.info(f"model changed for {len(requests)} tenants: {', '.join(r.partition_key for r in requests)}")
    return dg.SensorResult(
        run_requests=requests,
        cursor=json.dumps({"default": default, "requested": pending}, sort_keys=True),
        skip_reason=None if requests else dg.SkipReason("no tenant's model changed"),
    )
