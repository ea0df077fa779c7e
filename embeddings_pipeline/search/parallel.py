"""Hybrid search with its two rankings at once: the text ranking on a second connection, in a worker thread,
while the calling thread embeds the query and runs the dense search. The hits are `search_chunk_set`'s hybrid
hits exactly (the same rankings fused the same way); the latency is about the slower of the two, not their sum."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import psycopg

from .dense import SearchHit, search_vector
from .documents import with_documents
from .hybrid import CANDIDATES, rrf
from .text import search_text

if TYPE_CHECKING:
    from ..providers.base import EmbeddingProvider

_TEXT = ThreadPoolExecutor(max_workers=8, thread_name_prefix="text-search")  # waits on PostgreSQL, not the GIL


def hybrid_parallel(
    conn: psycopg.Connection,
    text_conn: psycopg.Connection,
    schema: str,
    provider: EmbeddingProvider,
    tenant_id: str,
    chunk_set: str | None,
    query: str,
    k: int = 10,
    candidates: int = CANDIDATES,
) -> list[SearchHit]:
    """RRF of the top `candidates` dense (on `conn`) and text (on `text_conn`, a connection of its own: one
    connection runs one statement at a time) chunks of the tenant's chunk set; the top k of the fusion."""
    if text_conn is conn:
        raise ValueError("text_conn must be a connection other than conn")
    pool = max(k, candidates)
    text = _TEXT.submit(search_text, text_conn, schema, tenant_id, query, pool, chunk_set)
    try:
        vector = provider.embed_query(query)
        dense = search_vector(conn, schema, provider.identity.vector_table, tenant_id, vector, pool, chunk_set)
    finally:
        text_hits = text.result()  # never leave the other connection mid-statement
    return with_documents(conn, schema, tenant_id, rrf([dense, text_hits], limit=k))
