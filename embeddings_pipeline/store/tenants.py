"""Per-tenant settings (the `tenants` table): model override, credential reference, chunking policy."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from ..config import validate_tenant_id
from ..text.chunks import OVERFLOW_POLICIES
from .db import table

_ENV_NAME = "^[A-Za-z_][A-Za-z0-9_]*$"
MODEL_CHANNEL = "embeddings_tenant_model"  # NOTIFY payload: the tenant id whose search model or chunk set changed


@dataclass(frozen=True)
class TenantSettings:
    tenant_id: str
    model: str | None = None  # model spec overriding EMBEDDINGS_MODEL
    key_env: str | None = None  # NAME of the environment variable holding the tenant's API key (never the key)
    chunk_overflow: str = "split"
    active_model_key: str | None = None  # the model search uses; switches only at full coverage
    active_chunk_set: str | None = None  # the chunk set that model's vectors belong to

    def as_dict(self) -> dict[str, object]:
        """As shown by `tenants show --json`: keys are the columns' names (`active_chunker_version`)."""
        out = asdict(self)
        out["active_chunker_version"] = out.pop("active_chunk_set")
        return out


# the chunk set column keeps its first name, active_chunker_version
_COLUMNS = sql.SQL(
    "tenant_id, provider_override, credential_env, chunk_overflow, active_model_key, active_chunker_version"
)


def tenant_settings(conn: psycopg.Connection, schema: str, tenant_id: str) -> TenantSettings:
    row = conn.execute(
        sql.SQL("SELECT {} FROM {} WHERE tenant_id = %s").format(_COLUMNS, table(schema, "tenants")), (tenant_id,)
    ).fetchone()
    return TenantSettings(*row) if row else TenantSettings(tenant_id)


def all_tenant_settings(conn: psycopg.Connection, schema: str) -> list[TenantSettings]:
    rows = conn.execute(sql.SQL("SELECT {} FROM {} ORDER BY tenant_id").format(_COLUMNS, table(schema, "tenants")))
    return [TenantSettings(*r) for r in rows.fetchall()]


@dataclass(frozen=True)
class ModelState:
    tenant_id: str
    model: str | None  # the tenant's override spec (None: the default model)
    active_model_key: str | None
    active_spec: str | None  # the spec the active model was registered with


def model_states(conn: psycopg.Connection, schema: str) -> list[ModelState]:
    """Per tenant: which model it should use and which one it searches with now (ids and specs, no content)."""
    rows = conn.execute(
        sql.SQL(
            """
            SELECT t.tenant_id, t.provider_override, t.active_model_key, m.spec FROM {t} t
              LEFT JOIN {m} m ON m.model_key = t.active_model_key
             ORDER BY t.tenant_id
            """
        ).format(t=table(schema, "tenants"), m=table(schema, "embedding_models"))
    ).fetchall()
    return [ModelState(*r) for r in rows]


def chunk_overflow(conn: psycopg.Connection, schema: str, tenant_id: str) -> str:
    """What the chunker does with blocks longer than the model's limit: 'split' (default) or 'truncate'."""
    return tenant_settings(conn, schema, tenant_id).chunk_overflow


def update_tenant(
    conn: psycopg.Connection,
    schema: str,
    tenant_id: str,
    *,
    model: str | None = None,
    key_env: str | None = None,
    chunk_overflow: str | None = None,
) -> TenantSettings:
    """Set the given settings (None leaves one as it is; "" clears model/key_env)."""
    validate_tenant_id(tenant_id)
    if chunk_overflow is not None and chunk_overflow not in OVERFLOW_POLICIES:
        raise ValueError(f"chunk overflow policy must be one of {OVERFLOW_POLICIES}, not {chunk_overflow!r}")
    if key_env and not re.match(_ENV_NAME, key_env):
        raise ValueError(
            "--key-env takes the NAME of an environment variable (letters, digits, _), not a key; "
            "the key itself is never stored"
        )
    if model:
        from ..providers.registry import parse_model_spec

        parse_model_spec(model)
    t = table(schema, "tenants")
    with conn.transaction():
        conn.execute(sql.SQL("INSERT INTO {} (tenant_id) VALUES (%s) ON CONFLICT DO NOTHING").format(t), (tenant_id,))
        for column, value in (("provider_override", model), ("credential_env", key_env),
                              ("chunk_overflow", chunk_overflow)):  # fmt: skip
            if value is not None:
                conn.execute(
                    sql.SQL("UPDATE {} SET {} = %s WHERE tenant_id = %s").format(t, sql.Identifier(column)),
                    (value or None, tenant_id),
                )
    return tenant_settings(conn, schema, tenant_id)


