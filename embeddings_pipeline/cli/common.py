"""What every command group shares: consoles, options, the store connection, tables, progress, tenant runs.

Only click, rich and `config` are imported here; anything heavier (Dagster, psycopg, torch) is imported inside the
function that needs it, so the CLI starts fast.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

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


def _check_known_tenant(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    value = _check_tenant(ctx, param, value)
    if not ctx.resilient_parsing:
        require_known([value] if isinstance(value, str) else list(value or ()))
    return value


def _check_known_tenant_here(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """`_check_known_tenant`, unless the command goes to the service (EMBEDDINGS_SERVICE_URL), which knows."""
    if os.environ.get("EMBEDDINGS_SERVICE_URL", "").strip():
        return _check_tenant(ctx, param, value)
    return _check_known_tenant(ctx, param, value)


def tenant_option(
    *, multiple: bool = False, required: bool | None = None, creates: bool = False, service: bool = False
) -> Callable:
    """`--tenant/-t`, validated: one tenant id into `tenant` (required unless told otherwise), or with
    `multiple=True` any number of them into `tenants` as a list (optional unless `required=True`).

    The tenant must exist (have documents or settings), else the command stops with a "did you mean" hint;
    only commands that create a tenant (`creates=True`: ingest, eval, gate set) take a new one. With `service`,
    a command that goes to the HTTP service when EMBEDDINGS_SERVICE_URL is set leaves that check to it."""
    decls = ("--tenant", "-t", "tenants") if multiple else ("--tenant", "-t")
    required = (not multiple) if required is None else required
    what = "tenant id (new or existing)" if creates else "an existing tenant id"
    check = _check_tenant if creates else _check_known_tenant_here if service else _check_known_tenant
    return click.option(
        *decls,
        multiple=multiple,
        required=required,
        callback=check,
        metavar="TENANT",
        help=what + (" (repeatable)" if multiple else ""),
    )


def tenant_argument(*, creates: bool = False) -> Callable:
    """A validated TENANT argument (an existing tenant unless `creates`)."""
    return click.argument("tenant", callback=_check_tenant if creates else _check_known_tenant)


def unknown_tenant_message(tenant: str, known: Sequence[str]) -> str:
    import difflib

    close = difflib.get_close_matches(tenant, known, n=3, cutoff=0.6)
    if close:
        hint = f"did you mean {' or '.join(repr(c) for c in close)}?"
    elif known:
        hint = f"known tenants: {', '.join(map(repr, known[:10]))}{', ...' if len(known) > 10 else ''}"
    else:
        hint = "there are no tenants yet: `embeddings-pipeline ingest PATH --tenant T` creates one"
    return f"no tenant {tenant!r} (it has no documents and no settings); {hint}"


def require_known(tenants: Sequence[str]) -> None:
    """Stop (click.BadParameter, exit 2) at the first of TENANTS that has no documents and no settings."""
    if not tenants:
        return
    known = known_tenants()
    for t in tenants:
        if t not in known:
            raise click.BadParameter(unknown_tenant_message(t, known), param_hint="tenant")


def mode_option(default: str, help_text: str) -> Callable:
    return click.option(
        "--mode", type=click.Choice(["dense", "text", "hybrid"]), default=default, show_default=True, help=help_text
    )


# --- output -----------------------------------------------------------------------------------------------


def echo_json(payload: object) -> None:
    click.echo(json.dumps(payload))


def say(text: str, *, err: bool = False, style: str | None = None) -> None:
    """Print TEXT as it is: no rich markup (so `[redacted]` or a tenant id in brackets stays), no wrapping of long
    paths and ids; on stderr with `err`."""
    (err_console if err else console).print(text, markup=False, highlight=False, soft_wrap=True, style=style)


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Mapping[str, Any]],
    *,
    cell: Callable[[Any], str] = str,
    right: Collection[str] = (),
    style: Callable[[Mapping[str, Any]], str | None] | None = None,
    caption: str | None = None,
) -> None:
    """Print ROWS (dicts keyed by column) as a rich table: each value through `cell`, the `right` columns
    right-justified, each row in the style `style(row)` gives. Values are shown as they are (never read as rich
    markup); when stdout is not a terminal the table is as wide as it needs, so no id is ever cut or wrapped."""
    wide = not console.is_terminal
    table = Table(title=Text(title), caption=Text(caption) if caption else None)
    for c in columns:
        table.add_column(c, justify="right" if c in right else "left", no_wrap=wide, overflow="fold")
    for r in rows:
        table.add_row(*(Text(cell(r[c])) for c in columns), style=style(r) if style else None)
    if wide:
        from rich.measure import Measurement

        needed = Measurement.get(console, console.options.update_width(1_000_000), table).maximum
        Console(width=max(console.width, needed), color_system=None).print(table)
    else:
        console.print(table)


def id_cell(value: Any, width: int = 24) -> str:
    """A value for a table cell: shortened to WIDTH on a terminal, whole (every id intact) otherwise."""
    text = "-" if value is None else str(value)
    return text[:width] if console.is_terminal else text


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


def known_tenants() -> list[str]:
    """Every tenant with documents (in the source) or settings (in `tenants`)."""
    return tenants_with_documents()


def tenants_with_documents() -> list[str]:
    from ..store.documents import source_tenants

    with connect() as (conn, schema):
        return source_tenants(conn, schema)


def tenant_model_key(conn: psycopg.Connection, schema: str, tenant: str) -> str:
    """The model key the tenant is embedded with; a remote model whose server cannot be reached yet is shown as
    unknown (its chunks then count as missing) instead of breaking the whole status."""
    from ..pipeline.model_change import embedding_provider
    from ..providers import ProviderError
    from ..store.scope import Scope

    try:
        return embedding_provider(Scope(conn, schema, tenant)).identity.model_key
    except ProviderError as exc:
        say(f"tenant {tenant!r}: model unavailable ({exc})", err=True, style="yellow")
        return "unknown"


# --- Dagster runs -----------------------------------------------------------------------------------------


def materialize_with_progress(
    tenants: list[str], tags: dict[str, str] | None = None, concurrent_runs: int | None = None
) -> list:
    """Run TENANTS' partitions through Dagster, a progress line per tenant as it finishes (`concurrent_runs` at a
    time, default EMBEDDINGS_CONCURRENT_RUNS)."""
    from ..config import concurrent_runs as configured_runs
    from .runner import materialize_tenants

    with progress_bar() as progress:
        task = progress.add_task("materializing tenants", total=len(tenants))

        def done(run) -> None:
            mark = "[green]ok[/]" if run.success else "[red]FAILED[/]"  # markup of ours; the rest is escaped
            meta = run.metadata
            detail = (
                (
                    f"embedded {meta.get('embedded', 0)}, reused {meta.get('reused', 0)}, "
                    f"deleted {meta.get('deleted', 0)}"
                )
                if run.success
                else run.error
            )
            progress.console.print(f"{mark} {escape(run.tenant)}: {escape(str(detail))}  (run {run.run_id})")
            progress.advance(task)

        return materialize_tenants(
            tenants, on_done=done, tags=tags, concurrent_runs=concurrent_runs or configured_runs()
        )
