"""Vector tables: one per model identity (`vectors_<model_key>`, `vector(dims)`, HNSW cosine index).

Vectors of different models never share a table or an index, so a model change can be filled side by side
and nothing ever mixes two models in one search. The tables are made right (and repaired) at every run.
"""

from __future__ import annotations

import os

import psycopg
from psycopg import sql

from ..providers.base import ModelIdentity
from .db import relation_exists, table


def register_model(conn: psycopg.Connection, schema: str, identity: ModelIdentity, spec: str | None = None) -> str:
    """Record the model identity and make its vector table, columns and indexes right (idempotent).

    This is also the drift repair: a table, column or index dropped or altered behind the pipeline's back is
    restored here, at the start of every embeddings step. Rows that survive are kept; vectors lost with a dropped
    column are NULL afterwards, so the same step re-embeds them.
    """
    vt = identity.vector_table
    key = identity.model_key
    t = table(schema, vt)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{schema}:model:{key}",))
        conn.execute(
            sql.SQL(
                """
                INSERT INTO {} (model_key, provider, name, revision, dims, normalized, query_prefix,
                                passage_prefix, max_tokens, vector_table, spec)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (model_key) DO UPDATE
                   SET spec = coalesce(EXCLUDED.spec, {m}.spec), status = 'active', released_at = NULL
                """
            ).format(table(schema, "embedding_models"), m=sql.Identifier("embedding_models")),
            (key, identity.provider, identity.name, identity.revision, identity.dims, identity.normalized,
             identity.query_prefix, identity.passage_prefix, identity.max_tokens, vt, spec),
        )  # fmt: skip
        conn.execute(
            sql.SQL(
                """
                CREATE TABLE IF NOT EXISTS {t} (
                    tenant_id    text NOT NULL,
                    chunk_id     text NOT NULL,
                    content_hash text,
                    embedding    vector({dims}),
                    model_key    text,
                    run_id       text,
                    embedded_at  timestamptz DEFAULT now(),
                    PRIMARY KEY (tenant_id, chunk_id)
                )
                """
            ).format(t=t, dims=sql.Literal(identity.dims))
        )
        _repair_columns(conn, schema, vt, identity.dims)
        if serves(conn, schema, key):
            _create_search_index(conn, schema, key)
        conn.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (tenant_id, content_hash)").format(
                sql.Identifier(f"{key}_hash"), t
            )
        )
    return vt


def serves(conn: psycopg.Connection, schema: str, model_key: str) -> bool:
    """Whether some tenant searches with this model (its active model)."""
    row = conn.execute(
        sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE active_model_key = %s)").format(table(schema, "tenants")),
        (model_key,),
    ).fetchone()
    return bool(row and row[0])


def ensure_search_index(conn: psycopg.Connection, schema: str, model_key: str) -> None:
    """The model's HNSW index, built in bulk before the model first serves a tenant.

    A model being filled side by side serves nobody, so its table has no HNSW index while it fills: inserting
    into an HNSW graph costs about a millisecond per vector on 2 cores, far more than the COPY; one bulk build
    at the switch is several times cheaper (`bench/scale.py`). Writers of the same table wait for the build.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{schema}:model:{model_key}",))
        conn.execute("SELECT set_config('maintenance_work_mem', %s, true)", (os.environ.get(
            "EMBEDDINGS_INDEX_BUILD_MEMORY", "512MB"),))  # fmt: skip
        _create_search_index(conn, schema, model_key)


def _create_search_index(conn: psycopg.Connection, schema: str, model_key: str) -> None:
    if relation_exists(conn, schema, f"{model_key}_hnsw"):
        return  # (CREATE INDEX IF NOT EXISTS would still lock the table against writers)
    conn.execute(
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (embedding vector_cosine_ops)").format(
            sql.Identifier(f"{model_key}_hnsw"), table(schema, f"vectors_{model_key}")
        )
    )


_COLUMNS = {
    "content_hash": "text",
    "embedding": "vector({dims})",
    "model_key": "text",
    "run_id": "text",
    "embedded_at": "timestamp with time zone",
}


def _repair_columns(conn: psycopg.Connection, schema: str, vt: str, dims: int) -> None:
    """Add dropped columns back; give `embedding` back its declared dimension (dropping only wrong-sized vectors)."""
    t = table(schema, vt)
    actual = dict(
        conn.execute(
            """
            SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
             WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
            """,
            (f'"{schema}"."{vt}"',),
        ).fetchall()
    )
    for column, type_ in _COLUMNS.items():
        expected = type_.format(dims=dims)
        if column not in actual:
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(t, sql.Identifier(column), sql.SQL(expected))
            )
        elif actual[column] != expected and column == "embedding":
            conn.execute(
                sql.SQL("DROP INDEX IF EXISTS {}.{}").format(
                    sql.Identifier(schema), sql.Identifier(f"{vt.removeprefix('vectors_')}_hnsw")
                )
            )
            conn.execute(
                sql.SQL("UPDATE {} SET embedding = NULL WHERE vector_dims(embedding) <> %s").format(t), (dims,)
            )
            conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN embedding TYPE {}").format(t, sql.SQL(expected)))
