"""The HTTP service (`embeddings-pipeline serve`): one long-running process that keeps each tenant's model warm.

Routes (every `/v1/*` route takes `Authorization: Bearer <tenant token>`; the tenant is the token's):
- `POST /v1/search`      `{query, k?, mode?, neighbors?, rerank?}` -> the tenant's hits (`retrieval.py`)
- `POST /v1/embeddings`  OpenAI-compatible passage embeddings with the tenant's model (`embeddings.py`)
- `GET /health`          the process is up; `GET /live` the event loop answers
- `GET /ready`           database reachable, every migration applied, the default model loadable (else 503)
- `GET /metrics`         Prometheus text; needs `Authorization: Bearer $EMBEDDINGS_ADMIN_TOKEN` (`metrics.py`)

Bodies are limited to `max_body` bytes (413); malformed JSON is 400; errors are JSON in OpenAI's shape
(`errors.py`). Blocking work (PostgreSQL, the model) runs in Starlette's threadpool on pooled connections
(`pool.py`), one hop and one connection per request. A token found valid a moment ago (`auth.py`) and the tenant's
serving plan, its model and chunk set (`plans.py`), are answered from memory for a few seconds and forgotten at once
when PostgreSQL announces a revocation or a model switch (`listen.py`), so a steady caller's search reads only its
own rows and its documents' metadata. Providers are loaded on first use per (model spec, key reference) and kept
for the process; concurrent searches of one model embed their queries in one batch (`batching.py`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from psycopg import sql
from psycopg_pool import PoolTimeout
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..pipeline.model_change import ProviderLoader, default_loader
from ..providers import ProviderError
from ..providers.rerank import Reranker
from ..store.db import table
from ..store.migrations import MIGRATIONS
from ..store.session import Database
from ..store.status import TenantStatus
from ..store.tenants import MODEL_CHANNEL
from ..store.tokens import REVOKED_CHANNEL
from .auth import Authenticator, Caller, admin_token_matches, bearer_token, cache_ttl_from_env
from .counts import all_tenant_counts
from .embeddings import parse_embeddings, run_embeddings
from .errors import ApiError
from .listen import Listener
from .metrics import ProviderCollector, RequestMetrics, TenantCollector
from .model_thread import pin_reranker
from .plans import PLAN_CACHE_S, ServingPlans
from .plumbing import EXCEPTION_HANDLERS, Timing, read_json
from .pool import ServicePool
from .ratelimit import RateLimiter
from .retrieval import RERANK_CANDIDATES, parse_search, run_search
from .warm import WarmProviders

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
ENDPOINTS = ("/v1/search", "/v1/embeddings", "/health", "/live", "/ready", "/metrics")


class Service:
    """What the routes share: the pool, the schema, tokens, limits, providers and metrics."""

    def __init__(
        self,
        database: Database,
        *,
        admin_token: str | None,
        limiter: RateLimiter,
        loader: ProviderLoader,
        reranker: Reranker | None,
        max_body: int,
        pool_size: int,
        rerank_candidates: int = RERANK_CANDIDATES,
        token_cache_s: float = 0.0,
        plan_cache_s: float = PLAN_CACHE_S,
    ) -> None:
        self.database, self.schema = database, database.schema
        self.rerank_candidates = rerank_candidates
        self.admin_token = admin_token or None
        self.limiter, self.reranker, self.max_body = limiter, pin_reranker(reranker), max_body
        self.pool = ServicePool(database.url(), pool_size)
        self.auth = Authenticator(self.pool, self.schema, ttl=token_cache_s)
        self.providers = WarmProviders(loader)
        self.plans = ServingPlans(self.providers, self.schema, ttl=plan_cache_s)
        handlers = {REVOKED_CHANNEL: self.auth.forget} if token_cache_s > 0 else {}
        handlers |= {MODEL_CHANNEL: self.plans.forget} if plan_cache_s > 0 else {}
        self.listener = Listener(database.url(), handlers) if handlers else None
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = RequestMetrics(self.registry, ENDPOINTS)
        self.registry.register(TenantCollector(self.tenant_counts))
        self.registry.register(ProviderCollector(self.providers.held))
        self.reranks = Counter("embeddings_rerank_requests", "Searches that asked for reranking, by outcome "
                               "(applied, or failed: answered in search order)", ["outcome"],
                               registry=self.registry)  # fmt: skip
        self.model_ready = False

    # --- lifecycle ------------------------------------------------------------------------------------------

    def start(self) -> None:
        try:
            with self.database.connect():  # migrations and drift repair, once
                pass
        except psycopg.Error as exc:
            log.warning("database not reachable at start (%s); /ready says so until it is", type(exc).__name__)
        self.pool.open()
        if self.listener is not None:
            self.listener.start()
        threading.Thread(target=self._warm_up, name="embeddings-warm-up", daemon=True).start()

    def stop(self) -> None:
        if self.listener is not None:
            self.listener.stop()
        self.pool.close()

    def _warm_up(self) -> None:
        load = getattr(self.reranker, "load", None)
        if load is not None:  # a local cross-encoder loads its weights now, not on the first search
            try:
                load()
            except Exception as exc:
                log.warning("the reranker is not loadable yet: %s", exc if isinstance(exc, ProviderError) else
                            type(exc).__name__)  # fmt: skip
        try:
            self.check_model()
        except Exception as exc:
            log.warning("the default model is not loadable yet: %s", exc if isinstance(exc, ProviderError) else
                        type(exc).__name__)  # fmt: skip

    def check_model(self) -> None:
        if not self.model_ready:
            self.providers.load(None, None).load()
            self.model_ready = True

    # --- work (blocking: called in the threadpool) ----------------------------------------------------------

    def search(self, tenant: str, body: Any) -> dict[str, Any]:
        with self.pool.connection(timeout=10) as conn:
            plan = self.plans.get(conn, tenant)
            answer = run_search(conn, self.schema, plan, tenant, body, self.reranker, self.rerank_candidates)
        if "rerank" in answer:
            self.reranks.labels("applied" if answer["rerank"]["applied"] else "failed").inc()
        return answer

    def embed(self, tenant: str, body: Any) -> dict[str, Any]:
        with self.pool.connection(timeout=10) as conn:
            provider = self.providers.embedding(conn, self.schema, tenant)
        return run_embeddings(provider, body)

    def tenant_counts(self) -> list[TenantStatus]:
        with self.pool.connection(timeout=10) as conn:
            return all_tenant_counts(conn, self.schema, self.providers.model_key_of)

    def readiness(self) -> tuple[bool, dict[str, str]]:
        checks: dict[str, str] = {}
        try:
            with self.pool.connection(timeout=5) as conn:
                row = conn.execute(
                    sql.SQL("SELECT array_agg(version) FROM {}").format(table(self.schema, "schema_migrations"))
                ).fetchone()
            checks["database"] = "ok"
            missing = sorted({v for v, _, _ in MIGRATIONS} - set((row and row[0]) or []))
            checks["migrations"] = "ok" if not missing else f"not applied: {missing}"
        except psycopg.errors.UndefinedTable:
            checks["database"], checks["migrations"] = "ok", f"schema {self.schema} is not migrated"
        except (psycopg.Error, PoolTimeout) as exc:
            checks["database"] = f"unreachable ({type(exc).__name__})"
            checks["migrations"] = "unknown"
        try:
            self.check_model()
            checks["model"] = "ok"
        except ProviderError as exc:
            checks["model"] = f"not loadable: {exc}"
        except Exception as exc:
            checks["model"] = f"not loadable ({type(exc).__name__})"
        return all(v == "ok" for v in checks.values()), checks

    # --- the request's caller -------------------------------------------------------------------------------

    async def caller(self, request: Request) -> Caller:
        token = bearer_token(request)
        caller = None if token is None else self.auth.cached(token) or await run_in_threadpool(self.auth.check, token)
        if caller is None:
            raise ApiError(401, "a valid tenant token is required: Authorization: Bearer <token>",
                           code="invalid_token", headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        wait = self.limiter.acquire(caller.token_id)
        if wait > 0:
            raise ApiError(429, "too many requests for this token; retry later", code="rate_limited",
                           headers={"Retry-After": RateLimiter.retry_after_header(wait)})  # fmt: skip
        return caller


def create_app(
    database: Database | None = None,
    *,
    admin_token: str | None = None,
    limiter: RateLimiter | None = None,
    loader: ProviderLoader = default_loader,
    reranker: Reranker | None = None,
    max_body: int = MAX_BODY_BYTES,
    pool_size: int | None = None,
    rerank_candidates: int | None = None,
    token_cache_s: float | None = None,
    plan_cache_s: float = PLAN_CACHE_S,
) -> Starlette:
    """The service's ASGI app. Unset values come from the environment: EMBEDDINGS_ADMIN_TOKEN,
    EMBEDDINGS_RATE_LIMIT / EMBEDDINGS_RATE_BURST, EMBEDDINGS_POOL_SIZE (default 10), EMBEDDINGS_RERANK_CANDIDATES
    (default 50, at most 1000), EMBEDDINGS_TOKEN_CACHE_SECONDS (default 5, 0: every request reads its token), and
    the database's own. `plan_cache_s`: how long a tenant's serving plan is remembered (`plans.py`). `reranker`
    (`providers.rerank.load_reranker`) enables `"rerank": true`."""
    candidates = rerank_candidates or int(os.environ.get("EMBEDDINGS_RERANK_CANDIDATES") or RERANK_CANDIDATES)
    service = Service(
        database or Database(),
        admin_token=admin_token if admin_token is not None else os.environ.get("EMBEDDINGS_ADMIN_TOKEN"),
        limiter=limiter or RateLimiter.from_env(),
        loader=loader,
        reranker=reranker,
        max_body=max_body,
        pool_size=pool_size or int(os.environ.get("EMBEDDINGS_POOL_SIZE", "10")),
        rerank_candidates=min(max(candidates, 1), 1000),
        token_cache_s=cache_ttl_from_env() if token_cache_s is None else token_cache_s,
        plan_cache_s=plan_cache_s,
    )

    async def search(request: Request) -> Response:
        caller = await service.caller(request)
        body = parse_search(await read_json(request, service.max_body))
        return JSONResponse(await run_in_threadpool(service.search, caller.tenant_id, body))

    async def embeddings(request: Request) -> Response:
        caller = await service.caller(request)
        body = parse_embeddings(await read_json(request, service.max_body))
        return JSONResponse(await run_in_threadpool(service.embed, caller.tenant_id, body))

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def live(_: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def ready(_: Request) -> Response:
        ok, checks = await run_in_threadpool(service.readiness)
        return JSONResponse({"status": "ready" if ok else "not ready", "checks": checks}, 200 if ok else 503)

    async def metrics(request: Request) -> Response:
        if service.admin_token is None:
            raise ApiError(403, "/metrics is off: set EMBEDDINGS_ADMIN_TOKEN and scrape with "
                           "Authorization: Bearer <that token>", code="metrics_disabled")  # fmt: skip
        if not admin_token_matches(bearer_token(request), service.admin_token):
            raise ApiError(401, "the admin token is required: Authorization: Bearer <EMBEDDINGS_ADMIN_TOKEN>",
                           code="invalid_token", headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        text = await run_in_threadpool(generate_latest, service.registry)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(service.start)
        try:
            yield
        finally:
            await run_in_threadpool(service.stop)

    app = Starlette(
        routes=[
            Route("/v1/search", search, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Route("/live", live, methods=["GET"]),
            Route("/ready", ready, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.add_middleware(Timing, metrics=lambda: service.requests)
    app.state.service = service
    return app
