"""Retrieval quality: `eval` on a BEIR dataset, and the per-tenant quality gate `gate set|show`."""

from __future__ import annotations

from pathlib import Path

import click

from .common import (
    connect,
    console,
    echo_json,
    err_console,
    json_option,
    materialize_with_progress,
    mode_option,
    progress_bar,
    tenant_option,
)

BEIR_FOLDER = click.Path(exists=True, file_okay=False, path_type=Path)


@click.command("eval")
@click.argument("dataset", type=BEIR_FOLDER)
@tenant_option(creates=True)
@click.option(
    "--protocol",
    type=click.Choice(["mteb", "pipeline"]),
    default="mteb",
    show_default=True,
    help="mteb: one vector per document, cut by the model at its token limit (the published protocol); "
    "pipeline: the default chunking (long documents split), each document ranked by its best chunk",
)
@mode_option("dense", "retrieval to score (dense is the published protocol)")
@json_option
def eval_cmd(dataset: Path, tenant: str, protocol: str, mode: str, as_json: bool) -> None:
    """Ingest a BEIR dataset into TENANT, materialize it, and score nDCG@10 / recall@100 on its test queries."""
    from ..pipeline.ingest import ReadLog, read_beir_corpus
    from ..pipeline.model_change import search_provider
    from ..search import search_mode
    from ..search.evaluate import evaluate, load_qrels, load_queries, rank_documents
    from ..store.documents import upsert_documents
    from ..store.scope import Scope
    from ..store.tenants import set_chunk_overflow

    log = ReadLog()
    with connect() as (conn, schema):
        upsert_documents(conn, schema, tenant, read_beir_corpus(dataset / "corpus.jsonl", log))
        for problem in log.problems:
            err_console.print(f"refused {problem}", markup=False)
        set_chunk_overflow(conn, schema, tenant, "truncate" if protocol == "mteb" else "split")
    runs = materialize_with_progress([tenant])
    if not runs[0].success:
        raise click.ClickException(f"materializing {tenant} failed: {runs[0].error}")
    qrels = load_qrels(dataset / "qrels" / "test.tsv")
    queries = load_queries(dataset / "queries.jsonl")
    with connect() as (conn, schema), progress_bar() as progress:
        provider = search_provider(Scope(conn, schema, tenant))  # the tenant's active model
        task = progress.add_task("queries", total=len(qrels))

        def rank(text: str) -> list[str]:
            hits = search_mode(conn, schema, provider, tenant, text, 300, mode, candidates=300)
            progress.advance(task)
            return rank_documents([(h.doc_id, h.score) for h in hits], 100)

        result = evaluate(queries, qrels, rank)
    if as_json:
        echo_json({**result.as_dict(), "protocol": protocol, "mode": mode})
    else:
        console.print(
            f"{dataset.name}: nDCG@10 = {result.ndcg_at_10:.5f}, recall@100 = {result.recall_at_100:.5f} "
            f"over {result.queries} queries (protocol {protocol}, {mode}, model {provider.identity.model_key})"
        )


@click.group()
def gate() -> None:
    """Per-tenant quality queries: a new model takes over only if it ranks them no worse than the active one."""


@gate.command("set")
@click.argument("dataset", type=BEIR_FOLDER)
@tenant_option(creates=True)
@click.option("--split", default="test", show_default=True, help="qrels/SPLIT.tsv")
def gate_set(dataset: Path, tenant: str, split: str) -> None:
    """Load DATASET's queries.jsonl and qrels/SPLIT.tsv (BEIR layout) as TENANT's quality queries."""
    from ..search.evaluate import load_qrels, load_queries
    from ..store.quality import set_queries

    with connect() as (conn, schema):
        n = set_queries(conn, schema, tenant, load_queries(dataset / "queries.jsonl"),
                        load_qrels(dataset / "qrels" / f"{split}.tsv"))  # fmt: skip
    console.print(f"tenant {tenant}: {n} quality queries")


@gate.command("show")
@tenant_option()
@json_option
def gate_show(tenant: str, as_json: bool) -> None:
    """TENANT's quality queries and the allowed nDCG@10 drop."""
    from ..pipeline.model_change import max_drop
    from ..store.quality import queries_of

    with connect() as (conn, schema):
        queries = queries_of(conn, schema, tenant)
    if as_json:
        echo_json({"tenant": tenant, "queries": len(queries), "max_drop": max_drop()})
    else:
        console.print(f"tenant {tenant}: {len(queries)} quality queries, allowed nDCG@10 drop {max_drop()}")
