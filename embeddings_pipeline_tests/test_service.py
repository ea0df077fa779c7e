"""The HTTP service on real rows: a real PostgreSQL, the bundled model, real Dagster runs, and the app served both
through Starlette's TestClient and by uvicorn on a socket of 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator

import dagster as dg
import httpx
import numpy as np
import pytest
import uvicorn
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql
from starlette.testclient import TestClient

from embeddings_pipeline.cli import main
from embeddings_pipeline.cli.runner import materialize_tenants
from embeddings_pipeline.providers.openai import OpenAICompatibleProvider
from embeddings_pipeline.search import search_mode
from embeddings_pipeline.service.app import create_app
from embeddings_pipeline.service.metrics import TENANT_FIELDS, TenantCollector
from embeddings_pipeline.service.ratelimit import RateLimiter
from embeddings_pipeline.store.db import table
from embeddings_pipeline.store.documents import SourceDocument, source_tenants, upsert_documents
from embeddings_pipeline.store.session import Database
from embeddings_pipeline.store.status import tenant_status
from embeddings_pipeline.store.tenants import tenant_settings
from embeddings_pipeline.store.tokens import create_token, revoke_token

ACME = "acme"
ODD = "b'\"/ünï 日本\\"  # quotes, a slash, a backslash, unicode
ADMIN = "admin-secret-for-tests"

ACME_DOCS = {
    "pumps.txt": "Pump station 7 runs the XJ-9000 impeller at 1450 rpm.\n\nSeals are replaced every spring.",
    "dock.txt": "The loading dock opens at six.\n\nForklifts charge overnight in bay three.",
    "story.txt": "\n\n".join(
        [
            "Chapter one: the lighthouse keeper wakes before dawn.",
            "Chapter two: he climbs the stairs and trims the wick.",
            "Chapter three: a storm rolls in over the harbour with zebras aboard.",
            "Chapter four: the ferry is late and the bell rings.",
            "Chapter five: morning comes and the gulls return.",
        ]
    ),
}
ODD_DOCS = {
    "odd/secret-plan.txt": "The XJ-9000 impeller of the odd tenant hums quietly; marmalade recipes inside.",
    "odd/zebra.txt": "Zebras of the odd tenant graze near the harbour lighthouse.",
}


def _seed(conn, schema: str) -> None:
    for tenant, docs in ((ACME, ACME_DOCS), (ODD, ODD_DOCS)):
        upsert_documents(conn, schema, tenant, [
            SourceDocument(doc_id=d, body=b, format="text", title=f"title of {d}", metadata={"owner": tenant, "n": 1})
            for d, b in docs.items()
        ])  # fmt: skip


@pytest.fixture()
def corpus(conn, schema, provider):
    _seed(conn, schema)
    runs = materialize_tenants([ACME, ODD], instance=dg.DagsterInstance.ephemeral())
    assert all(r.success for r in runs), [r.error for r in runs]


@pytest.fixture()
def database(store) -> Database:
    return store.database


@pytest.fixture()
def tokens(conn, schema, corpus) -> dict[str, str]:
    return {t: create_token(conn, schema, t)[1] for t in (ACME, ODD)}


@pytest.fixture()
def acme_token(conn, schema, provider) -> str:
    """Only ACME's documents, embedded through Dagster, and a token of ACME."""
    _seed(conn, schema)
    runs = materialize_tenants([ACME], instance=dg.DagsterInstance.ephemeral())
    assert all(r.success for r in runs), [r.error for r in runs]
    return create_token(conn, schema, ACME)[1]


@pytest.fixture()
def client(database, monkeypatch) -> Iterator[TestClient]:
    monkeypatch.delenv("EMBEDDINGS_RATE_LIMIT", raising=False)
    with TestClient(create_app(database, admin_token=ADMIN, limiter=RateLimiter(0))) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def hits_of(answer: dict) -> list[tuple]:
    return [(h["chunk_id"], h["doc_id"], h["text"], h["score"], h["model_key"], h["run_id"])
            for h in answer["hits"] if not h["context"]]  # fmt: skip


