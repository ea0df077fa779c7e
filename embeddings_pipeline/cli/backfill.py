"""Filling vectors and tracing them: `backfill` (resumable, with a dry-run plan) and `lineage`."""

from __future__ import annotations

import click

from .common import (
    connect,
    echo_json,
    id_cell,
    json_option,
    materialize_with_progress,
    print_table,
    tenant_option,
    tenants_with_documents,
)

PLAN_COLUMNS = ["tenant", "model_key", "chunks", "to_embed", "documents_not_chunked", "est_seconds"]
LINEAGE_COLUMNS = "chunk_id model_key revision chunker_version embedded_at run_id current serving".split()


@click.command()
@tenant_option(multiple=True)
@click.option("--model", "model_key", help="a registered model_key to fill (default: each tenant's own model)")
@click.option("--dry-run", is_flag=True, help="print what would be embedded and an estimate; write nothing")
@click.option("--batch-size", type=click.IntRange(1, 100_000), help="texts per committed batch")
@click.option("--processes", type=click.IntRange(1, 64), help="processes embedding each tenant, each a disjoint "
              "shard of its pending chunks (default EMBEDDINGS_EMBED_PROCESSES, 1)")  # fmt: skip
@json_option
def backfill(
    tenants: list[str], model_key: str | None, dry_run: bool, batch_size: int | None, processes: int | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Embed everything missing for TENANTS (default: all), through Dagster runs, resumable after any kill."""
    from ..defs.assets import COMMIT_TAG, MODEL_TAG, PROCESSES_TAG

    tenants = tenants or tenants_with_documents()
    if dry_run:
        _backfill_plan(tenants, model_key, as_json)
        return
    tags = {**({MODEL_TAG: model_key} if model_key else {}), **({COMMIT_TAG: str(batch_size)} if batch_size else {}),
            **({PROCESSES_TAG: str(processes)} if processes else {})}  # fmt: skip
    todo = tenants_with_work(tenants, model_key)
    if len(todo) < len(tenants):
        click.echo(f"{len(tenants) - len(todo)} of {len(tenants)} tenants up to date: no run for them")
    runs = materialize_with_progress(todo, tags=tags) if todo else []
    failed = [r for r in runs if not r.success]
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(runs)} tenants failed (rerun to resume): "
                                   + "; ".join(f"{r.tenant}: {r.error}" for r in failed))  # fmt: skip


def tenants_with_work(tenants: list[str], model_key: str | None) -> list[str]:
    """The tenants a run would change anything for (`pipeline.backfill.work_left`), in order."""
    from ..pipeline.backfill import work_left
    from ..pipeline.model_change import embedding_provider
    from ..providers import ProviderError
    from ..store.scope import Scope

    todo = []
    with connect() as (conn, schema):
        for tenant in tenants:
            scope = Scope(conn, schema, tenant)
            try:
                provider = embedding_provider(scope, model_key=model_key)
                if work_left(scope, provider) is None:
                    continue
            except ProviderError:
                pass  # the run says what is wrong with the tenant's model
            todo.append(tenant)
    return todo


def _backfill_plan(tenants: list[str], model_key: str | None, as_json: bool) -> None:
    from ..pipeline.backfill import measured_throughput, plan_tenant, throughput_history
    from ..pipeline.model_change import embedding_provider
    from ..providers import ProviderError
    from ..store.scope import Scope
    from .runner import local_instance

    instance = local_instance()
    plans = []
    with connect() as (conn, schema):
        for tenant in tenants:
            try:
                provider = embedding_provider(Scope(conn, schema, tenant), model_key=model_key)
            except ProviderError as exc:
                raise click.ClickException(str(exc)) from exc
            plan, sample = plan_tenant(Scope(conn, schema, tenant), provider)
            tps = measured_throughput(throughput_history(instance, plan.model_key), provider, sample)
            plan.est_seconds = round(plan.to_embed / tps, 3) if tps and plan.to_embed else 0.0
            plans.append(plan.as_dict())
    if as_json:
        echo_json({"dry_run": True, "tenants": plans})
        return
    print_table("backfill plan (dry run: nothing written)", PLAN_COLUMNS, plans)


@click.command("lineage")
@click.option("--chunk", "chunk_id")
@click.option("--doc", "doc_id")
@tenant_option()
@json_option
def lineage_cmd(chunk_id: str | None, doc_id: str | None, tenant: str, as_json: bool) -> None:
    """Which model, revision, chunker and Dagster run produced each vector of a chunk or document."""
    from ..store.models import lineage

    if (chunk_id is None) == (doc_id is None):
        raise click.UsageError("give exactly one of --chunk or --doc")
    with connect() as (conn, schema):
        rows = lineage(conn, schema, tenant, chunk_id=chunk_id, doc_id=doc_id)
    if as_json:
        echo_json({"tenant": tenant, "vectors": rows})
        return
    print_table(f"lineage: {tenant} {chunk_id or doc_id}", LINEAGE_COLUMNS, rows, cell=id_cell)
