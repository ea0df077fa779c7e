"""Large tenants to partitions of their own: the move out of the shared partition (`promote_large`), a large
tenant's fill laid out in its own partition from the start (`laid_out_for_fill`), and the bulk HNSW build after
either, under the partition's advisory lock (`vector_tables.index_lock`), which every other builder try-locks.
Rows are moved, never re-embedded."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import psycopg
from psycopg import sql

from . import text_index
from .db import relation_exists, table
from .vector_tables import (
    create_search_indexes,
    index_lock,
    relkind,
    serves,
    shared_partition,
    tenant_index_threshold,
    tenant_partition,
)


def promote_large(conn: psycopg.Connection, schema: str, model_key: str, tenant_id: str | None = None) -> list[str]:
    """Give every tenant (or just `tenant_id`) with at least the threshold of vectors in the shared partition a
    partition of its own, with its HNSW index built in bulk when the model serves a tenant. Rows are moved, never
    re-embedded. Returns the tenants promoted."""
    promoted, building = _promote(conn, schema, model_key, tenant_id)
    _build_and_release(conn, schema, model_key, tenant_id, building)
    return promoted


@contextlib.contextmanager
def laid_out_for_fill(
    conn: psycopg.Connection, schema: str, model_key: str, tenant_id: str, large: bool
) -> Iterator[None]:
    """Around a tenant's fill: a `large` tenant (its chunk set holds at least the threshold) gets its partition
    of its own before its vectors are written, so each vector is written once instead of into the shared
    partition and then moved (the move cost ~17 µs a vector and leaves as many dead rows in the shared partition).
    The partition's lock is held through the fill, so no other run builds its graph half way; after the fill the
    graph is built in bulk (`promote_large`'s work, which also promotes a tenant that crossed the threshold
    during the fill). A failed fill leaves the partition without a graph; the next run builds it."""
    early: list[str] = []
    if large:
        early = _promote(conn, schema, model_key, tenant_id, early=True)[1]
    try:
        yield
    except BaseException:
        _release(conn, schema, early)
        raise
    later = _promote(conn, schema, model_key, tenant_id)[1]
    _build_and_release(conn, schema, model_key, tenant_id, early + later, analyze=early)


def _promote(
    conn: psycopg.Connection, schema: str, model_key: str, tenant_id: str | None, *, early: bool = False
) -> tuple[list[str], list[str]]:
    """Move the tenants over the threshold (with `early`, `tenant_id` whatever its count, unless it has its own
    partition already) to partitions of their own; returns (tenants moved, partitions whose lock is now held)."""
    shared = table(schema, shared_partition(model_key))
    building: list[str] = []
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{schema}:model:{model_key}",))
            if relkind(conn, schema, shared_partition(model_key)) != "r":
                return [], []
            if early:
                assert tenant_id is not None
                own = tenant_partition(model_key, tenant_id)
                if relation_exists(conn, schema, f"{own}_hnsw"):
                    return [], []  # it has its graph: new vectors go into it
                promoted = [] if relation_exists(conn, schema, own) else [tenant_id]
                if not promoted:  # its own already, without a graph (an earlier fill stopped): build it after
                    conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (index_lock(schema, own),))
                    building.append(own)
            else:
                rows = conn.execute(
                    sql.SQL(
                        "SELECT tenant_id FROM {} WHERE (%(t)s::text IS NULL OR tenant_id = %(t)s)"
                        " GROUP BY tenant_id HAVING count(*) >= %(n)s ORDER BY 1"
                    ).format(shared),
                    {"t": tenant_id, "n": tenant_index_threshold()},
                ).fetchall()
                promoted = [r[0] for r in rows]
            for tenant in promoted:
                partition = tenant_partition(model_key, tenant)
                # held past the commit, so no other run builds this graph in between (`create_search_indexes`)
                conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (index_lock(schema, partition),))
                building.append(partition)
                _move_to_own_partition(conn, schema, model_key, tenant)
    except BaseException:
        _release(conn, schema, building)
        raise
    return promoted, building


def _build_and_release(
    conn: psycopg.Connection,
    schema: str,
    model_key: str,
    tenant_id: str | None,
    building: list[str],
    analyze: Sequence[str] = (),
) -> None:
    """Build the graphs of the partitions just made (when the model serves), release their locks, then give the
    tenants with their own partition their own text index too."""
    # The graph is built after the move commits: the move locks the shared partition (ATTACH PARTITION) and
    # the model, which other tenants' runs write and register; the build locks only the new partition.
    try:
        if building and serves(conn, schema, model_key):
            with conn.transaction():
                create_search_indexes(conn, schema, model_key)
        for partition in analyze:  # filled after its move: the planner learns its size (and walks its graph)
            conn.execute(sql.SQL("ANALYZE {}").format(table(schema, partition)))
    finally:
        _release(conn, schema, building)
    # a large tenant's text search gets its own GIN index too (after the move commits)
    text_index.ensure_for_own_partitions(conn, schema, model_key, tenant_id)


def _release(conn: psycopg.Connection, schema: str, partitions: list[str]) -> None:
    for partition in partitions if not conn.broken else []:  # a lost connection released them already
        conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (index_lock(schema, partition),))


def _move_to_own_partition(conn: psycopg.Connection, schema: str, model_key: str, tenant_id: str) -> None:
    parent, shared = table(schema, f"vectors_{model_key}"), table(schema, shared_partition(model_key))
    own = table(schema, tenant_partition(model_key, tenant_id))
    conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS)").format(own, parent))
    conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM {} WHERE tenant_id = %s").format(own, shared), (tenant_id,))
    conn.execute(sql.SQL("DELETE FROM {} WHERE tenant_id = %s").format(shared), (tenant_id,))
    conn.execute(
        sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(parent, own, sql.Literal(tenant_id))
    )
    conn.execute(sql.SQL("ANALYZE {}").format(own))  # so the planner walks its graph from the first search on
