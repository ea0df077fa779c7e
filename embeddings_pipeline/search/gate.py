"""The retrieval-quality gate: a new model takes over a tenant's search only if it ranks the tenant's quality
queries (nDCG@10, documents ranked by their best chunk) no worse than the active model, within a tolerance."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg

from ..providers.base import ProviderError
from ..store import quality, tenants
from .dense import search_vector
from .evaluate import ndcg_at_k, rank_documents

if TYPE_CHECKING:
    from ..providers.base import EmbeddingProvider


def max_drop() -> float:
    """EMBEDDINGS_QUALITY_MAX_DROP: how much lower (absolute nDCG@10) the new model may score; default 0.02."""
    return float(os.environ.get("EMBEDDINGS_QUALITY_MAX_DROP", "0.02"))


@dataclass(frozen=True)
class GateResult:
    queries: int
    candidate_model: str
    candidate_ndcg10: float
    active_model: str
    active_ndcg10: float
    max_drop: float
    note: str = ""  # e.g. the active model could not be scored (its provider is down): it counts as 0

    @property
    def passed(self) -> bool:
        return self.candidate_ndcg10 >= self.active_ndcg10 - self.max_drop

    def as_metadata(self) -> dict[str, object]:
        return {
            "quality_gate_passed": self.passed,
            "quality_queries": self.queries,
            "quality_candidate_ndcg10": round(self.candidate_ndcg10, 5),
            "quality_active_ndcg10": round(self.active_ndcg10, 5),
            "quality_active_model": self.active_model,
            "quality_max_drop": self.max_drop,
            **({"quality_note": self.note} if self.note else {}),
        }


def ndcg10(
    conn: psycopg.Connection,
    schema: str,
    tenant_id: str,
    provider: EmbeddingProvider,
    chunk_set: str | None,
    queries: list[tuple[str, dict[str, int]]],
) -> float:
    scores = []
    for text, relevant in queries:
        vector = provider.embed_query(text)
        hits = search_vector(conn, schema, provider.identity.vector_table, tenant_id, vector, 100, chunk_set)
        scores.append(ndcg_at_k(rank_documents([(h.doc_id, h.score) for h in hits], 10), relevant, 10))
    return sum(scores) / len(scores)


def quality_gate(
    conn: psycopg.Connection,
    schema: str,
    tenant_id: str,
    candidate: EmbeddingProvider,
    candidate_set: str,
    active: EmbeddingProvider | None,
) -> GateResult | None:
    """Score `candidate` (on its chunk set) and the tenant's active model (`active`, on the active set) on the
    tenant's quality queries. None when there is nothing to compare: no quality queries, no active model (the
    first model of a tenant), or the candidate is already active."""
    settings = tenants.tenant_settings(conn, schema, tenant_id)
    if active is None or settings.active_model_key != active.identity.model_key:
        return None
    if (settings.active_model_key, settings.active_chunker_version) == (candidate.identity.model_key, candidate_set):
        return None
    queries = quality.queries_of(conn, schema, tenant_id)
    if not queries:
        return None
    candidate_ndcg = ndcg10(conn, schema, tenant_id, candidate, candidate_set, queries)
    try:
        active_ndcg, note = ndcg10(conn, schema, tenant_id, active, settings.active_chunker_version, queries), ""
    except ProviderError as exc:  # moving away from a provider that is gone must stay possible
        active_ndcg, note = 0.0, f"the active model could not be scored, counted as 0: {exc}"
    return GateResult(
        queries=len(queries),
        candidate_model=candidate.identity.model_key,
        candidate_ndcg10=candidate_ndcg,
        active_model=active.identity.model_key,
        active_ndcg10=active_ndcg,
        max_drop=max_drop(),
        note=note,
    )
