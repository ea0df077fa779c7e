"""Filling vectors and tracing them: `backfill` (resumable, with a dry-run plan), `embed-shard` (one shard of a
large tenant, in a process or pod of its own) and `lineage`."""

from __future__ import annotations

import uuid

import click

from .common import (
    connect,
    echo_json,
    id_cell,
    json_option,
    materialize_with_progress,
    print_table,
    say,
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
@click.option("--concurrent-runs", type=click.IntRange(1, 64), help="tenant runs at a time, each in a worker "
              "process of its own (default EMBEDDINGS_CONCURRENT_RUNS, 1)")  # fmt: skip
@click.option("--chunks-only", is_flag=True, help="a run of blocks and chunks only, embedding nothing: what "
              "`embed-shard` processes need before they start")  # fmt: skip
@json_option
def backfill(
    tenants: list[str], model_key: str | None, dry_run: bool, batch_size: int | None, processes: int | None,
    concurrent_runs: int | None, chunks_only: bool, as_json: bool,
) -> None:  # fmt: skip
    """Embed everything missing for TENANTS (default: all), through Dagster runs, resumable after any kill."""
    from ..defs.assets import COMMIT_TAG, MODEL_TAG, PROCESSES_TAG

    tenants = tenants or tenants_with_documents()
    if dry_run:
        _backfill_plan(tenants, model_key, as_json)
        return
    tags = {**({MODEL_TAG: model_key} if model_key else {}), **({COMMIT_TAG: str(batch_size)} if batch_size else {}),
            **({PROCESSES_TAG: str(processes)} if processes else {})}  # fmt: skip
    if chunks_only:
        _chunks_only(tenants, tags, as_json)
        return
    todo = tenants_with_work(tenants, model_key)
    if len(todo) < len(tenants):
        click.echo(f"{len(tenants) - len(todo)} of {len(tenants)} tenants up to date: no run for them")
    runs = materialize_with_progress(todo, tags=tags, concurrent_runs=concurrent_runs) if todo else []
    failed = [r for r in runs if not r.success]
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(runs)} tenants failed (rerun to resume): "
                                   + "; ".join(f"{r.tenant}: {r.error}" for r in failed))  # fmt: skip


def _chunks_only(tenants: list[str], tags: dict[str, str], as_json: bool) -> None:
    """One Dagster run of `blocks` and `chunks` per tenant: the chunks the shards of `embed-shard` embed."""
    from .runner import materialize_tenants

    runs = materialize_tenants(tenants, tags=tags, assets=["blocks", "chunks"])
    if as_json:
        echo_json({"chunks_only": True, "runs": [{"tenant": r.tenant, "run_id": r.run_id, "success": r.success,
                                                  "error": r.error} for r in runs]})  # fmt: skip
    else:
        for r in runs:
            say(f"{'ok' if r.success else 'FAILED'} {r.tenant}: blocks and chunks (run {r.run_id})"
                + ("" if r.success else f": {r.error}"), style="green" if r.success else "red")  # fmt: skip
    failed = [r for r in runs if not r.success]
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(runs)} tenants failed: "
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


def _check_shard(_ctx: click.Context, _param: click.Parameter, value: str):
    from ..pipeline.shards import parse_shard

    try:
        return parse_shard(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.command("embed-shard")
@tenant_option()
@click.option("--shard", "shard", required=True, metavar="I/N", callback=_check_shard,
              help="embed shard I of N (0 <= I < N) of the tenant's pending chunks, split by content hash")  # fmt: skip
@click.option("--model", "model_key", help="a registered model_key to fill (default: the tenant's own model)")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=256, show_default=True,
              help="texts per committed batch")  # fmt: skip
@click.option("--run-id", help="recorded on each vector written, with ':I/N' after it (default: shard-<random>)")
@click.option("--wait", "wait_s", type=click.FloatRange(0), help="seconds to wait while a run holds the tenant "
              "(default EMBEDDINGS_LOCK_TIMEOUT)")  # fmt: skip
@json_option
def embed_shard(
    tenant: str, shard, model_key: str | None, batch_size: int, run_id: str | None, wait_s: float | None,
    as_json: bool,
) -> None:  # fmt: skip
    """Embed shard I of N of TENANT's pending chunks in this process, batch by batch: one pod of a Kubernetes
    Indexed Job (deploy/k8s/shard-job.yaml), N of them at once, on as many machines.

    \b
      embeddings-pipeline backfill --tenant acme --chunks-only   # blocks and chunks, no embedding
      embeddings-pipeline embed-shard --tenant acme --shard 0/2 &
      embeddings-pipeline embed-shard --tenant acme --shard 1/2 &
      wait && embeddings-pipeline materialize --tenant acme   # reuse, index, coverage, checks: once

    Only embeds: the tenant's chunks must exist (`backfill --chunks-only`, or any run); reuse by hash, the
    tenant's partition and HNSW index, coverage and checks are the next run's, which embeds only what the shards
    left. Shards hold a shared lock on the tenant: they run together, never beside a run of it. Exit 1 when a
    chunk of the shard is left without a vector (nothing written is lost: rerun it, or let the run embed them).
    """
    from ..pipeline.shards import NothingToShard
    from ..pipeline.shards import embed_shard as embed_one_shard
    from ..providers import ProviderError
    from ..store.db import TenantBusy
    from ..store.scope import Scope

    run_id = f"{run_id or 'shard-' + uuid.uuid4().hex[:12]}:{shard}"
    try:
        with connect() as (conn, schema):
            result = embed_one_shard(Scope(conn, schema, tenant), shard, run_id, model_key=model_key,
                                     commit_every=batch_size, wait_s=wait_s)  # fmt: skip
    except (NothingToShard, ProviderError, TenantBusy) as exc:
        message = f"embedding provider: {exc}" if isinstance(exc, ProviderError) else str(exc)
        if as_json:
            echo_json({"ok": False, "tenant": tenant, "shard": str(shard), "error": message})
            raise SystemExit(1) from None
        raise click.ClickException(message) from None
    if as_json:
        echo_json(result)
    else:
        say(f"shard {shard} of {tenant}: embedded {result['embedded']} of {result['pending']} pending "
            f"({result['chunks']} chunks in all), {result['missing']} left, {result['texts_per_second']} texts/s "
            f"(run id {run_id})", style="green" if result["ok"] else "red")  # fmt: skip
        if result["documents_not_chunked"]:
            say(f"{result['documents_not_chunked']} documents are not chunked yet: the tenant's run chunks and "
                "embeds them", style="yellow")  # fmt: skip
    if not result["ok"]:
        if not as_json:
            detail = "; ".join(result["errors"][:3]) or "see embedding_errors"
            say(f"{result['missing']} chunks of shard {shard} have no vector ({detail}); rerun the shard, or the "
                "tenant's next run embeds them", err=True, style="red")  # fmt: skip
        raise SystemExit(1)


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
