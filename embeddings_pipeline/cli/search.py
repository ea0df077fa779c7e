"""`search`: a tenant's top-k chunks for a query, in-process or through a running service."""

from __future__ import annotations

import click

from .common import connect, echo_json, json_option, mode_option, print_table, say, tenant_option

SCORE_OF_MODE = {"dense": "cosine", "text": "BM25", "hybrid": "RRF"}


def cut_at_word(text: str, limit: int = 160) -> str:
    """TEXT on one line, cut at the last word boundary within LIMIT characters, with an ellipsis if cut."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    head = flat[: limit - 1]
    if flat[limit - 1] != " " and " " in head:
        head = head.rsplit(" ", 1)[0]
    return head.rstrip(" ,.;:") + "…"


@click.command()
@click.argument("query")
@tenant_option(service=True)
@click.option("-k", default=10, show_default=True, type=click.IntRange(1, 1000), help="chunks to return")
@mode_option(
    "hybrid", "dense: cosine over the active model's vectors; text: BM25 over the chunk texts; hybrid: both, by RRF"
)
@json_option
def search(query: str, tenant: str, k: int, mode: str, as_json: bool) -> None:
    """Top-k chunks of TENANT for QUERY (with the tenant's active model).

    Each hit shows its score (cosine, BM25 or RRF, by --mode), document, chunk id (for `lineage --chunk`) and
    text; the model and the Dagster run that embedded them are named too.

    \b
    Examples:
      embeddings-pipeline search "where do we meet during a fire?" --tenant acme
      embeddings-pipeline search "invoice 4711" --tenant acme --mode text -k 3 --json
    """
    from ..pipeline.model_change import search_provider
    from ..search import search_mode
    from ..service.client import search_through_service
    from ..store.scope import Scope

    if not query.strip():
        raise click.UsageError("QUERY is empty: give the words to search for")
    remote = search_through_service(tenant, query, k, mode)  # (hits, model_key) if EMBEDDINGS_SERVICE_URL is set
    if remote is None:
        with connect() as (conn, schema):
            provider = search_provider(Scope(conn, schema, tenant))
            hits = search_mode(conn, schema, provider, tenant, query, k, mode)
    hits, model_key = remote or (hits, provider.identity.model_key)
    if as_json:
        echo_json({"tenant": tenant, "query": query, "mode": mode, "score": SCORE_OF_MODE[mode],
                   "model_key": model_key, "hits": [h.as_dict() for h in hits]})  # fmt: skip
        return
    runs = sorted({h.run_id for h in hits if h.run_id})
    columns = [SCORE_OF_MODE[mode], "doc_id", "chunk_id", *(["run_id"] if len(runs) > 1 else []), "text"]
    rows = [{SCORE_OF_MODE[mode]: f"{h.score:.4f}", "doc_id": h.doc_id, "chunk_id": h.chunk_id, "run_id": h.run_id,
             "text": cut_at_word(h.text)} for h in hits]  # fmt: skip
    caption = f"{mode} search, model {model_key}" + (f", run {runs[0]}" if len(runs) == 1 else "")
    print_table(f"{tenant}: {query}", columns, rows, right={SCORE_OF_MODE[mode]}, caption=caption)
    if not hits:
        say(f"no chunks of {tenant!r} match (is the tenant materialized? `embeddings-pipeline status`)", err=True)
