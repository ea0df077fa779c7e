"""What changed in the source since a watermark: the new-content sensor's one indexed query."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg import sql

from .db import source_relation, table


@dataclass(frozen=True)
class Watermark:
    """The last source row seen, ordered by (updated_at, tenant_id, doc_id): equal timestamps are not skipped."""

    updated_at: datetime | None = None
    tenant_id: str = ""
    doc_id: str = ""

    @classmethod
    def parse(cls, cursor: str | None) -> Watermark:
        if not cursor:
            return cls()
        raw = json.loads(cursor)
        return cls(datetime.fromisoformat(raw["updated_at"]), raw["tenant_id"], raw["doc_id"])

    def dump(self) -> str:
        assert self.updated_at is not None
        return json.dumps(
            {"updated_at": self.updated_at.isoformat(), "tenant_id": self.tenant_id, "doc_id": self.doc_id}
        )


@dataclass
class TenantChange:
    documents: int = 0
    latest: datetime | None = None


@dataclass
class ChangePage:
    tenants: dict[str, TenantChange] = field(default_factory=dict)
    watermark: Watermark = field(default_factory=Watermark)
    rows: int = 0  # rows read past the watermark
    more: bool = False
    already_done: int = 0  # of those, rows the pipeline had already processed as they are now (e.g. by a CLI run)


def changes_since(
    conn: psycopg.Connection, schema: str, since: Watermark, limit: int = 10_000, lag_seconds: float = 2.0
) -> ChangePage:
    """Source rows after `since`, at most `limit` of them (the rest next time), grouped by tenant.

    Rows younger than `lag_seconds` wait for the next tick, so a transaction that committed a little after its
    timestamp was taken is not jumped over. A row whose updated_at is NULL (an app's view may yield one) has no
    place in the order: it is never reported and never holds the watermark back; the tenant's next run records it
    in `document_errors`, and `status` and the sweep count it as missing.

    A row the pipeline has already parsed at this very updated_at (a CLI `materialize` or `demo` ran before the
    sensor's first tick), or a deleted row it never held, moves the watermark but is not a change: the first tick
    of `dagster dev` after `make demo` requests no run.
    """
    after = (
        sql.SQL("(d.updated_at, d.tenant_id, d.doc_id) > (%(ts)s, %(t)s, %(d)s) AND")
        if since.updated_at is not None
        else sql.SQL("")
    )
    rows = conn.execute(
        sql.SQL(
            """
            SELECT d.tenant_id, d.doc_id, d.updated_at,
                   CASE WHEN d.deleted_at IS NULL THEN p.source_updated_at IS NOT DISTINCT FROM d.updated_at
                        ELSE p.doc_id IS NULL END AS done
              FROM {docs} d
              LEFT JOIN {parsed} p ON p.tenant_id = d.tenant_id AND p.doc_id = d.doc_id
             WHERE {after} d.updated_at <= clock_timestamp() - make_interval(secs => %(lag)s)
             ORDER BY d.updated_at, d.tenant_id, d.doc_id
             LIMIT %(limit)s
            """
        ).format(docs=source_relation(schema), parsed=table(schema, "parsed_documents"), after=after),
        {"ts": since.updated_at, "t": since.tenant_id, "d": since.doc_id, "lag": lag_seconds, "limit": limit + 1},
    ).fetchall()
    page = ChangePage(watermark=since, more=len(rows) > limit)
    for tenant_id, doc_id, updated_at, done in rows[:limit]:
        page.watermark = Watermark(updated_at, tenant_id, doc_id)
        page.rows += 1
        if done:
            page.already_done += 1
            continue
        change = page.tenants.setdefault(tenant_id, TenantChange())
        change.documents += 1
        change.latest = updated_at
    return page
