"""One real PostgreSQL + pgvector per test session (the embedded server unless EMBEDDINGS_TEST_DATABASE_URL),
a fresh schema per test, the real bundled model, and real Dagster instances."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from embeddings_pipeline.defs.resources import PipelineStore
from embeddings_pipeline.providers import EmbeddingProvider, load_provider
from embeddings_pipeline.store.server import start_embedded, stop_embedded

DEFAULT_MODEL = "sentence-transformers:all-MiniLM-L6-v2"


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("EMBEDDINGS_TEST_DATABASE_URL")
    if url:
        yield url
        return
    home = tmp_path_factory.mktemp("embedded-pg")
    yield start_embedded(home)
    stop_embedded(home)


@pytest.fixture()
def schema(pg_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """A schema of its own for each test; the environment points every component at it."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("EMBEDDINGS_DATABASE_URL", pg_url)
    monkeypatch.setenv("EMBEDDINGS_SCHEMA", name)
    monkeypatch.setenv("EMBEDDINGS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.delenv("EMBEDDINGS_MODEL", raising=False)
    yield name
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture()
def store(schema: str, pg_url: str) -> PipelineStore:
    return PipelineStore(database_url=pg_url, schema_name=schema)


@pytest.fixture()
def conn(store: PipelineStore) -> Iterator[psycopg.Connection]:
    with store.connect() as c:
        yield c


@pytest.fixture(scope="session")
def provider() -> EmbeddingProvider:
    p = load_provider(DEFAULT_MODEL)
    p.load()
    return p


@pytest.fixture()
def cli(schema: str):
    """`cli("ingest", ...)`: the command line in this process on the test's schema; `ok=False` allows failure."""
    from click.testing import CliRunner

    from embeddings_pipeline.cli import main

    runner = CliRunner()

    def run(*args: str, ok: bool = True, input: str | None = None):
        result = runner.invoke(main, list(args), catch_exceptions=False, input=input)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return run

