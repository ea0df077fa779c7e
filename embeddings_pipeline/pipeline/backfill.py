"""Backfill planning: how much each tenant still needs embedded for a model, and how long it should take."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import psycopg

from ..providers.base import EmbeddingProvider
from ..store import backlog, parsing
from ..store.scope import Scope
from ..store.tenants import tenant_settings
from .model_change import target_chunk_set

SAMPLE = 64


@dataclass
class TenantPlan:
    tenant: str
    model_key: str
    chunks: int
    to_embed: int
    documents_not_chunked: int
    est_seconds: float | None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def throughput_history(instance: object, model_key: str, limit: int = 50) -> list[float]:
    """texts/s of the latest materializations of `embeddings` by this model (recorded in run metadata)."""
    import dagster as dg

    assert isinstance(instance, dg.DagsterInstance)
    records = instance.fetch_materializations(dg.AssetKey("embeddings"), limit=limit).records
    out = []
    for record in records:
        meta = record.asset_materialization.metadata if record.asset_materialization else {}
        tps, key = meta.get("texts_per_second"), meta.get("model_key")
        if tps is not None and key is not None and key.value == model_key and tps.value and tps.value > 0:
            out.append(float(tps.value))
    return out


def measured_throughput(history: list[float], provider: EmbeddingProvider, sample: list[str]) -> float | None:
    """Texts/s from earlier runs of this model (median), else timed on a sample of the texts still to embed
    (nothing is written)."""
    if history:
        return statistics.median(history)
    if not sample:
        return None
    provider.load()
    started = time.perf_counter()
    provider.embed_documents(sample)
    return len(sample) / max(time.perf_counter() - started, 1e-6)


def plan_tenant(scope: Scope, provider: EmbeddingProvider) -> tuple[TenantPlan, list[str]]:
    """Counts for one tenant, and a sample of the texts still to embed (writes nothing)."""
    identity = provider.identity
    chunk_set = target_chunk_set(scope, provider)
    texts = backlog.texts_to_embed(*scope, identity.vector_table, chunk_set)
    plan = TenantPlan(
        tenant=scope.tenant_id,
        model_key=identity.model_key,
        chunks=backlog.chunk_count(*scope, chunk_set),
        to_embed=len(texts),
        documents_not_chunked=backlog.documents_not_chunked(*scope, chunk_set),
        est_seconds=None,
    )
    return plan, texts[:SAMPLE]


def work_left(scope: Scope, provider: EmbeddingProvider) -> str | None:
    """Why a run of the tenant for `provider` would change anything, or None when it would change nothing:
    documents to parse, chunk or forget, chunks without a current vector, or the model (and its chunk set) not yet
    the one the tenant searches with. A few indexed counts and no run, so `backfill`, `materialize --all` and
    `ingest --materialize` start no Dagster run for a tenant already up to date. Any doubt (a damaged table the
    query cannot read) counts as work: the run repairs it."""
    identity = provider.identity
    try:
        chunk_set = target_chunk_set(scope, provider)
        settings = tenant_settings(*scope)
        if (settings.active_model_key, settings.active_chunk_set) != (identity.model_key, chunk_set):
            return "its model or chunk set is not the active one yet"
        if backlog.documents_not_chunked(*scope, chunk_set):
            return "documents changed since they were chunked"
        if parsing.removed_documents(*scope):
            return "removed documents still have chunks"
        if backlog.has_pending_vectors(*scope, identity.vector_table, chunk_set):
            return "chunks without a current vector"
        return None
    except psycopg.Error as exc:
        return f"its tables could not be read ({type(exc).__name__}): a run repairs them"
