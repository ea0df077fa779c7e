"""Tenants' content: `ingest`, `materialize`, `status`, `search`, and the local `demo` and `dev` UI."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ..config import embeddings_home
from .common import (
    connect,
    console,
    echo_json,
    err_console,
    json_option,
    materialize_with_progress,
    mode_option,
    print_table,
    tenant_option,
    tenants_with_documents,
)

SAMPLE_CORPUS = Path(__file__).resolve().parents[1] / "sample_corpus"
STATUS_COLUMNS = ["tenant", "documents", "blocks", "chunks", "vectors", "missing", "stale", "errors", "model_key"]


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@tenant_option()
def ingest(paths: tuple[Path, ...], tenant: str) -> None:
    """Load markdown/text files, folders (recursive) or BEIR .jsonl corpora into TENANT's documents."""
    from ..pipeline.ingest import IngestError, read_paths
    from ..store.documents import upsert_documents

    try:
        with connect() as (conn, schema):
            report = upsert_documents(conn, schema, tenant, read_paths(list(paths)))
    except (IngestError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(
        f"tenant [bold]{tenant}[/]: {report.inserted} new, {report.updated} changed, "
        f"{report.unchanged} unchanged documents"
    )


@click.command()
@tenant_option(multiple=True)
@click.option("--all", "all_tenants", is_flag=True, help="every tenant with documents")
def materialize(tenants: list[str], all_tenants: bool) -> None:
    """Run blocks -> chunks -> embeddings for tenant partitions through Dagster (runs show in the UI)."""
    if all_tenants:
        tenants = tenants_with_documents()
    if not tenants:
        raise click.UsageError("name tenants with --tenant or use --all")
    runs = materialize_with_progress(tenants)
    failed = [r for r in runs if not r.success]
    if failed:
        raise click.ClickException(
            f"{len(failed)} of {len(runs)} tenants failed: {', '.join(r.tenant for r in failed)}"
        )


def _status_rows(tenants: list[str] | None) -> list[dict[str, object]]:
    from ..store.documents import source_tenants
    from ..store.status import tenant_status
    from ..store.tenants import tenant_settings

    with connect() as (conn, schema):
        rows = []
        for t in tenants or source_tenants(conn, schema):
            key = tenant_settings(conn, schema, t).active_model_key or _tenant_provider(conn, schema, t)
            rows.append(tenant_status(conn, schema, t, key).as_dict())
        return rows


def _tenant_provider(conn, schema: str, tenant: str) -> str:
    """The model key the tenant is embedded with; a remote model whose server cannot be reached yet is shown as
    unknown (its chunks then count as missing) instead of breaking the whole status."""
    from ..pipeline.model_change import embedding_provider
    from ..providers import ProviderError
    from ..store.scope import Scope

    try:
        return embedding_provider(Scope(conn, schema, tenant)).identity.model_key
    except ProviderError as exc:
        err_console.print(f"[yellow]tenant {tenant!r}: model unavailable ({exc})[/]")
        return "unknown"


def _print_status(rows: list[dict[str, object]]) -> None:
    print_table(
        "tenants",
        STATUS_COLUMNS,
        rows,
        right=set(STATUS_COLUMNS) - {"tenant", "model_key"},
        style=lambda r: "red" if r["missing"] or r["stale"] else None,
    )


@click.command()
@tenant_option(multiple=True)
@json_option
def status(tenants: list[str], as_json: bool) -> None:
    """Per tenant: documents, blocks, chunks, vectors, missing, stale, errors, model."""
    rows = _status_rows(tenants or None)
    if as_json:
        echo_json({"tenants": rows})
    else:
        _print_status(rows)


@click.command()
@click.argument("query")
@tenant_option()
@click.option("-k", default=10, show_default=True, type=click.IntRange(1, 1000))
@mode_option(
    "hybrid", "dense: cosine over the active model's vectors; text: PostgreSQL full text; hybrid: both, fused by RRF"
)
@json_option
def search(query: str, tenant: str, k: int, mode: str, as_json: bool) -> None:
    """Top-k chunks of TENANT for QUERY (with the tenant's active model)."""
    from ..pipeline.model_change import search_provider
    from ..search import search_mode
    from ..service.client import search_through_service
    from ..store.scope import Scope

    remote = search_through_service(tenant, query, k, mode)  # (hits, model_key) if EMBEDDINGS_SERVICE_URL is set
    if remote is None:
        with connect() as (conn, schema):
            provider = search_provider(Scope(conn, schema, tenant))
            hits = search_mode(conn, schema, provider, tenant, query, k, mode)
    hits = remote[0] if remote else hits
    if as_json:
        echo_json({"tenant": tenant, "query": query, "hits": [h.as_dict() for h in hits]})
        return
    rows = [{"score": f"{h.score:.4f}", "doc_id": h.doc_id, "text": h.text[:160].replace("\n", " ")} for h in hits]
    print_table(f"{tenant}: {query}", ["score", "doc_id", "text"], rows)


@click.command()
@click.option(
    "--corpus",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=SAMPLE_CORPUS,
    show_default=False,
    help="folder with one sub-folder per tenant (default: the bundled sample)",
)
def demo(corpus: Path) -> None:
    """Ingest the sample corpus for its tenants, materialize every tenant, print the per-tenant table."""
    from ..pipeline.ingest import read_paths
    from ..store.documents import upsert_documents

    tenants = sorted(p.name for p in corpus.iterdir() if p.is_dir())
    with connect() as (conn, schema):
        for tenant in tenants:
            report = upsert_documents(conn, schema, tenant, read_paths([corpus / tenant]))
            console.print(
                f"ingested {tenant}: {report.inserted} new, {report.updated} changed, {report.unchanged} unchanged"
            )
    runs = materialize_with_progress(tenants)
    _print_status(_status_rows(tenants))
    embedded = sum(int(r.metadata.get("embedded", 0) or 0) for r in runs)
    failed = [r.tenant for r in runs if not r.success]
    if failed:
        raise click.ClickException(f"tenants failed: {', '.join(failed)}")
    if embedded:
        console.print(f"embedded {embedded} new chunks across {len(tenants)} tenants")
    else:
        console.print("nothing new to embed: every chunk already has a current vector")
    console.print("open the Dagster UI on this data with `make dev`")


@click.command()
@click.option("--port", default=3000, show_default=True)
def dev(port: int) -> None:
    """Open the Dagster UI (webserver + daemon) on the same data as the CLI."""
    from ..store.server import database_url
    from .runner import ensure_dagster_home

    os.environ["EMBEDDINGS_HOME"] = str(embeddings_home())
    database_url()  # start the embedded server first, so runs and sensors find it up
    ensure_dagster_home()
    dagster = Path(sys.executable).with_name("dagster")
    args = [str(dagster), "dev", "-m", "embeddings_pipeline.definitions", "-p", str(port)]
    os.execv(args[0], args)
