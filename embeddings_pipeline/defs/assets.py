"""blocks -> chunks -> embeddings, one tenant partition per run; `documents` is the observed source."""

import hashlib
from datetime import timedelta

import dagster as dg

from ..config import Settings, embed_processes
from ..pipeline import model_change, steps
from ..providers import ProviderError
from ..store.db import tenant_lock
from ..store.scope import Scope
from ..store.tenants import record_success
from ..text.chunks import CHUNKER_VERSION
from .checks import CHECK_SPECS, evaluate_tenant_checks
from .partitions import tenant_partitions
from .resources import EmbeddingModel, PipelineStore

GROUP = "embeddings"
REASON_TAG = "embeddings/reason"  # "reconcile" on the nightly runs: re-parse every document
MODEL_TAG = "embeddings/model_key"  # a backfill of a registered model other than the tenant's own
COMMIT_TAG = "embeddings/commit_every"  # texts per committed batch (backfill --batch-size)
PROCESSES_TAG = "embeddings/processes"  # processes embedding the tenant (backfill --processes)
# New or changed documents of a tenant are `new_content_sensor`'s to run (it requests blocks, chunks and
# embeddings of that tenant in one run, at once), schema changes `schema_change_sensor`'s: `blocks` has no
# automation of its own, so no automation tick adds a second run for the same change. chunks and embeddings follow
# an update of their upstream made outside such a run (e.g. `blocks` alone, launched in the UI).
AUTOMATION = dg.AutomationCondition.eager()
# The default model and the chunker are code: a change of either is a new code version of chunks and embeddings,
# so the UI marks every tenant stale and automation rebuilds all of them (the new model side by side).
MODEL_AWARE_AUTOMATION = AUTOMATION | (
    dg.AutomationCondition.code_version_changed().since_last_handled() & ~dg.AutomationCondition.in_progress()
)


def model_code_version() -> str:
    spec = Settings.from_env().model_spec
    return f"{CHUNKER_VERSION}-{hashlib.sha256(spec.encode()).hexdigest()[:12]}"


OWNERS = ["team:search-platform"]

documents = dg.AssetSpec(
    "documents",
    description="Source documents of each tenant (the `documents` table or EMBEDDINGS_SOURCE_RELATION).",
    partitions_def=tenant_partitions,
    group_name=GROUP,
    kinds={"postgres"},
    owners=OWNERS,
)

source_schema = dg.AssetSpec(
    "source_schema",
    description="Fingerprint of the source relation and the pipeline's tables (columns, types, vector dimensions, "
    "indexes), observed by `schema_change_sensor`; a change re-materializes every tenant, and each run repairs "
    "what drifted.",
    group_name=GROUP,
    kinds={"postgres"},
    owners=OWNERS,
)


@dg.asset(
    deps=[documents, source_schema],
    partitions_def=tenant_partitions,
    group_name=GROUP,
    kinds={"python", "postgres"},
    owners=OWNERS,
    description="Typed blocks (paragraph, heading, list, table, code, mermaid) of changed documents.",
)
def blocks(context: dg.AssetExecutionContext, store: PipelineStore) -> dg.MaterializeResult:
    tenant = context.partition_key
    # the nightly reconcile and a schema change (e.g. a source view now builds its text differently) re-read every
    # document; only texts that really changed are re-embedded
    full = context.run.tags.get(REASON_TAG) in ("reconcile", "schema_change")
    with store.connect() as conn, tenant_lock(conn, store.schema, tenant):
        report = steps.build_blocks(Scope(conn, store.schema, tenant), full=full)
    context.log.info("tenant %r: %s", tenant, report)
    return dg.MaterializeResult(metadata={**report.as_metadata(), "tenant": tenant, "full_reconcile": full})


