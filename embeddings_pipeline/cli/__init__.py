"""`embeddings-pipeline`: the command line for people (click + rich).

A module per command group; shared options, the store connection, tables and progress bars are in `common.py`:
- `db.py`       db start|stop|url|status|migrate
- `content.py`  ingest, materialize, status, search, demo, dev
- `tenants.py`  tenants set|show
- `models.py`   models list|retire|prune|activate
- `backfill.py` backfill, lineage
- `quality.py`  eval, gate set|show
"""

from __future__ import annotations

import click

from . import backfill, content, db, models, quality, serve, tenants, tokens


@click.group()
def main() -> None:
    """Keep every tenant's text embedded in PostgreSQL + pgvector, through Dagster."""


for _command in (
    db.db,
    content.ingest,
    content.materialize,
    content.status,
    content.search,
    content.demo,
    content.dev,
    tenants.tenants,
    models.models,
    backfill.backfill,
    backfill.lineage_cmd,
    quality.eval_cmd,
    quality.gate,
    serve.serve,
):
    main.add_command(_command)
tenants.tenants.add_command(tokens.token)
