"""`tenants set|show`: per-tenant settings."""

from __future__ import annotations

import click

from ..config import Settings
from .common import connect, console, echo_json, json_option, print_table, tenant_argument


@click.group()
def tenants() -> None:
    """Per-tenant settings: model override and the NAME of the env var holding the tenant's API key."""


@tenants.command("set")
@tenant_argument()
@click.option("--model", help="model spec, e.g. ollama:nomic-embed-text or openai:text-embedding-3-small ('' clears)")
@click.option("--key-env", help="NAME of the environment variable with this tenant's API key ('' clears)")
@click.option("--chunk-overflow", type=click.Choice(["split", "truncate"]))
def tenants_set(tenant: str, model: str | None, key_env: str | None, chunk_overflow: str | None) -> None:
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
