"""`Scope`: one tenant of one schema on one connection, the unit every content query is confined to."""

from __future__ import annotations

from typing import NamedTuple

import psycopg


class Scope(NamedTuple):
    """Unpacks to the `(conn, schema, tenant_id)` that the store functions take: `content.blocks_of(*scope, ids)`."""

    conn: psycopg.Connection
    schema: str
    tenant_id: str
