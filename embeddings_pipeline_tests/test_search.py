"""Full-text and hybrid (RRF) search on real rows: tenant-scoped, safe with any query text, one chunk set."""

from __future__ import annotations

import dagster as dg
import pytest

from embeddings_pipeline.cli.runner import materialize_tenants
from embeddings_pipeline.search import SearchHit, rrf, search_mode, search_text

from .helpers import seed

DOCS = {
    "pumps.txt": "Pump station 7 runs the XJ-9000 impeller at 1450 rpm.\n\nSeals are replaced every spring.",
    "dock.txt": "The loading dock opens at six.\n\nForklifts charge overnight in bay three.",
    "cold.txt": "Vaccines are stored between two and eight degrees.\n\nThe freezer alarm pages the night shift.",
}


@pytest.fixture()
def tenants(conn, schema, provider):
    seed(conn, schema, "acme", DOCS, fmt="text")
    seed(conn, schema, "globex", {"other.txt": "Globex also owns an XJ-9000 impeller."}, fmt="text")
    assert all(r.success for r in materialize_tenants(["acme", "globex"], instance=dg.DagsterInstance.ephemeral()))


def hit(chunk: str) -> SearchHit:
    return SearchHit(chunk, "d", "t", 0.0, "m", "r")


def test_rrf_sums_reciprocal_ranks():
    fused = rrf([[hit("a"), hit("b"), hit("c")], [hit("c"), hit("d")]], k=60)
    assert [h.chunk_id for h in fused] == ["c", "a", "b", "d"]  # c: 1/63 + 1/61 beats a: 1/61
    assert fused[0].score == pytest.approx(1 / 63 + 1 / 61) and fused[3].score == pytest.approx(1 / 62)
    assert rrf([]) == [] and rrf([[], []]) == []


def test_text_search_finds_exact_terms_in_one_tenant_only(tenants, conn, schema):
    hits = search_text(conn, schema, "acme", "which impeller model, XJ-9000?", k=5)
    assert [h.doc_id for h in hits][:1] == ["pumps.txt"]
    assert all(h.doc_id in DOCS for h in hits)  # never globex's row with the same words
    stemmed = search_text(conn, schema, "acme", "charging forklift", k=5)  # stems: charge, forklift
    assert [h.doc_id for h in stemmed] == ["dock.txt"]
    assert search_text(conn, schema, "acme", "the and of", k=5) == []  # only stop words: nothing to match


@pytest.mark.parametrize(
    "query", ["a & b | !c", "x:* <-> 'y'", "it's O''Brien\\", "\x00 nul", "(((", "", "   ", "é ü 日本語"]
)
def test_any_query_text_is_safe(tenants, conn, schema, provider, query):
    assert isinstance(search_text(conn, schema, "acme", query, k=3), list)
    assert len(search_mode(conn, schema, provider, "acme", query or "x", 3, "hybrid")) <= 3


def test_hybrid_fuses_dense_and_text(tenants, conn, schema, provider):
    dense = search_mode(conn, schema, provider, "acme", "XJ-9000", 10, "dense")
    text = search_mode(conn, schema, provider, "acme", "XJ-9000", 10, "text")
    hybrid = search_mode(conn, schema, provider, "acme", "XJ-9000", 10, "hybrid")
    assert [h.chunk_id for h in hybrid] == [h.chunk_id for h in rrf([dense, text])][:10]
    assert hybrid[0].doc_id == "pumps.txt" and hybrid[0].model_key == provider.identity.model_key
    assert {h.chunk_id for h in hybrid} == {h.chunk_id for h in dense} | {h.chunk_id for h in text}
    with pytest.raises(ValueError, match="mode"):
        search_mode(conn, schema, provider, "acme", "x", 3, "sparse")
