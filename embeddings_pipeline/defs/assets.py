"""blocks -> chunks -> embeddings, one tenant partition per run; `documents` is the observed source."""

import dagster as dg

from .. import steps
from ..store.db import tenant_lock
from .partitions import tenant_partitions
from .resources import EmbeddingModel, PipelineStore

GROUP = "embeddings"
OWNERS = ["team:search-platform"]

documents = dg.AssetSpec(
    "documents",
    description="Source documents of each tenant (the `documents` table or EMBEDDINGS_SOURCE_RELATION).",
    partitions_def=tenant_partitions,
    group_name=GROUP,
    kinds={"postgres"},
    owners=OWNERS,
)


@dg.asset(
    deps=[documents],
    partitions_def=tenant_partitions,
    group_name=GROUP,
    kinds={"python", "postgres"},
    owners=OWNERS,
    description="Typed blocks (paragraph, heading, list, table, code, mermaid) of changed documents.",
)
def blocks(context: dg.AssetExecutionContext, store: PipelineStore) -> dg.MaterializeResult:
    tenant = context.partition_key
    with store.connect() as conn, tenant_lock(conn, store.schema, tenant):
        report = steps.build_blocks(conn, store.schema, tenant)
    context.log.info("tenant %r: %s", tenant, report)
    return dg.MaterializeResult(metadata={**report.as_metadata(), "tenant": tenant})


@dg.asset(
    deps=[blocks],
    partitions_def=tenant_partitions,
    group_name=GROUP,
    kinds={"python", "postgres"},
    owners=OWNERS,
    description="Embeddable texts: block-type aware, split on the model's tokenizer so nothing is truncated.",
)
def chunks(context: dg.AssetExecutionContext, store: PipelineStore, model: EmbeddingModel) -> dg.MaterializeResult:
    tenant = context.partition_key
    provider = model.provider()
    with store.connect() as conn, tenant_lock(conn, store.schema, tenant):
        report = steps.build_chunks(conn, store.schema, tenant, provider)
    context.log.info("tenant %r: %s", tenant, report)
    return dg.MaterializeResult(metadata={**report.as_metadata(), "tenant": tenant})


@dg.asset(
    deps=[chunks],
    partitions_def=tenant_partitions,
    group_name=GROUP,
    kinds={"pgvector", "postgres", "python"},
    owners=OWNERS,
    description="pgvector embeddings of every live chunk by the tenant's model, with lineage on each row.",
)
def embeddings(context: dg.AssetExecutionContext, store: PipelineStore, model: EmbeddingModel) -> dg.MaterializeResult:
    tenant = context.partition_key
    provider = model.provider()
    identity = provider.identity
    with store.connect() as conn, tenant_lock(conn, store.schema, tenant):
        try:
            report = steps.build_embeddings(conn, store.schema, tenant, provider, context.run.run_id)
        except steps.EmbeddingIncomplete as exc:
            raise dg.Failure(
                description=str(exc), metadata={"tenant": tenant, "model_key": identity.model_key}
            ) from exc
    context.log.info("tenant %r: %s", tenant, report.as_metadata())
    return dg.MaterializeResult(
        metadata={
            **report.as_metadata(),
            "tenant": tenant,
            "model_name": identity.name,
            "model_provider": identity.provider,
            "model_revision": identity.revision,
            "model_dims": identity.dims,
            "dagster/row_count": report.chunks,
        },
        tags={"embedding_model": identity.model_key},
    )
