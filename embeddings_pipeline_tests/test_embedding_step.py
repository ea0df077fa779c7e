"""The embeddings step on its own: batches commit as they go, failures are recorded and loud, bad vectors
never reach the table."""

from __future__ import annotations

import numpy as np
import pytest

from embeddings_pipeline.pipeline import model_change, steps
from embeddings_pipeline.store import vectors
from embeddings_pipeline.store.scope import Scope
from embeddings_pipeline.store.status import tenant_status

from .helpers import count, seed

DOC = "\n\n".join(f"Paragraph {i} is about topic number {i} in the warehouse." for i in range(12))


class StopsAfter:
    """The real provider, which dies after `batches` successful calls (a worker killed mid-run)."""

    def __init__(self, real, batches: int) -> None:
        self.real, self.left = real, batches
        self.identity = real.identity
        self.tokenizer = real.tokenizer

    def __getattr__(self, name: str):  # spec, stats, breaker, counters: the real provider's
        return getattr(self.real, name)

    def load(self) -> None:
        self.real.load()

    def embed_documents(self, texts):
        if self.left == 0:
            raise ConnectionError("provider went away")
        self.left -= 1
        return self.real.embed_documents(texts)

    def embed_query(self, text):
        return self.real.embed_query(text)


class WrongDimensions(StopsAfter):
    def embed_documents(self, texts):
        return np.ones((len(texts), self.identity.dims + 1), dtype=np.float32)


def embed(conn, schema, provider, run_id, **options) -> steps.EmbeddingsReport:
    scope = Scope(conn, schema, "acme")
    return steps.build_embeddings(scope, model_change.plan(scope, target=provider), run_id, **options)


def _prepare(conn, schema, provider) -> int:
    seed(conn, schema, "acme", {"doc.txt": DOC}, fmt="text")
    scope = Scope(conn, schema, "acme")
    steps.build_blocks(scope)
    steps.build_chunks(scope, model_change.plan(scope, target=provider))
    return count(conn, schema, "chunks", "acme")


def test_interrupted_run_keeps_committed_batches_and_resumes(conn, schema, provider):
    total = _prepare(conn, schema, provider)
    assert total == 12
    with pytest.raises(steps.EmbeddingIncomplete, match=r"tenant 'acme': 8 of 12 chunks have no vector"):
        embed(conn, schema, StopsAfter(provider, 1), "run-1", commit_every=4)
    key = provider.identity.model_key
    assert tenant_status(conn, schema, "acme", key).vectors == 4
    errors = conn.execute(
        f"SELECT count(*), min(error_kind), min(message) FROM {schema}.embedding_errors"  # noqa: S608
    ).fetchone()
    assert errors == (8, "ConnectionError", "provider went away")
    report = embed(conn, schema, provider, "run-2", commit_every=4)
    assert (report.embedded, report.reused, report.chunks) == (8, 4, 12)
    assert tenant_status(conn, schema, "acme", key).missing == 0
    assert count(conn, schema, "embedding_errors", "acme") == 0


def test_wrong_dimension_is_rejected_before_anything_is_written(conn, schema, provider):
    _prepare(conn, schema, provider)
    with pytest.raises(steps.EmbeddingIncomplete, match="12 of 12"):
        embed(conn, schema, WrongDimensions(provider, 99), "run-1")
    assert count(conn, schema, provider.identity.vector_table, "acme") == 0
    kinds = conn.execute(f"SELECT DISTINCT error_kind FROM {schema}.embedding_errors").fetchall()  # noqa: S608
    assert kinds == [("VectorValidationError",)]


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.ones((2, 384), dtype=np.float32), "expected 3 vectors"),
        (np.full((3, 384), np.nan, dtype=np.float32), "NaN"),
        (np.zeros((3, 384), dtype=np.float32), "all-zero"),
    ],
)
def test_vector_validation(bad, message):
    with pytest.raises(vectors.VectorValidationError, match=message):
        vectors.validate_vectors(bad, 3, 384)
