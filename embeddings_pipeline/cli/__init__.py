"""`embeddings-pipeline`: the command line for people (click + rich)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..config import InvalidTenantId, Settings, embeddings_home, validate_tenant_id

console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)
SAMPLE_CORPUS = Path(__file__).resolve().parents[1] / "sample_corpus"


def _store():
    from ..defs.resources import PipelineStore

    return PipelineStore()


def _tenant(value: str) -> str:
    try:
        return validate_tenant_id(value)
    except InvalidTenantId as exc:
        raise click.BadParameter(str(exc)) from exc


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
    )


@click.group()
def main() -> None:
    """Keep every tenant's text embedded in PostgreSQL + pgvector, through Dagster."""


# --- db ---------------------------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """The embedded PostgreSQL (unused when EMBEDDINGS_DATABASE_URL is set)."""


@db.command("start")
def db_start() -> None:
    from ..store.server import database_url

    settings = Settings.from_env()
    if settings.database_url:
        console.print("EMBEDDINGS_DATABASE_URL is set: using that server, nothing to start.")
        return
    database_url(settings)
    console.print(f"embedded PostgreSQL running, data in {embeddings_home() / 'pgdata'}")


@db.command("stop")
def db_stop() -> None:
    from ..store.server import stop_embedded

    console.print("stopped" if stop_embedded() else "not running")


@db.command("url")
def db_url() -> None:
    from ..store.server import database_url

    click.echo(database_url())


@db.command("status")
@click.option("--json", "as_json", is_flag=True)
def db_status(as_json: bool) -> None:
    from ..store.server import embedded_status

    settings = Settings.from_env()
    info = {"external": True, "running": None} if settings.database_url else {"external": False, **embedded_status()}
    if as_json:
        click.echo(json.dumps(info))
    else:
        for k, v in info.items():
            console.print(f"{k}: {v}")


@db.command("migrate")
def db_migrate() -> None:
    """Create or upgrade the pipeline's tables (runs also do this on their own)."""
    from ..store.db import connection
    from ..store.migrations import LATEST_VERSION, migrate

    store = _store()
    with connection(store.url()) as conn:
        applied = migrate(conn, store.schema)
    console.print(f"schema {store.schema}: applied {applied or 'nothing'}; at version {LATEST_VERSION}")


