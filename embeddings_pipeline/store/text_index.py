"""A GIN index of one large tenant's chunk tsvectors (a partial index: `WHERE tenant_id = <the tenant>`).

The shared GIN index on `chunks.tsv` holds every tenant's postings: a scan of a common word reads that word's
postings of all tenants, and ANDing the tenant's own lexeme reads the tenant's postings again (133k entries for
the largest of 1M chunks), once per scan. A tenant's own index holds only its postings, so a scan reads the
word's postings within the tenant and nothing else (bench/search_scale.py: 4x less time on a common word's scan).

The tenants that get one are those with a vector partition of their own (`promotion.promote_large`, from
EMBEDDINGS_TENANT_INDEX_THRESHOLD vectors): small tenants stay on the shared index, where the lexeme bounds
their cost. The index is built without blocking writers (CREATE INDEX CONCURRENTLY) when the connection is in
autocommit and idle; a build that failed half way (an invalid index) is dropped and built again. Text search
uses it only when it is valid (`search/text.py` reads that with the query's term statistics).
"""

from __future__ import annotations

import hashlib
from contextlib import nullcontext

import psycopg
from psycopg import sql

from .db import relation_exists, session_lock, table
from .vector_tables import own_partitions, tenant_partition


def index_name(tenant_id: str) -> str:
    """The tenant's text index (tenant ids are data: they never become identifiers themselves)."""
    return "chunks_tsv_" + hashlib.sha256(tenant_id.encode()).hexdigest()[:20]


def qualified(schema: str, tenant_id: str) -> str:
    """The index's name as `to_regclass` reads it."""
    return f'"{schema}"."{index_name(tenant_id)}"'


def _state(conn: psycopg.Connection, schema: str, tenant_id: str) -> bool | None:
    """True when the tenant's index is valid, False when it exists invalid, None when it does not exist."""
    row = conn.execute(
        "SELECT x.indisvalid FROM pg_index x WHERE x.indexrelid = to_regclass(%s)", (qualified(schema, tenant_id),)
    ).fetchone()
    return None if row is None else bool(row[0])


def ensure(conn: psycopg.Connection, schema: str, tenant_ids: list[str]) -> list[str]:
    """Build the text index of each tenant that has none (or an invalid one); returns the tenants built."""
    concurrently = conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    how = sql.SQL("CONCURRENTLY " if concurrently else "")
    built = []
    for tenant in tenant_ids:
        if _state(conn, schema, tenant):
            continue
        # One concurrent build on `chunks` at a time: two deadlock (seen with two runs promoting tenants at
        # once), each waiting out the other's transaction (PostgreSQL exempts only builds without a predicate).
        with session_lock(conn, (f"{schema}:text-index", "build")) if concurrently else nullcontext():
            state = _state(conn, schema, tenant)  # again: another run may have built it meanwhile
            if state:
                continue
            name = table(schema, index_name(tenant))
            if state is False:
                conn.execute(sql.SQL("DROP INDEX {}{}").format(how, name))
            conn.execute(
                sql.SQL("CREATE INDEX {}IF NOT EXISTS {} ON {} USING gin (tsv) WHERE tenant_id = {}").format(
                    how, sql.Identifier(index_name(tenant)), table(schema, "chunks"), sql.Literal(tenant)
                )
            )
        built.append(tenant)
    return built


def ensure_for_own_partitions(
    conn: psycopg.Connection, schema: str, model_key: str, tenant_id: str | None = None
) -> list[str]:
    """`ensure` for every tenant (or just `tenant_id`) with a vector partition of its own for the model."""
    if tenant_id is not None:
        own = relation_exists(conn, schema, tenant_partition(model_key, tenant_id))
        return ensure(conn, schema, [tenant_id]) if own else []
    tenants = []
    for partition in own_partitions(conn, schema, model_key):
        row = conn.execute(sql.SQL("SELECT tenant_id FROM {} LIMIT 1").format(table(schema, partition))).fetchone()
        if row is not None:
            tenants.append(row[0])
    return ensure(conn, schema, tenants)
