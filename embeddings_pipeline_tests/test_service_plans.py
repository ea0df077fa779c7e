"""The service's own cost per search (`service/plans.py`, `service/pool.py`): a tenant's serving plan (model and
chunk set) is read once per TTL, a switch made behind the service's back is seen when the plan expires, a switch
through `activate_model` (its NOTIFY) at once; pooled connections are checked only after sitting idle. Real
PostgreSQL, the bundled model, the app through Starlette's TestClient."""

from __future__ import annotations

import time

import pytest
from psycopg import sql
from starlette.testclient import TestClient

from embeddings_pipeline.search import search_mode
from embeddings_pipeline.service.app import create_app
from embeddings_pipeline.service.ratelimit import RateLimiter
from embeddings_pipeline.store.db import table
from embeddings_pipeline.store.tenants import activate_model, tenant_settings

from . import test_service
from .test_service import ACME, bearer, hits_of

QUERY = "XJ-9000 impeller"

acme_token = test_service.acme_token  # the fixture: ACME alone, embedded, and its token


def _set_behind_the_back(conn, schema: str, chunk_set: str) -> None:
    """A switch by plain SQL: no NOTIFY, only the TTL makes the service see it."""
    conn.execute(
        sql.SQL("UPDATE {} SET active_chunker_version = %s WHERE tenant_id = %s").format(table(schema, "tenants")),
        (chunk_set, ACME),
    )


@pytest.mark.parametrize("mode", ["dense", "text", "hybrid"])
def test_a_remembered_plan_answers_what_search_mode_returns(store, conn, schema, provider, acme_token, mode):
    with TestClient(create_app(store.database, limiter=RateLimiter(0), plan_cache_s=60)) as client:
        plans = client.app.state.service.plans
        for query in (QUERY, "zebras near the harbour", QUERY):
            r = client.post("/v1/search", json={"query": query, "k": 5, "mode": mode}, headers=bearer(acme_token))
            assert r.status_code == 200, r.text
            expected = search_mode(conn, schema, provider, ACME, query, 5, mode)
            assert hits_of(r.json()) == [tuple(h.as_dict().values())[:6] for h in expected] and expected
        assert plans.reads == 1


def test_a_model_switch_is_seen_within_the_ttl_and_at_once_when_announced(store, conn, schema, acme_token):
    settings = tenant_settings(conn, schema, ACME)
    model_key, chunk_set = settings.active_model_key, settings.active_chunk_set
    assert model_key and chunk_set
    with TestClient(create_app(store.database, limiter=RateLimiter(0), plan_cache_s=30)) as client:
        service = client.app.state.service
        assert service.listener.listening.wait(10)
        now = [1000.0]
        service.plans.clock = lambda: now[0]

        def ask() -> list[tuple]:
            r = client.post("/v1/search", json={"query": QUERY, "mode": "text"}, headers=bearer(acme_token))
            assert r.status_code == 200, r.text
            return hits_of(r.json())

        found = ask()
        assert found
        _set_behind_the_back(conn, schema, "a-chunk-set-with-no-chunks")
        now[0] += 29
        assert ask() == found  # the remembered plan, until it expires
        now[0] += 2
        assert ask() == []  # read again: the switched-to chunk set holds nothing
        assert activate_model(conn, schema, ACME, model_key, chunk_set)  # NOTIFY on commit
        deadline = time.monotonic() + 3.0
        while (answer := ask()) == [] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert answer == found  # heard at once: the clock did not move


def test_plan_cache_off_reads_the_plan_on_every_request(store, conn, schema, acme_token):
    with TestClient(create_app(store.database, limiter=RateLimiter(0), plan_cache_s=0, token_cache_s=0)) as client:
        service = client.app.state.service
        assert service.listener is None
        r = client.post("/v1/search", json={"query": QUERY, "mode": "text"}, headers=bearer(acme_token))
        assert r.status_code == 200 and hits_of(r.json())
        _set_behind_the_back(conn, schema, "a-chunk-set-with-no-chunks")
        r = client.post("/v1/search", json={"query": QUERY, "mode": "text"}, headers=bearer(acme_token))
        assert r.status_code == 200 and hits_of(r.json()) == [] and service.plans.reads == 2


def test_pooled_connections_are_checked_only_after_sitting_idle(store, acme_token):
    with TestClient(create_app(store.database, limiter=RateLimiter(0))) as client:
        pool = client.app.state.service.pool
        ask = lambda: client.post("/v1/search", json={"query": QUERY, "mode": "text"}, headers=bearer(acme_token))  # noqa: E731
        pool.pool.wait(10)
        for _ in range(pool.pool.get_stats()["pool_size"] + 1):  # each connection lent once (checked: never back yet)
            assert ask().status_code == 200
        before = pool.checks
        for _ in range(10):
            assert ask().status_code == 200
        assert pool.checks == before  # back to back: no round trip for a check
        pool.idle_check_s = 0.0
        assert ask().status_code == 200
        assert pool.checks == before + 1
