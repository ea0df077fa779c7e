"""Tenant-aware vector storage: a small tenant beside a large one still gets the exact top-k; a large tenant's
own partition and HNSW graph answer near-exactly; the earlier one-table layout converts in place."""

from __future__ import annotations

import numpy as np
import pytest
from psycopg import sql

from embeddings_pipeline.providers.base import ModelIdentity
from embeddings_pipeline.search import search_vector
from embeddings_pipeline.store import promotion, vector_tables, vectors

DIMS = 16
IDENTITY = ModelIdentity("sentence-transformers", "layout-test", "rev1", DIMS, True, 256)
KEY, VT = IDENTITY.model_key, IDENTITY.vector_table
SIZES = {"big": 1500, "medium": 300, "o'brien/é 小": 30}  # the small tenant has an odd id
CENTERS = np.random.default_rng(7).normal(size=(4, DIMS))


def clustered(rng: np.random.Generator, n: int) -> np.ndarray:
    """Vectors in a few tight clusters (real embeddings cluster; uniform vectors would hide the problem)."""
    v = CENTERS[rng.integers(0, len(CENTERS), n)] + 0.15 * rng.normal(size=(n, DIMS))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def write_tenant(
    conn, schema: str, tenant: str, vecs: np.ndarray, identity: ModelIdentity = IDENTITY, prefix: str = "c"
) -> list[str]:
    ids = [f"{tenant}:{prefix}{i}" for i in range(len(vecs))]
    with conn.transaction():
        conn.execute(sql.SQL("INSERT INTO {}.tenants (tenant_id) VALUES (%s) ON CONFLICT DO NOTHING").format(
            sql.Identifier(schema)), (tenant,))  # fmt: skip
        with conn.cursor().copy(sql.SQL(
            "COPY {}.chunks (tenant_id, chunk_id, block_id, doc_id, ordinal, text, content_hash, token_count, "
            "chunker_version) FROM STDIN").format(sql.Identifier(schema))) as copy:  # fmt: skip
            for i, cid in enumerate(ids):
                copy.write_row((tenant, cid, f"b{i}", f"{prefix}doc{i // 10}", i % 10, f"text {prefix}{i}",
                                f"{prefix}h{i}", 3, "set"))  # fmt: skip
    pending = [vectors.PendingChunk(cid, f"{prefix}h{i}", f"text {prefix}{i}") for i, cid in enumerate(ids)]
    vectors.write_vectors(conn, schema, identity, tenant, pending, vecs, "run-1")
    return ids


@pytest.fixture()
def corpus(conn, schema, monkeypatch):
    """Three tenants of very different sizes in one model; the threshold puts only `big` in its own partition."""
    monkeypatch.setenv("EMBEDDINGS_TENANT_INDEX_THRESHOLD", "500")
    vector_tables.register_model(conn, schema, IDENTITY)
    rng = np.random.default_rng(11)
    data = {}
    for tenant, n in SIZES.items():
        vecs = clustered(rng, n)
        data[tenant] = (write_tenant(conn, schema, tenant, vecs), vecs)
        assert promotion.promote_large(conn, schema, KEY, tenant) == ([tenant] if n >= 500 else [])
    conn.execute(sql.SQL("UPDATE {}.tenants SET active_model_key = %s").format(sql.Identifier(schema)), (KEY,))
    vector_tables.ensure_search_index(conn, schema, KEY)
    conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, VT)))  # the planner knows the sizes
    return data


def exact_top(ids: list[str], vecs: np.ndarray, query: np.ndarray, k: int) -> list[str]:
    order = np.argsort(-(vecs @ query), kind="stable")[:k]
    return [ids[i] for i in order]


def hits(conn, schema, tenant: str, query: np.ndarray, k: int) -> list[str]:
    return [h.chunk_id for h in search_vector(conn, schema, VT, tenant, query, k)]


def test_each_tenant_has_the_layout_its_size_calls_for(corpus, conn, schema):
    parts = vector_tables.own_partitions(conn, schema, KEY)
    assert parts == [vector_tables.tenant_partition(KEY, "big")]
    indexes = {r[0] for r in conn.execute(
        "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND indexdef LIKE '%%hnsw%%'", (schema,))}  # fmt: skip
    assert indexes == {f"{parts[0]}_hnsw"}  # the shared partition has no graph: small tenants are scanned exactly
    shared = conn.execute(sql.SQL("SELECT DISTINCT tenant_id FROM {}").format(
        sql.Identifier(schema, vector_tables.shared_partition(KEY)))).fetchall()  # fmt: skip
    assert {r[0] for r in shared} == {"medium", "o'brien/é 小"}


def test_small_and_medium_tenants_get_the_exact_top_k_beside_a_large_one(corpus, conn, schema):
    rng = np.random.default_rng(3)
    for tenant in ("medium", "o'brien/é 小"):
        ids, vecs = corpus[tenant]
        for query in clustered(rng, 20):  # queries fall where the big tenant's vectors are dense too
            assert hits(conn, schema, tenant, query, 10) == exact_top(ids, vecs, query, 10)
        assert len(hits(conn, schema, tenant, clustered(rng, 1)[0], 100)) == min(100, len(ids))


