"""Retrieval metrics, checked against hand-computed values."""

from __future__ import annotations

import math

import pytest

from embeddings_pipeline.search.evaluate import evaluate, ndcg_at_k, rank_documents, recall_at_k


def test_ndcg_matches_hand_computation():
    rel = {"a": 1, "b": 2}
    ranked = ["x", "b", "a"]
    dcg = 2 / math.log2(3) + 1 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg_at_k(ranked, rel, 10) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(["b", "a"], rel, 10) == pytest.approx(1.0)
    assert ndcg_at_k(["x"] * 10 + ["a"], rel, 10) == 0.0


def test_recall_counts_only_positives_within_k():
    assert recall_at_k(["a", "x", "b"], {"a": 1, "b": 1, "c": 0}, 2) == 0.5
    assert recall_at_k([], {"a": 1}, 100) == 0.0


def test_evaluate_skips_the_query_itself_and_unjudged_queries():
    queries = {"q1": "one", "q2": "two", "q3": "never judged"}
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}}
    ranked = {"one": ["q1", "d1"], "two": ["d9", "d2"]}
    result = evaluate(queries, qrels, lambda text: ranked[text])
    assert result.queries == 2
    assert result.ndcg_at_10 == pytest.approx((1.0 + 1 / math.log2(3)) / 2)
    assert result.recall_at_100 == 1.0


def test_rank_documents_keeps_each_doc_at_its_best_chunk():
    hits = [("d1", 0.9), ("d2", 0.8), ("d1", 0.7), ("d3", 0.6)]
    assert rank_documents(hits, 10) == ["d1", "d2", "d3"]
    assert rank_documents(hits, 2) == ["d1", "d2"]
