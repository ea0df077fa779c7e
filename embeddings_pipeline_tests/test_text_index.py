"""A large tenant's own text index (store/text_index.py) and the second pass cut at a depth (search/text.py): the
rankings stay those of scoring every match, isolation stays exact, and old schemas still search."""

from __future__ import annotations

import itertools
import random

from psycopg import sql

from embeddings_pipeline.search import text as text_search
from embeddings_pipeline.store import text_index
from embeddings_pipeline.store.db import table

from .test_term_stats import ODD, add, ranking, row

WORDS = ["pump", "valve", "station", "pressure", "crew", "seal", "rotor", "flow", "gauge", "pipe", "dock", "crane"]
QUERIES = ["cavitation pump valve station pressure", "seal rotor flow gauge pipe crew dock", "pump valve", "crane"]


def corpus(conn, schema: str) -> None:
    rng = random.Random(8)
    for tenant, n in ((ODD, 400), ("small", 60)):
        words = lambda i: rng.sample(WORDS, rng.randint(1, 7)) + (["cavitation"] if i % 29 == 0 else [])  # noqa: E731
        add(conn, schema, [row(tenant, i, " ".join(words(i))) for i in range(n)], copy=True)
    conn.commit()


def test_own_index_gives_the_full_ranking_and_only_the_tenant(conn, schema, monkeypatch):
    """The odd-id tenant with its own partial index: every ranking equals scoring every match on the shared index,
    and no other tenant's chunk appears."""
    corpus(conn, schema)
    cases = [(t, q, k) for t in (ODD, "small") for q in QUERIES for k in (1, 7, 30)]
    monkeypatch.setattr(text_search, "PRUNED_POSTINGS", 10**9)  # one pass over every match
    full = [ranking(conn, schema, *case) for case in cases]
    assert text_index.ensure(conn, schema, [ODD]) == [ODD]
    conn.commit()
    assert text_index.ensure(conn, schema, [ODD]) == []  # there and valid: nothing to build
    own = text_search.term_stats(conn, schema, {"text": "pump", "t": ODD, "chunk_set": None,
                                                "own": text_index.qualified(schema, ODD)})  # fmt: skip
    assert own is not None and own[3] is True
    for pruned in (10**9, 20, 1):
        monkeypatch.setattr(text_search, "PRUNED_POSTINGS", pruned)
        for clauses in (64, 3, 1):
            monkeypatch.setattr(text_search, "MAX_CLAUSES", clauses)
            assert [ranking(conn, schema, *case) for case in cases] == full, (pruned, clauses)
    hits = text_search.search_text(conn, schema, ODD, "pump valve crane", 500)
    ids = {r[0] for r in conn.execute(sql.SQL("SELECT chunk_id FROM {} WHERE tenant_id = %s").format(
        table(schema, "chunks")), (ODD,)).fetchall()}  # fmt: skip
    assert hits and {h.chunk_id for h in hits} <= ids


def test_an_invalid_own_index_is_not_used_and_is_rebuilt(conn, schema):
    corpus(conn, schema)
    text_index.ensure(conn, schema, [ODD])
    conn.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = to_regclass(%s)",
                 (text_index.qualified(schema, ODD),))  # fmt: skip
    params = {"text": "pump", "t": ODD, "chunk_set": None, "own": text_index.qualified(schema, ODD)}
    stats = text_search.term_stats(conn, schema, params)
    assert stats is not None and stats[3] is False
    assert text_index.ensure(conn, schema, [ODD]) == [ODD]
    stats = text_search.term_stats(conn, schema, params)
    assert stats is not None and stats[3] is True


def test_statistics_tables_missing_fall_back_to_counting_inside_a_transaction(conn, schema, monkeypatch):
    """A schema before migration 11 (no statistics tables): the stats query fails in a savepoint, the counted
    fallback answers, in autocommit and inside a caller's transaction (which stays usable)."""
    corpus(conn, schema)
    monkeypatch.setattr(text_search, "PRUNED_POSTINGS", 10**9)
    want = [ranking(conn, schema, ODD, q, 7) for q in QUERIES]
    for name in ("chunk_terms", "chunk_corpus"):
        conn.execute(sql.SQL("DROP TABLE {}").format(table(schema, name)))
    assert [ranking(conn, schema, ODD, q, 7) for q in QUERIES] == want  # autocommit: no savepoint needed
    with conn.transaction():
        assert conn.info.transaction_status.name == "INTRANS"
        assert [ranking(conn, schema, ODD, q, 7) for q in QUERIES] == want
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the caller's transaction is not aborted


