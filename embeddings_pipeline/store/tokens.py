"""Per-tenant API tokens of the HTTP service (the `api_tokens` table, migration 9).

A token reads ``ept_<token_id>_<secret>``: ``ept_`` makes it recognisable (secret scanners, logs), ``token_id``
(12 hex characters) is its public name (`tenants token list|revoke`), the secret is ``secrets.token_urlsafe(32)``.
Only the sha256 of the whole token is stored. A token is printed once, at creation, and never again.

Checking a token looks its row up by ``token_id`` (not a secret) and compares the sha256 of what was presented with
the stored hash in constant time (``hmac.compare_digest``). The tenant is the token's row's, never the caller's.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from ..config import validate_tenant_id
from .db import table

PREFIX = "ept_"
REVOKED_CHANNEL = "embeddings_token_revoked"  # NOTIFY payload: the token id (services forget it at once)
_TOKEN = re.compile(r"^ept_([0-9a-f]{12})_([A-Za-z0-9_-]{20,128})$")


def token_hash(token: str) -> str:
    """sha256 (hex) of a token: enough for 256-bit random secrets (no salt or slow hash needed)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def token_id_of(token: str) -> str | None:
    """The token id inside a well-formed token, else None."""
    match = _TOKEN.match(token)
    return match.group(1) if match else None


@dataclass(frozen=True)
class TokenInfo:
    """A token's row, without its hash: what `tenants token list` shows."""

    token_id: str
    tenant_id: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def as_dict(self) -> dict[str, object]:
        def iso(t: datetime | None) -> str | None:
            return t.isoformat() if t else None

        return {
            "token_id": self.token_id,
            "tenant_id": self.tenant_id,
            "created_at": iso(self.created_at),
            "revoked_at": iso(self.revoked_at),
            "last_used_at": iso(self.last_used_at),
            "active": self.active,
        }


def create_token(conn: psycopg.Connection, schema: str, tenant_id: str) -> tuple[str, str]:
    """A new token for `tenant_id`: returns ``(token_id, token)``; the token itself is not kept anywhere."""
    validate_tenant_id(tenant_id)
    token_id = secrets.token_hex(6)
    token = f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    conn.execute(
        sql.SQL("INSERT INTO {} (token_id, tenant_id, token_hash) VALUES (%s, %s, %s)").format(
            table(schema, "api_tokens")
        ),
        (token_id, tenant_id, token_hash(token)),
    )
    return token_id, token


def list_tokens(conn: psycopg.Connection, schema: str, tenant_id: str | None = None) -> list[TokenInfo]:
    rows = conn.execute(
        sql.SQL(
            "SELECT token_id, tenant_id, created_at, revoked_at, last_used_at FROM {}"
            " WHERE %(t)s::text IS NULL OR tenant_id = %(t)s ORDER BY tenant_id, created_at, token_id"
        ).format(table(schema, "api_tokens")),
        {"t": tenant_id},
    ).fetchall()
    return [TokenInfo(*r) for r in rows]


def revoke_token(conn: psycopg.Connection, schema: str, token_id: str) -> TokenInfo | None:
    """Revoke `token_id` (idempotent: a revoked token keeps its first revocation time); None if unknown."""
    row = conn.execute(
        sql.SQL(
            "UPDATE {} SET revoked_at = coalesce(revoked_at, now()) WHERE token_id = %s"
            " RETURNING token_id, tenant_id, created_at, revoked_at, last_used_at"
        ).format(table(schema, "api_tokens")),
        (token_id,),
    ).fetchone()
    conn.execute("SELECT pg_notify(%s, %s)", (REVOKED_CHANNEL, token_id))  # delivered when the revocation commits
    return TokenInfo(*row) if row else None


def authenticate(conn: psycopg.Connection, schema: str, token: str) -> tuple[str, str] | None:
    """``(token_id, tenant_id)`` of a valid, unrevoked token; None for anything else (malformed, unknown,
    revoked). The presented token's hash is compared with the stored one in constant time."""
    token_id = token_id_of(token)
    if token_id is None:
        return None
    row = conn.execute(
        sql.SQL("SELECT tenant_id, token_hash FROM {} WHERE token_id = %s AND revoked_at IS NULL").format(
            table(schema, "api_tokens")
        ),
        (token_id,),
    ).fetchone()
    presented = token_hash(token)
    if row is None:
        hmac.compare_digest(presented, presented)  # the same work whether or not the id exists
        return None
    return (token_id, str(row[0])) if hmac.compare_digest(presented, str(row[1])) else None


def touch(conn: psycopg.Connection, schema: str, token_id: str) -> None:
    """Record a use of the token (the service calls this at most once a minute per token)."""
    conn.execute(
        sql.SQL("UPDATE {} SET last_used_at = now() WHERE token_id = %s").format(table(schema, "api_tokens")),
        (token_id,),
    )