# --- content ----------------------------------------------------------------------------------------------


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--tenant", "-t", required=True, callback=lambda _c, _p, v: _tenant(v))
def ingest(paths: tuple[Path, ...], tenant: str) -> None:
    """Load markdown/text files, folders (recursive) or BEIR .jsonl corpora into TENANT's documents."""
    from ..pipeline.ingest import IngestError, read_paths
    from ..store.documents import upsert_documents

    store = _store()
    try:
        with store.connect() as conn:
            report = upsert_documents(conn, store.schema, tenant, read_paths(list(paths)))
    except (IngestError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(
        f"tenant [bold]{tenant}[/]: {report.inserted} new, {report.updated} changed, "
        f"{report.unchanged} unchanged documents"
    )


def _all_tenants() -> list[str]:
    from ..store.documents import source_tenants

    store = _store()
    with store.connect() as conn:
        return source_tenants(conn, store.schema)


def _materialize(tenants: list[str], tags: dict[str, str] | None = None) -> list:
    from .runner import materialize_tenants

    with _progress() as progress:
        task = progress.add_task("materializing tenants", total=len(tenants))

        def done(run) -> None:
            mark = "[green]ok[/]" if run.success else "[red]FAILED[/]"
            meta = run.metadata
            detail = (
                (
                    f"embedded {meta.get('embedded', 0)}, reused {meta.get('reused', 0)}, "
                    f"deleted {meta.get('deleted', 0)}"
                )
                if run.success
                else run.error
            )
            progress.console.print(f"{mark} {run.tenant}: {detail}  (run {run.run_id[:8]})")
            progress.advance(task)

        return materialize_tenants(tenants, on_done=done, tags=tags)


@main.command()
@click.option("--tenant", "-t", "tenants", multiple=True, callback=lambda _c, _p, v: [_tenant(t) for t in v])
@click.option("--all", "all_tenants", is_flag=True, help="every tenant with documents")
def materialize(tenants: list[str], all_tenants: bool) -> None:
    """Run blocks -> chunks -> embeddings for tenant partitions through Dagster (runs show in the UI)."""
    if all_tenants:
        tenants = _all_tenants()
    if not tenants:
        raise click.UsageError("name tenants with --tenant or use --all")
    runs = _materialize(tenants)
    failed = [r for r in runs if not r.success]
    if failed:
        raise click.ClickException(
            f"{len(failed)} of {len(runs)} tenants failed: {', '.join(r.tenant for r in failed)}"
        )


def _status_rows(tenants: list[str] | None) -> list[dict[str, object]]:
    from ..store.documents import source_tenants
    from ..store.status import tenant_status
    from ..store.tenants import tenant_settings

    store = _store()
    with store.connect() as conn:
        rows = []
        for t in tenants or source_tenants(conn, store.schema):
            key = tenant_settings(conn, store.schema, t).active_model_key or _tenant_provider(conn, store, t)
            rows.append(tenant_status(conn, store.schema, t, key).as_dict())
        return rows


def _tenant_provider(conn, store, tenant: str) -> str:
    """The model key the tenant is embedded with; a remote model whose server cannot be reached yet is shown as
    unknown (its chunks then count as missing) instead of breaking the whole status."""
    from ..defs.resources import EmbeddingModel
    from ..providers import ProviderError

    try:
        return EmbeddingModel().provider_for(conn, store.schema, tenant).identity.model_key
    except ProviderError as exc:
        err_console.print(f"[yellow]tenant {tenant!r}: model unavailable ({exc})[/]")
        return "unknown"


def _print_status(rows: list[dict[str, object]]) -> None:
    table = Table(title="tenants")
    cols = ["tenant", "documents", "blocks", "chunks", "vectors", "missing", "stale", "errors", "model_key"]
    for c in cols:
        table.add_column(c, justify="left" if c in ("tenant", "model_key") else "right")
    for r in rows:
        style = "red" if r["missing"] or r["stale"] else None
        table.add_row(*(str(r[c]) for c in cols), style=style)
    console.print(table)


@main.command()
@click.option("--tenant", "-t", "tenants", multiple=True, callback=lambda _c, _p, v: [_tenant(t) for t in v])
@click.option("--json", "as_json", is_flag=True)
def status(tenants: list[str], as_json: bool) -> None:
    """Per tenant: documents, blocks, chunks, vectors, missing, stale, errors, model."""
    rows = _status_rows(tenants or None)
    if as_json:
        click.echo(json.dumps({"tenants": rows}))
    else:
        _print_status(rows)


def _mode_option(default: str, help_text: str):
    return click.option(
        "--mode", type=click.Choice(["dense", "text", "hybrid"]), default=default, show_default=True, help=help_text
    )


_MODE = _mode_option(
    "hybrid", "dense: cosine over the active model's vectors; text: PostgreSQL full text; hybrid: both, fused by RRF"
)


@main.command()
@click.argument("query")
@click.option("--tenant", "-t", required=True, callback=lambda _c, _p, v: _tenant(v))
@click.option("-k", default=10, show_default=True, type=click.IntRange(1, 1000))
@_MODE
@click.option("--json", "as_json", is_flag=True)
def search(query: str, tenant: str, k: int, mode: str, as_json: bool) -> None:
    """Top-k chunks of TENANT for QUERY (with the tenant's active model)."""
    from ..defs.resources import EmbeddingModel
    from ..search import search_mode

    store = _store()
    with store.connect() as conn:
        provider = EmbeddingModel().search_provider_for(conn, store.schema, tenant)
        hits = search_mode(conn, store.schema, provider, tenant, query, k, mode)
    if as_json:
        click.echo(json.dumps({"tenant": tenant, "query": query, "hits": [h.as_dict() for h in hits]}))
        return
    table = Table(title=f"{tenant}: {query}")
    for c in ("score", "doc_id", "text"):
        table.add_column(c)
    for h in hits:
        table.add_row(f"{h.score:.4f}", h.doc_id, h.text[:160].replace("\n", " "))
    console.print(table)


@main.command("eval")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--tenant", "-t", required=True, callback=lambda _c, _p, v: _tenant(v))
@click.option(
    "--protocol",
    type=click.Choice(["mteb", "pipeline"]),
    default="mteb",
    show_default=True,
    help="mteb: one vector per document, cut by the model at its token limit (the published protocol); "
    "pipeline: the default chunking (long documents split), each document ranked by its best chunk",
)
@_mode_option("dense", "retrieval to score (dense is the published protocol)")
@click.option("--json", "as_json", is_flag=True)
def eval_cmd(dataset: Path, tenant: str, protocol: str, mode: str, as_json: bool) -> None:
    """Ingest a BEIR dataset into TENANT, materialize it, and score nDCG@10 / recall@100 on its test queries."""
    from ..defs.resources import EmbeddingModel
    from ..pipeline.ingest import read_beir_corpus
    from ..search import search_mode
    from ..search.evaluate import evaluate, load_qrels, load_queries, rank_documents
    from ..store.documents import upsert_documents
    from ..store.tenants import set_chunk_overflow

    store = _store()
    with store.connect() as conn:
        upsert_documents(conn, store.schema, tenant, read_beir_corpus(dataset / "corpus.jsonl"))
        set_chunk_overflow(conn, store.schema, tenant, "truncate" if protocol == "mteb" else "split")
    runs = _materialize([tenant])
    if not runs[0].success:
        raise click.ClickException(f"materializing {tenant} failed: {runs[0].error}")
    qrels = load_qrels(dataset / "qrels" / "test.tsv")
    queries = load_queries(dataset / "queries.jsonl")
    with store.connect() as conn, _progress() as progress:
        provider = EmbeddingModel().search_provider_for(conn, store.schema, tenant)  # the tenant's active model
        task = progress.add_task("queries", total=len(qrels))

        def rank(text: str) -> list[str]:
            hits = search_mode(conn, store.schema, provider, tenant, text, 300, mode, candidates=300)
            progress.advance(task)
            return rank_documents([(h.doc_id, h.score) for h in hits], 100)

        result = evaluate(queries, qrels, rank)
    if as_json:
        click.echo(json.dumps({**result.as_dict(), "protocol": protocol, "mode": mode}))
    else:
        console.print(
            f"{dataset.name}: nDCG@10 = {result.ndcg_at_10:.5f}, recall@100 = {result.recall_at_100:.5f} "
            f"over {result.queries} queries (protocol {protocol}, {mode}, model {provider.identity.model_key})"
        )


# --- tenants -----------------------------------------------------------------------------------------------


@main.group()
def tenants() -> None:
    """Per-tenant settings: model override and the NAME of the env var holding the tenant's API key."""


@tenants.command("set")
@click.argument("tenant", callback=lambda _c, _p, v: _tenant(v))
@click.option("--model", help="model spec, e.g. ollama:nomic-embed-text or openai:text-embedding-3-small ('' clears)")
@click.option("--key-env", help="NAME of the environment variable with this tenant's API key ('' clears)")
@click.option("--chunk-overflow", type=click.Choice(["split", "truncate"]))
def tenants_set(tenant: str, model: str | None, key_env: str | None, chunk_overflow: str | None) -> None:
    from ..providers import ProviderError
    from ..store.tenants import update_tenant

    store = _store()
    try:
        with store.connect() as conn:
            settings = update_tenant(conn, store.schema, tenant, model=model, key_env=key_env,
                                     chunk_overflow=chunk_overflow)  # fmt: skip
    except (ValueError, ProviderError) as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(settings.as_dict())


@tenants.command("show")
@click.option("--json", "as_json", is_flag=True)
def tenants_show(as_json: bool) -> None:
    from ..store.tenants import all_tenant_settings

    store = _store()
    with store.connect() as conn:
        rows = [t.as_dict() for t in all_tenant_settings(conn, store.schema)]
    default = Settings.from_env().model_spec
    if as_json:
        click.echo(json.dumps({"default_model": default, "tenants": rows}))
        return
    table = Table(title=f"tenants (default model {default})")
    cols = ["tenant_id", "model", "key_env", "chunk_overflow", "active_model_key"]
    for c in cols:
        table.add_column(c)
    for r in rows:
        table.add_row(*(str(r[c] if r[c] is not None else "-") for c in cols))
    console.print(table)


@main.command()
@click.option("--tenant", "-t", "tenants", multiple=True, callback=lambda _c, _p, v: [_tenant(t) for t in v])
@click.option("--model", "model_key", help="a registered model_key to fill (default: each tenant's own model)")
@click.option("--dry-run", is_flag=True, help="print what would be embedded and an estimate; write nothing")
@click.option("--batch-size", type=click.IntRange(1, 100_000), help="texts per committed batch")
@click.option("--json", "as_json", is_flag=True)
def backfill(tenants: list[str], model_key: str | None, dry_run: bool, batch_size: int | None, as_json: bool) -> None:
    """Embed everything missing for TENANTS (default: all), through Dagster runs, resumable after any kill."""
    from ..defs.assets import COMMIT_TAG, MODEL_TAG

    tenants = tenants or _all_tenants()
    if dry_run:
        _backfill_plan(tenants, model_key, as_json)
        return
    tags = {**({MODEL_TAG: model_key} if model_key else {}), **({COMMIT_TAG: str(batch_size)} if batch_size else {})}
    runs = _materialize(tenants, tags=tags)
    failed = [r for r in runs if not r.success]
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(runs)} tenants failed (rerun to resume): "
                                   + "; ".join(f"{r.tenant}: {r.error}" for r in failed))  # fmt: skip


