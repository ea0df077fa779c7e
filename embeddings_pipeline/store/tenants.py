"""Per-tenant settings (the `tenants` table)."""

from __future__ import annotations

import psycopg
from psycopg import sql

from ..config import validate_tenant_id
from ..text.chunks import OVERFLOW_POLICIES
from .db import table


def chunk_overflow(conn: psycopg.Connection, schema: str, tenant_id: str) -> str:
    """What the chunker does with blocks longer than the model's limit: 'split' (default) or 'truncate'."""
    row = conn.execute(
        sql.SQL("SELECT chunk_overflow FROM {} WHERE tenant_id = %s").format(table(schema, "tenants")), (tenant_id,)
    ).fetchone()
    return row[0] if row else "split"


def set_chunk_overflow(conn: psycopg.Connection, schema: str, tenant_id: str, policy: str) -> None:
    if policy not in OVERFLOW_POLICIES:
        raise ValueError(f"chunk overflow policy must be one of {OVERFLOW_POLICIES}, not {policy!r}")
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (tenant_id, chunk_overflow) VALUES (%s, %s) "
            "ON CONFLICT (tenant_id) DO UPDATE SET chunk_overflow = EXCLUDED.chunk_overflow"
        ).format(table(schema, "tenants")),
        (validate_tenant_id(tenant_id), policy),
    )
