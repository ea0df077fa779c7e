"""Per-tenant counts for every tenant at once, as `store.status.tenant_status` computes them one tenant at a time.

`/metrics` reads these at scrape time, so they must stay cheap at 1,000 tenants: a fixed number of grouped
queries (tenants, settings, documents, blocks, errors, document errors, last successes) plus one per model in use,
never one per tenant. Each count means what it means in `tenant_status` (same chunk set rule as
`store.models.chunk_set_of`), and a test holds the two equal.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
from psycopg import sql

from ..store.db import source_relation, table
from ..store.documents import source_tenants
from ..store.models import vector_table_of
from ..store.status import TenantStatus, success_fields
from ..store.tenants import TenantSettings, all_tenant_settings, last_successes

# the chunk set each tenant's counts read, per `chunk_set_of`: the active set of the active model, else the set
# holding most of the model's vectors, else the tenant's only set; then counts over that set
_PER_MODEL = """
WITH ten AS (SELECT DISTINCT unnest(%(tenants)s::text[]) AS tenant_id),
act AS (
    SELECT t.tenant_id, t.active_chunker_version AS cs FROM {tenants} t
     WHERE t.tenant_id = ANY(%(tenants)s) AND t.active_model_key = %(m)s AND t.active_chunker_version IS NOT NULL
),
most AS ({most}),
only_set AS (
    SELECT c.tenant_id, min(c.chunker_version) AS cs FROM {chunks} c
     WHERE c.tenant_id = ANY(%(tenants)s) GROUP BY c.tenant_id HAVING count(DISTINCT c.chunker_version) = 1
),
sets AS (
    SELECT ten.tenant_id, coalesce(act.cs, most.cs, only_set.cs) AS cs FROM ten
      LEFT JOIN act USING (tenant_id) LEFT JOIN most USING (tenant_id) LEFT JOIN only_set USING (tenant_id)
),
counted AS (
    SELECT s.tenant_id, count(c.chunk_id) AS chunks, {vectors} AS vectors, {stale} AS stale
      FROM sets s
      LEFT JOIN {chunks} c ON c.tenant_id = s.tenant_id AND (s.cs IS NULL OR c.chunker_version = s.cs)
      {join}
     GROUP BY s.tenant_id
),
not_chunked AS (
    SELECT d.tenant_id, count(DISTINCT d.doc_id) AS n FROM {documents} d JOIN sets s ON s.tenant_id = d.tenant_id
     WHERE d.deleted_at IS NULL AND NOT EXISTS (
           SELECT 1 FROM {chunked_documents} c
            WHERE c.tenant_id = d.tenant_id AND c.doc_id = d.doc_id AND (s.cs IS NULL OR c.chunker_version = s.cs))
     GROUP BY d.tenant_id
)
SELECT s.tenant_id, s.cs, coalesce(k.chunks, 0), coalesce(k.vectors, 0), coalesce(k.stale, 0), coalesce(n.n, 0)
  FROM sets s LEFT JOIN counted k USING (tenant_id) LEFT JOIN not_chunked n USING (tenant_id)
"""

_MOST = """
    SELECT DISTINCT ON (c.tenant_id) c.tenant_id, c.chunker_version AS cs
      FROM {chunks} c JOIN {v} v ON v.tenant_id = c.tenant_id AND v.chunk_id = c.chunk_id
     WHERE c.tenant_id = ANY(%(tenants)s) AND c.tenant_id NOT IN (SELECT tenant_id FROM act)
     GROUP BY c.tenant_id, c.chunker_version
     ORDER BY c.tenant_id, count(*) DESC, c.chunker_version
