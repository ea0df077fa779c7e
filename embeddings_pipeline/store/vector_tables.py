"""Vector tables: one per model identity (`vectors_<model_key>`, `vector(dims)`), laid out per tenant.

Vectors of different models never share a table or an index, so a model change can be filled side by side and
nothing ever mixes two models in one search. Within a model the table is partitioned by tenant (LIST on
tenant_id): the long tail of small tenants shares the DEFAULT partition `vectors_<model_key>_shared`, which has
no HNSW index, so their searches are exact scans of their own rows (the primary key finds them); a tenant that
grows past EMBEDDINGS_TENANT_INDEX_THRESHOLD vectors gets a partition of its own (`vp_<digest>`) with its own
HNSW graph, built in bulk. No search ever filters another tenant's vectors out of an index scan, and no insert
pays for a graph holding other tenants' vectors. The tables are made right (and repaired) at every run.
"""

from __future__ import annotations

import hashlib
import os

import psycopg
from psycopg import sql

from ..providers.base import ModelIdentity
from .db import relation_exists, table

DEFAULT_THRESHOLD = 5000


def tenant_index_threshold() -> int:
    """EMBEDDINGS_TENANT_INDEX_THRESHOLD: vectors from which a tenant gets its own partition and HNSW index."""
    return int(os.environ.get("EMBEDDINGS_TENANT_INDEX_THRESHOLD", str(DEFAULT_THRESHOLD)))


def shared_partition(model_key: str) -> str:
    return f"vectors_{model_key}_shared"


def tenant_partition(model_key: str, tenant_id: str) -> str:
    """The name of a tenant's own partition (tenant ids are data: they never become identifiers themselves)."""
    return "vp_" + hashlib.sha256(f"{model_key}\x1f{tenant_id}".encode()).hexdigest()[:20]


def register_model(
    conn: psycopg.Connection, schema: str, identity: ModelIdentity, spec: str | None = None, *, filling: str = ""
) -> str:
    """Record the model identity and make its vector table, columns and indexes right (idempotent).

    This is also the drift repair: a table, column or index dropped or altered behind the pipeline's back is
    restored here, at the start of every embeddings step. Rows that survive are kept; vectors lost with a dropped
    column are NULL afterwards, so the same step re-embeds them. A table of the earlier layout (one table, one
    HNSW index for every tenant) becomes the shared partition of the new one, in place: nothing is re-embedded.
    The graph of tenant `filling`'s own partition is left to its fill, which builds it in bulk after
    (`promotion.laid_out_for_fill`).
    """
    vt = identity.vector_table
    key = identity.model_key
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
        if relkind(conn, schema, vt) == "r":
            _partition_in_place(conn, schema, key)
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
                ) PARTITION BY LIST (tenant_id)
                """
            ).format(t=table(schema, vt), dims=sql.Literal(identity.dims))
        )
        conn.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF {} DEFAULT").format(
                table(schema, shared_partition(key)), table(schema, vt)
            )
        )
        _repair_columns(conn, schema, vt, identity.dims)
        conn.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (tenant_id, content_hash)").format(
                sql.Identifier(f"{key}_hash"), table(schema, vt)
            )
        )
        conn.execute(  # the rows holding a vector, for `vectors.has_pending` (the no-op check): index-only
            sql.SQL(
                "CREATE INDEX IF NOT EXISTS {} ON {} (tenant_id, chunk_id) INCLUDE (content_hash)"
                " WHERE embedding IS NOT NULL"
            ).format(sql.Identifier(f"{key}_current"), table(schema, vt))
        )
        if serves(conn, schema, key):
            create_search_indexes(conn, schema, key, skip=tenant_partition(key, filling) if filling else "")
    return vt


def relkind(conn: psycopg.Connection, schema: str, name: str) -> str | None:
    row = conn.execute("SELECT relkind::text FROM pg_class WHERE oid = to_regclass(%s)", (f'"{schema}"."{name}"',))
    found = row.fetchone()
    return found[0] if found else None


def _partition_in_place(conn: psycopg.Connection, schema: str, model_key: str) -> None:
    """The earlier layout (a plain table with one HNSW index for all tenants) -> the shared partition of a
    partitioned table; tenants above the threshold then move to partitions of their own (`promotion.promote_large`)."""
    vt, shared = f"vectors_{model_key}", shared_partition(model_key)
    conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(table(schema, f"{model_key}_hnsw")))
    conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(table(schema, vt), sql.Identifier(shared)))
    # the old table's index names go with it, so the partitioned table can take them (and adopt the indexes)
    for (name,) in conn.execute(
        "SELECT c.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid WHERE x.indrelid = to_regclass(%s)",
        (f'"{schema}"."{shared}"',),
    ).fetchall():
        renamed = "vpi_" + hashlib.sha256(f"{shared}\x1f{name}".encode()).hexdigest()[:20]
        conn.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(table(schema, name), sql.Identifier(renamed)))
    conn.execute(
        sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS) PARTITION BY LIST (tenant_id)").format(
            table(schema, vt), table(schema, shared)
        )
    )
    conn.execute(sql.SQL("ALTER TABLE {} ADD PRIMARY KEY (tenant_id, chunk_id)").format(table(schema, vt)))
    conn.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} DEFAULT").format(table(schema, vt), table(schema, shared)))


def index_lock(schema: str, partition: str) -> str:
    """The advisory lock of a partition's graph build (held by whoever builds or is about to)."""
    return f"{schema}:hnsw:{partition}"


