"""Connections. Every statement that names a schema or table builds it with psycopg.sql identifiers."""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import psycopg
from psycopg import sql


def connect(url: str, *, autocommit: bool = True) -> psycopg.Connection:
    """A connection with pgvector's `vector` type registered (the extension is created if missing).

    Autocommit by default: each step commits its own `with conn.transaction()` blocks, so progress made
    before an interruption is kept and no transaction stays open between batches.
    """
    conn = psycopg.connect(url, autocommit=autocommit)
    try:
        register_vector_type(conn, create=True)
    except BaseException:
        conn.close()
        raise
    return conn


_VECTOR_TYPE = "SELECT oid, typarray FROM pg_type WHERE oid = to_regtype('vector')"


def register_vector_type(conn: psycopg.Connection, *, create: bool = False) -> None:
    """Load and dump `vector` columns as numpy arrays: one catalog query (pgvector's `register_vector` makes four,
    for types this project never uses: ~2 ms a connection). With `create`, CREATE EXTENSION when it is missing."""
    from pgvector.psycopg.vector import register_vector_info
    from psycopg.types import TypeInfo

    with conn.transaction():
        row = conn.execute(_VECTOR_TYPE).fetchone()
        if row is None and create:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            row = conn.execute(_VECTOR_TYPE).fetchone()
    if row is None:
        raise psycopg.ProgrammingError("the pgvector type `vector` is not in the database (CREATE EXTENSION vector)")
    register_vector_info(conn, TypeInfo("vector", row[0], row[1], regtype="vector"))


@contextmanager
def connection(url: str) -> Iterator[psycopg.Connection]:
    conn = connect(url)
    try:
        yield conn
    finally:
        conn.close()


def table(schema: str, name: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))


def relation_exists(conn: psycopg.Connection, schema: str, name: str) -> bool:
    """Whether table, view or index `schema.name` exists (no lock taken)."""
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}"."{name}"',)).fetchone()
    return bool(row and row[0])


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")


def source_parts(schema: str) -> tuple[str, str]:
    """(schema, name) of the source of documents: EMBEDDINGS_SOURCE_RELATION (`name` or `schema.name`, any table
    or view with the documents columns) or the pipeline's own `documents` table."""
    configured = os.environ.get("EMBEDDINGS_SOURCE_RELATION", "").strip()
    if not configured:
        return schema, "documents"
    parts = configured.split(".")
    if len(parts) > 2 or not all(_NAME.match(p) for p in parts):
        raise ValueError(f"EMBEDDINGS_SOURCE_RELATION={configured!r} is not `name` or `schema.name`")
    return (parts[0], parts[1]) if len(parts) == 2 else (schema, parts[0])


def source_relation(schema: str) -> sql.Composed:
    """The relation every read of documents goes through (writes by `ingest` go to `documents`)."""
    return table(*source_parts(schema))


class TenantBusy(RuntimeError):
    """Another run holds the tenant's lock for longer than we are willing to wait."""


@contextmanager
def session_lock(
    conn: psycopg.Connection, key: tuple[str, str], timeout_s: float = math.inf, *, shared: bool = False,
    busy: Exception | None = None,
) -> Iterator[None]:
    """A session-level advisory lock on `key`, polled with backoff: never waited for inside a statement, where the
    session would hold a snapshot that a CREATE INDEX CONCURRENTLY of the lock's holder waits out (a deadlock).
    Raises `busy` (default TimeoutError) after `timeout_s`."""
    take, release = (
        ("pg_try_advisory_lock_shared", "pg_advisory_unlock_shared") if shared else
        ("pg_try_advisory_lock", "pg_advisory_unlock")
    )  # fmt: skip
    try_sql = sql.SQL("SELECT {}(hashtext(%s), hashtext(%s))").format(sql.Identifier(take))
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while not conn.execute(try_sql, key).fetchone()[0]:  # type: ignore[index]
        if time.monotonic() >= deadline:
            raise busy or TimeoutError(f"advisory lock {key!r} still held after {timeout_s:g}s")
        time.sleep(delay)
        delay = min(1.0, delay * 2)
    try:
        yield
    finally:
        if not conn.broken:  # a lost connection released it already
            conn.execute(sql.SQL("SELECT {}(hashtext(%s), hashtext(%s))").format(sql.Identifier(release)), key)


@contextmanager
def tenant_lock(
    conn: psycopg.Connection, schema: str, tenant_id: str, timeout_s: float | None = None, *, shared: bool = False
) -> Iterator[None]:
    """Session-level advisory lock: one writer per tenant, whether a Dagster run or a CLI command.

    `shared` is the shard processes' lock (`embed-shard`): any number of them hold it together, never beside a
    run's exclusive one. Waits up to `timeout_s` (EMBEDDINGS_LOCK_TIMEOUT, default 600 s), then raises TenantBusy.
    """
    if timeout_s is None:
        timeout_s = float(os.environ.get("EMBEDDINGS_LOCK_TIMEOUT", "600"))
    holder = "a run" if shared else "another run or shard process"
    busy = TenantBusy(f"tenant {tenant_id!r} is locked by {holder} (waited {timeout_s:g}s)")
    with session_lock(conn, (f"{schema}:lock", tenant_id), timeout_s, shared=shared, busy=busy):
        yield


def copy_rows(
    conn: psycopg.Connection, schema: str, name: str, columns: Sequence[str], rows: Iterable[Sequence[object]]
) -> int:
    """COPY `rows` into `schema.name` (text format); returns how many were written."""
    copy_sql = sql.SQL("COPY {} ({}) FROM STDIN").format(
        table(schema, name), sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    n = 0
    with conn.cursor().copy(copy_sql) as copy:
        for row in rows:
            copy.write_row(row)
            n += 1
    return n