def _backfill_plan(tenants: list[str], model_key: str | None, as_json: bool) -> None:
    from ..defs.resources import EmbeddingModel
    from ..pipeline.backfill import measured_throughput, plan_tenant, throughput_history
    from ..providers import ProviderError
    from .runner import local_instance

    store, instance = _store(), local_instance()
    plans = []
    with store.connect() as conn:
        for tenant in tenants:
            try:
                provider = EmbeddingModel().provider_for(conn, store.schema, tenant, model_key)
            except ProviderError as exc:
                raise click.ClickException(str(exc)) from exc
            plan, sample = plan_tenant(conn, store.schema, tenant, provider)
            tps = measured_throughput(throughput_history(instance, plan.model_key), provider, sample)
            plan.est_seconds = round(plan.to_embed / tps, 3) if tps and plan.to_embed else 0.0
            plans.append(plan.as_dict())
    if as_json:
        click.echo(json.dumps({"dry_run": True, "tenants": plans}))
        return
    table = Table(title="backfill plan (dry run: nothing written)")
    for c in ("tenant", "model_key", "chunks", "to_embed", "documents_not_chunked", "est_seconds"):
        table.add_column(c)
    for p in plans:
        table.add_row(*(str(p[c]) for c in ("tenant", "model_key", "chunks", "to_embed", "documents_not_chunked",
                                            "est_seconds")))  # fmt: skip
    console.print(table)


