"""The facts behind the asset checks: per-tenant counts plus a few example chunk ids, so a person can act."""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from ..providers.base import ModelIdentity
from .db import source_relation, table

EXAMPLES = 5


@dataclass(frozen=True)
class Finding:
    """How many rows break a rule, and a few of them."""

    count: int
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.count == 0


def _finding(conn: psycopg.Connection, query: sql.Composable, params: dict[str, object]) -> Finding:
    row = conn.execute(
        sql.SQL("SELECT count(*), (array_agg(id ORDER BY id))[1:{n}] FROM ({q}) f").format(
            q=query, n=sql.Literal(EXAMPLES)
        ),
        params,
    ).fetchone()
    assert row is not None
    return Finding(int(row[0]), list(row[1] or []))


def _names(schema: str, identity: ModelIdentity) -> dict[str, sql.Composable]:
    return {"chunks": table(schema, "chunks"), "v": table(schema, identity.vector_table)}


def missing_vectors(
    conn: psycopg.Connection, schema: str, identity: ModelIdentity, tenant_id: str, chunker_version: str
) -> Finding:
    """Live chunks of the model's chunk set with no vector row, or a NULL embedding, for the model."""
    q = sql.SQL(
        """
        SELECT c.chunk_id AS id FROM {chunks} c
          LEFT JOIN {v} v ON v.tenant_id = c.tenant_id AND v.chunk_id = c.chunk_id
         WHERE c.tenant_id = %(t)s AND c.chunker_version = %(cv)s AND (v.chunk_id IS NULL OR v.embedding IS NULL)
        """
    ).format(**_names(schema, identity))
    return _finding(conn, q, {"t": tenant_id, "cv": chunker_version})


def stale_vectors(
    conn: psycopg.Connection, schema: str, identity: ModelIdentity, tenant_id: str, chunker_version: str
) -> Finding:
    """Vectors computed from other text than their chunk's current text."""
    q = sql.SQL(
        """
        SELECT c.chunk_id AS id FROM {chunks} c
          JOIN {v} v ON v.tenant_id = c.tenant_id AND v.chunk_id = c.chunk_id
         WHERE c.tenant_id = %(t)s AND c.chunker_version = %(cv)s AND v.content_hash IS DISTINCT FROM c.content_hash
        """
    ).format(**_names(schema, identity))
    return _finding(conn, q, {"t": tenant_id, "cv": chunker_version})


def model_keys(conn: psycopg.Connection, schema: str, identity: ModelIdentity, tenant_id: str) -> list[str]:
    """The model keys recorded on the tenant's vectors (one is the only healthy answer)."""
    rows = conn.execute(
        sql.SQL("SELECT DISTINCT model_key FROM {v} WHERE tenant_id = %s ORDER BY 1").format(
            **_names(schema, identity)
        ),
        (tenant_id,),
    ).fetchall()
    return [r[0] for r in rows]


def malformed_vectors(conn: psycopg.Connection, schema: str, identity: ModelIdentity, tenant_id: str) -> Finding:
    """Wrong dimension, NaN, zero vectors, or (for a normalizing model) a norm away from 1."""
    norm_rule = sql.SQL("OR abs(vector_norm(v.embedding) - 1) > 1e-3") if identity.normalized else sql.SQL("")
    q = sql.SQL(
        """
        SELECT v.chunk_id AS id FROM {v} v
         WHERE v.tenant_id = %(t)s AND v.embedding IS NOT NULL
           AND (vector_dims(v.embedding) <> %(dims)s OR vector_norm(v.embedding) = 0
                OR vector_norm(v.embedding) = 'NaN'::float8 {norm_rule})
        """
    ).format(norm_rule=norm_rule, **_names(schema, identity))
    return _finding(conn, q, {"t": tenant_id, "dims": identity.dims})


def truncated_chunks(
    conn: psycopg.Connection, schema: str, identity: ModelIdentity, tenant_id: str, chunker_version: str
) -> Finding:
    """Chunks longer than the model reads (only under the 'truncate' overflow policy)."""
    q = sql.SQL(
        "SELECT chunk_id AS id FROM {chunks} WHERE tenant_id = %(t)s AND chunker_version = %(cv)s "
        "AND token_count > %(max)s"
    ).format(**_names(schema, identity))
    return _finding(conn, q, {"t": tenant_id, "cv": chunker_version, "max": identity.max_tokens})


def document_errors(conn: psycopg.Connection, schema: str, tenant_id: str) -> Finding:
    """Source rows of the tenant that cannot be parsed; examples are `doc_id: reason`."""
    q = sql.SQL("SELECT doc_id || ': ' || reason AS id FROM {} WHERE tenant_id = %(t)s").format(
        table(schema, "document_errors")
    )
    return _finding(conn, q, {"t": tenant_id})