def test_the_large_tenant_is_near_exact_on_its_own_graph(corpus, conn, schema):
    ids, vecs = corpus["big"]
    rng = np.random.default_rng(5)
    recalls = []
    for query in clustered(rng, 20):
        found = hits(conn, schema, "big", query, 10)
        assert len(found) == 10 and all(cid.startswith("big:") for cid in found)
        recalls.append(len(set(found) & set(exact_top(ids, vecs, query, 10))) / 10)
    assert np.mean(recalls) >= 0.95


def test_a_tenant_never_reads_another_tenants_vectors(corpus, conn, schema):
    query = clustered(np.random.default_rng(9), 1)[0]
    for tenant in SIZES:
        assert all(cid.startswith(f"{tenant}:") for cid in hits(conn, schema, tenant, query, 50))
    assert hits(conn, schema, "o'brien/é", query, 10) == []  # a prefix of a tenant id is another tenant


def test_the_one_table_layout_becomes_partitions_in_place(conn, schema, monkeypatch):
    """A database of the earlier layout (one table and one HNSW graph for every tenant): the next run keeps every
    vector, moves the large tenant to its own partition, and search answers the same."""
    t = sql.Identifier(schema, VT)
    vector_tables.register_model(conn, schema, IDENTITY)  # registers the model; then rebuild the old layout by hand
    conn.execute(sql.SQL("DROP TABLE {}").format(t))
    conn.execute(sql.SQL(
        "CREATE TABLE {} (tenant_id text NOT NULL, chunk_id text NOT NULL, content_hash text, embedding vector({}),"
        " model_key text, run_id text, embedded_at timestamptz DEFAULT now(), PRIMARY KEY (tenant_id, chunk_id))"
    ).format(t, sql.Literal(DIMS)))  # fmt: skip
    conn.execute(sql.SQL("CREATE INDEX {} ON {} (tenant_id, content_hash)").format(sql.Identifier(f"{KEY}_hash"), t))
    conn.execute(sql.SQL("CREATE INDEX {} ON {} USING hnsw (embedding vector_cosine_ops)").format(
        sql.Identifier(f"{KEY}_hnsw"), t))  # fmt: skip
    rng = np.random.default_rng(13)
    made = {tenant: clustered(rng, n) for tenant, n in (("big", 600), ("s", 40))}
    ids = {tenant: write_tenant(conn, schema, tenant, vecs) for tenant, vecs in made.items()}
    query = clustered(rng, 1)[0]
    small_before = hits(conn, schema, "s", query, 10)
    rows = sql.SQL("SELECT tenant_id, chunk_id, embedding::text FROM {} ORDER BY 1, 2").format(t)
    rows_before = conn.execute(rows).fetchall()

    monkeypatch.setenv("EMBEDDINGS_TENANT_INDEX_THRESHOLD", "500")
    vector_tables.register_model(conn, schema, IDENTITY)
    kind = conn.execute("SELECT relkind::text FROM pg_class WHERE oid = to_regclass(%s)", (f'"{schema}"."{VT}"',))
    assert kind.fetchone() == ("p",)
    assert promotion.promote_large(conn, schema, KEY) == ["big"]
    assert conn.execute(rows).fetchall() == rows_before  # every vector kept, none re-embedded
    assert hits(conn, schema, "s", query, 10) == small_before == exact_top(ids["s"], made["s"], query, 10)
    conn.execute(sql.SQL("UPDATE {}.tenants SET active_model_key = %s").format(sql.Identifier(schema)), (KEY,))
    vector_tables.ensure_search_index(conn, schema, KEY)
    found = hits(conn, schema, "big", query, 10)
    assert len(set(found) & set(exact_top(ids["big"], made["big"], query, 10))) >= 9
    vector_tables.register_model(conn, schema, IDENTITY)  # idempotent
    assert vector_tables.own_partitions(conn, schema, KEY) == [vector_tables.tenant_partition(KEY, "big")]