# --- search ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["dense", "text", "hybrid"])
def test_search_answers_what_search_mode_returns(client, tokens, conn, schema, provider, mode):
    for tenant in (ACME, ODD):
        for query in ("XJ-9000 impeller", "zebras near the harbour"):
            r = client.post("/v1/search", json={"query": query, "k": 5, "mode": mode}, headers=bearer(tokens[tenant]))
            assert r.status_code == 200, r.text
            answer = r.json()
            expected = search_mode(conn, schema, provider, tenant, query, 5, mode)
            fields = list(expected[0].as_dict()) if expected else []
            assert [{f: h[f] for f in fields} for h in answer["hits"]] == [h.as_dict() for h in expected]
            assert all(h.title is not None for h in expected)  # search_mode reads each hit's document too
            assert answer["tenant"] == tenant and answer["model_key"] == provider.identity.model_key
            docs = ACME_DOCS if tenant == ACME else ODD_DOCS
            for h in answer["hits"]:
                assert h["doc_id"] in docs
                assert h["metadata"] == {"owner": tenant, "n": 1} and h["title"] == f"title of {h['doc_id']}"


def test_a_token_of_one_tenant_never_sees_another(client, tokens):
    words = "marmalade recipes secret plan of the odd tenant XJ-9000 zebras"
    for mode in ("dense", "text", "hybrid"):
        r = client.post("/v1/search", json={"query": words, "k": 100, "mode": mode, "neighbors": 3},
                        headers=bearer(tokens[ACME]))  # fmt: skip
        assert r.status_code == 200
        assert {h["doc_id"] for h in r.json()["hits"]} <= set(ACME_DOCS)
        answer = json.dumps(r.json()["hits"], ensure_ascii=False)  # (the answer echoes the query, hence its words)
        assert "odd/" not in answer and "marmalade" not in answer and ODD not in r.text and "b'" not in answer
        r = client.post("/v1/search", json={"query": "loading dock forklifts", "k": 100, "mode": mode},
                        headers=bearer(tokens[ODD]))  # fmt: skip
        assert {h["doc_id"] for h in r.json()["hits"]} <= set(ODD_DOCS)
        assert "dock.txt" not in r.text and "Forklifts" not in r.text
    for field in ("tenant", "tenant_id"):  # the tenant is the token's, never a request field
        r = client.post("/v1/search", json={"query": "marmalade", field: ODD}, headers=bearer(tokens[ACME]))
        assert r.status_code == 400 and r.json()["error"]["param"] == "tenant" and "hits" not in r.json()
    r = client.post("/v1/embeddings", json={"input": "x", "tenant": ODD}, headers=bearer(tokens[ACME]))
    assert r.status_code == 400


def test_neighbors_add_context_in_reading_order(client, tokens, conn, schema):
    ordinals = dict(
        conn.execute(
            sql.SQL("SELECT text, ordinal FROM {} WHERE tenant_id = %s AND doc_id = 'story.txt'").format(
                table(schema, "chunks")
            ),
            (ACME,),
        ).fetchall()
    )
    assert len(ordinals) == 5
    plain = client.post("/v1/search", json={"query": "storm zebras harbour", "k": 1, "mode": "text"},
                        headers=bearer(tokens[ACME])).json()  # fmt: skip
    r = client.post("/v1/search", json={"query": "storm zebras harbour", "k": 1, "mode": "text", "neighbors": 1},
                    headers=bearer(tokens[ACME]))  # fmt: skip
    hits = r.json()["hits"]
    assert [h["text"][:13] for h in hits] == ["Chapter two: ", "Chapter three", "Chapter four:"]
    assert [h["context"] for h in hits] == [True, False, True]
    assert [h["ordinal"] for h in hits] == [ordinals[h["text"]] for h in hits] == [1, 2, 3]
    assert hits_of(r.json()) == hits_of(plain)  # the hits themselves are unchanged
    assert all(h["doc_id"] == "story.txt" and h["metadata"]["owner"] == ACME for h in hits)
    # two hits in one document: each chunk once, the hits in rank order among them
    r = client.post("/v1/search", json={"query": "Chapter", "k": 5, "mode": "text", "neighbors": 2},
                    headers=bearer(tokens[ACME])).json()  # fmt: skip
    ids = [h["chunk_id"] for h in r["hits"]]
    assert len(ids) == len(set(ids)) == 5 and not any(h["context"] for h in r["hits"])
    r = client.post("/v1/search", json={"query": "storm", "k": 1, "mode": "text", "neighbors": 10},
                    headers=bearer(tokens[ACME])).json()  # fmt: skip
    assert [h["ordinal"] for h in r["hits"]] == [0, 1, 2, 3, 4]