# --- models and lineage ------------------------------------------------------------------------------------


@main.group()
def models() -> None:
    """Model identities side by side: coverage per tenant, retiring old vectors."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True)
def models_list(as_json: bool) -> None:
    from ..store.models import list_models

    store = _store()
    with store.connect() as conn:
        rows = list_models(conn, store.schema)
    if as_json:
        click.echo(json.dumps({"models": rows}))
        return
    table = Table(title="embedding models")
    for c in ("model_key", "provider", "name", "revision", "dims", "status", "tenants (coverage %, * active)"):
        table.add_column(c)
    for m in rows:
        cover = ", ".join(f"{t} {v['coverage_pct']}{'*' if v['active'] else ''}" for t, v in m["tenants"].items())
        table.add_row(m["model_key"], m["provider"], m["name"], m["revision"][:16], str(m["dims"]), m["status"], cover)
    console.print(table)


@models.command("retire")
@click.argument("model_key")
def models_retire(model_key: str) -> None:
    """Drop MODEL_KEY's vectors. Refused while it is any tenant's active model."""
    from ..store.models import ModelInUse, retire_model

    store = _store()
    try:
        with store.connect() as conn:
            dropped = retire_model(conn, store.schema, model_key)
    except (LookupError, ModelInUse) as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(f"retired {model_key}: {dropped} vectors dropped")


@models.command("prune")
@click.option("--days", type=click.FloatRange(min=0), help="retention; default EMBEDDINGS_MODEL_RETENTION_DAYS")
@click.option("--dry-run", is_flag=True, help="list what would be retired, drop nothing")
@click.option("--json", "as_json", is_flag=True)
def models_prune(days: float | None, dry_run: bool, as_json: bool) -> None:
    """Retire every model no tenant has searched with for DAYS (what the `model_retention` job does)."""
    from ..config import model_retention_days
    from ..store.models import apply_retention

    days = days if days is not None else model_retention_days()
    if days is None:
        raise click.UsageError("give --days or set EMBEDDINGS_MODEL_RETENTION_DAYS")
    store = _store()
    with store.connect() as conn:
        retired = apply_retention(conn, store.schema, days, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps({"dry_run": dry_run, "retention_days": days, "models": retired}))
        return
    verb = "would retire" if dry_run else "retired"
    for key, n in retired.items():
        console.print(f"{verb} {key}: {n} vectors")
    if not retired:
        console.print(f"no model has been out of service for {days:g} days")


@models.command("activate")
@click.argument("model_key")
@click.option(
    "--tenant", "-t", "tenants", multiple=True, required=True, callback=lambda _c, _p, v: [_tenant(t) for t in v]
)
def models_activate(model_key: str, tenants: list[str]) -> None:
    """Switch TENANTs' search to MODEL_KEY now (e.g. past a failed quality gate). Refused below 100% coverage."""
    from ..store import tenants as tenant_store
    from ..store import vectors
    from ..store.models import chunk_set_of, vector_table_of

    store = _store()
    with store.connect() as conn:
        vt = vector_table_of(conn, store.schema, model_key)
        if vt is None:
            raise click.ClickException(f"model {model_key!r} has no vectors; see `embeddings-pipeline models list`")
        sets = {t: chunk_set_of(conn, store.schema, t, model_key) for t in tenants}
        for tenant, chunk_set in sets.items():  # all tenants are checked before any is switched
            total, current = vectors.coverage(conn, store.schema, vt, tenant, chunk_set or "")
            if chunk_set is None or total == 0 or current < total:
                raise click.ClickException(
                    f"tenant {tenant!r}: model {model_key} covers {current} of {total} chunks; fill it first "
                    f"(`embeddings-pipeline backfill --tenant {tenant} --model {model_key}`); nothing was switched"
                )
        vectors.ensure_search_index(conn, store.schema, model_key)
        for tenant, chunk_set in sets.items():
            tenant_store.activate_model(conn, store.schema, tenant, model_key, chunk_set)  # type: ignore[arg-type]
            console.print(f"tenant {tenant}: searches with {model_key} ({chunk_set})")


