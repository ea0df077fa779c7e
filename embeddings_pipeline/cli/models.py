"""`models list|retire|prune|activate`: model identities side by side, switching and retiring them."""

from __future__ import annotations

import click

from .common import connect, console, echo_json, id_cell, json_option, print_table, tenant_option

COVERAGE = "tenants (coverage %, * active)"
MODEL_COLUMNS = ["model_key", "provider", "name", "revision", "dims", "status", COVERAGE]


@click.group()
def models() -> None:
    """Model identities side by side: coverage per tenant, retiring old vectors."""


def _coverage(model: dict) -> str:
    return ", ".join(f"{t} {v['coverage_pct']}{'*' if v['active'] else ''}" for t, v in model["tenants"].items())


@models.command("list")
@json_option
def models_list(as_json: bool) -> None:
    """Every model identity: provider, revision, dims, status, and its coverage of each tenant."""
    from ..store.models import list_models

    with connect() as (conn, schema):
        rows = list_models(conn, schema)
    if as_json:
        echo_json({"models": rows})
        return
    table_rows = [{**m, "revision": id_cell(m["revision"], 16), COVERAGE: _coverage(m)} for m in rows]
    print_table("embedding models", MODEL_COLUMNS, table_rows)


@models.command("retire")
@click.argument("model_key")
def models_retire(model_key: str) -> None:
    """Drop MODEL_KEY's vectors. Refused while it is any tenant's active model."""
    from ..store.models import ModelInUse, retire_model

    try:
        with connect() as (conn, schema):
            dropped = retire_model(conn, schema, model_key)
    except (LookupError, ModelInUse) as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(f"retired {model_key}: {dropped} vectors dropped")


@models.command("prune")
@click.option("--days", type=click.FloatRange(min=0), help="retention; default EMBEDDINGS_MODEL_RETENTION_DAYS")
@click.option("--dry-run", is_flag=True, help="list what would be retired, drop nothing")
@json_option
def models_prune(days: float | None, dry_run: bool, as_json: bool) -> None:
    """Retire every model no tenant has searched with for DAYS (what the `model_retention` job does)."""
    from ..config import model_retention_days
    from ..store.models import apply_retention

    days = days if days is not None else model_retention_days()
    if days is None:
        raise click.UsageError("give --days or set EMBEDDINGS_MODEL_RETENTION_DAYS")
    with connect() as (conn, schema):
        retired = apply_retention(conn, schema, days, dry_run=dry_run)
    if as_json:
        echo_json({"dry_run": dry_run, "retention_days": days, "models": retired})
        return
    verb = "would retire" if dry_run else "retired"
    for key, n in retired.items():
        console.print(f"{verb} {key}: {n} vectors")
    if not retired:
        console.print(f"no model has been out of service for {days:g} days")


@models.command("activate")
@click.argument("model_key")
@tenant_option(multiple=True, required=True)
def models_activate(model_key: str, tenants: list[str]) -> None:
    """Switch TENANTs' search to MODEL_KEY now (e.g. past a failed quality gate). Refused below 100% coverage."""
    from ..pipeline.model_change import ActivationRefused, activate_by_hand

    with connect() as (conn, schema):
        try:
            switched = activate_by_hand(conn, schema, model_key, tenants)
        except ActivationRefused as exc:
            raise click.ClickException(str(exc)) from exc
    for tenant, chunk_set in switched.items():
        console.print(f"tenant {tenant}: searches with {model_key} ({chunk_set})")
