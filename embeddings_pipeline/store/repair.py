"""Drift repair of the pipeline's own tables: what the migrations built and someone dropped or altered since.

The reference layout is what the migrations build in an empty schema (built inside a transaction that is rolled
back, once per process). Comparing only reference -> actual, extra tables, columns and indexes are left alone.

- Derived tables (blocks, chunks and their bookkeeping, errors) are rebuilt from the source, so a damaged one is
  recreated empty and every tenant's documents are re-parsed and re-chunked at its next run. Chunk ids are
  deterministic, so the vectors (kept in their own tables) are found again and nothing is re-embedded.
- State tables (tenants, embedding_models) get missing columns and indexes back; their rows are kept.
- The source (`documents`, when it is the source) is never recreated: an empty source would make every vector
  look deleted. Damage to it is an error that says so.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from . import terms
from .db import source_parts
from .migrations import MIGRATIONS, apply_migration

log = logging.getLogger(__name__)

DERIVED = ("blocks", "chunks", "parsed_documents", "chunked_documents", "embedding_errors")
BOOKKEEPING = ("blocks", "chunks", "parsed_documents", "chunked_documents")  # lost rows -> re-parse everything
SOURCE = "documents"


class SourceDamaged(RuntimeError):
    """The pipeline's own `documents` table, the source of every vector, is gone or lost columns."""


@dataclass(frozen=True)
class Layout:
    columns: dict[str, dict[str, str]]  # table -> column -> "type" or "type NOT NULL"
    indexes: dict[str, tuple[str, str, bool]]  # index -> (table, definition with `{schema}`, is primary key)


@dataclass
class Damage:
    tables: list[str] = field(default_factory=list)  # missing, lost columns, or retyped columns
    columns: dict[str, list[str]] = field(default_factory=dict)  # state table -> missing columns
    indexes: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.tables or self.columns or self.indexes)

    def __str__(self) -> str:
        parts = [f"table {t}" for t in self.tables]
        parts += [f"{t}.{c}" for t, cols in self.columns.items() for c in cols]
        parts += [f"index {i}" for i in self.indexes]
        return ", ".join(parts)


def describe(conn: psycopg.Connection, schema: str, like: Layout | None = None) -> Layout:
    """The tables and indexes of `schema` (only those `like` names, when given: a schema with many per-tenant
    partitions has many more indexes than the migrations build, and this runs at every pipeline connect)."""
    tables = list(like.columns) if like else None
    indexes_named = list(like.indexes) if like else None
    columns: dict[str, dict[str, str]] = {}
    for table, column, type_, not_null in conn.execute(
        """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND (%s::text[] IS NULL OR c.relname = ANY(%s))
        """,
        (schema, tables, tables),
    ):
        columns.setdefault(table, {})[column] = f"{type_} NOT NULL" if not_null else type_
    indexes = {
        name: (table, definition.replace(f" ON {schema}.", " ON {schema}."), bool(primary))
        for table, name, definition, primary in conn.execute(
            """
            SELECT t.relname, i.relname, pg_get_indexdef(i.oid), x.indisprimary
              FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
              JOIN pg_namespace n ON n.oid = t.relnamespace
             WHERE n.nspname = %s AND (%s::text[] IS NULL OR i.relname = ANY(%s))
            """,
            (schema, indexes_named, indexes_named),
        )
    }
    return Layout(columns, indexes)


_REFERENCE: Layout | None = None


def reference(conn: psycopg.Connection) -> Layout:
    """What the migrations build, described (built in a scratch schema that is rolled back)."""
    global _REFERENCE
    if _REFERENCE is None:
        scratch = _scratch_name()
        with conn.transaction(force_rollback=True):
            _build(conn, scratch)
            _REFERENCE = describe(conn, scratch)
    return _REFERENCE


def _scratch_name() -> str:
    return f"ep_reference_{secrets.token_hex(6)}"


def _build(conn: psycopg.Connection, schema: str) -> None:
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    for _, _, template in MIGRATIONS:
        apply_migration(conn, schema, template)