@dataclass
class Sweep:
    """All tenants' missing vectors: `missing` per tenant (chunks without a vector plus `not_chunked`), live
    documents never chunked into the set search reads, unparseable source rows, damaged vector storage."""

    missing: dict[str, int] = field(default_factory=dict)
    not_chunked: dict[str, int] = field(default_factory=dict)
    document_errors: dict[str, int] = field(default_factory=dict)
    damage: list[str] = field(default_factory=list)


def missing_by_tenant(
    conn: psycopg.Connection, schema: str, default_model_key: str
) -> tuple[dict[str, int], list[str]]:
    """`sweep(...)`'s missing counts per tenant and storage damage."""
    found = sweep(conn, schema, default_model_key)
    return found.missing, found.damage


def _counts_by_tenant(conn: psycopg.Connection, query: sql.Composable) -> dict[str, int]:
    return {r[0]: int(r[1]) for r in conn.execute(query).fetchall()}


def sweep(conn: psycopg.Connection, schema: str, default_model_key: str) -> Sweep:
    """All tenants at once, each against its active model and chunk set (or the default model): live chunks
    without a non-NULL vector, e.g. nulled or deleted behind the pipeline's back, plus live documents with no
    place in that chunk set (their run failed or never came). Reads ids and counts only, never content.

    Where a vector table or its `embedding` column is gone (a schema push dropped it), every live chunk of the
    tenants on that model counts as missing and the second value says what is damaged. The sweep only reports;
    the next run repairs.
    """
    chunks = table(schema, "chunks")
    groups = conn.execute(
        sql.SQL(
            """
            SELECT coalesce(t.active_model_key, %s), m.vector_table, array_agg(c.tenant_id)
              FROM (SELECT DISTINCT tenant_id FROM {chunks}) c
              LEFT JOIN {tenants} t ON t.tenant_id = c.tenant_id
              LEFT JOIN {models} m ON m.model_key = coalesce(t.active_model_key, %s)
             GROUP BY 1, 2
            """
        ).format(chunks=chunks, tenants=table(schema, "tenants"), models=table(schema, "embedding_models")),
        (default_model_key, default_model_key),
    ).fetchall()
    missing: dict[str, int] = {}
    damage: list[str] = []
    for model_key, vector_table, tenants in groups:
        count_all = sql.SQL(
            """
            SELECT c.tenant_id, count(*) FROM {chunks} c LEFT JOIN {tenants} t ON t.tenant_id = c.tenant_id
             WHERE c.tenant_id = ANY(%s) AND c.chunker_version = coalesce(t.active_chunker_version, c.chunker_version)
             GROUP BY 1
            """
        ).format(chunks=chunks, tenants=table(schema, "tenants"))
        try:
            if vector_table is None:
                raise LookupError(f"model {model_key} has no vector table yet")
            with conn.transaction():
                rows = conn.execute(
                    sql.SQL(
                        """
                        SELECT c.tenant_id, count(*) FROM {chunks} c
                          LEFT JOIN {tenants} t ON t.tenant_id = c.tenant_id
                          LEFT JOIN {v} v ON v.tenant_id = c.tenant_id AND v.chunk_id = c.chunk_id
                         WHERE c.tenant_id = ANY(%s) AND (v.chunk_id IS NULL OR v.embedding IS NULL)
                           AND c.chunker_version = coalesce(t.active_chunker_version, c.chunker_version)
                         GROUP BY 1
                        """
                    ).format(chunks=chunks, tenants=table(schema, "tenants"), v=table(schema, vector_table)),
                    (tenants,),
                ).fetchall()
        except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn, LookupError) as exc:
            reason = exc.diag.message_primary if isinstance(exc, psycopg.Error) else str(exc)
            damage.append(f"vector storage of {model_key}: {reason}")
            rows = conn.execute(count_all, (tenants,)).fetchall()
        missing.update({r[0]: int(r[1]) for r in rows})
    not_chunked = _counts_by_tenant(
        conn,
        sql.SQL(
            """
            SELECT d.tenant_id, count(DISTINCT d.doc_id) FROM {docs} d
              LEFT JOIN {tenants} t ON t.tenant_id = d.tenant_id
             WHERE d.deleted_at IS NULL AND d.tenant_id IS NOT NULL AND NOT EXISTS (
                   SELECT 1 FROM {done} s WHERE s.tenant_id = d.tenant_id AND s.doc_id = d.doc_id
                      AND s.chunker_version = coalesce(t.active_chunker_version, s.chunker_version))
             GROUP BY 1
            """
        ).format(
            docs=source_relation(schema), tenants=table(schema, "tenants"), done=table(schema, "chunked_documents")
        ),
    )
    for tenant, n in not_chunked.items():
        missing[tenant] = missing.get(tenant, 0) + n
    errors = _counts_by_tenant(
        conn, sql.SQL("SELECT tenant_id, count(*) FROM {} GROUP BY 1").format(table(schema, "document_errors"))
    )
    return Sweep(dict(sorted(missing.items())), dict(sorted(not_chunked.items())), dict(sorted(errors.items())), damage)