def own_partitions(conn: psycopg.Connection, schema: str, model_key: str) -> list[str]:
    """The model's per-tenant partitions (the shared one excluded)."""
    rows = conn.execute(
        """
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = to_regclass(%s) AND c.relname <> %s ORDER BY 1
        """,
        (f'"{schema}"."vectors_{model_key}"', shared_partition(model_key)),
    ).fetchall()
    return [r[0] for r in rows]


def serves(conn: psycopg.Connection, schema: str, model_key: str) -> bool:
    """Whether some tenant searches with this model (its active model)."""
    row = conn.execute(
        sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE active_model_key = %s)").format(table(schema, "tenants")),
        (model_key,),
    ).fetchone()
    return bool(row and row[0])


def ensure_search_index(conn: psycopg.Connection, schema: str, model_key: str) -> None:
    """The HNSW indexes of the model's per-tenant partitions, built in bulk before the model first serves.

    A model being filled side by side serves nobody, so its partitions have no HNSW index while it fills:
    inserting into an HNSW graph costs about a millisecond per vector on 2 cores, far more than the COPY; one bulk
    build at the switch is several times cheaper (`bench/scale.py`). Writers of the same table wait for the build.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{schema}:model:{model_key}",))
        create_search_indexes(conn, schema, model_key)


def _build_memory(conn: psycopg.Connection) -> None:
    conn.execute("SELECT set_config('maintenance_work_mem', %s, true)", (os.environ.get(
        "EMBEDDINGS_INDEX_BUILD_MEMORY", "512MB"),))  # fmt: skip


def create_search_indexes(conn: psycopg.Connection, schema: str, model_key: str, skip: str = "") -> None:
    """Build the missing HNSW graphs of the model's own partitions (in the caller's transaction). A graph another
    session is building (or about to: `promotion`) is left to it."""
    memory_set = False
    for partition in own_partitions(conn, schema, model_key):
        if partition == skip or relation_exists(conn, schema, f"{partition}_hnsw"):
            continue  # (CREATE INDEX IF NOT EXISTS would still lock the table against writers)
        row = conn.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s))", (index_lock(schema, partition),))
        if not (got := row.fetchone()) or not got[0] or relation_exists(conn, schema, f"{partition}_hnsw"):
            continue
        if not memory_set:
            _build_memory(conn)
            memory_set = True
        conn.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (embedding vector_cosine_ops)").format(
                sql.Identifier(f"{partition}_hnsw"), table(schema, partition)
            )
        )


def _drop_search_indexes(conn: psycopg.Connection, schema: str, model_key: str) -> None:
    for partition in own_partitions(conn, schema, model_key):
        conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(table(schema, f"{partition}_hnsw")))


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
            _drop_search_indexes(conn, schema, vt.removeprefix("vectors_"))
            conn.execute(
                sql.SQL("UPDATE {} SET embedding = NULL WHERE vector_dims(embedding) <> %s").format(t), (dims,)
            )
            conn.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN embedding TYPE {}").format(t, sql.SQL(expected)))
