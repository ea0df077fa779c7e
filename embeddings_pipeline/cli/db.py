"""`db start|stop|url|status|migrate`: the embedded PostgreSQL and the pipeline's schema."""

from __future__ import annotations

import click

from ..config import Settings, embeddings_home
from .common import console, echo_json, json_option, pipeline_store


@click.group()
def db() -> None:
    """The embedded PostgreSQL (unused when EMBEDDINGS_DATABASE_URL is set)."""


@db.command("start")
def db_start() -> None:
    """Start the embedded PostgreSQL (data under EMBEDDINGS_HOME)."""
    from ..store.server import database_url

    settings = Settings.from_env()
    if settings.database_url:
        console.print("EMBEDDINGS_DATABASE_URL is set: using that server, nothing to start.")
        return
    database_url(settings)
    console.print(f"embedded PostgreSQL running, data in {embeddings_home() / 'pgdata'}")


@db.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL."""
    from ..store.server import stop_embedded

    console.print("stopped" if stop_embedded() else "not running")


@db.command("url")
@json_option
def db_url(as_json: bool) -> None:
    """Print the database URL the pipeline uses (starting the embedded server if needed)."""
    from ..config import Settings
    from ..store.server import database_url

    url = database_url()
    if as_json:
        echo_json({"url": url, "embedded": not Settings.from_env().database_url})
    else:
        click.echo(url)


@db.command("status")
@json_option
def db_status(as_json: bool) -> None:
    """Whether the database is external or embedded, and whether it runs."""
    from ..store.server import embedded_status

    settings = Settings.from_env()
    info = {"external": True, "running": None} if settings.database_url else {"external": False, **embedded_status()}
    if as_json:
        echo_json(info)
    else:
        for k, v in info.items():
            console.print(f"{k}: {v}")


@db.command("migrate")
@json_option
def db_migrate(as_json: bool) -> None:
    """Create or upgrade the pipeline's tables (runs also do this on their own)."""
    from ..store.db import connection
    from ..store.migrations import LATEST_VERSION, migrate

    store = pipeline_store()
    with connection(store.url()) as conn:
        applied = migrate(conn, store.schema)
    if as_json:
        echo_json({"schema": store.schema, "applied": applied, "version": LATEST_VERSION})
    else:
        console.print(f"schema {store.schema}: applied {applied or 'nothing'}; at version {LATEST_VERSION}")
