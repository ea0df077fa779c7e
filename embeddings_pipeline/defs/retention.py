"""Model retention: a daily job retires models no tenant has searched with for EMBEDDINGS_MODEL_RETENTION_DAYS."""

import os

import dagster as dg

from ..config import model_retention_days
from ..store.models import apply_retention
from .resources import PipelineStore

RETENTION_CRON = os.environ.get("EMBEDDINGS_RETENTION_CRON", "30 4 * * *")


@dg.op(description="Retire models out of service for longer than the retention (off when it is unset).")
def retire_expired_models(context: dg.OpExecutionContext, store: PipelineStore) -> dg.Output[dict[str, int]]:
    days = model_retention_days()
    if days is None:
        context.log.info("EMBEDDINGS_MODEL_RETENTION_DAYS is unset: old models are kept until `models retire`")
        return dg.Output({}, metadata={"retention_days": None, "retired": 0})
    with store.connect() as conn:
        retired = apply_retention(conn, store.schema, days)
    for key, n in retired.items():
        context.log.info(f"retired {key}: {n} vectors dropped (out of service for over {days:g} days)")
    return dg.Output(
        retired,
        metadata={"retention_days": days, "retired": len(retired), "models": dg.MetadataValue.json(retired)},
    )


@dg.job(description="Retire embedding models no tenant has searched with for EMBEDDINGS_MODEL_RETENTION_DAYS.")
def model_retention() -> None:
    retire_expired_models()


model_retention_schedule = dg.ScheduleDefinition(
    name="model_retention_schedule",
    job=model_retention,
    cron_schedule=RETENTION_CRON,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