"""


def all_tenant_counts(
    conn: psycopg.Connection, schema: str, model_of: Callable[[TenantSettings], str]
) -> list[TenantStatus]:
    """Counts of every tenant (with documents or settings) against its active model, or `model_of(settings)`
    (the model it embeds with) when it has none active yet. Sorted by tenant."""
    tenant_ids = source_tenants(conn, schema)
    if not tenant_ids:
        return []
    known = {s.tenant_id: s for s in all_tenant_settings(conn, schema)}
    model: dict[str, str] = {}
    for t in tenant_ids:
        settings = known.get(t) or TenantSettings(t)
        model[t] = settings.active_model_key or model_of(settings)
    documents = _grouped(
        conn,
        sql.SQL("SELECT tenant_id, count(*) FROM {} WHERE deleted_at IS NULL AND tenant_id = ANY(%s) GROUP BY 1")
        .format(source_relation(schema)),
        (tenant_ids,),
    )  # fmt: skip
    blocks = _grouped(
        conn,
        sql.SQL("SELECT tenant_id, count(*) FROM {} WHERE tenant_id = ANY(%s) GROUP BY 1").format(
            table(schema, "blocks")
        ),
        (tenant_ids,),
    )
    errors = _grouped(
        conn,
        sql.SQL(
            "SELECT e.tenant_id, count(*) FROM {} e JOIN unnest(%s::text[], %s::text[]) AS p(tenant_id, model_key)"
            " ON p.tenant_id = e.tenant_id AND p.model_key = e.model_key GROUP BY 1"
        ).format(table(schema, "embedding_errors")),
        (tenant_ids, [model[t] for t in tenant_ids]),
    )
    document_errors = _grouped(
        conn,
        sql.SQL("SELECT tenant_id, count(*) FROM {} WHERE tenant_id = ANY(%s) GROUP BY 1").format(
            table(schema, "document_errors")
        ),
        (tenant_ids,),
    )
    successes = last_successes(conn, schema)
    by_model: dict[str, list[str]] = {}
    for t in tenant_ids:
        by_model.setdefault(model[t], []).append(t)
    out: list[TenantStatus] = []
    for key, members in by_model.items():
        for tenant, chunk_set, chunks, vectors, stale, not_chunked in _model_counts(conn, schema, key, members):
            out.append(TenantStatus(
                tenant, documents.get(tenant, 0), blocks.get(tenant, 0), chunks, vectors,
                chunks - vectors + not_chunked,  # documents never chunked into the set are missing too
                stale, errors.get(tenant, 0), key, chunk_set, not_chunked, document_errors.get(tenant, 0),
                *success_fields(successes.get(tenant)),
            ))  # fmt: skip
    return sorted(out, key=lambda s: s.tenant)


def _model_counts(
    conn: psycopg.Connection, schema: str, model_key: str, tenant_ids: list[str]
) -> list[tuple[str, str | None, int, int, int, int]]:
    vt = vector_table_of(conn, schema, model_key)
    chunks = table(schema, "chunks")
    if vt is None:
        parts = {
            "most": sql.SQL("SELECT NULL::text AS tenant_id, NULL::text AS cs WHERE false"),
            "vectors": sql.SQL("0"),
            "stale": sql.SQL("0"),
            "join": sql.SQL(""),
        }
    else:
        v = table(schema, vt)
        parts = {
            "most": sql.SQL(_MOST).format(chunks=chunks, v=v),
            "vectors": sql.SQL("count(*) FILTER (WHERE v.embedding IS NOT NULL AND v.content_hash = c.content_hash)"),
            "stale": sql.SQL(
                "count(*) FILTER (WHERE v.chunk_id IS NOT NULL AND v.content_hash IS DISTINCT FROM c.content_hash)"
            ),
            "join": sql.SQL("LEFT JOIN {v} v ON v.tenant_id = c.tenant_id AND v.chunk_id = c.chunk_id").format(v=v),
        }
    query = sql.SQL(_PER_MODEL).format(
        tenants=table(schema, "tenants"), chunks=chunks, documents=source_relation(schema),
        chunked_documents=table(schema, "chunked_documents"), **parts,
    )  # fmt: skip
    rows = conn.execute(query, {"tenants": tenant_ids, "m": model_key}).fetchall()
    return [(r[0], r[1], int(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in rows]


def _grouped(conn: psycopg.Connection, query: sql.Composable, params: tuple) -> dict[str, int]:
    return {r[0]: int(r[1]) for r in conn.execute(query, params).fetchall()}
