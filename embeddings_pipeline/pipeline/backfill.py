"""Backfill planning: how much each tenant still needs embedded for a model, and how long it should take."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import psycopg
from psycopg import sql

from ..providers.base import EmbeddingProvider
from ..store import vectors
from ..store.db import relation_exists, source_relation, table
from .steps import target_chunk_set

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


def documents_not_chunked(conn: psycopg.Connection, schema: str, tenant_id: str, chunk_set: str) -> int:
    """Live documents changed since they were last parsed, or not yet chunked into `chunk_set`: their chunks
    (and vectors) are still to come."""
    row = conn.execute(
        sql.SQL(
            """
            SELECT count(*) FROM {docs} d
              LEFT JOIN {parsed} p ON p.tenant_id = d.tenant_id AND p.doc_id = d.doc_id
              LEFT JOIN {done} s ON s.tenant_id = d.tenant_id AND s.doc_id = d.doc_id AND s.chunker_version = %s
             WHERE d.tenant_id = %s AND d.deleted_at IS NULL
               AND (p.doc_id IS NULL OR p.source_updated_at IS DISTINCT FROM d.updated_at
                    OR s.blocks_version IS DISTINCT FROM p.blocks_version)
            """
        ).format(
            docs=source_relation(schema),
            parsed=table(schema, "parsed_documents"),
            done=table(schema, "chunked_documents"),
        ),
        (chunk_set, tenant_id),
    ).fetchone()
    return int(row[0]) if row else 0


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


def plan_tenant(
    conn: psycopg.Connection, schema: str, tenant_id: str, provider: EmbeddingProvider
) -> tuple[TenantPlan, list[str]]:
    """Counts for one tenant (writes nothing: the model's vector table may not even exist yet)."""
    identity = provider.identity
    chunk_set = target_chunk_set(conn, schema, tenant_id, provider)
    if relation_exists(conn, schema, identity.vector_table):
        pending = vectors.pending_chunks(conn, schema, identity.vector_table, tenant_id, chunk_set)
        texts = [p.text for p in pending]
    else:
        texts = [
            r[0]
            for r in conn.execute(
                sql.SQL("SELECT text FROM {} WHERE tenant_id = %s AND chunker_version = %s").format(
                    table(schema, "chunks")
                ),
                (tenant_id, chunk_set),
            ).fetchall()
        ]
    chunks = conn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE tenant_id = %s AND chunker_version = %s").format(
            table(schema, "chunks")
        ),
        (tenant_id, chunk_set),
    ).fetchone()
    plan = TenantPlan(
        tenant=tenant_id,
        model_key=identity.model_key,
        chunks=int(chunks[0]) if chunks else 0,
        to_embed=len(texts),
        documents_not_chunked=documents_not_chunked(conn, schema, tenant_id, chunk_set),
        est_seconds=None,
    )
    return plan, texts[:SAMPLE]
