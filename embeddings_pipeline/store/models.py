"""Model identities side by side: coverage per tenant, lineage of vectors, retiring a model's vectors."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from .db import relation_exists, table


def vector_table_of(conn: psycopg.Connection, schema: str, model_key: str) -> str | None:
    """The model's vector table, if the model is registered and the table exists."""
    row = conn.execute(
        sql.SQL("SELECT vector_table FROM {} WHERE model_key = %s").format(table(schema, "embedding_models")),
        (model_key,),
    ).fetchone()
    if row is None or not relation_exists(conn, schema, row[0]):
        return None
    return str(row[0])


def spec_of(conn: psycopg.Connection, schema: str, model_key: str) -> str:
    """The model spec `model_key` was registered with, to load that model again."""
    from ..providers import ProviderError

    row = conn.execute(
        sql.SQL("SELECT spec FROM {} WHERE model_key = %s").format(table(schema, "embedding_models")), (model_key,)
    ).fetchone()
    if not row or not row[0]:
        raise ProviderError(f"model {model_key} is not registered with a spec; see `embeddings-pipeline models list`")
    return str(row[0])


def chunk_set_of(conn: psycopg.Connection, schema: str, tenant_id: str, model_key: str) -> str | None:
    """The chunk set (chunker version) a model's vectors of this tenant belong to: the active set for the
    tenant's active model, else the set holding most of the model's vectors, else the tenant's only set."""
    active = conn.execute(
        sql.SQL("SELECT active_chunker_version FROM {} WHERE tenant_id = %s AND active_model_key = %s").format(
            table(schema, "tenants")
        ),
        (tenant_id, model_key),
    ).fetchone()
    if active and active[0]:
        return str(active[0])
    vt = vector_table_of(conn, schema, model_key)
    if vt is not None:
        row = conn.execute(
            sql.SQL(
                """
                SELECT c.chunker_version FROM {chunks} c
                  JOIN {v} v ON v.tenant_id = c.tenant_id AND v.chunk_id = c.chunk_id
                 WHERE c.tenant_id = %s GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1
                """
            ).format(chunks=table(schema, "chunks"), v=table(schema, vt)),
            (tenant_id,),
        ).fetchone()
        if row:
            return str(row[0])
    only = conn.execute(
        sql.SQL(
            "SELECT min(chunker_version) FROM {} WHERE tenant_id = %s HAVING count(DISTINCT chunker_version) = 1"
        ).format(table(schema, "chunks")),
        (tenant_id,),
    ).fetchone()
    return str(only[0]) if only else None


def list_models(conn: psycopg.Connection, schema: str) -> list[dict[str, Any]]:
    """Every registered model with its identity and, per tenant, how many live chunks it covers."""
    models = conn.execute(
        sql.SQL(
            "SELECT model_key, provider, name, revision, dims, normalized, query_prefix, passage_prefix, "
            "max_tokens, vector_table, status, created_at, released_at FROM {} ORDER BY created_at"
        ).format(table(schema, "embedding_models"))
    ).fetchall()
    active = {
        t: (key, cv)
        for t, key, cv in conn.execute(
            sql.SQL("SELECT tenant_id, active_model_key, active_chunker_version FROM {}").format(
                table(schema, "tenants")
            )
        ).fetchall()
    }
    out = []
    for key, provider, name, revision, dims, normalized, qp, pp, max_tokens, vt, status, created, released in models:
        coverage: dict[str, dict[str, Any]] = {}
        if status != "retired" and vector_table_of(conn, schema, key):
            rows = conn.execute(
                sql.SQL(
                    """
                    SELECT c.tenant_id, c.chunker_version, count(*), count(v.chunk_id) FROM {chunks} c
                      LEFT JOIN {v} v ON v.tenant_id = c.tenant_id AND v.chunk_id = c.chunk_id
                                     AND v.content_hash = c.content_hash AND v.embedding IS NOT NULL
                     GROUP BY 1, 2 ORDER BY 1, 2
                    """
                ).format(chunks=table(schema, "chunks"), v=table(schema, vt))
            ).fetchall()
            for tenant, chunk_set, chunks, current in rows:
                is_active = active.get(tenant) == (key, chunk_set)
                if not (current or is_active):
                    continue
                known = coverage.get(tenant)
                # one entry per tenant: the set the tenant searches with this model, else the best-covered one
                if known is None or (is_active, current) > (known["active"], known["vectors"]):
                    coverage[tenant] = {
                        "chunker_version": chunk_set,
                        "chunks": chunks,
                        "vectors": current,
                        "coverage_pct": round(100.0 * current / chunks, 2) if chunks else 100.0,
                        "active": is_active,
                    }
        out.append({
            "model_key": key, "provider": provider, "name": name, "revision": revision, "dims": dims,
            "normalized": normalized, "query_prefix": qp, "passage_prefix": pp, "max_tokens": max_tokens,
            "vector_table": vt, "status": status, "created_at": created.isoformat(),
            "released_at": released.isoformat() if released else None, "tenants": coverage,
        })  # fmt: skip
    return out


class ModelInUse(RuntimeError):
    """A model that is still some tenant's active model cannot be retired."""


