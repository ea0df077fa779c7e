"""The service's connection pool against the real PostgreSQL: last in, first out (a steady caller stays on one
warm backend), bounded, never waiting out its timeout while a connection sits idle, and a connection that went
bad while idle replaced before a request sees it."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from embeddings_pipeline.service.pool import ServicePool


@pytest.fixture()
def pool(pg_url):
    p = ServicePool(pg_url, 4)
    p.open()
    p.pool.wait(10)
    yield p
    p.close()


def pid(pool: ServicePool) -> int:
    with pool.connection() as conn:
        return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def test_back_to_back_requests_reuse_the_connection_returned_last(pool):
    assert len({pid(pool) for _ in range(12)}) == 1  # psycopg_pool alone would lend its 4 connections in turn


def test_concurrent_requests_get_their_own_connections_and_the_last_returned_is_lent_next(pool):
    held, release, pids = threading.Barrier(4), threading.Event(), {}

    def hold(i: int) -> None:
        with pool.connection() as conn:
            pids[i] = conn.info.backend_pid
            held.wait(5)
            release.wait(5)
            time.sleep(0.1 * i)

    threads = [threading.Thread(target=hold, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    held.wait(5)  # all three hold a connection at once
    release.set()
    for t in threads:
        t.join(5)
    assert len(set(pids.values())) == 3
    last = pids[2]  # thread 2 held its connection longest and returned it last
    with pool.connection() as conn:
        assert conn.info.backend_pid == last


def test_a_request_waits_for_a_returned_connection_not_for_its_timeout(pg_url):
    pool = ServicePool(pg_url, 2)
    pool.open()
    try:
        pool.pool.wait(10)
        started = threading.Barrier(3)

        def hold() -> None:
            with pool.connection():
                started.wait(5)
                time.sleep(0.3)

        threads = [threading.Thread(target=hold) for _ in range(2)]
        for t in threads:
            t.start()
        started.wait(5)  # both connections lent: the pool is at its size
        t0 = time.monotonic()
        with pool.connection(timeout=5) as conn:
            waited = time.monotonic() - t0
            assert conn.execute("SELECT 1").fetchone() == (1,)
        for t in threads:
            t.join(5)
        assert waited < 2  # it got a connection as one came back (about 0.3 s), long before its 5 s timeout
        assert pool.pool.get_stats()["pool_size"] == 2  # and the pool never grew past its size
    finally:
        pool.close()


def test_a_connection_broken_while_idle_is_replaced_before_use(pool, pg_url):
    first = pid(pool)
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (first,))
    pool.idle_check_s = 0.0  # it has sat idle "too long": checked before it is lent
    with pool.connection() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        assert conn.info.backend_pid != first


def test_a_connection_returned_inside_a_transaction_goes_back_to_the_pool(pool):
    with pool.connection() as conn:
        conn.execute("BEGIN")
        leaked = conn
    assert leaked not in pool._idle  # the pool rolls it back before lending it again
    with pool.connection() as conn:
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
