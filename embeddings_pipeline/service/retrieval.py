"""`/v1/search`: the request's checks, `search.search_mode` itself, neighbor expansion and document metadata.

The hits are exactly what `search_mode` returns for the calling tenant (its active model, its chunk set: the
tenant's serving plan, `plans.py`), in the same order; `neighbors=N` then adds up to N chunks before and after each
hit from the same document and chunk set, in reading order (the chunks' `ordinal` within their document), each
chunk at most once, marked `"context": true`.

`"rerank": true` (with a reranker given to `create_app`, `providers/rerank.py`): the top `candidates` of the mode's
ranking (EMBEDDINGS_RERANK_CANDIDATES, default 50) are scored by the reranker and the top k by its score are the
hits (`score` is the reranker's, `search_score` / `search_rank` what the search said), before neighbor expansion;
the answer's `rerank` says `{"applied": true, "model", "candidates"}`. When the reranker fails or times out the
hits are the search's own top k, in its order, and `rerank` is `{"applied": false, "reason"}` (the reason never
carries a credential). Without a reranker such a request is refused (400), never silently ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import psycopg
from psycopg import sql

from ..providers.base import ProviderError
from ..providers.remote import redact_text
from ..providers.rerank import Reranker
from ..search import MODES, SearchHit, rrf
from ..search.documents import document_metadata
from ..search.hybrid import CANDIDATES, search_chunk_set
from ..store.db import table
from ..store.models import vector_table_of
from .errors import bad_request
from .plans import ServingPlan

log = logging.getLogger(__name__)

MAX_K = 100
MAX_NEIGHBORS = 10
MAX_QUERY_CHARS = 8192
RERANK_CANDIDATES = 50  # the top of the ranking that a reranker scores (EMBEDDINGS_RERANK_CANDIDATES)
KNOWN_FIELDS = frozenset({"query", "k", "mode", "neighbors", "rerank"})


@dataclass(frozen=True)
class SearchRequest:
    query: str
    k: int = 10
    mode: str = "hybrid"
    neighbors: int = 0
    rerank: bool = False


def _int(body: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"`{name}` must be an integer from {low} to {high}", name)
    if not low <= value <= high:
        raise bad_request(f"`{name}` must be from {low} to {high}, got {value}", name)
    return value


def parse_search(body: object) -> SearchRequest:
    """The checked request, or an ApiError (400) naming the field at fault."""
    if not isinstance(body, dict):
        raise bad_request("the body must be a JSON object")
    if "tenant" in body or "tenant_id" in body:
        raise bad_request("the tenant is the token's: do not send a tenant field", "tenant")
    unknown = sorted(set(body) - KNOWN_FIELDS)
    if unknown:
        raise bad_request(f"unknown fields {unknown}; known: {sorted(KNOWN_FIELDS)}", unknown[0])
    query = body.get("query")
    if not isinstance(query, str) or not query.strip():
        raise bad_request("`query` must be a non-empty string", "query")
    if len(query) > MAX_QUERY_CHARS:
        raise bad_request(f"`query` is longer than {MAX_QUERY_CHARS} characters", "query")
    mode = body.get("mode", "hybrid")
    if mode not in MODES:
        raise bad_request(f"`mode` must be one of {list(MODES)}, not {mode!r}", "mode")
    rerank = body.get("rerank", False)
    if not isinstance(rerank, bool):
        raise bad_request("`rerank` must be true or false", "rerank")
    return SearchRequest(
        query=query,
        k=_int(body, "k", 10, 1, MAX_K),
        mode=mode,
        neighbors=_int(body, "neighbors", 0, 0, MAX_NEIGHBORS),
        rerank=rerank,
    )


def run_search(
    conn: psycopg.Connection,
    schema: str,
    plan: ServingPlan,
    tenant_id: str,
    request: SearchRequest,
    reranker: Reranker | None = None,
    candidates: int = RERANK_CANDIDATES,
) -> dict[str, Any]:
    """The answer of `/v1/search` for `tenant_id` (the token's)."""
    if request.rerank and reranker is None:
        raise bad_request("reranking is not available on this server (set EMBEDDINGS_RERANKER)", "rerank")
    rerank_info: dict[str, Any] | None = None
    if request.rerank and reranker is not None:
        pool = replace(request, k=max(request.k, candidates))
        entries, rerank_info = rerank_hits(reranker, request.query, _search(conn, schema, plan, tenant_id, pool),
                                           request.k)  # fmt: skip
    else:
        entries = [_entry(h) for h in _search(conn, schema, plan, tenant_id, request)]
    if request.neighbors and entries:
        entries = with_neighbors(conn, schema, tenant_id, plan.chunk_set, entries, request.neighbors)
    documents = document_metadata(conn, schema, tenant_id, sorted({e["doc_id"] for e in entries if e["title"] is None}))
    for e in entries:
        if e["title"] is None:  # neighbors shown as context, and hits read before their document: read here
            e["title"], e["metadata"] = documents.get(e["doc_id"], ("", {}))
    return {
        "object": "search_result",
        "tenant": tenant_id,
        "query": request.query,
        "mode": request.mode,
        "k": request.k,
        "model_key": plan.model_key,
        "hits": entries,
        **({"rerank": rerank_info} if rerank_info is not None else {}),
    }


def rerank_hits(
    reranker: Reranker, query: str, hits: list[SearchHit], k: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The top `k` of `hits` by the reranker's score (ties keep the search's order), and what the answer's `rerank`
    says; when the reranker fails, the search's own top `k` and the reason."""
    try:
        scores = reranker.rerank(query, [h.text for h in hits]) if hits else []
        if len(scores) != len(hits):
            raise ProviderError(f"the reranker returned {len(scores)} scores for {len(hits)} texts")
    except Exception as exc:
        reason = redact_text(str(exc)) if isinstance(exc, ProviderError) else f"reranker failed ({type(exc).__name__})"
        reason = reason[:300] or type(exc).__name__
        log.warning("rerank with %s failed; answering in search order: %s", reranker.name, reason)
        info = {"applied": False, "model": reranker.name, "reason": reason}
        return [_entry(h) for h in hits[:k]], info
    order = sorted(range(len(hits)), key=lambda i: -scores[i])[:k]  # stable: ties in the search's order
    entries = [{**hits[i].as_dict(), "score": float(scores[i]), "search_score": hits[i].score, "search_rank": i + 1,
                "context": False} for i in order]  # fmt: skip
    return entries, {"applied": True, "model": reranker.name, "candidates": len(hits)}


_HIT_FIELDS = tuple(f.name for f in fields(SearchHit))


def _entry(hit: SearchHit) -> dict[str, Any]:
    """A hit as the answer shows it (a shallow copy: `dataclasses.asdict` deep-copies, here for nothing)."""
    entry = {name: getattr(hit, name) for name in _HIT_FIELDS}
    entry["context"] = False
    return entry


def _search(
    conn: psycopg.Connection, schema: str, plan: ServingPlan, tenant_id: str, request: SearchRequest
) -> list[SearchHit]:
    """`search_mode` over the plan's model and chunk set, also before anything was embedded with the tenant's
    model (no vector table yet): dense finds nothing then, and hybrid is the text ranking fused alone, as
    `search_mode` answers over no vectors."""
    provider, chunk_set, query, k = plan.provider, plan.chunk_set, request.query, request.k
    try:
        return search_chunk_set(conn, schema, provider, tenant_id, chunk_set, query, k, request.mode, CANDIDATES)
    except psycopg.errors.UndefinedTable:  # cheaper than asking first on every request (autocommit: no abort)
        if request.mode == "text" or vector_table_of(conn, schema, plan.model_key) is not None:
            raise
    if request.mode == "dense":
        return []
    text = search_chunk_set(conn, schema, provider, tenant_id, chunk_set, query, max(k, CANDIDATES), "text")
    return rrf([[], text], limit=k)


def with_neighbors(
    conn: psycopg.Connection,
    schema: str,
    tenant_id: str,
    chunk_set: str | None,
    hits: list[dict[str, Any]],
    n: int,
) -> list[dict[str, Any]]:
    """Each hit (in rank order) with up to `n` chunks before and after it from its document and chunk set, in
    reading order; a chunk that is a hit, or already shown as context, is not shown again."""
    rows = conn.execute(
        sql.SQL(
            """
            WITH h AS (
                SELECT c.chunk_id AS hit_id, c.doc_id, c.chunker_version, c.ordinal FROM {chunks} c
                 WHERE c.tenant_id = %(t)s AND c.chunk_id = ANY(%(ids)s)
                   AND (%(chunk_set)s::text IS NULL OR c.chunker_version = %(chunk_set)s)
            )
            SELECT h.hit_id, n.chunk_id, n.doc_id, n.text, n.ordinal FROM h
              JOIN {chunks} n ON n.tenant_id = %(t)s AND n.doc_id = h.doc_id
                             AND n.chunker_version = h.chunker_version
                             AND n.ordinal BETWEEN h.ordinal - %(n)s AND h.ordinal + %(n)s
             ORDER BY h.hit_id, n.ordinal, n.chunk_id
            """
        ).format(chunks=table(schema, "chunks")),
        {"t": tenant_id, "ids": [h["chunk_id"] for h in hits], "chunk_set": chunk_set, "n": n},
    ).fetchall()
    around: dict[str, list[tuple[str, str, str, int]]] = {}
    for hit_id, chunk_id, doc_id, text, ordinal in rows:
        around.setdefault(hit_id, []).append((chunk_id, doc_id, text, ordinal))
    hit_ids = {h["chunk_id"] for h in hits}
    shown: set[str] = set()
    out: list[dict[str, Any]] = []
    for hit in hits:
        window = around.get(hit["chunk_id"], [])
        ordinal = next((o for c, _, _, o in window if c == hit["chunk_id"]), None)
        hit = {**hit, "ordinal": ordinal}
        for chunk_id, doc_id, text, o in window:
            if chunk_id == hit["chunk_id"]:
                out.append(hit)
                shown.add(chunk_id)
            elif chunk_id not in hit_ids and chunk_id not in shown:
                out.append({"chunk_id": chunk_id, "doc_id": doc_id, "text": text, "score": None, "model_key": None,
                            "run_id": None, "title": None, "metadata": None, "context": True,
                            "context_of": hit["chunk_id"], "ordinal": o})  # fmt: skip
                shown.add(chunk_id)
        if hit["chunk_id"] not in shown:  # its chunk is gone since the search read it: keep the hit as found
            out.append(hit)
            shown.add(hit["chunk_id"])
    return out
