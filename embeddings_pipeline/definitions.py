"""The one place that wires the Dagster code location. Importing it must stay cheap (no torch)."""

import dagster as dg

from .defs.alerts import check_failure_alert, run_failure_alert
from .defs.assets import blocks, chunks, documents, embeddings, source_schema
from .defs.checks import missing_vectors_sweep
from .defs.resources import EmbeddingModel, PipelineStore
from .defs.retention import model_retention, model_retention_schedule
from .defs.schedules import embed_tenant_job, nightly_reconcile, vector_sweep_job, vector_sweep_schedule
from .defs.sensors import embeddings_automation, model_change_sensor, new_content_sensor, schema_change_sensor

defs = dg.Definitions(
    assets=[source_schema, documents, blocks, chunks, embeddings],
    asset_checks=[missing_vectors_sweep],
    jobs=[embed_tenant_job, vector_sweep_job, model_retention],
    schedules=[vector_sweep_schedule, nightly_reconcile, model_retention_schedule],
    sensors=[
        new_content_sensor,
        embeddings_automation,
        schema_change_sensor,
        model_change_sensor,
        run_failure_alert,
        check_failure_alert,
    ],
    resources={"store": PipelineStore(), "model": EmbeddingModel()},
)
