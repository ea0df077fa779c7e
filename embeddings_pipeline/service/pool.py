"""The service's database connections: one `psycopg_pool` pool, autocommit, pgvector's `vector` registered.

A connection is checked (an empty query) before use only when it has been idle in the pool for more than
`IDLE_CHECK_S` seconds: a busy service does not pay a round trip per request for it, and a connection that may have
gone stale while idle (a restarted server, a dropped network path) is replaced before a request sees it. A
connection that breaks in use answers that request 503 and is discarded by the pool on its return.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Iterator

import psycopg
from psycopg_pool import ConnectionPool

from ..store.db import register_vector_type

IDLE_CHECK_S = 5.0


def _configure(conn: psycopg.Connection) -> None:
    register_vector_type(conn)


class ServicePool:
    """`connection()` lends a pooled connection and remembers when it came back, for the idle check."""

    def __init__(self, url: str, size: int, idle_check_s: float = IDLE_CHECK_S) -> None:
        self.idle_check_s = idle_check_s
        self._returned: weakref.WeakKeyDictionary[psycopg.Connection, float] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self.checks = 0  # connections checked before use (for tests)
        self.pool = ConnectionPool(
            url, min_size=min(size, 4), max_size=size, kwargs={"autocommit": True}, open=False,
            configure=_configure, check=self._check, name="embeddings-service",
        )  # fmt: skip

    def _check(self, conn: psycopg.Connection) -> None:
        with self._lock:
            returned = self._returned.get(conn)
        if returned is None or time.monotonic() - returned > self.idle_check_s:
            self.checks += 1
            ConnectionPool.check_connection(conn)

    @contextlib.contextmanager
    def connection(self, timeout: float = 10) -> Iterator[psycopg.Connection]:
        with self.pool.connection(timeout=timeout) as conn:
            try:
                yield conn
            finally:
                with self._lock:
                    self._returned[conn] = time.monotonic()

    def open(self) -> None:
        self.pool.open(wait=False)

    def close(self) -> None:
        self.pool.close()
