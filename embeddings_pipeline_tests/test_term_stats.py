"""BM25 statistics per tenant and chunk set (store/terms.py): exact after every kind of write to `chunks`, rebuilt
by drift repair, and giving the very ranking that counting postings gives."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from embeddings_pipeline.search import text as text_search
from embeddings_pipeline.search.text import search_text
from embeddings_pipeline.store import terms
from embeddings_pipeline.store.db import table

from .helpers import seed

ODD = "o'dd \\ tenant 'tenant x'"  # quotes, a backslash and the word `tenant`: nothing may parse it as syntax
COLUMNS = ("tenant_id", "chunk_id", "block_id", "doc_id", "ordinal", "text", "content_hash", "token_count",
           "chunker_version")  # fmt: skip


def recount(conn: psycopg.Connection, schema: str) -> tuple[set[tuple], set[tuple]]:
    """What the statistics should hold, counted from the chunks now."""
    chunks = table(schema, "chunks")
    df = conn.execute(
        sql.SQL(
            "SELECT c.tenant_id, l, c.chunker_version, count(*) FROM {} c, unnest(tsvector_to_array(c.tsv)) l "
            "GROUP BY 1, 2, 3"
        ).format(chunks)
    ).fetchall()
    corpus = conn.execute(
        sql.SQL("SELECT tenant_id, chunker_version, count(*), sum(token_count) FROM {} GROUP BY 1, 2").format(chunks)
    ).fetchall()
    return set(df), set(corpus)


def stored(conn: psycopg.Connection, schema: str) -> tuple[set[tuple], set[tuple]]:
    df = sql.SQL("SELECT tenant_id, lexeme, chunk_set, df FROM {}").format(table(schema, "chunk_terms"))
    corpus = sql.SQL("SELECT tenant_id, chunk_set, n, tokens FROM {}").format(table(schema, "chunk_corpus"))
    return set(conn.execute(df).fetchall()), set(conn.execute(corpus).fetchall())


def assert_exact(conn: psycopg.Connection, schema: str) -> None:
    have, want = stored(conn, schema), recount(conn, schema)
    assert have[1] == want[1]
    assert have[0] == want[0], (sorted(have[0] - want[0])[:5], sorted(want[0] - have[0])[:5])
    assert_bounds(conn, schema)


def assert_bounds(conn: psycopg.Connection, schema: str) -> None:
    """Every term's stored bounds hold: at least its most occurrences in one chunk, at most the fewest tokens of a
    chunk holding it (looser after deletes, never tighter than the chunks)."""
    broken = conn.execute(
        sql.SQL(
            "SELECT t.tenant_id, t.lexeme, t.chunk_set, t.max_tf, t.min_tokens, a.tf, a.tokens FROM {terms} t"
            " JOIN (SELECT c.tenant_id, u.lexeme, c.chunker_version AS cs,"
            "              max(coalesce(cardinality(u.positions), 0)) AS tf, min(c.token_count) AS tokens"
            "         FROM {chunks} c, unnest(c.tsv) AS u(lexeme, positions, weights) GROUP BY 1, 2, 3) a"
            "   ON a.tenant_id = t.tenant_id AND a.lexeme = t.lexeme AND a.cs = t.chunk_set"
            " WHERE t.max_tf < a.tf OR t.min_tokens > a.tokens"
        ).format(terms=table(schema, "chunk_terms"), chunks=table(schema, "chunks"))
    ).fetchall()
    assert not broken, broken[:5]


def add(conn: psycopg.Connection, schema: str, rows: list[tuple], copy: bool = False) -> None:
    columns = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
    if copy:
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(table(schema, "chunks"), columns)
        with conn.cursor() as cur, cur.copy(statement) as cp:
            for r in rows:
                cp.write_row(r)
    else:
        values = sql.SQL(", ").join(sql.Placeholder() * len(COLUMNS))
        statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(table(schema, "chunks"), columns, values)
        conn.cursor().executemany(statement, rows)


def row(tenant: str, i: int, text: str, chunk_set: str = "v1") -> tuple:
    return (tenant, f"c{i}", f"b{i}", f"d{i % 3}", i, text, f"h{i}", len(text.split()), chunk_set)


TEXTS = ["pump impeller seals", "impeller impeller rpm at the pump station", "dock forklift charging", "pump"]


def test_statistics_stay_exact_through_every_write(conn, schema):
    """Two tenants (one with an odd id) hold the same chunk ids and words: COPY and INSERT, UPDATE of the text,
    the chunk set and the tenant, DELETE of a few rows and of a set, rollback, TRUNCATE: the statistics always
    equal a recount, and a tenant's counts never mix with the other's."""
    chunks = table(schema, "chunks")
    add(conn, schema, [row(t, i, x) for t in ("acme", ODD) for i, x in enumerate(TEXTS)], copy=True)
    add(conn, schema, [row("acme", 10 + i, x, "v2") for i, x in enumerate(TEXTS)])
    conn.commit()
    assert_exact(conn, schema)
    df = dict(((t, lexeme, s), n) for t, lexeme, s, n in stored(conn, schema)[0])
    assert df[("acme", "pump", "v1")] == 3 and df[(ODD, "pump", "v1")] == 3 and df[("acme", "pump", "v2")] == 3
    steps = [
        ("UPDATE {} SET text = 'forklift forklift dock' WHERE tenant_id = %s AND chunk_id = 'c0'", ("acme",)),
        ("UPDATE {} SET chunker_version = 'v3' WHERE tenant_id = %s AND chunk_id IN ('c1', 'c2')", (ODD,)),
        ("UPDATE {} SET tenant_id = %s WHERE tenant_id = 'acme' AND chunk_id = 'c13'", ("acme-moved",)),
        ("UPDATE {} SET token_count = token_count + 5 WHERE tenant_id = %s", (ODD,)),
        ("DELETE FROM {} WHERE tenant_id = %s AND chunk_id IN ('c1', 'c3')", ("acme",)),
        ("DELETE FROM {} WHERE tenant_id = %s AND chunker_version = 'v2'", ("acme",)),
    ]
    for statement, params in steps:
        conn.execute(sql.SQL(statement).format(chunks), params)
        conn.commit()
        assert_exact(conn, schema)
    before = stored(conn, schema)
    with conn.transaction(force_rollback=True):
        conn.execute(sql.SQL("DELETE FROM {} WHERE tenant_id = %s").format(chunks), (ODD,))
        assert stored(conn, schema) != before
    assert stored(conn, schema) == before
    conn.execute(sql.SQL("DELETE FROM {} WHERE tenant_id = %s").format(chunks), (ODD,))
    conn.commit()
    assert_exact(conn, schema)
    assert not [r for r in stored(conn, schema)[0] if r[0] == ODD]  # a tenant's last chunk leaves no zero rows
    conn.execute(sql.SQL("TRUNCATE {}").format(chunks))
    conn.commit()
    assert stored(conn, schema) == (set(), set())


def test_pipeline_writes_document_deletes_and_erasure_keep_statistics_exact(conn, schema):
    from embeddings_pipeline.pipeline import steps
    from embeddings_pipeline.pipeline.model_change import default_loader, plan
    from embeddings_pipeline.store.documents import delete_documents
    from embeddings_pipeline.store.erasure import erase_tenant
    from embeddings_pipeline.store.scope import Scope

    docs = {f"log{i}.txt": f"The pump station logs pressure on day {i}.\n\nImpeller {i % 4} checked."
            for i in range(12)}  # fmt: skip
    provider = default_loader()

    def run(tenant: str) -> None:
        scope = Scope(conn, schema, tenant)
        steps.build_blocks(scope)
        steps.build_chunks(scope, plan(scope, target=provider))

    for tenant in ("acme", ODD):
        seed(conn, schema, tenant, docs, fmt="text")
        run(tenant)
    assert_exact(conn, schema)
    sizes = {t: n for t, _, n, _ in stored(conn, schema)[1]}
    assert sizes["acme"] == sizes[ODD] > 12
    seed(conn, schema, "acme", {"log0.txt": "Cavitation damaged the impeller."}, fmt="text")  # an edit
    delete_documents(conn, schema, "acme", ["log1.txt", "log2.txt"])
    run("acme")
    assert_exact(conn, schema)
    assert {t: n for t, _, n, _ in stored(conn, schema)[1]}["acme"] < sizes["acme"]
    erase_tenant(conn, schema, ODD)
    assert_exact(conn, schema)
    assert {r[0] for r in stored(conn, schema)[0]} == {"acme"}


def ranking(conn, schema, tenant, query, k, chunk_set=None):
    return [(h.chunk_id, round(h.score, 9)) for h in search_text(conn, schema, tenant, query, k, chunk_set)]


QUERIES = ["pump impeller", "impeller rpm station", "forklift", "pump", "the pump at the dock", "seals rpm dock pump"]


def test_statistics_give_the_counted_ranking(conn, schema, monkeypatch):
    """Scores from the statistics equal those counted from the postings (the fallback when a set has none), for
    each chunk set and for all sets together, whatever pass proves the top k."""
    rows = [row(t, i, f"{TEXTS[i % 4]} {'extra words here' * (i % 3)} unit {i % 7}", s)
            for t in ("acme", ODD) for s in ("v1", "v2") for i in range(40)]  # fmt: skip
    add(conn, schema, [r[:1] + (r[1] + r[8],) + r[2:] for r in rows], copy=True)
    conn.commit()
    cases = [(t, q, k, s) for t in ("acme", ODD) for q in QUERIES for k in (1, 3, 10) for s in (None, "v1")]
    with_stats = [ranking(conn, schema, *case) for case in cases]
    assert any(with_stats) and all(len(r) <= c[2] for r, c in zip(with_stats, cases, strict=True))
    monkeypatch.setattr(text_search, "PRUNED_POSTINGS", 10**9)  # one pass over every match
    assert [ranking(conn, schema, *case) for case in cases] == with_stats
    monkeypatch.setattr(text_search, "PRUNED_POSTINGS", 1)
    assert [ranking(conn, schema, *case) for case in cases] == with_stats
    for name in terms.TABLES:
        conn.execute(sql.SQL("DELETE FROM {}").format(table(schema, name)))
    monkeypatch.setattr(text_search, "PRUNED_POSTINGS", 10**9)
    assert [ranking(conn, schema, *case) for case in cases] == with_stats  # counted: the fallback
    conn.rollback()


def test_pruned_passes_need_not_score_every_match(conn, schema, monkeypatch):
    """A query whose commonest term is in every chunk: the second pass leaves that term out (its bound is under
    the first pass's k-th score) and still returns the full ranking."""
    rows = [row("logs", i, "the pump station logs pressure" + (" cavitation impeller" if i % 9 == 0 else ""))
            for i in range(90)]  # fmt: skip
    add(conn, schema, rows, copy=True)
    conn.commit()
    seen: list[str] = []
    real = conn.execute

    def spy(query, params=None, *args, **kwargs):
        if isinstance(params, dict) and "match" in params:
            seen.append(" ; ".join(params["match"]))
        return real(query, params, *args, **kwargs)

    monkeypatch.setattr(text_search, "PRUNED_POSTINGS", 10**9)
    full = ranking(conn, schema, "logs", "cavitation impeller pump", 5)
    monkeypatch.setattr(text_search, "PRUNED_POSTINGS", 12)  # the first pass: cavitation alone
    monkeypatch.setattr(conn, "execute", spy)
    pruned = ranking(conn, schema, "logs", "cavitation impeller pump", 5)
    monkeypatch.setattr(conn, "execute", real)
    assert pruned == full and len(full) == 5
    assert seen[0] == "'cavit'" and len(seen) <= 2 and all("pump" not in m for m in seen)  # pump: in every chunk


def test_drift_repair_rebuilds_lost_statistics(store, conn, schema):
    """A dropped trigger, a disabled one, or a dropped statistics table: the next connection restores them and
    recounts from the chunks."""
    add(conn, schema, [row(t, i, x) for t in ("acme", ODD) for i, x in enumerate(TEXTS)], copy=True)
    conn.commit()
    damage = [
        "DROP TRIGGER chunk_stats_insert ON {s}.chunks",
        "ALTER TABLE {s}.chunks DISABLE TRIGGER chunk_stats_delete",
        "DROP TABLE {s}.chunk_terms",
    ]
    for i, statement in enumerate(damage):
        conn.execute(sql.SQL(statement).format(s=sql.Identifier(schema)))
        conn.commit()
        if i == 0:
            add(conn, schema, [row("acme", 50, "written while the trigger was gone")])
            conn.commit()
        with store.connect() as fresh:
            assert terms.maintained(fresh, schema)
            assert_exact(fresh, schema)
            fresh.commit()
    add(conn, schema, [row(ODD, 60, "pump impeller after repair")])
    conn.execute(sql.SQL("DELETE FROM {}.chunks WHERE chunk_id = 'c0'").format(sql.Identifier(schema)))
    conn.commit()
    assert_exact(conn, schema)


@pytest.mark.parametrize("tenant", ["acme", ODD])
def test_a_tenant_without_chunks_finds_nothing(conn, schema, tenant):
    add(conn, schema, [row("other", 0, "pump impeller")])
    assert search_text(conn, schema, tenant, "pump impeller") == []
    assert search_text(conn, schema, "other", "tenant " + tenant) == []


def test_combinations_are_the_minimal_sets_above_the_threshold():
    """Against brute force over every subset: the clauses are exactly the minimal sets whose bounds sum above the
    threshold (None past MAX_CLAUSES)."""
    import itertools
    import random

    rng = random.Random(5)
    for _ in range(200):
        bounds = sorted((round(rng.uniform(0.1, 5), 2) for _ in range(rng.randint(0, 7))), reverse=True)
        common = [(f"t{i}", b) for i, b in enumerate(bounds)]
        threshold = rng.uniform(0, sum(bounds) + 1)
        above = [set(s) for r in range(len(common) + 1) for s in itertools.combinations(common, r)
                 if sum(b for _, b in s) > threshold]  # fmt: skip
        minimal = [s for s in above if not any(o < s for o in above)]
        got = text_search._combinations(common, threshold)
        if len(minimal) > text_search.MAX_CLAUSES:
            assert got is None
        else:
            assert got is not None
            assert sorted(map(sorted, got)) == sorted(sorted(t for t, _ in s) for s in minimal)


def test_second_pass_by_combinations_or_any_term_gives_the_full_ranking(conn, schema, monkeypatch):
    """Many common terms, few rare ones: the second pass matches only combinations of common terms (or, past
    MAX_CLAUSES, any term that can matter), merged with the first pass: the ranking of scoring every match."""
    rng = __import__("random").Random(3)
    words = ["pump", "valve", "station", "pressure", "crew", "seal", "rotor", "flow", "gauge", "pipe"]
    rows = [row("plant", i, " ".join(rng.sample(words, rng.randint(1, 6)) + (["cavitation"] if i % 23 == 0 else [])))
            for i in range(300)]  # fmt: skip
    add(conn, schema, rows, copy=True)
    seen: list[str] = []
    real = conn.execute

    def spy(query, params=None, *args, **kwargs):
        if isinstance(params, dict) and "match" in params:
            seen.append(" ; ".join(params["match"]))
        return real(query, params, *args, **kwargs)

    queries = ["cavitation pump valve station pressure", "cavitation seal rotor flow gauge pipe crew", "pump valve"]
    for query in queries:
        for k in (1, 5, 20):
            monkeypatch.setattr(text_search, "PRUNED_POSTINGS", 10**9)
            full = ranking(conn, schema, "plant", query, k)
            assert len(full) == k
            monkeypatch.setattr(text_search, "PRUNED_POSTINGS", 20)
            for clauses in (64, 1):
                monkeypatch.setattr(text_search, "MAX_CLAUSES", clauses)
                monkeypatch.setattr(conn, "execute", spy)
                pruned = ranking(conn, schema, "plant", query, k)
                monkeypatch.setattr(conn, "execute", real)
                assert pruned == full, (query, k, clauses)
    assert any("&" in m for m in seen)  # some second pass matched combinations only


def test_concurrent_writers_keep_statistics_exact(conn, schema, pg_url):
    """Two connections COPY chunks of one tenant and chunk set at once (the same words, other chunk ids) while a
    third deletes another tenant's: no count is lost."""
    from concurrent.futures import ThreadPoolExecutor

    from embeddings_pipeline.store.db import connection

    add(conn, schema, [row("other", i, TEXTS[i % 4]) for i in range(200)], copy=True)

    def write(worker: int) -> None:
        with connection(pg_url) as c:
            for batch in range(5):
                rows = [row("acme", 1000 * worker + 100 * batch + i, f"{TEXTS[i % 4]} w{worker} b{batch}")
                        for i in range(50)]  # fmt: skip
                with c.transaction():
                    add(c, schema, rows, copy=True)

    def erase() -> None:
        with connection(pg_url) as c:
            for i in range(0, 200, 20):
                c.execute(sql.SQL("DELETE FROM {} WHERE tenant_id = 'other' AND ordinal < %s").format(
                    table(schema, "chunks")), (i,))  # fmt: skip

    with ThreadPoolExecutor(3) as pool:
        for future in [pool.submit(write, 1), pool.submit(write, 2), pool.submit(erase)]:
            future.result()
    assert_exact(conn, schema)
    assert {t: n for t, _, n, _ in stored(conn, schema)[1]}["acme"] == 500


def test_per_term_bounds_prune_exactly_with_repeats_ties_and_deletes(conn, schema, monkeypatch):
    """Each term's own bound (its most occurrences in one chunk, the fewest tokens of such a chunk) prunes the
    second pass, and the ranking stays that of scoring every match: words repeated up to five times in chunks of
    every length, identical chunks tied at the k-th score, the chunks that set a bound deleted (the bound stays,
    loose) and a chunk that raises it added."""
    rng = __import__("random").Random(11)
    words = ["pump", "valve", "station", "pressure", "crew", "seal", "rotor", "flow", "gauge", "pipe"]

    def text() -> str:
        out = [w for w in rng.sample(words, rng.randint(1, 5)) for _ in range(rng.choice([1, 1, 1, 2, 5]))]
        return " ".join(out + ["filler"] * rng.randint(0, 30) + (["cavitation"] if rng.random() < 0.05 else []))

    rows = [row("plant", i, text()) for i in range(250)] + [row("plant", 250 + i, "pump valve seal") for i in range(6)]
    add(conn, schema, rows, copy=True)
    queries = ["cavitation pump valve seal", "pump valve seal", "rotor flow gauge pipe crew cavitation", "pipe"]

    def check() -> None:
        assert_bounds(conn, schema)
        for query in queries:
            for k in (1, 3, 8, 30):
                monkeypatch.setattr(text_search, "PRUNED_POSTINGS", 10**9)
                full = ranking(conn, schema, "plant", query, k)
                monkeypatch.setattr(text_search, "PRUNED_POSTINGS", 5)
                for clauses in (64, 1):
                    monkeypatch.setattr(text_search, "MAX_CLAUSES", clauses)
                    assert ranking(conn, schema, "plant", query, k) == full, (query, k, clauses)

    check()
    tight = conn.execute(sql.SQL("SELECT max_tf FROM {} WHERE tenant_id = 'plant' AND lexeme = 'pump'").format(
        table(schema, "chunk_terms"))).fetchone()  # fmt: skip
    assert tight is not None and 1 < tight[0] < 256  # a real bound, not the default
    chunks = table(schema, "chunks")
    conn.execute(sql.SQL("DELETE FROM {} WHERE tenant_id = 'plant' AND text LIKE '%%pump pump%%'").format(chunks))
    check()
    add(conn, schema, [row("plant", 900, " ".join(["pump"] * 9))])
    check()
