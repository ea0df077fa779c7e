"""What every command group shares: consoles, options, the store connection, tables, progress, tenant runs.

Only click, rich and `config` are imported here; anything heavier (Dagster, psycopg, torch) is imported inside the
function that needs it, so the CLI starts fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..config import InvalidTenantId, validate_tenant_id

if TYPE_CHECKING:
    import psycopg

    from ..store.session import Database


console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)

# --- options ----------------------------------------------------------------------------------------------

json_option = click.option("--json", "as_json", is_flag=True)


def _tenant(value: str) -> str:
    try:
        return validate_tenant_id(value)
    except InvalidTenantId as exc:
        raise click.BadParameter(str(exc)) from exc


def _check_tenant(_ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    return [_tenant(v) for v in value] if param.multiple else _tenant(value)


def tenant_option(*, multiple: bool = False, required: bool | None = None) -> Callable:
    """`--tenant/-t`, validated: one tenant id into `tenant` (required unless told otherwise), or with
    `multiple=True` any number of them into `tenants` as a list (optional unless `required=True`)."""
    decls = ("--tenant", "-t", "tenants") if multiple else ("--tenant", "-t")
    required = (not multiple) if required is None else required
    return click.option(*decls, multiple=multiple, required=required, callback=_check_tenant)


def tenant_argument() -> Callable:
    """A validated TENANT argument."""
    return click.argument("tenant", callback=_check_tenant)


def mode_option(default: str, help_text: str) -> Callable:
    return click.option(
        "--mode", type=click.Choice(["dense", "text", "hybrid"]), default=default, show_default=True, help=help_text
    )


# --- output -----------------------------------------------------------------------------------------------


def echo_json(payload: object) -> None:
    click.echo(json.dumps(payload))


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Mapping[str, Any]],
    *,
    cell: Callable[[Any], str] = str,
    right: Collection[str] = (),
    style: Callable[[Mapping[str, Any]], str | None] | None = None,
) -> None:
    """Print ROWS (dicts keyed by column) as a rich table: each value through `cell`, the `right` columns
    right-justified, each row in the style `style(row)` gives."""
    table = Table(title=title)
    for c in columns:
        table.add_column(c, justify="right" if c in right else "left")
    for r in rows:
        table.add_row(*(cell(r[c]) for c in columns), style=style(r) if style else None)
    console.print(table)


def progress_bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
    )


# --- the store --------------------------------------------------------------------------------------------


def pipeline_store() -> Database:
    from ..store.session import Database

    return Database()


@contextmanager
def connect() -> Iterator[tuple[psycopg.Connection, str]]:
    """`(conn, schema)`: a connection to the pipeline's migrated schema, and that schema's name."""
    store = pipeline_store()
    with store.connect() as conn:
        yield conn, store.schema


def tenants_with_documents() -> list[str]:
    from ..store.documents import source_tenants

    with connect() as (conn, schema):
        return source_tenants(conn, schema)


# --- Dagster runs -----------------------------------------------------------------------------------------


def materialize_with_progress(tenants: list[str], tags: dict[str, str] | None = None) -> list:
    """Run TENANTS' partitions through Dagster, a progress line per tenant as it finishes."""
    from .runner import materialize_tenants

    with progress_bar() as progress:
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
