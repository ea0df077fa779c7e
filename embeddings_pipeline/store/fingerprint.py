"""A fingerprint of the source relation and the pipeline's tables: columns, types (vector dimensions included)
and indexes. When it changes, every tenant is re-materialized (and each run repairs what drifted)."""

from __future__ import annotations

import hashlib
import json

import psycopg


def schema_description(conn: psycopg.Connection, schema: str) -> dict[str, object]:
    """Tables, columns with their types, and index definitions of `schema`, in a stable order."""
    columns = conn.execute(
        """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         WHERE n.nspname = %s AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
         ORDER BY 1, 2
        """,
        (schema,),
    ).fetchall()
    indexes = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s ORDER BY 1", (schema,)
    ).fetchall()
    tables: dict[str, list[list[object]]] = {}
    for relname, column, type_, not_null in columns:
        tables.setdefault(relname, []).append([column, type_, bool(not_null)])
    return {"tables": tables, "indexes": {name: definition for name, definition in indexes}}


def schema_fingerprint(conn: psycopg.Connection, schema: str) -> str:
    description = json.dumps(schema_description(conn, schema), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(description.encode()).hexdigest()[:16]