@main.group()
def gate() -> None:
    """Per-tenant quality queries: a new model takes over only if it ranks them no worse than the active one."""


@gate.command("set")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--tenant", "-t", required=True, callback=lambda _c, _p, v: _tenant(v))
@click.option("--split", default="test", show_default=True, help="qrels/SPLIT.tsv")
def gate_set(dataset: Path, tenant: str, split: str) -> None:
    """Load DATASET's queries.jsonl and qrels/SPLIT.tsv (BEIR layout) as TENANT's quality queries."""
    from ..search.evaluate import load_qrels, load_queries
    from ..store.quality import set_queries

    store = _store()
    with store.connect() as conn:
        n = set_queries(conn, store.schema, tenant, load_queries(dataset / "queries.jsonl"),
                        load_qrels(dataset / "qrels" / f"{split}.tsv"))  # fmt: skip
    console.print(f"tenant {tenant}: {n} quality queries")


@gate.command("show")
@click.option("--tenant", "-t", required=True, callback=lambda _c, _p, v: _tenant(v))
@click.option("--json", "as_json", is_flag=True)
def gate_show(tenant: str, as_json: bool) -> None:
    """TENANT's quality queries and the allowed nDCG@10 drop."""
    from ..search.gate import max_drop
    from ..store.quality import queries_of

    store = _store()
    with store.connect() as conn:
        queries = queries_of(conn, store.schema, tenant)
    if as_json:
        click.echo(json.dumps({"tenant": tenant, "queries": len(queries), "max_drop": max_drop()}))
    else:
        console.print(f"tenant {tenant}: {len(queries)} quality queries, allowed nDCG@10 drop {max_drop()}")


@main.command("lineage")
@click.option("--chunk", "chunk_id")
@click.option("--doc", "doc_id")
@click.option("--tenant", "-t", required=True, callback=lambda _c, _p, v: _tenant(v))
@click.option("--json", "as_json", is_flag=True)
def lineage_cmd(chunk_id: str | None, doc_id: str | None, tenant: str, as_json: bool) -> None:
    """Which model, revision, chunker and Dagster run produced each vector of a chunk or document."""
    from ..store.models import lineage

    if (chunk_id is None) == (doc_id is None):
        raise click.UsageError("give exactly one of --chunk or --doc")
    store = _store()
    with store.connect() as conn:
        rows = lineage(conn, store.schema, tenant, chunk_id=chunk_id, doc_id=doc_id)
    if as_json:
        click.echo(json.dumps({"tenant": tenant, "vectors": rows}))
        return
    table = Table(title=f"lineage: {tenant} {chunk_id or doc_id}")
    cols = ["chunk_id", "model_key", "revision", "chunker_version", "embedded_at", "run_id", "current", "serving"]
    for c in cols:
        table.add_column(c)
    for r in rows:
        table.add_row(*(str(r[c])[:24] for c in cols))
    console.print(table)


# --- demo and UI ------------------------------------------------------------------------------------------


@main.command()
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
    store = _store()
    with store.connect() as conn:
        for tenant in tenants:
            report = upsert_documents(conn, store.schema, tenant, read_paths([corpus / tenant]))
            console.print(
                f"ingested {tenant}: {report.inserted} new, {report.updated} changed, {report.unchanged} unchanged"
            )
    runs = _materialize(tenants)
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


@main.command()
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


if __name__ == "__main__":
    main()
