"""A fingerprint of the source relation and the pipeline's tables: columns, types (vector dimensions included)
and indexes. When it changes, every tenant is re-materialized (and each run repairs what drifted)."""

from __future__ import annotations

import hashlib
import json

import psycopg

from .db import source_parts


def schema_description(conn: psycopg.Connection, schema: str) -> dict[str, object]:
    """Tables, columns with their types, and index definitions of `schema`, in a stable order."""
    columns = conn.execute(
        """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         WHERE n.nspname = %s AND c.relkind IN ('r', 'v', 'm', 'p', 'f') AND NOT c.relispartition
         ORDER BY 1, 2
        """,
        (schema,),
    ).fetchall()
    # a tenant's own vector partition and its HNSW index come and go with its size: layout, not schema
    indexes = conn.execute(
        """
        SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x
          JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
          JOIN pg_namespace n ON n.oid = t.relnamespace
         WHERE n.nspname = %s AND NOT t.relispartition ORDER BY 1
        """,
        (schema,),
    ).fetchall()
    tables: dict[str, list[list[object]]] = {}
    for relname, column, type_, not_null in columns:
        tables.setdefault(relname, []).append([column, type_, bool(not_null)])
    return {"tables": tables, "indexes": dict(indexes), "source": _source(conn, schema)}


def _source(conn: psycopg.Connection, schema: str) -> dict[str, object]:
    """The source relation's columns and, for a view, its definition: a view that now builds the text
    differently is a change even when its columns stay the same."""
    src_schema, name = source_parts(schema)
    regclass = f'"{src_schema}"."{name}"'
    columns = conn.execute(
        """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
         WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
        """,
        (regclass,),
    ).fetchall()
    view = conn.execute(
        "SELECT pg_get_viewdef(to_regclass(%s)) WHERE (SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)) "
        "IN ('v', 'm')",
        (regclass, regclass),
    ).fetchone()
    return {"relation": f"{src_schema}.{name}", "columns": columns, "view": view[0] if view else None}


def schema_fingerprint(conn: psycopg.Connection, schema: str) -> str:
    description = json.dumps(schema_description(conn, schema), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(description.encode()).hexdigest()[:16]
