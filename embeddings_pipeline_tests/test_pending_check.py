"""The no-op check's pending test (`backlog.has_pending_vectors`, used by `work_left`) gives the counting path's
answer in every case a chunk can be pending in: no vector row, a NULL vector, a vector of other text (stale), a
row without a hash; in the shared partition and in a tenant's own one, and with the model's table absent. Its
partial index is made (and repaired) by `register_model` and reaches a partition made later."""

from __future__ import annotations

import numpy as np
import pytest
from psycopg import sql

from embeddings_pipeline.providers.base import ModelIdentity
from embeddings_pipeline.store import backlog, promotion, vector_tables, vectors

DIMS = 8
IDENTITY = ModelIdentity("sentence-transformers", "pending-test", "rev1", DIMS, True, 256)
KEY, VT = IDENTITY.model_key, IDENTITY.vector_table
SET = "set-a"
TENANTS = {"big": 40, "o'small/é": 6}  # `big` gets a partition of its own (threshold 20), the other shares one


def ident(schema: str, name: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))


def add_chunks(conn, schema: str, tenant: str, n: int, chunk_set: str = SET) -> list[vectors.PendingChunk]:
    with conn.transaction():
        conn.execute(sql.SQL("INSERT INTO {} (tenant_id) VALUES (%s) ON CONFLICT DO NOTHING").format(
            ident(schema, "tenants")), (tenant,))  # fmt: skip
        with conn.cursor().copy(sql.SQL(
            "COPY {} (tenant_id, chunk_id, block_id, doc_id, ordinal, text, content_hash, token_count, "
            "chunker_version) FROM STDIN").format(ident(schema, "chunks"))) as copy:  # fmt: skip
            for i in range(n):
                copy.write_row((tenant, f"{chunk_set}:c{i}", f"b{i}", "d", i, f"text {i}", f"h{i}", 2, chunk_set))
    return [vectors.PendingChunk(f"{chunk_set}:c{i}", f"h{i}", f"text {i}") for i in range(n)]


def both(conn, schema: str, tenant: str, chunk_set: str = SET) -> tuple[int, bool]:
    count = backlog.pending_vectors(conn, schema, tenant, VT, chunk_set)
    has = backlog.has_pending_vectors(conn, schema, tenant, VT, chunk_set)
    assert has == (count > 0), (tenant, count, has)
    return count, has


@pytest.fixture()
def filled(conn, schema, monkeypatch):
    monkeypatch.setenv("EMBEDDINGS_TENANT_INDEX_THRESHOLD", "20")
    chunks = {tenant: add_chunks(conn, schema, tenant, n) for tenant, n in TENANTS.items()}
    for tenant in TENANTS:  # before the table exists every chunk is pending
        assert both(conn, schema, tenant) == (TENANTS[tenant], True)
    vector_tables.register_model(conn, schema, IDENTITY)
    rng = np.random.default_rng(3)
    for tenant, pending in chunks.items():
        assert both(conn, schema, tenant) == (len(pending), True)  # a table, but no rows
        vecs = rng.normal(size=(len(pending), DIMS)).astype(np.float32)
        vectors.write_vectors(conn, schema, IDENTITY, tenant, pending, vecs, "run-1")
    assert promotion.promote_large(conn, schema, KEY) == ["big"]
    conn.execute(sql.SQL("ANALYZE {}").format(ident(schema, VT)))
    return chunks


@pytest.mark.parametrize("tenant", list(TENANTS))
def test_every_way_of_being_pending_is_seen_by_both_paths(filled, conn, schema, tenant):
    v = ident(schema, VT)
    assert both(conn, schema, tenant) == (0, False)
    assert both(conn, schema, tenant, "another-set") == (0, False)  # a set with no chunks has no work
    cases = [
        ("DELETE FROM {} WHERE tenant_id = %s AND chunk_id = %s", "set-a:c1"),  # no vector row
        ("UPDATE {} SET embedding = NULL WHERE tenant_id = %s AND chunk_id = %s", "set-a:c2"),  # a NULL vector
        ("UPDATE {} SET content_hash = 'other' WHERE tenant_id = %s AND chunk_id = %s", "set-a:c3"),  # stale
        ("UPDATE {} SET content_hash = NULL WHERE tenant_id = %s AND chunk_id = %s", "set-a:c4"),  # no hash
    ]
    for done, (statement, chunk_id) in enumerate(cases, start=1):
        conn.execute(sql.SQL(statement).format(v), (tenant, chunk_id))
        assert both(conn, schema, tenant) == (done, True), statement
    other = next(t for t in TENANTS if t != tenant)
    assert both(conn, schema, other) == (0, False)  # another tenant's gaps are not this one's work
    add_chunks(conn, schema, tenant, 2, "set-b")  # a chunk of another set is not work for this one
    assert both(conn, schema, tenant, "set-b") == (2, True)
    assert both(conn, schema, tenant) == (len(cases), True)


def test_a_vector_of_a_chunk_gone_is_not_work(filled, conn, schema):
    conn.execute(sql.SQL("DELETE FROM {} WHERE tenant_id = 'big' AND chunk_id = 'set-a:c0'").format(
        ident(schema, "chunks")))  # fmt: skip
    assert both(conn, schema, "big") == (0, False)  # an orphan vector: the run deletes it, nothing to embed


def tables_with_current_index(conn, schema: str) -> set[str]:
    """The tables of `schema` with the index of the rows holding a vector (the parent's and each partition's)."""
    rows = conn.execute(
        "SELECT t.relname FROM pg_index x JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n"
        " ON n.oid = t.relnamespace WHERE n.nspname = %s AND pg_get_indexdef(x.indexrelid) LIKE %s",
        (schema, "%(tenant_id, chunk_id) INCLUDE (content_hash) WHERE (embedding IS NOT NULL)"),
    ).fetchall()
    return {r[0] for r in rows}


def test_the_partial_index_covers_every_partition_and_is_repaired(filled, conn, schema):
    every = {VT, vector_tables.shared_partition(KEY), vector_tables.tenant_partition(KEY, "big")}
    assert tables_with_current_index(conn, schema) == every  # the promoted tenant's partition has it too
    conn.execute(sql.SQL("DROP INDEX {}").format(ident(schema, f"{KEY}_current")))
    assert tables_with_current_index(conn, schema) == set()
    vector_tables.register_model(conn, schema, IDENTITY)  # the repair at the start of every embeddings step
    assert tables_with_current_index(conn, schema) == every
    assert both(conn, schema, "big") == (0, False)
