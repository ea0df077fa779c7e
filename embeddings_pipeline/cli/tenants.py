"""`tenants set|show|delete`: per-tenant settings, and erasing a tenant."""

from __future__ import annotations

import click

from ..config import Settings
from .common import connect, console, echo_json, json_option, print_table, say, tenant_argument


@click.group()
def tenants() -> None:
    """Per-tenant settings (model, key env var, chunk overflow), and erasing a tenant."""


@tenants.command("set")
@tenant_argument(creates=True)
@click.option("--model", help="model spec, e.g. ollama:nomic-embed-text or openai:text-embedding-3-small ('' clears)")
@click.option("--key-env", help="NAME of the environment variable with this tenant's API key ('' clears)")
@click.option("--chunk-overflow", type=click.Choice(["split", "truncate"]))
def tenants_set(tenant: str, model: str | None, key_env: str | None, chunk_overflow: str | None) -> None:
    """Set TENANT's model override, the NAME of the env var with its API key, its chunk overflow policy."""
    from ..providers import ProviderError
    from ..store.tenants import update_tenant

    try:
        with connect() as (conn, schema):
            settings = update_tenant(conn, schema, tenant, model=model, key_env=key_env,
                                     chunk_overflow=chunk_overflow)  # fmt: skip
    except (ValueError, ProviderError) as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(settings.as_dict())


@tenants.command("show")
@json_option
def tenants_show(as_json: bool) -> None:
    """Every tenant's settings and active model."""
    from ..store.tenants import all_tenant_settings

    with connect() as (conn, schema):
        rows = [t.as_dict() for t in all_tenant_settings(conn, schema)]
    default = Settings.from_env().model_spec
    if as_json:
        echo_json({"default_model": default, "tenants": rows})
        return
    print_table(
        f"tenants (default model {default})",
        ["tenant_id", "model", "key_env", "chunk_overflow", "active_model_key"],
        rows,
        cell=lambda v: str(v if v is not None else "-"),
    )


@tenants.command("delete")
@tenant_argument()
@click.option("--yes", "-y", is_flag=True, help="erase without asking")
@json_option
def tenants_delete(tenant: str, yes: bool, as_json: bool) -> None:
    """Erase TENANT: all its rows in every pipeline table, its documents, its Dagster partition.

    Every table of the pipeline's schema with a tenant_id column is cleared of TENANT (documents, blocks,
    chunks, vectors of every model, errors, quality queries, settings), in one transaction under the tenant's
    lock. With EMBEDDINGS_SOURCE_RELATION, the application's own source is left alone: delete its rows there.

    \b
    Examples:
      embeddings-pipeline tenants delete acme
      embeddings-pipeline tenants delete "o'brien/ü" --yes --json
    """
    from ..defs.partitions import tenant_partitions
    from ..store.db import TenantBusy
    from ..store.erasure import erase_tenant
    from .runner import local_instance

    if not yes:
        click.confirm(f"Erase tenant {tenant!r}: its documents, chunks, vectors and settings, for good?", abort=True)
    try:
        with connect() as (conn, schema):
            erasure = erase_tenant(conn, schema, tenant)
    except TenantBusy as exc:
        raise click.ClickException(f"{exc}; nothing was deleted, try again when the run is over") from exc
    instance = local_instance()
    assert tenant_partitions.name is not None
    dropped = instance.has_dynamic_partition(tenant_partitions.name, tenant)
    if dropped:
        instance.delete_dynamic_partition(tenant_partitions.name, tenant)
    if as_json:
        echo_json({"tenant": tenant, "removed": erasure.removed, "partition_dropped": dropped,
                   "app_source": erasure.app_source})  # fmt: skip
    else:
        rows = [{"table": t, "rows": n} for t, n in erasure.removed.items() if n]
        print_table(f"erased tenant {tenant}: {erasure.total} rows", ["table", "rows"], rows, right={"rows"})
        say(f"Dagster partition {'dropped' if dropped else 'was not there'}")
    if erasure.app_source:
        say(
            f"the source {erasure.app_source} (EMBEDDINGS_SOURCE_RELATION) is the application's: its rows of tenant "
            f"{tenant!r} were not touched; delete them there, or the next run embeds them again",
            err=True,
        )
