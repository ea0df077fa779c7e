"""blocks -> chunks -> embeddings, one tenant partition per run; `documents` is the observed source."""

import hashlib
from datetime import timedelta

import dagster as dg
import psycopg

from ..config import Settings
from ..pipeline import steps
from ..providers import EmbeddingProvider, ProviderError
from ..store.db import tenant_lock
from ..text.chunks import CHUNKER_VERSION
from .checks import CHECK_SPECS, evaluate_tenant_checks
from .partitions import tenant_partitions
from .resources import EmbeddingModel, PipelineStore

GROUP = "embeddings"
REASON_TAG = "embeddings/reason"  # "reconcile" on the nightly runs: re-parse every document
MODEL_TAG = "embeddings/model_key"  # a backfill of a registered model other than the tenant's own
COMMIT_TAG = "embeddings/commit_every"  # texts per committed batch (backfill --batch-size)
# New or changed documents of a tenant (reported by `new_content_sensor`) request blocks, chunks and embeddings
# of that tenant together, in one run.
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
    # schema changes are the schema sensor's to act on (all tenants at once), not the per-tenant automation's
    automation_condition=AUTOMATION.ignore(dg.AssetSelection.assets("source_schema")),
    description="Typed blocks (paragraph, heading, list, table, code, mermaid) of changed documents.",
)
def blocks(context: dg.AssetExecutionContext, store: PipelineStore) -> dg.MaterializeResult:
    tenant = context.partition_key
    # the nightly reconcile and a schema change (e.g. a source view now builds its text differently) re-read every
    # document; only texts that really changed are re-embedded
    full = context.run.tags.get(REASON_TAG) in ("reconcile", "schema_change")
    with store.connect() as conn, tenant_lock(conn, store.schema, tenant):
        report = steps.build_blocks(conn, store.schema, tenant, full=full)
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
        provider = model.provider_for(conn, store.schema, tenant, context.run.tags.get(MODEL_TAG))
        serving = _active_provider(context, model, conn, store.schema, tenant, provider)
        report = steps.build_chunks(conn, store.schema, tenant, provider, serving=serving)
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
    tenant = context.partition_key
    failure = None
    with store.connect() as conn, tenant_lock(conn, store.schema, tenant):
        provider = model.provider_for(conn, store.schema, tenant, context.run.tags.get(MODEL_TAG))
        identity = provider.identity
        commit_every = int(context.run.tags.get(COMMIT_TAG, "256"))
        active = _active_provider(context, model, conn, store.schema, tenant, provider)
        serving = _refresh_serving(context, conn, store.schema, tenant, provider, active, commit_every)
        # a backfill of another registered model fills its vectors; only the tenant's own model takes over search
        backfill_of = context.run.tags.get(MODEL_TAG)
        own = backfill_of is None or model.provider_for(conn, store.schema, tenant).identity.model_key == backfill_of
        try:
            report = steps.build_embeddings(
                conn, store.schema, tenant, provider, context.run.run_id,
                commit_every=commit_every, activate=own, active=active,
            )  # fmt: skip
        except steps.EmbeddingIncomplete as exc:
            # Not raised: the blocking `no_missing_vectors` check fails the run, with counts and examples.
            context.log.error(str(exc))
            report, failure = exc.report, str(exc)
        check_results = evaluate_tenant_checks(
            conn, store.schema, identity, tenant, report.chunker_version, failure, report.gate
        )
    context.log.info("tenant %r: %s", tenant, report.as_metadata())
    return dg.MaterializeResult(
        metadata={
            **report.as_metadata(),
            **serving,
            "tenant": tenant,
            "model_name": identity.name,
            "model_provider": identity.provider,
            "model_revision": identity.revision,
            "model_dims": identity.dims,
            "dagster/row_count": report.chunks,
        },
        tags={"embedding_model": identity.model_key},
        check_results=check_results,
    )


def _active_provider(
    context: dg.AssetExecutionContext,
    model: EmbeddingModel,
    conn: psycopg.Connection,
    schema: str,
    tenant: str,
    target: EmbeddingProvider,
) -> EmbeddingProvider | None:
    try:
        return model.active_provider_for(conn, schema, tenant, target)
    except ProviderError as exc:
        context.log.warning(f"tenant {tenant!r}: the active model cannot be loaded, its chunk set is left as is: {exc}")
        return None


def _refresh_serving(
    context: dg.AssetExecutionContext,
    conn: psycopg.Connection,
    schema: str,
    tenant: str,
    target: EmbeddingProvider,
    serving: EmbeddingProvider | None,
    commit_every: int,
) -> dict[str, object]:
    """While a new model is being filled, keep the active one current for changed content (search stays fresh).
    Its failure does not fail the run: the sweep reports the active model's missing vectors."""
    try:
        report = steps.refresh_serving(conn, schema, tenant, target, serving, context.run.run_id,
                                       commit_every=commit_every)  # fmt: skip
    except (steps.EmbeddingIncomplete, ProviderError) as exc:
        context.log.warning(f"tenant {tenant!r}: the active model could not embed every changed chunk: {exc}")
        missing = exc.report.failed if isinstance(exc, steps.EmbeddingIncomplete) else -1
        return {"serving_model_key": serving.identity.model_key if serving else "", "serving_missing": missing}
    if report is None:
        return {}
    return {"serving_model_key": report.model_key, "serving_embedded": report.embedded, "serving_missing": 0}
