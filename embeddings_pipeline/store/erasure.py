"""Erasing a tenant: every row of it in every table of the pipeline's schema, found from the catalog.

The tables are not listed here: any table of the schema with a `tenant_id` column is the pipeline's and holds
tenant data (documents, blocks, chunks, every `vectors_*` table, errors, quality queries, tokens, `tenants`, and
whatever a later migration adds). An application's own source relation (EMBEDDINGS_SOURCE_RELATION) is never
touched, even when it lives in the pipeline's schema: the application owns those rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from ..config import validate_tenant_id
from .db import source_parts, table, tenant_lock

_TENANT_TABLES = """
SELECT c.relname
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
 WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition
 ORDER BY c.relname
"""

# (referencing table, referenced table) within the schema, to delete referencing rows first.
_FOREIGN_KEYS = """
SELECT src.relname, dst.relname
  FROM pg_constraint k
  JOIN pg_class src ON src.oid = k.conrelid
  JOIN pg_class dst ON dst.oid = k.confrelid
  JOIN pg_namespace n ON n.oid = src.relnamespace
 WHERE k.contype = 'f' AND n.nspname = %s AND src.oid <> dst.oid
"""


@dataclass
class Erasure:
    tenant_id: str
    removed: dict[str, int] = field(default_factory=dict)  # table -> rows deleted (every tenant table, 0 included)
    app_source: str | None = None  # `schema.name` of the application's source relation, left untouched

    @property
    def total(self) -> int:
        return sum(self.removed.values())


def tenant_tables(conn: psycopg.Connection, schema: str) -> list[str]:
    """Every table of SCHEMA with a tenant_id column, those referencing others (foreign keys) first."""
    names = [r[0] for r in conn.execute(_TENANT_TABLES, (schema,)).fetchall()]
    refs: dict[str, set[str]] = {}
    for src, dst in conn.execute(_FOREIGN_KEYS, (schema,)).fetchall():
        refs.setdefault(dst, set()).add(src)
    ordered: list[str] = []

    def visit(name: str, path: frozenset[str] = frozenset()) -> None:
        if name in ordered or name in path:
            return
        for child in sorted(refs.get(name, ())):
            if child in names:
                visit(child, path | {name})
        ordered.append(name)

    for name in names:
        visit(name)
    return ordered


def erase_tenant(conn: psycopg.Connection, schema: str, tenant_id: str, lock_timeout_s: float | None = None) -> Erasure:
    """Delete every row of TENANT_ID in every table of SCHEMA that has a tenant_id column (but the application's
    source relation), in one transaction, under the tenant's lock (no run writes it meanwhile)."""
    validate_tenant_id(tenant_id)
    source = source_parts(schema)
    own_source = source == (schema, "documents")
    erasure = Erasure(tenant_id, app_source=None if own_source else ".".join(source))
    with tenant_lock(conn, schema, tenant_id, lock_timeout_s), conn.transaction():
        for name in tenant_tables(conn, schema):
            if not own_source and (schema, name) == source:
                continue
            cur = conn.execute(sql.SQL("DELETE FROM {} WHERE tenant_id = %s").format(table(schema, name)), (tenant_id,))
            erasure.removed[name] = cur.rowcount
    return erasure