@dg.asset(
    deps=[blocks],
    partitions_def=tenant_partitions,
    group_name=GROUP,
    kinds={"python", "postgres"},
    owners=OWNERS,
    automation_condition=MODEL_AWARE_AUTOMATION,
    code_version=model_code_version(),
    description="Embeddable texts: block-type aware, split on the model's tokenizer so nothing is truncated.",
)
def chunks(context: dg.AssetExecutionContext, store: PipelineStore, model: EmbeddingModel) -> dg.MaterializeResult:
    tenant = context.partition_key
    with store.connect() as conn, tenant_lock(conn, store.schema, tenant):
        scope = Scope(conn, store.schema, tenant)
        report = steps.build_chunks(scope, model_change.plan(scope, model.provider, context.run.tags.get(MODEL_TAG)))
    context.log.info("tenant %r: %s", tenant, report)
    return dg.MaterializeResult(metadata={**report.as_metadata(), "tenant": tenant})


@dg.asset(
    deps=[chunks],
    partitions_def=tenant_partitions,
    group_name=GROUP,
    kinds={"pgvector", "postgres", "python"},
    owners=OWNERS,
    check_specs=CHECK_SPECS,
    automation_condition=MODEL_AWARE_AUTOMATION,
    code_version=model_code_version(),
    freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=24), warn_window=timedelta(hours=6)),
    description="pgvector embeddings of every live chunk by the tenant's model, with lineage on each row.",
)
def embeddings(context: dg.AssetExecutionContext, store: PipelineStore, model: EmbeddingModel) -> dg.MaterializeResult:
    tenant, run_id = context.partition_key, context.run.run_id
    commit_every = int(context.run.tags.get(COMMIT_TAG, "256"))
    processes = int(context.run.tags.get(PROCESSES_TAG) or embed_processes())
    failure = None
    with store.connect() as conn, tenant_lock(conn, store.schema, tenant):
        scope = Scope(conn, store.schema, tenant)
        plan = model_change.plan(scope, model.provider, context.run.tags.get(MODEL_TAG))
        identity = plan.target.identity
        serving = _refresh_serving(context, scope, plan, commit_every)
        try:
            report = steps.build_embeddings(scope, plan, run_id, commit_every=commit_every, processes=processes,
                                            database_url=store.url())  # fmt: skip
        except steps.EmbeddingIncomplete as exc:
            # Not raised: the blocking `no_missing_vectors` check fails the run, with counts and examples.
            context.log.error(str(exc))
            report, failure = exc.report, str(exc)
        check_results = evaluate_tenant_checks(
            conn, store.schema, identity, tenant, report.chunk_set, failure, report.gate
        )
        if failure is None and all(c.passed for c in check_results):
            record_success(conn, store.schema, tenant, run_id)
    context.log.info("tenant %r: %s", tenant, report.as_metadata())
    return dg.MaterializeResult(
        metadata={
            **report.as_metadata(),
            **serving,
            "tenant": tenant,
            "model_name": identity.name,
            "model_provider": identity.provider,
            "model_revision": identity.revision,
            # the model's dimensions never change for a model (its model_key names them): text, not a flat plot
            "model_dims": dg.MetadataValue.text(str(identity.dims)),
            "dagster/row_count": report.chunks,
        },
        tags={"embedding_model": identity.model_key},
        check_results=check_results,
    )


def _refresh_serving(
    context: dg.AssetExecutionContext, scope: Scope, plan: model_change.ModelPlan, commit_every: int
) -> dict[str, object]:
    """While a new model is being filled, keep the active one current for changed content (search stays fresh).
    Its failure does not fail the run: the sweep reports the active model's missing vectors."""
    if plan.active_problem:
        context.log.warning(f"tenant {scope.tenant_id!r}: {plan.active_problem}")
    try:
        report = steps.refresh_serving(scope, plan, context.run.run_id, commit_every=commit_every)
    except (steps.EmbeddingIncomplete, ProviderError) as exc:
        context.log.warning(f"tenant {scope.tenant_id!r}: the active model could not embed every changed chunk: {exc}")
        missing = exc.report.failed if isinstance(exc, steps.EmbeddingIncomplete) else -1
        return {"serving_model_key": plan.active_model_key or "", "serving_missing": missing}
    if report is None:
        return {}
    return {"serving_model_key": report.model_key, "serving_embedded": report.embedded, "serving_missing": 0}