def test_a_cut_cover_holds_every_set_above_the_threshold():
    """Against brute force: at every depth, each set of terms whose bounds sum above the threshold matches some
    clause (holds its terms and, when it has alternatives, one of them); the exact depth gives the minimal sets."""
    rng = random.Random(9)
    for _ in range(150):
        bounds = sorted((round(rng.uniform(0.1, 5), 2) for _ in range(rng.randint(0, 7))), reverse=True)
        common = [(f"t{i}", b) for i, b in enumerate(bounds)]
        threshold = rng.uniform(0, sum(bounds) + 1)
        above = [{t for t, _ in s} for r in range(len(common) + 1) for s in itertools.combinations(common, r)
                 if sum(b for _, b in s) > threshold]  # fmt: skip
        for depth in range(len(common) + 1):
            cover = text_search._cover(common, threshold, depth)
            if cover is None:
                continue
            for held in above:
                assert any(set(chosen) <= held and (not either or held & set(either)) for chosen, either in cover)
        assert (text_search._clauses(common, threshold) == []) == (not above)


def test_promote_large_builds_the_promoted_tenants_text_index(conn, schema, monkeypatch):
    """Where a tenant gets its own vector partition it gets its own text index; a small tenant does not."""
    import numpy as np

    from embeddings_pipeline.store import promotion, vector_tables

    from .test_vector_layout import IDENTITY, KEY, clustered, write_tenant

    monkeypatch.setenv("EMBEDDINGS_TENANT_INDEX_THRESHOLD", "50")
    vector_tables.register_model(conn, schema, IDENTITY)
    rng = np.random.default_rng(3)
    for tenant, n in ((ODD, 60), ("small", 10)):
        write_tenant(conn, schema, tenant, clustered(rng, n))
        promotion.promote_large(conn, schema, KEY, tenant)
    assert text_index._state(conn, schema, ODD) is True
    assert text_index._state(conn, schema, "small") is None
    assert text_search.search_text(conn, schema, ODD, "text", 100)  # the index serves the odd tenant's search


def test_two_runs_build_text_indexes_at_once_without_a_deadlock(conn, schema, store):
    """Two runs promoting tenants at the same moment each build a partial text index CONCURRENTLY. Two such
    builds on one table deadlock (each waits out the other's transaction); they now take turns."""
    import threading
    import time

    from embeddings_pipeline.store.db import connect

    corpus(conn, schema)
    writer, first, second = (connect(store.url()) for _ in range(3))
    errors: list[BaseException] = []

    def build(c, tenant: str) -> None:
        try:
            text_index.ensure(c, schema, [tenant])
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    try:
        with writer.transaction():  # an open writer: the first build waits for it, holding its lock on chunks
            add(writer, schema, [row("third", 0, "pump valve")])
            a = threading.Thread(target=build, args=(first, ODD))
            a.start()
            for _ in range(500):
                waiting = conn.execute("SELECT wait_event FROM pg_stat_activity WHERE pid = %s",
                                       (first.info.backend_pid,)).fetchone()  # fmt: skip
                if waiting and waiting[0] == "virtualxid":
                    break
                time.sleep(0.01)
            b = threading.Thread(target=build, args=(second, "small"))
            b.start()
            time.sleep(0.5)  # the second build is under way (it waited for the table's lock before)
        a.join(timeout=60)
        b.join(timeout=60)
    finally:
        for c in (writer, first, second):
            c.close()
    assert not errors, errors
    for tenant in (ODD, "small"):
        assert conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)",
                            (text_index.qualified(schema, tenant),)).fetchone() == (True,)  # fmt: skip