def record_success(conn: psycopg.Connection, schema: str, tenant_id: str, run_id: str) -> None:
    """Stamp the tenant's last successful run: every chunk of its model embedded and its checks passed."""
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (tenant_id, last_success_at, last_success_run_id) VALUES (%s, now(), %s)"
            " ON CONFLICT (tenant_id) DO UPDATE"
            " SET last_success_at = excluded.last_success_at, last_success_run_id = excluded.last_success_run_id"
        ).format(table(schema, "tenants")),
        (tenant_id, run_id),
    )


def last_successes(
    conn: psycopg.Connection, schema: str, tenant_ids: list[str] | None = None
) -> dict[str, tuple[datetime, str | None, float]]:
    """tenant -> (when, run id, seconds since, by the database's clock) of its last successful run, for the
    tenants that had one (all of them, or `tenant_ids`)."""
    rows = conn.execute(
        sql.SQL(
            "SELECT tenant_id, last_success_at, last_success_run_id, extract(epoch FROM now() - last_success_at)"
            " FROM {} WHERE last_success_at IS NOT NULL AND (%(ids)s::text[] IS NULL OR tenant_id = ANY(%(ids)s))"
        ).format(table(schema, "tenants")),
        {"ids": tenant_ids},
    ).fetchall()
    return {r[0]: (r[1], r[2], float(r[3])) for r in rows}


def set_chunk_overflow(conn: psycopg.Connection, schema: str, tenant_id: str, policy: str) -> None:
    update_tenant(conn, schema, tenant_id, chunk_overflow=policy)


def activate_model(conn: psycopg.Connection, schema: str, tenant_id: str, model_key: str, chunk_set: str) -> bool:
    """Make `model_key` with its chunk set the tenant's active pair, in one transaction (search switches to it).
    A model no tenant searches any more is stamped `released_at`, which starts its retention clock.
    Returns whether the pair changed."""
    t, models = table(schema, "tenants"), table(schema, "embedding_models")
    with conn.transaction():
        conn.execute(sql.SQL("INSERT INTO {} (tenant_id) VALUES (%s) ON CONFLICT DO NOTHING").format(t), (tenant_id,))
        before = conn.execute(
            sql.SQL("SELECT active_model_key, active_chunker_version FROM {} WHERE tenant_id = %s FOR UPDATE").format(
                t
            ),
            (tenant_id,),
        ).fetchone()
        if before == (model_key, chunk_set):
            return False
        conn.execute(
            sql.SQL("UPDATE {} SET active_model_key = %s, active_chunker_version = %s WHERE tenant_id = %s").format(t),
            (model_key, chunk_set, tenant_id),
        )
        conn.execute(sql.SQL("UPDATE {} SET released_at = NULL WHERE model_key = %s").format(models), (model_key,))
        if before and before[0] and before[0] != model_key:
            conn.execute(
                sql.SQL(
                    """
                    UPDATE {models} SET released_at = now()
                     WHERE model_key = %(old)s
                       AND NOT EXISTS (SELECT 1 FROM {t} WHERE active_model_key = %(old)s)
                    """
                ).format(models=models, t=t),
                {"old": before[0]},
            )
        conn.execute("SELECT pg_notify(%s, %s)", (MODEL_CHANNEL, tenant_id))  # services hear it on commit
    return True
