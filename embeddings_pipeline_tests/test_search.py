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
    assert rrf([[hit("a"), hit("b"), hit("c")], [hit("c"), hit("d")]], limit=2) == fused[:2]


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


def test_dense_search_never_runs_a_generic_plan(tenants, conn, schema, provider):
    """psycopg prepares a statement run five times; PostgreSQL may then switch it to a generic plan, which for the
    dense query joins the whole chunks table. Even where the session asks for generic plans, every dense search of
    a prepared statement is planned for its tenant, and the hits stay the same."""
    from embeddings_pipeline.search import search_vector

    vector = provider.embed_query("XJ-9000 impeller")
    vt = provider.identity.vector_table
    first = search_vector(conn, schema, vt, "acme", vector, 3)
    conn.execute("SET plan_cache_mode = force_generic_plan")
    try:
        runs = [search_vector(conn, schema, vt, t, vector, 3) for _ in range(8) for t in ("acme", "globex")]
        plans = conn.execute(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE %s",
            ("%embedding <=>%",),
        ).fetchall()
    finally:
        conn.execute("RESET plan_cache_mode")
    assert runs[0] == first and runs[-2] == first and {h.doc_id for h in runs[-1]} == {"other.txt"}
    assert plans and all(generic == 0 and custom > 0 for generic, custom in plans), plans


def test_pruned_bm25_pass_gives_the_full_ranking(conn, schema, monkeypatch):
    """The first pass scores only the chunks holding the rarest terms; whether it proves its top k (MaxScore bound)
    or falls back to scoring every match, the hits and scores are those of scoring every match."""
    from embeddings_pipeline.search import text as text_search

    from .helpers import seed

    common = "the pump station logs pressure and the crew checks the valve"
    docs = {f"log{i}.txt": f"{common} on day {i}." + (" Cavitation damaged impeller XJ-9000." if i % 7 == 0 else "")
            for i in range(60)}  # fmt: skip
    seed(conn, schema, "logs", docs, fmt="text")
    from embeddings_pipeline.pipeline import steps
    from embeddings_pipeline.pipeline.model_change import default_loader, plan
    from embeddings_pipeline.store.scope import Scope

    scope = Scope(conn, schema, "logs")
    steps.build_blocks(scope)
    steps.build_chunks(scope, plan(scope, target=default_loader()))
    executes: list[int] = []
    real = conn.execute

    def counted(query, params=None, *args, **kwargs):  # the scoring passes (the statistics read is not one)
        executes.extend([1] if isinstance(params, dict) and "match" in params else [])
        return real(query, params, *args, **kwargs)

    for query in ("cavitation impeller pump", "pump pressure crew valve", "day 14 impeller", "station"):
        monkeypatch.setattr(text_search, "PRUNED_POSTINGS", 10**9)
        full = search_text(conn, schema, "logs", query, k=5)
        assert len(full) == 5
        for budget in (1, 20):  # the rarest term alone, or both rare terms
            monkeypatch.setattr(text_search, "PRUNED_POSTINGS", budget)
            monkeypatch.setattr(conn, "execute", counted)
            executes.clear()
            pruned = search_text(conn, schema, "logs", query, k=5)
            monkeypatch.setattr(conn, "execute", real)
            assert [(h.chunk_id, round(h.score, 9)) for h in pruned] == [(h.chunk_id, round(h.score, 9)) for h in full]
            if query == "cavitation impeller pump":
                # the first pass proves it: with both rare terms, and (with each term's own bound, migration 13:
                # impeller and pump occur once per chunk) with the rarest alone; under idf * (k1 + 1) it took two
                assert len(executes) == 1
                assert all("Cavitation" in h.text for h in pruned)


def test_parallel_hybrid_equals_sequential(tenants, store, conn, schema, provider):
    """The text ranking on a second connection while the dense one runs: the very hits of `search_mode`."""
    from embeddings_pipeline.search.parallel import hybrid_parallel
    from embeddings_pipeline.store.models import chunk_set_of

    chunk_set = chunk_set_of(conn, schema, "acme", provider.identity.model_key)
    with store.connect() as text_conn:
        for query in ("XJ-9000", "forklift charging overnight", "freezer alarm", "the and of"):
            for k in (1, 3, 10):
                sequential = search_mode(conn, schema, provider, "acme", query, k, "hybrid")
                parallel = hybrid_parallel(conn, text_conn, schema, provider, "acme", chunk_set, query, k)
                assert parallel == sequential  # the same hits, scores, titles and metadata
                assert parallel and all(h.doc_id in DOCS for h in parallel)
        with pytest.raises(ValueError, match="other"):
            hybrid_parallel(conn, conn, schema, provider, "acme", chunk_set, "x")
