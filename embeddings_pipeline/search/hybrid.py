"""Hybrid search: dense (the tenant's active model) and full-text candidates fused by reciprocal rank fusion."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import psycopg

from ..store.models import chunk_set_of
from .dense import SearchHit, search_vector
from .documents import with_documents
from .text import search_text

if TYPE_CHECKING:
    from ..providers.base import EmbeddingProvider

RRF_K = 60  # the constant of Cormack et al. (2009); damps the weight of the very first ranks
# The top of each ranking that hybrid fuses (at least k). On SciFact (mteb protocol, k = 10) nDCG@10 was 0.72303 /
# 0.71894 / 0.71541 / 0.71425 with 10 / 50 / 100 / 200; 50 costs a large tenant's text search less than 100.
CANDIDATES = 50
MODES = ("dense", "text", "hybrid")


def rrf(rankings: Sequence[Sequence[SearchHit]], k: int = RRF_K, limit: int | None = None) -> list[SearchHit]:
    """Reciprocal rank fusion: each chunk scores sum(1 / (k + rank)) over the rankings it appears in (rank from 1);
    best first, ties by chunk id, the first `limit` (all when None). A fused hit keeps the first ranking's
    provenance (model, run) where it has one."""
    scores: dict[str, float] = {}
    hits: dict[str, SearchHit] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + 1.0 / (k + rank)
            hits.setdefault(hit.chunk_id, hit)
    order = sorted(scores, key=lambda c: (-scores[c], c))[:limit]
    return [replace(hits[c], score=scores[c]) for c in order]


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")


def search_mode(
    conn: psycopg.Connection,
    schema: str,
    provider: EmbeddingProvider,
    tenant_id: str,
    query: str,
    k: int = 10,
    mode: str = "hybrid",
    candidates: int = CANDIDATES,
) -> list[SearchHit]:
    """Top-k chunks of the tenant by `mode`: dense (cosine), text (BM25) or hybrid (RRF of the top
    `candidates` of both), each with its document's title and metadata. Every mode reads the chunk set the tenant
    searches with this model."""
    _check_mode(mode)
    chunk_set = chunk_set_of(conn, schema, tenant_id, provider.identity.model_key)
    return search_chunk_set(conn, schema, provider, tenant_id, chunk_set, query, k, mode, candidates)


def search_chunk_set(
    conn: psycopg.Connection,
    schema: str,
    provider: EmbeddingProvider,
    tenant_id: str,
    chunk_set: str | None,
    query: str,
    k: int = 10,
    mode: str = "hybrid",
    candidates: int = CANDIDATES,
) -> list[SearchHit]:
    """`search_mode` over the chunk set the caller already knows (`chunk_set_of`'s answer for this tenant and
    model, e.g. remembered by the service for a few seconds): the same hits, one read fewer."""
    _check_mode(mode)
    identity = provider.identity
    pool = max(k, candidates) if mode == "hybrid" else k
    alone = mode != "hybrid"  # a single ranking reads its documents in its own query; a fusion for its top k
    dense: list[SearchHit] = []
    if mode != "text":
        vector = provider.embed_query(query)
        dense = search_vector(conn, schema, identity.vector_table, tenant_id, vector, pool, chunk_set, alone)
        if mode == "dense":
            return dense
    text = search_text(conn, schema, tenant_id, query, pool, chunk_set, alone)
    return text if alone else with_documents(conn, schema, tenant_id, rrf([dense, text], limit=k))


def search(
    conn: psycopg.Connection, schema: str, provider: EmbeddingProvider, tenant_id: str, query: str, k: int = 10
) -> list[SearchHit]:
    """The Python API for apps, dense only: embed the query with the model and return the tenant's top-k chunks."""
    return search_mode(conn, schema, provider, tenant_id, query, k, "dense")
