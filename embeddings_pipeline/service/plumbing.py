"""HTTP plumbing of the service: reading a bounded JSON body, timing every request, and the error handlers that
answer in OpenAI's error shape."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..providers import ProviderError
from ..providers.resilience import CircuitOpenError
from .errors import ApiError, error_response
from .metrics import RequestMetrics
from .ratelimit import RateLimiter

log = logging.getLogger(__name__)


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON: 413 over `limit` bytes (by Content-Length or as it streams), 400 when malformed."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the body is larger than {limit} bytes", code="body_too_large")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise ApiError(413, f"the body is larger than {limit} bytes", code="body_too_large")
    try:
        return json.loads(bytes(data))
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the body is not valid JSON", code="invalid_json") from None


class Timing:
    """Counts every request and its latency by route (outside routing, so 404s and errors count too)."""

    def __init__(self, app: ASGIApp, metrics: Callable[[], RequestMetrics]) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics().observe(scope["path"], scope["method"], status, time.perf_counter() - start)


async def _api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))


async def _provider_error(_: Request, exc: Exception) -> Response:
    if isinstance(exc, CircuitOpenError):
        return error_response(503, f"the tenant's model is failing fast: {exc}", code="provider_unavailable",
                              headers={"Retry-After": RateLimiter.retry_after_header(exc.retry_in)})  # fmt: skip
    # provider messages never carry credentials (providers/base.py)
    return error_response(503, f"the tenant's model is unavailable: {exc}", code="provider_unavailable")


async def _database_error(request: Request, exc: Exception) -> Response:
    log.warning("%s %s: database unavailable (%s)", request.method, request.url.path, type(exc).__name__)
    return error_response(503, "the database is unavailable", code="database_unavailable")


async def _internal_error(_: Request, exc: Exception) -> Response:
    return error_response(500, "internal error", code="internal_error")


EXCEPTION_HANDLERS = {
    ApiError: _api_error,
    HTTPException: _http_error,
    ProviderError: _provider_error,
    psycopg.OperationalError: _database_error,
    PoolTimeout: _database_error,
    Exception: _internal_error,  # the server still logs the traceback
}
