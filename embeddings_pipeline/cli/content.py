"""Tenants' content: `ingest`, `materialize`, `status`, and the local `demo` and `dev` UI."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..config import embeddings_home
from .common import (
    connect,
    console,
    echo_json,
    json_option,
    materialize_with_progress,
    print_table,
    say,
    tenant_model_key,
    tenant_option,
    tenants_with_documents,
)
from .runner import left_to_do, run_summary

if TYPE_CHECKING:
    from ..pipeline.ingest import ReadLog
    from ..pipeline.removals import Removal
    from ..store.documents import IngestReport

SAMPLE_CORPUS = Path(__file__).resolve().parents[1] / "sample_corpus"
STATUS_COLUMNS = ["tenant", "documents", "blocks", "chunks", "vectors", "missing", "stale", "errors", "model_key"]


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@tenant_option(creates=True)
@click.option("--no-delete", is_flag=True, help="keep documents whose files are gone from the folder")
@click.option("--text-ext", multiple=True, metavar="EXT", help="also read files ending in EXT as text (repeatable)")
@click.option("--materialize", "then_materialize", is_flag=True,
              help="then run the tenant through Dagster, only if something is left to do")  # fmt: skip
@json_option
def ingest(
    paths: tuple[Path, ...], tenant: str, no_delete: bool, text_ext: tuple[str, ...], then_materialize: bool,
    as_json: bool,
) -> None:  # fmt: skip
    """Load markdown/text files, folders or BEIR .jsonl corpora into TENANT's documents (folders are synced).

    A folder is read recursively (doc_id = the path inside it) and synced: documents ingested from it before
    whose files are gone are deleted (the next materialize drops their chunks and vectors; with --materialize and
    nothing else changed they go at once, with no run), unless --no-delete.
    Files that are not markdown/text are skipped and counted. A file or .jsonl row that cannot be stored is
    named with its line; the others are still ingested (and the command exits 1).

    \b
    Examples:
      embeddings-pipeline ingest ./handbook --tenant acme
      embeddings-pipeline ingest ./notes ./faq.md --tenant acme --text-ext .csv --text-ext .log
      embeddings-pipeline ingest ./scifact/corpus.jsonl --tenant scifact
      embeddings-pipeline ingest ./handbook --tenant acme --materialize   # one process: ingest, then a run if needed

    --materialize then runs the tenant through Dagster, unless a run would change nothing (no document changed or
    removed, every chunk has a current vector of the active model): then no run is launched, and it says so.
    """
    from ..pipeline.ingest import IngestError, ReadLog, folder_sources, ingest_documents, read_paths, shown
    from ..pipeline.removals import remove_deleted
    from ..store.documents import source_tenants
    from ..store.scope import Scope

    log = ReadLog()
    sync = [] if no_delete else folder_sources(paths)
    reason: str | None = None
    removal: Removal | None = None
    try:
        with connect() as (conn, schema):
            docs = read_paths(list(paths), text_ext=text_ext, log=log)
            report = ingest_documents(conn, schema, tenant, docs, sync=sync, keep=log.keep)
            exists = tenant in source_tenants(conn, schema)
            if then_materialize and exists:
                if report.deleted and not (report.inserted or report.updated):  # nothing to parse or embed
                    removal = remove_deleted(Scope(conn, schema, tenant))
                changed = bool(report.inserted or report.updated or (report.deleted and removal is None))
                reason = left_to_do(conn, schema, tenant, changed)
    except (IngestError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    read = report.inserted + report.updated + report.unchanged
    if not as_json:
        _say_ingested(tenant, report, log)
    for problem in log.problems:
        say(f"refused {problem}", err=True)
    run = materialize_with_progress([tenant])[0] if reason is not None else None
    if as_json:
        echo_json({"tenant": tenant, "inserted": report.inserted, "updated": report.updated,
                   "unchanged": report.unchanged, "deleted": report.deleted, "skipped": dict(log.skipped),
                   "problems": log.problems,
                   **({"removed": removal.as_dict()} if removal else {}),
                   **({"run": run_summary(run, reason)} if then_materialize else {})})  # fmt: skip
    elif then_materialize and exists and run is None:
        if removal is not None:
            say(f"tenant {tenant}: removed the deleted documents' {removal.chunks} chunks and {removal.vectors} "
                "vectors; up to date, no run needed")  # fmt: skip
        else:
            say(f"tenant {tenant}: up to date, no run needed (nothing changed, every chunk has a current vector)")
    if not read and not exists:
        raise click.ClickException(
            f"no documents in {', '.join(shown(p) for p in paths)}: tenant {tenant!r} was not created"
        )
    if log.problems:
        raise click.ClickException(f"{len(log.problems)} files or rows refused (listed above); the rest was ingested")
    if run is not None and not run.success:
        raise click.ClickException(f"tenant {tenant} failed: {run.error}")


def _say_ingested(tenant: str, report: IngestReport, log: ReadLog) -> None:
    say(f"tenant {tenant}: {report.inserted} new, {report.updated} changed, {report.unchanged} unchanged documents")
    if report.deleted:
        names = ", ".join(report.deleted[:20]) + (f", ... ({len(report.deleted) - 20} more)"
                                                   if len(report.deleted) > 20 else "")  # fmt: skip
        say(f"deleted {len(report.deleted)} documents gone from the folder: {names}")
    if log.skipped_summary():
        say(f"{log.skipped_summary()}; --text-ext EXT reads more kinds as text")


@click.command()
@tenant_option(multiple=True)
@click.option("--all", "all_tenants", is_flag=True, help="every tenant with documents")
def materialize(tenants: list[str], all_tenants: bool) -> None:
    """Run blocks -> chunks -> embeddings for tenant partitions through Dagster (runs show in the UI).

    Only what changed is redone: new or edited documents are re-chunked, unchanged chunks keep their vectors,
    deleted documents lose their blocks, chunks and vectors. With --all, tenants already up to date get no run.

    \b
    Examples:
      embeddings-pipeline materialize --tenant acme
      embeddings-pipeline materialize --tenant acme --tenant globex
      embeddings-pipeline materialize --all
    """
    if all_tenants:
        from .backfill import tenants_with_work

        everyone = tenants_with_documents()
        tenants = tenants_with_work(everyone, None)
        if len(tenants) < len(everyone):
            click.echo(f"{len(everyone) - len(tenants)} of {len(everyone)} tenants up to date: no run for them")
        if not tenants:
            return
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
            key = tenant_settings(conn, schema, t).active_model_key or tenant_model_key(conn, schema, t)
            rows.append(tenant_status(conn, schema, t, key).as_dict())
        return rows


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
    """Per tenant: documents, blocks, chunks, vectors, missing, stale, errors, model.

    missing: chunks (and documents not chunked yet) without a current vector of the tenant's model; stale:
    vectors of an older text of their chunk; errors: failed embeddings. Tenants with missing or stale are red.

    \b
    Examples:
      embeddings-pipeline status
      embeddings-pipeline status --tenant acme --json
    """
    rows = _status_rows(tenants or None)
    if as_json:
        echo_json({"tenants": rows})
    else:
        _print_status(rows)


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
    home = ensure_dagster_home()
    dagster = Path(sys.executable).with_name("dagster")
    workspace = Path(__file__).resolve().parents[2] / "workspace.yaml"  # names the location as deployments do
    target = ["-w", str(workspace)] if workspace.exists() else ["-m", "embeddings_pipeline.definitions"]
    args = [str(dagster), "dev", *target, "-p", str(port)]
    os.chdir(home)  # the instance is DAGSTER_HOME's: no "dagster.yaml in the current folder" warning
    os.execv(args[0], args)
