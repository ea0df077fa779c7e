"""Who is calling: per-tenant bearer tokens (`store/tokens.py`) and the admin token of `/metrics`.

- `Authorization: Bearer <token>` on every `/v1/*` request; the tenant is the token's, never a request field.
  A missing, malformed, unknown or revoked token answers 401 with the same message, so a caller learns nothing
  about which tokens exist. Tokens are compared as sha256 hashes with `hmac.compare_digest`.
- `/metrics` takes EMBEDDINGS_ADMIN_TOKEN the same way; while that variable is unset, `/metrics` answers 403.
- No token (nor its hash) is ever logged, put in a metric label, an exception message or an error response.
  `last_used_at` is written at most once a minute per token, so authentication stays one indexed read.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..store import tokens

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool
    from starlette.requests import Request

TOUCH_INTERVAL_S = 60.0


@dataclass(frozen=True)
class Caller:
    token_id: str
    tenant_id: str


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class Authenticator:
    """Checks tenant tokens against `api_tokens` (blocking: call it from a worker thread)."""

    def __init__(self, pool: ConnectionPool, schema: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.pool, self.schema, self.clock = pool, schema, clock
        self._touched: dict[str, float] = {}
        self._lock = threading.Lock()

    def check(self, token: str) -> Caller | None:
        with self.pool.connection() as conn:
            found = tokens.authenticate(conn, self.schema, token)
            if found is None:
                return None
            token_id, tenant_id = found
            if self._due(token_id):
                tokens.touch(conn, self.schema, token_id)
        return Caller(token_id, tenant_id)

    def _due(self, token_id: str) -> bool:
        now = self.clock()
        with self._lock:
            last = self._touched.get(token_id)
            if last is not None and now - last < TOUCH_INTERVAL_S:
                return False
            self._touched[token_id] = now
            return True


def admin_token_matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison of the presented admin token with EMBEDDINGS_ADMIN_TOKEN (as sha256 hashes, so
    neither length nor content leaks through timing)."""
    if not presented:
        return False
    return hmac.compare_digest(
        hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest(),
        hashlib.sha256(expected.encode("utf-8", "surrogatepass")).digest(),
    )