def find_damage(conn: psycopg.Connection, schema: str) -> Damage:
    ref = reference(conn)
    actual = describe(conn, schema, like=ref)
    damage = Damage()
    for table, columns in ref.columns.items():
        have = actual.columns.get(table)
        if have is None:
            damage.tables.append(table)
            continue
        wrong = [c for c, t in columns.items() if have.get(c) != t]
        if wrong and (table in DERIVED or table == SOURCE):
            damage.tables.append(table)
        elif wrong:
            damage.columns[table] = [c for c in wrong if c not in have]
            if not damage.columns[table]:  # a retyped state column is reported, not rewritten
                log.warning("table %s.%s: columns %s differ from the migrations' types", schema, table, wrong)
                del damage.columns[table]
    for name, (table, definition, _) in ref.indexes.items():
        have_index = actual.indexes.get(name)
        if table not in damage.tables and (have_index is None or have_index[1] != definition):
            damage.indexes.append(name)
    return damage


def ensure_schema(conn: psycopg.Connection, schema: str) -> Damage:
    """Repair what drifted (see the module doc); returns what was found (empty when all is well)."""
    damage = find_damage(conn, schema)
    if damage:
        repair(conn, schema)
    terms.ensure_stats(conn, schema, damage.tables)  # text search statistics: recounted if their source was hit
    return damage


def repair(conn: psycopg.Connection, schema: str) -> Damage:
    s = sql.Identifier(schema)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{schema}:migrate",))
        damage = find_damage(conn, schema)  # again, under the lock: another process may have repaired it
        if not damage:
            return damage
        if SOURCE in damage.tables and source_parts(schema) == (schema, SOURCE):
            raise SourceDamaged(
                f"the source table {schema}.{SOURCE} is missing or lost columns; restore it from a backup. The "
                "pipeline will not recreate an empty source (every vector would look deleted), and has changed "
                "nothing"
            )
        log.warning("schema %s drifted (%s): restoring it", schema, damage)
        ref = reference(conn)
        scratch = _scratch_name()
        _build(conn, scratch)
        for table in damage.tables:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}.{} CASCADE").format(s, sql.Identifier(table)))
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {}.{} (LIKE {}.{} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED)"
                ).format(s, sql.Identifier(table), sql.Identifier(scratch), sql.Identifier(table))
            )
        for table, columns in damage.columns.items():
            for column in columns:
                _add_column_like(conn, schema, scratch, table, column)
        for name, (table, definition, primary) in ref.indexes.items():
            if table in damage.tables or name in damage.indexes:
                conn.execute(sql.SQL("DROP INDEX IF EXISTS {}.{}").format(s, sql.Identifier(name)))
                conn.execute(sql.SQL(definition.replace("{schema}", schema)))  # type: ignore[arg-type]
                if primary:
                    conn.execute(
                        sql.SQL("ALTER TABLE {}.{} ADD PRIMARY KEY USING INDEX {}").format(
                            s, sql.Identifier(table), sql.Identifier(name)
                        )
                    )
        if set(damage.tables) & set(BOOKKEEPING):
            for table in ("parsed_documents", "chunked_documents"):  # every document is parsed and chunked again
                conn.execute(sql.SQL("DELETE FROM {}.{}").format(s, sql.Identifier(table)))
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(scratch)))
    return damage


def _add_column_like(conn: psycopg.Connection, schema: str, scratch: str, table: str, column: str) -> None:
    """Add `column` back with the reference's type, default and NOT NULL (only when it has a default)."""
    row = conn.execute(
        """
        SELECT format_type(a.atttypid, a.atttypmod), pg_get_expr(d.adbin, d.adrelid), a.attnotnull
          FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
         WHERE a.attrelid = to_regclass(%s) AND a.attname = %s
        """,
        (f'"{scratch}"."{table}"', column),
    ).fetchone()
    assert row is not None
    type_, default, not_null = row
    clause = sql.SQL(" DEFAULT {}").format(sql.SQL(default)) if default else sql.SQL("")
    clause += sql.SQL(" NOT NULL") if not_null and default else sql.SQL("")
    conn.execute(
        sql.SQL("ALTER TABLE {}.{} ADD COLUMN {} {}{}").format(
            sql.Identifier(schema), sql.Identifier(table), sql.Identifier(column), sql.SQL(type_), clause
        )
    )
