"""Who is calling: per-tenant bearer tokens (`store/tokens.py`) and the admin token of `/metrics`.

- `Authorization: Bearer <token>` on every `/v1/*` request; the tenant is the token's, never a request field.
  A missing, malformed, unknown or revoked token answers 401 with the same message, so a caller learns nothing
  about which tokens exist. Tokens are compared as sha256 hashes with `hmac.compare_digest`.
- `/metrics` takes EMBEDDINGS_ADMIN_TOKEN the same way; while that variable is unset, `/metrics` answers 403.
- No token (nor its hash) is ever logged, put in a metric label, an exception message or an error response.
  `last_used_at` is written at most once a minute per token, so authentication stays one indexed read.
- A token that was found valid is remembered (by its sha256, in memory) for EMBEDDINGS_TOKEN_CACHE_SECONDS (5 s;
  0 turns the cache off), so a steady caller costs no database read per request. `tenants token revoke` notifies
  every service at once (PostgreSQL NOTIFY on `store.tokens.REVOKED_CHANNEL`, heard by `listen.Listener`), which
  forgets the token; a token revoked or erased any other way (plain SQL, `tenants delete`) is refused at the latest
  when its entry expires. Unknown and revoked tokens are never cached: each such request reads the database.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..store import tokens

if TYPE_CHECKING:
    from starlette.requests import Request

    from .pool import ServicePool

TOUCH_INTERVAL_S = 60.0
CACHE_TTL_S = 5.0
CACHE_MAX_ENTRIES = 10_000


def cache_ttl_from_env() -> float:
    raw = os.environ.get("EMBEDDINGS_TOKEN_CACHE_SECONDS", "").strip()
    return max(0.0, float(raw)) if raw else CACHE_TTL_S


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
    """Checks tenant tokens against `api_tokens` (`check` blocks: call it from a worker thread), remembering valid
    ones for `ttl` seconds (`cached` answers from memory only, without blocking)."""

    def __init__(
        self, pool: ServicePool, schema: str, clock: Callable[[], float] = time.monotonic, ttl: float = 0.0
    ) -> None:
        self.pool, self.schema, self.clock, self.ttl = pool, schema, clock, ttl
        self._touched: dict[str, float] = {}
        self._cache: dict[bytes, tuple[Caller, float]] = {}  # sha256(token) -> (caller, expires)
        self._lock = threading.Lock()

    def cached(self, token: str) -> Caller | None:
        """The caller of a token found valid less than `ttl` seconds ago (and not revoked since), else None."""
        if self.ttl <= 0:
            return None
        key = _digest(token)
        with self._lock:
            entry = self._cache.get(key)
            if entry is None:
                return None
            if entry[1] <= self.clock():
                del self._cache[key]
                return None
            return entry[0]

    def check(self, token: str) -> Caller | None:
        with self.pool.connection() as conn:
            found = tokens.authenticate(conn, self.schema, token)
            if found is None:
                return None
            token_id, tenant_id = found
            if self._due(token_id):
                tokens.touch(conn, self.schema, token_id)
        caller = Caller(token_id, tenant_id)
        if self.ttl > 0:
            with self._lock:
                if len(self._cache) >= CACHE_MAX_ENTRIES:
                    self._cache.clear()
                self._cache[_digest(token)] = (caller, self.clock() + self.ttl)
        return caller

    def forget(self, token_id: str | None = None) -> None:
        """Drop the cached entries of `token_id` (a revocation), or every entry (None: notifications were lost)."""
        with self._lock:
            if token_id is None:
                self._cache.clear()
            else:
                for key in [k for k, (c, _) in self._cache.items() if c.token_id == token_id]:
                    del self._cache[key]

    def _due(self, token_id: str) -> bool:
        now = self.clock()
        with self._lock:
            last = self._touched.get(token_id)
            if last is not None and now - last < TOUCH_INTERVAL_S:
                return False
            self._touched[token_id] = now
            return True


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def admin_token_matches(presented: str | None, expected: str) -> bool:
    """Constant-time comparison of the presented admin token with EMBEDDINGS_ADMIN_TOKEN (as sha256 hashes, so
    neither length nor content leaks through timing)."""
    if not presented:
        return False
    return hmac.compare_digest(_digest(presented), _digest(expected))