# --- errors, auth, limits -------------------------------------------------------------------------------------


def test_request_errors_are_clear_json(client, conn, schema):
    _, token = create_token(conn, schema, ACME)
    h = bearer(token)
    cases = [
        ({"query": ""}, "query"),
        ({"query": "   "}, "query"),
        ({"k": 3}, "query"),
        ({"query": "x", "k": 0}, "k"),
        ({"query": "x", "k": 101}, "k"),
        ({"query": "x", "k": True}, "k"),
        ({"query": "x", "k": "5"}, "k"),
        ({"query": "x", "mode": "sparse"}, "mode"),
        ({"query": "x", "neighbors": -1}, "neighbors"),
        ({"query": "x", "rerank": True}, "rerank"),  # the seam exists; no reranker is configured
        ({"query": "x", "colour": "red"}, "colour"),
    ]
    for body, param in cases:
        r = client.post("/v1/search", json=body, headers=h)
        assert r.status_code == 400, body
        assert r.json()["error"]["param"] == param and r.json()["error"]["type"] == "invalid_request_error"
    for raw in (b"{not json", b"", b"\xff\xfe", b"[1, 2]", b'"query"'):
        r = client.post("/v1/search", content=raw, headers={**h, "content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["message"]
    big = json.dumps({"query": "x" * (65 * 1024)})
    r = client.post("/v1/search", content=big, headers=h)
    assert r.status_code == 413 and "65536" in r.json()["error"]["message"]
    r = client.post("/v1/search", content=iter([b'{"query": "', b"y" * 70000, b'"}']), headers=h)  # chunked
    assert r.status_code == 413
    bad = [{"input": []}, {"input": ""}, {"input": [1, 2]}, {"input": ["ok", ""]}, {"input": "x", "dimensions": 7},
           {"input": "x", "encoding_format": "hex"}, {"input": "word " * 400}]  # fmt: skip
    for body in bad:
        assert client.post("/v1/embeddings", json=body, headers=h).status_code == 400, body
    assert client.get("/v1/search", headers=h).status_code == 405
    r = client.get("/nowhere")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


def test_tokens_missing_unknown_malformed_or_revoked_answer_401(client, conn, schema):
    token_id, token = create_token(conn, schema, ACME)
    body = {"query": "pumps"}
    for mode in ("dense", "text", "hybrid"):  # nothing embedded yet: no hits, not an error
        r = client.post("/v1/search", json={**body, "mode": mode}, headers=bearer(token))
        assert r.status_code == 200 and r.json()["hits"] == []
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    other_id = "ept_" + "0" * 12 + token[len("ept_") + 12 :]
    for headers in ({}, {"Authorization": token}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer "},
                    bearer(forged), bearer(other_id), bearer("ept_nonsense"), bearer(ADMIN)):  # fmt: skip
        for path in ("/v1/search", "/v1/embeddings"):
            r = client.post(path, json=body, headers=headers)
            assert r.status_code == 401, headers
            assert r.headers["www-authenticate"] == "Bearer" and token not in r.text
    revoke_token(conn, schema, token_id)  # the service hears of it (NOTIFY) and forgets the cached token
    assert refused_within(client, token, seconds=3.0)
    last_used = conn.execute(
        sql.SQL("SELECT last_used_at FROM {} WHERE token_id = %s").format(table(schema, "api_tokens")), (token_id,)
    ).fetchone()
    assert last_used is not None and last_used[0] is not None


def refused_within(client: TestClient, token: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if client.post("/v1/search", json={"query": "pumps", "mode": "text"}, headers=bearer(token)).status_code == 401:
            return True
        time.sleep(0.02)
    return False


def test_a_valid_token_is_remembered_for_its_ttl_and_a_revocation_is_heard_at_once(database, conn, schema):
    token_id, token = create_token(conn, schema, ACME)
    api_tokens = table(schema, "api_tokens")
    with TestClient(create_app(database, limiter=RateLimiter(0), token_cache_s=30)) as client:
        service = client.app.state.service
        assert service.listener.listening.wait(10)
        now = [1000.0]
        service.auth.clock = lambda: now[0]
        ask = lambda: client.post("/v1/search", json={"query": "pumps", "mode": "text"}, headers=bearer(token))  # noqa: E731
        assert ask().status_code == 200
        # revoked behind the service's back (no notification): the cached token still answers until it expires
        conn.execute(sql.SQL("UPDATE {} SET revoked_at = now() WHERE token_id = %s").format(api_tokens), (token_id,))
        assert ask().status_code == 200
        now[0] += 31
        assert ask().status_code == 401
        # an unknown or revoked token is never cached: un-revoked, it is accepted on its next request
        conn.execute(sql.SQL("UPDATE {} SET revoked_at = NULL WHERE token_id = %s").format(api_tokens), (token_id,))
        assert ask().status_code == 200
        revoke_token(conn, schema, token_id)  # `tenants token revoke`: every service forgets it at once
        assert refused_within(client, token, seconds=3.0)
    with TestClient(create_app(database, limiter=RateLimiter(0), token_cache_s=0, plan_cache_s=0)) as client:
        assert client.app.state.service.listener is None
        other = create_token(conn, schema, ACME)
        assert client.post("/v1/search", json={"query": "pumps"}, headers=bearer(other[1])).status_code == 200
        conn.execute(sql.SQL("UPDATE {} SET revoked_at = now() WHERE token_id = %s").format(api_tokens), (other[0],))
        assert client.post("/v1/search", json={"query": "pumps"}, headers=bearer(other[1])).status_code == 401


def test_rate_limit_per_token_answers_429_with_retry_after(database, conn, schema):
    now = [100.0]
    limiter = RateLimiter(rate=0.5, burst=2, clock=lambda: now[0])
    a, b = create_token(conn, schema, ACME)[1], create_token(conn, schema, ACME)[1]
    with TestClient(create_app(database, admin_token=ADMIN, limiter=limiter)) as client:
        codes = [client.post("/v1/search", json={"query": "pumps"}, headers=bearer(a)).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        r = client.post("/v1/search", json={"query": "pumps"}, headers=bearer(a))
        assert r.status_code == 429 and r.headers["retry-after"] == "2" and r.json()["error"]["code"] == "rate_limited"
        assert client.post("/v1/search", json={"query": "pumps"}, headers=bearer(b)).status_code == 200  # per token
        now[0] += 2.0
        assert client.post("/v1/search", json={"query": "pumps"}, headers=bearer(a)).status_code == 200
        assert client.post("/v1/search", json={"query": "pumps"}, headers=bearer(a)).status_code == 429


# --- health, metrics ------------------------------------------------------------------------------------------


def test_health_live_ready(client):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/live").status_code == 200
    r = client.get("/ready")
    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {"database": "ok", "migrations": "ok", "model": "ok"}


def test_ready_says_what_is_missing(database, conn, schema):
    conn.execute(sql.SQL("DELETE FROM {} WHERE version = 9").format(table(schema, "schema_migrations")))
    with TestClient(create_app(database, admin_token=ADMIN)) as client:
        r = client.get("/ready")
    assert r.status_code == 503 and r.json()["checks"]["migrations"] == "not applied: [9]"


def test_metrics_need_the_admin_token(database, monkeypatch):
    monkeypatch.delenv("EMBEDDINGS_ADMIN_TOKEN", raising=False)
    with TestClient(create_app(database)) as client:
        r = client.get("/metrics", headers=bearer(ADMIN))
        assert r.status_code == 403 and "EMBEDDINGS_ADMIN_TOKEN" in r.json()["error"]["message"]
    monkeypatch.setenv("EMBEDDINGS_ADMIN_TOKEN", ADMIN)
    with TestClient(create_app(database)) as client:
        for headers in ({}, bearer("wrong"), bearer(ADMIN + "x"), {"Authorization": ADMIN}):
            assert client.get("/metrics", headers=headers).status_code == 401
        assert client.get("/metrics", headers=bearer(ADMIN)).status_code == 200


def _families(text: str) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_metrics_per_tenant_counts_equal_tenant_status(client, tokens, conn, schema, provider):
    key = provider.identity.model_key
    vt = table(schema, provider.identity.vector_table)
    # damage to count: a stale vector, a NULL vector, an error row, a tenant that was never materialized
    damage = "UPDATE {v} SET {change} WHERE tenant_id = %(t)s AND chunk_id = (SELECT {pick}(chunk_id) FROM {v} WHERE tenant_id = %(t)s)"  # noqa: E501
    for change, pick, tenant in (("content_hash = 'x'", "min", ACME), ("embedding = NULL", "max", ODD)):
        conn.execute(sql.SQL(damage).format(v=vt, change=sql.SQL(change), pick=sql.SQL(pick)), {"t": tenant})
    conn.execute(
        sql.SQL("INSERT INTO {} (tenant_id, chunk_id, model_key, error_kind, message) VALUES (%s, 'c', %s, 'x', 'y')")
        .format(table(schema, "embedding_errors")),
        (ODD, key),
    )  # fmt: skip
    upsert_documents(conn, schema, "fresh", [SourceDocument(doc_id="new.txt", body="not embedded yet", format="text")])
    client.post("/v1/search", json={"query": "pumps", "mode": "dense"}, headers=bearer(tokens[ACME]))
    client.post("/v1/search", json={"query": ""}, headers=bearer(tokens[ACME]))
    r = client.get("/metrics", headers=bearer(ADMIN))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    families = _families(r.text)
    expected = {}
    for t in source_tenants(conn, schema):
        model = tenant_settings(conn, schema, t).active_model_key or key
        expected[t] = tenant_status(conn, schema, t, model)
    assert set(expected) == {ACME, ODD, "fresh"}
    assert expected[ACME].stale == 1 and expected[ODD].missing == 1 and expected[ODD].errors == 1
    assert expected["fresh"].chunks == 0 and expected["fresh"].documents == 1
    for field in TENANT_FIELDS:
        got = {s.labels["tenant"]: (s.value, s.labels["model_key"]) for s in families[f"embeddings_tenant_{field}"]}
        assert got == {t: (float(getattr(st, field)), st.model_key) for t, st in expected.items()}, field
    assert families["embeddings_tenant_metrics_up"][0].value == 1
    since = {s.labels["tenant"]: s.value for s in families["embeddings_tenant_seconds_since_last_success"]}
    assert set(since) == {ACME, ODD}  # "fresh" never had a successful run: no sample, so `absent()` can alert
    for t in (ACME, ODD):
        assert expected[t].last_success_run_id and expected[t].last_success_at
        assert 0 <= since[t] <= expected[t].seconds_since_success + 5  # counted at scrape time, a moment earlier
    requests = {(s.labels["endpoint"], s.labels["status"]): s.value for s in families["embeddings_service_requests"]
                if s.name.endswith("_total")}  # fmt: skip
    assert requests[("/v1/search", "200")] == 1 and requests[("/v1/search", "400")] == 1
    assert any(s.labels["endpoint"] == "/v1/search" for s in families["embeddings_service_request_duration_seconds"])
    events = {s.labels["event"]: s.value for s in families["embeddings_provider_events"]
              if s.labels["model_key"] == key}  # fmt: skip
    assert events["calls"] >= 1 and set(events) == {"calls"}  # a local model: no retries, rate limits or circuit
    assert tokens[ACME] not in r.text and ADMIN not in r.text


def test_metrics_report_a_database_outage_without_failing():
    def down():
        raise OSError("connection refused")

    (up,) = list(TenantCollector(down).collect())
    assert up.name == "embeddings_tenant_metrics_up" and up.samples[0].value == 0


# --- a real socket: uvicorn, the pipeline's own OpenAI-compatible provider, the CLI, the logs -----------------------


@contextlib.contextmanager
def served(app) -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_config=None, log_level="info", access_log=True, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(600):
            if server.started:
                break
            thread.join(0.05)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_real_server_embeddings_equal_in_process_and_no_token_is_logged(
    database, tokens, provider, monkeypatch, caplog, schema
):
    caplog.set_level(logging.DEBUG)
    for name in ("uvicorn", "uvicorn.access", "uvicorn.error", "embeddings_pipeline", "httpx"):
        caplog.set_level(logging.DEBUG, logger=name)
    monkeypatch.setenv("SERVICE_TOKEN_FOR_TEST", tokens[ACME])
    texts = ["Pump station 7 runs the XJ-9000 impeller.", "Zebras graze near the lighthouse.", "é ü 日本語"]
    with served(create_app(database, admin_token=ADMIN, limiter=RateLimiter(0))) as url:
        remote = OpenAICompatibleProvider(provider.identity.name, base_url=f"{url}/v1",
                                          api_key_env="SERVICE_TOKEN_FOR_TEST", max_tokens=256)  # fmt: skip
        got = remote.embed_documents(texts)
        assert np.allclose(got, provider.embed_documents(texts), atol=1e-6)
        assert remote.identity.dims == provider.identity.dims
        body = {"input": texts[0], "model": "whatever", "encoding_format": "base64"}
        r = httpx.post(f"{url}/v1/embeddings", json=body, headers=bearer(tokens[ACME]))
        answer = r.json()
        assert answer["object"] == "list" and answer["model"] == provider.identity.model_key
        assert answer["usage"]["prompt_tokens"] == answer["usage"]["total_tokens"] > 0
        vector = np.frombuffer(__import__("base64").b64decode(answer["data"][0]["embedding"]), dtype="<f4")
        assert answer["data"][0]["index"] == 0 and np.allclose(vector, provider.embed_documents(texts[:1])[0])
        assert httpx.post(f"{url}/v1/search?x=1", json={"query": "x"}, headers=bearer("ept_bad")).status_code == 401
        # the CLI's `search` goes through the service when told to, and says so
        monkeypatch.setenv("EMBEDDINGS_SERVICE_URL", url)
        monkeypatch.setenv("EMBEDDINGS_SERVICE_TOKEN", tokens[ACME])
        args = ["search", "XJ-9000 impeller", "--tenant", ACME, "--json", "-k", "3"]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        assert f"searching through the service at {url}" in result.stderr
        remote_hits = json.loads(result.stdout)["hits"]
        monkeypatch.delenv("EMBEDDINGS_SERVICE_URL")
        local = json.loads(CliRunner().invoke(main, args).stdout)["hits"]
        assert remote_hits == local
        monkeypatch.setenv("EMBEDDINGS_SERVICE_URL", url)
        wrong = CliRunner().invoke(main, ["search", "pumps", "--tenant", ODD])
        assert wrong.exit_code != 0 and "is not a token of tenant" in wrong.output
    access = [r for r in caplog.records if r.name == "uvicorn.access"]
    assert len(access) >= 5  # the capture works: every request was logged, by path
    for record in caplog.records:
        line = record.getMessage() + " " + " ".join(map(str, record.args or ()))
        for secret in (*tokens.values(), ADMIN):
            assert secret not in line, record.name


def test_token_commands(conn, schema):
    _seed(conn, schema)  # tokens are for tenants that exist
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(main, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout

    token = run("tenants", "token", "create", ODD).strip()
    assert token.startswith("ept_") and len(token) > 50
    created = json.loads(run("tenants", "token", "create", ACME, "--json"))
    listed = json.loads(run("tenants", "token", "list", "--json"))["tokens"]
    assert {t["tenant_id"] for t in listed} == {ACME, ODD} and all(t["active"] for t in listed)
    assert token not in json.dumps(listed) and created["token"] not in json.dumps(listed)
    only = json.loads(run("tenants", "token", "list", "--tenant", ACME, "--json"))["tokens"]
    assert [t["token_id"] for t in only] == [created["token_id"]]
    assert "revoked" in run("tenants", "token", "revoke", created["token_id"])
    listed = {t["token_id"]: t for t in json.loads(run("tenants", "token", "list", "--json"))["tokens"]}
    assert listed[created["token_id"]]["active"] is False and listed[created["token_id"]]["revoked_at"]
    assert "API tokens" in run("tenants", "token", "list")
    missing = runner.invoke(main, ["tenants", "token", "revoke", "nope"])
    assert missing.exit_code == 1 and "no token" in missing.output
    with Database().connect() as conn:
        hashes = conn.execute(sql.SQL("SELECT token_hash FROM {}").format(table(schema, "api_tokens"))).fetchall()
    assert all(len(h[0]) == 64 and h[0] not in (token, created["token"]) for h in hashes)