def test_other_tenants_write_while_a_large_tenants_graph_is_built(conn, schema, store, monkeypatch):
    """The HNSW build of a tenant that just got its own partition runs after the move commits, holding only that
    partition: another tenant's vectors go into the shared partition meanwhile, without waiting for the build."""
    import threading
    import time

    from embeddings_pipeline.store.db import connect, relation_exists

    wide = ModelIdentity("sentence-transformers", "layout-build", "rev1", 384, True, 256)
    monkeypatch.setenv("EMBEDDINGS_TENANT_INDEX_THRESHOLD", "5000")
    vector_tables.register_model(conn, schema, wide)
    rng = np.random.default_rng(3)
    for tenant, n in (("big", 8000), ("small", 1)):
        write_tenant(conn, schema, tenant, rng.normal(size=(n, 384)).astype(np.float32), wide)
    conn.execute(sql.SQL("UPDATE {}.tenants SET active_model_key = %s").format(sql.Identifier(schema)),
                 (wide.model_key,))  # fmt: skip
    promoting = connect(store.url())
    done: list = []
    promote = lambda: done.append(promotion.promote_large(promoting, schema, wide.model_key, "big"))  # noqa: E731
    builder = threading.Thread(target=promote)
    builder.start()
    try:
        building = False
        for _ in range(3000):  # until the graph's build is under way
            row = conn.execute("SELECT count(*) FROM pg_stat_progress_create_index WHERE pid = %s",
                               (promoting.info.backend_pid,)).fetchone()  # fmt: skip
            if row and row[0]:
                building = True
                break
            time.sleep(0.01)
        assert building
        conn.execute("SET lock_timeout = '300ms'")  # the build takes longer: waiting for it would fail here
        write_tenant(conn, schema, "small", rng.normal(size=(3, 384)).astype(np.float32), wide, prefix="late")
        still = conn.execute("SELECT count(*) FROM pg_stat_progress_create_index WHERE pid = %s",
                             (promoting.info.backend_pid,)).fetchone()  # fmt: skip
        conn.execute("SET lock_timeout = 0")
    finally:
        builder.join(timeout=120)
        promoting.close()
    assert still is not None and still[0] == 1  # written while the graph was still being built
    assert done == [["big"]]
    own = vector_tables.tenant_partition(wide.model_key, "big")
    assert relation_exists(conn, schema, f"{own}_hnsw")


def test_a_large_tenants_vectors_are_written_once_into_its_own_partition(conn, schema, monkeypatch):
    """A tenant whose chunk set is past the threshold gets its own partition before its fill, so its vectors are
    written there once (never into the shared partition and moved); the graph is built in bulk after the fill,
    and no other run builds it half way. A fill that fails leaves the partition, and the next run completes it."""
    from embeddings_pipeline.pipeline import steps
    from embeddings_pipeline.store.db import connect, relation_exists

    from .standin_server import StandinServer
    from .test_shards import chunked

    monkeypatch.setenv("EMBEDDINGS_TENANT_INDEX_THRESHOLD", "200")
    monkeypatch.setenv("EMBEDDINGS_RETRY_BASE_DELAY", "0.01")
    with StandinServer(dims=384) as standin:
        monkeypatch.setenv("OLLAMA_HOST", standin.url)
        scope, provider, chunk_set = chunked(conn, schema, 300)
        key = provider.identity.model_key
        vector_tables.register_model(conn, schema, provider.identity, provider.spec)
        conn.execute(sql.SQL("UPDATE {}.tenants SET active_model_key = %s").format(sql.Identifier(schema)), (key,))
        # every row the shared partition receives is logged by a trigger of the test's own
        conn.execute(sql.SQL(
            "CREATE TABLE {s}.shared_log (tenant_id text);"
            " CREATE FUNCTION {s}.log_shared() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN INSERT INTO {log} VALUES (NEW.tenant_id); RETURN NEW; END $$;"
            " CREATE TRIGGER log_rows BEFORE INSERT ON {shared} FOR EACH ROW EXECUTE FUNCTION {s}.log_shared()"
        ).format(s=sql.Identifier(schema), log=sql.Identifier(schema, "shared_log"),
                 shared=sql.Identifier(schema, vector_tables.shared_partition(key))))  # fmt: skip
        own = vector_tables.tenant_partition(key, "big")
        other = connect(conn.info.dsn)  # another run's model registration, during the fill: builds no graph
        graph_during_fill: list[bool] = []
        original = steps.embed_pending

        def embed_then_register(*args, **kwargs):
            original(*args, **kwargs)
            vector_tables.register_model(other, schema, provider.identity, provider.spec)
            graph_during_fill.append(relation_exists(conn, schema, f"{own}_hnsw"))

        monkeypatch.setattr(steps, "embed_pending", embed_then_register)
        standin.faults.wrong_dims = 8  # the first fill fails: the partition is made, no vector is written
        with pytest.raises(steps.EmbeddingIncomplete):
            steps.fill(scope, provider, chunk_set, "run-1")
        standin.faults.wrong_dims = None
        assert relation_exists(conn, schema, own) and not relation_exists(conn, schema, f"{own}_hnsw")
        graph_during_fill.clear()
        report = steps.fill(scope, provider, chunk_set, "run-2")
        other.close()
    assert (report.embedded, report.failed) == (300, 0)
    assert graph_during_fill == [False]  # the other session left the graph to the filling run
    assert relation_exists(conn, schema, f"{own}_hnsw")  # built after the fill
    logged = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "shared_log")))
    assert logged.fetchone()[0] == 0  # not one of its vectors went through the shared partition
    rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, own))).fetchone()
    stats = conn.execute("SELECT reltuples FROM pg_class WHERE oid = to_regclass(%s)", (f'"{schema}"."{own}"',))
    assert rows[0] == 300 and stats.fetchone()[0] == 300  # analyzed after its fill: the planner knows its size