def retire_model(conn: psycopg.Connection, schema: str, model_key: str) -> int:
    """Drop a model's vectors (its table) and mark it retired. Refused while a tenant searches with it.
    Returns the number of vectors dropped."""
    with conn.transaction():
        row = conn.execute(
            sql.SQL("SELECT vector_table FROM {} WHERE model_key = %s FOR UPDATE").format(
                table(schema, "embedding_models")
            ),
            (model_key,),
        ).fetchone()
        if row is None:
            raise LookupError(f"no model {model_key!r}; see `embeddings-pipeline models list`")
        users = conn.execute(
            sql.SQL("SELECT tenant_id FROM {} WHERE active_model_key = %s ORDER BY 1").format(table(schema, "tenants")),
            (model_key,),
        ).fetchall()
        if users:
            raise ModelInUse(
                f"model {model_key} is the active model of {len(users)} tenant(s) "
                f"({', '.join(repr(u[0]) for u in users[:5])}); switch them to another model first"
            )
        vt = table(schema, row[0])
        dropped = 0
        if relation_exists(conn, schema, row[0]):
            dropped = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(vt)).fetchone()[0]  # type: ignore[index]
            conn.execute(sql.SQL("DROP TABLE {}").format(vt))
        conn.execute(
            sql.SQL("UPDATE {} SET status = 'retired' WHERE model_key = %s").format(table(schema, "embedding_models")),
            (model_key,),
        )
    return int(dropped)


def expired_models(conn: psycopg.Connection, schema: str, retention_days: float) -> list[tuple[str, datetime]]:
    """Models no tenant has searched with for at least `retention_days` (and that nobody embeds with since):
    (model_key, released_at), oldest first. A model never activated is never expired: retire it by hand."""
    rows = conn.execute(
        sql.SQL(
            """
            SELECT m.model_key, m.released_at FROM {models} m
             WHERE m.status <> 'retired' AND m.released_at IS NOT NULL
               AND m.released_at <= now() - make_interval(secs => %s)
               AND NOT EXISTS (SELECT 1 FROM {tenants} t WHERE t.active_model_key = m.model_key)
             ORDER BY m.released_at
            """
        ).format(models=table(schema, "embedding_models"), tenants=table(schema, "tenants")),
        (retention_days * 86400.0,),
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def apply_retention(
    conn: psycopg.Connection, schema: str, retention_days: float, *, dry_run: bool = False
) -> dict[str, int]:
    """Retire every expired model; model_key -> vectors dropped (with `dry_run`: that would be dropped)."""
    out: dict[str, int] = {}
    for key, _ in expired_models(conn, schema, retention_days):
        if dry_run:
            vt = vector_table_of(conn, schema, key)
            n = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table(schema, vt))).fetchone() if vt else None
            out[key] = int(n[0]) if n else 0
            continue
        try:
            out[key] = retire_model(conn, schema, key)
        except ModelInUse:  # activated again between the listing and now
            continue
    return out


def lineage(
    conn: psycopg.Connection, schema: str, tenant_id: str, *, chunk_id: str | None = None, doc_id: str | None = None
) -> list[dict[str, Any]]:
    """For each vector of the chunk (or of every chunk of the document), in every model: who made it, from
    which text, when, in which Dagster run, and whether it is current."""
    if (chunk_id is None) == (doc_id is None):
        raise ValueError("give exactly one of chunk_id or doc_id")
    chunk_filter = sql.SQL("c.chunk_id = %(id)s") if chunk_id else sql.SQL("c.doc_id = %(id)s")
    active = conn.execute(
        sql.SQL("SELECT active_model_key, active_chunker_version FROM {} WHERE tenant_id = %s").format(
            table(schema, "tenants")
        ),
        (tenant_id,),
    ).fetchone()
    models = conn.execute(
        sql.SQL(
            "SELECT model_key, provider, name, revision, dims, vector_table FROM {} WHERE status <> 'retired'"
        ).format(table(schema, "embedding_models"))
    ).fetchall()
    out: list[dict[str, Any]] = []
    for key, provider, name, revision, dims, vt in models:
        if not relation_exists(conn, schema, vt):
            continue
        rows = conn.execute(
            sql.SQL(
                """
                SELECT c.chunk_id, c.doc_id, c.chunker_version, c.content_hash, v.content_hash, v.embedded_at,
                       v.run_id, v.embedding IS NULL
                  FROM {chunks} c JOIN {v} v ON v.tenant_id = c.tenant_id AND v.chunk_id = c.chunk_id
                 WHERE c.tenant_id = %(t)s AND {filter}
                 ORDER BY c.doc_id, c.ordinal
                """
            ).format(chunks=table(schema, "chunks"), v=table(schema, vt), filter=chunk_filter),
            {"t": tenant_id, "id": chunk_id or doc_id},
        ).fetchall()
        for cid, doc, chunker, chunk_hash, vector_hash, embedded_at, run_id, is_null in rows:
            out.append({
                "chunk_id": cid, "doc_id": doc, "model_key": key, "provider": provider, "model_name": name,
                "revision": revision, "dims": dims, "chunker_version": chunker, "content_hash": vector_hash,
                "embedded_at": embedded_at.isoformat() if embedded_at else None, "run_id": run_id,
                "current": (vector_hash == chunk_hash) and not is_null,
                "active_model": bool(active and active[0] == key),
                "serving": bool(active and active == (key, chunker)),  # what search reads now
            })  # fmt: skip
    return out
