"""The one place that wires the Dagster code location. Importing it must stay cheap (no torch)."""

import dagster as dg

from .defs.assets import blocks, chunks, documents, embeddings
from .defs.resources import EmbeddingModel, PipelineStore

embed_tenant_job = dg.define_asset_job(
    "embed_tenant",
    selection=dg.AssetSelection.assets(blocks, chunks, embeddings),
    description="blocks -> chunks -> embeddings for one tenant partition.",
)

defs = dg.Definitions(
    assets=[documents, blocks, chunks, embeddings],
    jobs=[embed_tenant_job],
    resources={"store": PipelineStore(), "model": EmbeddingModel()},
)
