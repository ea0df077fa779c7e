"""Per-tenant quality queries (query text and graded relevant documents): what the quality gate scores."""

from __future__ import annotations

from collections.abc import Mapping

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ..config import validate_tenant_id
from .db import table


def set_queries(
    conn: psycopg.Connection,
    schema: str,
    tenant_id: str,
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
) -> int:
    """Replace the tenant's quality queries with those of `qrels` that have a text and a relevant document."""
    validate_tenant_id(tenant_id)
    rows = [
        (tenant_id, qid, queries[qid], Jsonb(dict(rel)))
        for qid, rel in sorted(qrels.items())
        if qid in queries and any(g > 0 for g in rel.values())
    ]
    t = table(schema, "quality_queries")
    with conn.transaction():
        conn.execute(sql.SQL("DELETE FROM {} WHERE tenant_id = %s").format(t), (tenant_id,))
        conn.cursor().executemany(
            sql.SQL("INSERT INTO {} (tenant_id, query_id, text, relevant) VALUES (%s, %s, %s, %s)").format(t), rows
        )
    return len(rows)


def queries_of(conn: psycopg.Connection, schema: str, tenant_id: str) -> list[tuple[str, dict[str, int]]]:
    rows = conn.execute(
        sql.SQL("SELECT text, relevant FROM {} WHERE tenant_id = %s ORDER BY query_id").format(
            table(schema, "quality_queries")
        ),
        (tenant_id,),
    ).fetchall()
    return [(r[0], {str(k): int(v) for k, v in r[1].items()}) for r in rows]
