"""`embeddings-pipeline`: the command line for people (click + rich).

A module per command group; shared options, the store connection, tables and progress bars are in `common.py`:
- `db.py`       db start|stop|url|status|migrate
- `content.py`  ingest, materialize, status, demo, dev
- `search.py`   search
- `tenants.py`  tenants set|show|delete
- `documents.py` documents list|delete
- `models.py`   models list|retire|prune|activate
- `backfill.py` backfill, embed-shard, lineage
- `quality.py`  eval, gate set|show
"""

from __future__ import annotations

import sys

import click

from .. import __version__
from . import backfill, content, db, documents, models, quality, search, serve, tenants, tokens

# Exceptions raised by these modules are a person's input (bad EMBEDDINGS_SCHEMA, EMBEDDINGS_SOURCE_RELATION, ...).
_CONFIG_MODULES = ("embeddings_pipeline.config", "embeddings_pipeline.store.db")


def _raised_in(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""


def _is_instance(exc: BaseException, module: str, name: str) -> bool:
    """isinstance(exc, module.name) without importing MODULE (if it was never imported, exc is not one)."""
    cls = getattr(sys.modules.get(module), name, None)
    return isinstance(cls, type) and isinstance(exc, cls)


class _Main(click.Group):
    """The root group: a configuration error, a refused provider call or a busy tenant is one clear line
    (`Error: ...`, exit 1), never a chain of tracebacks."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ValueError as exc:
            if _raised_in(exc) in _CONFIG_MODULES:
                raise click.ClickException(str(exc)) from None
            raise
        except RuntimeError as exc:
            if _is_instance(exc, "embeddings_pipeline.providers.base", "ProviderError"):
                raise click.ClickException(f"embedding provider: {exc}") from None
            if _is_instance(exc, "embeddings_pipeline.store.db", "TenantBusy"):
                raise click.ClickException(str(exc)) from None
            raise


@click.group(cls=_Main)
@click.version_option(__version__, "--version", "-V", prog_name="embeddings-pipeline")
def main() -> None:
    """Keep every tenant's text embedded in PostgreSQL + pgvector, through Dagster.

    \b
    Start here:
      embeddings-pipeline demo                                  # sample corpus, end to end
      embeddings-pipeline ingest ./docs --tenant acme           # load (and sync) a folder
      embeddings-pipeline materialize --tenant acme             # blocks -> chunks -> vectors
      embeddings-pipeline search "how do refunds work" --tenant acme
      embeddings-pipeline status
    """


for _command in (
    db.db,
    content.ingest,
    content.materialize,
    content.status,
    search.search,
    content.demo,
    content.dev,
    tenants.tenants,
    documents.documents,
    models.models,
    backfill.backfill,
    backfill.embed_shard,
    backfill.lineage_cmd,
    quality.eval_cmd,
    quality.gate,
    serve.serve,
):
    main.add_command(_command)
tenants.tenants.add_command(tokens.token)
