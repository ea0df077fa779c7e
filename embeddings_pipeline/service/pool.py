"""The service's database connections: one `psycopg_pool` pool, autocommit, pgvector's `vector` registered.

Connections are reused last-in, first-out: a request gets the connection the previous request returned, so a
steady caller's searches run on one warm backend (its caches and prepared statements hot) instead of visiting
every pooled connection in turn, as `psycopg_pool` lends them (a text search was ~0.7 ms slower on the rotating
connections than on one). The pool still opens, bounds (`size`) and replaces them.

A connection is checked (an empty query) before use only when it has been idle for more than `IDLE_CHECK_S`
seconds: a busy service does not pay a round trip per request for it, and a connection that may have gone stale
while idle (a restarted server, a dropped network path) is replaced before a request sees it. A connection that
breaks in use, or comes back inside a transaction, goes back to the pool, which discards or resets it.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Iterator

import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool, PoolTimeout

from ..store.db import register_vector_type

IDLE_CHECK_S = 5.0
WAIT_POLL_S = 0.05  # with every connection lent, how often a waiting request looks for one returned to us


def _configure(conn: psycopg.Connection) -> None:
    register_vector_type(conn)


class ServicePool:
    """`connection()` lends the most recently returned connection (else one from the pool) and remembers when
    each came back, for the idle check."""

    def __init__(self, url: str, size: int, idle_check_s: float = IDLE_CHECK_S) -> None:
        self.idle_check_s = idle_check_s
        self._returned: weakref.WeakKeyDictionary[psycopg.Connection, float] = weakref.WeakKeyDictionary()
        self._idle: list[psycopg.Connection] = []  # held out of the pool between requests, the newest last
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

    def _reuse(self) -> psycopg.Connection | None:
        """The newest idle connection, checked first if it sat idle too long (a bad one goes back to the pool)."""
        while True:
            with self._lock:
                if not self._idle:
                    return None
                conn = self._idle.pop()
            try:
                self._check(conn)
                return conn
            except psycopg.Error:
                self.pool.putconn(conn)  # broken: the pool discards it and opens another

    def _get(self, timeout: float) -> psycopg.Connection:
        """An idle connection of ours, else the pool's; while every connection is lent, whichever comes first:
        one returned to us (polled) or one the pool opens or gets back. PoolTimeout after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            conn = self._reuse()
            if conn is not None:
                return conn
            left = deadline - time.monotonic()
            try:
                return self.pool.getconn(timeout=max(min(left, WAIT_POLL_S), 0.001))
            except PoolTimeout:
                if left <= WAIT_POLL_S:
                    raise

    @contextlib.contextmanager
    def connection(self, timeout: float = 10) -> Iterator[psycopg.Connection]:
        conn = self._get(timeout)
        try:
            yield conn
        finally:
            with self._lock:
                self._returned[conn] = time.monotonic()
                keep = not conn.broken and conn.info.transaction_status == TransactionStatus.IDLE
                if keep:
                    self._idle.append(conn)
            if not keep:
                self.pool.putconn(conn)

    def open(self) -> None:
        self.pool.open(wait=False)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            self.pool.putconn(conn)
        self.pool.close()
