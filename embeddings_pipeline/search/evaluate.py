"""Retrieval quality on a BEIR-layout dataset: nDCG@10 and recall@100, as MTEB/BEIR compute them."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from .dense import search_vector

if TYPE_CHECKING:
    from ..providers.base import EmbeddingProvider


@dataclass(frozen=True)
class EvalResult:
    ndcg_at_10: float
    recall_at_100: float
    queries: int

    def as_dict(self) -> dict[str, float | int]:
        return {
            "ndcg_at_10": round(self.ndcg_at_10, 5),
            "recall_at_100": round(self.recall_at_100, 5),
            "queries": self.queries,
        }


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter="\t")
        for row in reader:
            if len(row) < 3 or row[0] == "query-id":
                continue
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    return qrels


def load_queries(path: Path) -> dict[str, str]:
    with open(path, encoding="utf-8") as fh:
        return {str(r["_id"]): str(r["text"]) for r in map(json.loads, filter(str.strip, fh))}


def ndcg_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 10) -> float:
    dcg = sum(relevant.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranked: Sequence[str], relevant: Mapping[str, int], k: int = 100) -> float:
    positives = {d for d, g in relevant.items() if g > 0}
    return len(positives & set(ranked[:k])) / len(positives) if positives else 0.0


def evaluate(
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    rank: Callable[[str], list[str]],
) -> EvalResult:
    """`rank(query_text)` returns doc ids best first (at least 100). A doc equal to the query id is skipped."""
    ndcgs, recalls = [], []
    for qid, rel in qrels.items():
        if qid not in queries:
            continue
        ranked = [d for d in rank(queries[qid]) if d != qid]
        ndcgs.append(ndcg_at_k(ranked, rel, 10))
        recalls.append(recall_at_k(ranked, rel, 100))
    n = len(ndcgs)
    return EvalResult(sum(ndcgs) / n if n else 0.0, sum(recalls) / n if n else 0.0, n)


def rank_documents(hits: Sequence[tuple[str, float]], limit: int) -> list[str]:
    """Chunk hits (doc_id, score), best first -> distinct doc ids by their best chunk."""
    seen: dict[str, None] = {}
    for doc_id, _ in hits:
        seen.setdefault(doc_id, None)
        if len(seen) >= limit:
            break
    return list(seen)


def dense_ndcg10(
    conn: psycopg.Connection,
    schema: str,
    tenant_id: str,
    provider: EmbeddingProvider,
    chunk_set: str | None,
    queries: list[tuple[str, dict[str, int]]],
) -> float:
    """Mean nDCG@10 of dense retrieval with `provider` on `chunk_set`, documents ranked by their best chunk."""
    scores = []
    for text, relevant in queries:
        vector = provider.embed_query(text)
        hits = search_vector(conn, schema, provider.identity.vector_table, tenant_id, vector, 100, chunk_set)
        scores.append(ndcg_at_k(rank_documents([(h.doc_id, h.score) for h in hits], 10), relevant, 10))
    return sum(scores) / len(scores)
