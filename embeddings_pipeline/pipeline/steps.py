"""The three pipeline steps for one tenant, free of Dagster so the CLI, tests and benchmarks share them.

Each step brings its own table in line with the one upstream of it and reports what it did:
documents -> blocks (parse changed documents), blocks -> chunks (re-chunk changed documents),
chunks -> vectors (embed only chunks without a current vector, batch by batch, committing each batch).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

import psycopg

from ..providers.base import EmbeddingProvider, ProviderError
from ..providers.resilience import CircuitOpenError, ErrorKind, ProviderCallError
from ..search.gate import GateResult, quality_gate
from ..store import content, tenants, vectors
from ..text.blocks import parse_blocks
from ..text.chunks import CHUNKER_VERSION, chunk_blocks

log = logging.getLogger(__name__)


class EmbeddingIncomplete(RuntimeError):
    """Chunks were left without a vector; the progress made is kept and the next run resumes."""

    def __init__(self, message: str, report: EmbeddingsReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class BlocksReport:
    documents_parsed: int = 0
    documents_removed: int = 0
    blocks_written: int = 0
    blocks_removed: int = 0

    def as_metadata(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class ChunksReport:
    documents_chunked: int = 0
    chunks_written: int = 0
    chunks_removed: int = 0
    chunker_version: str = ""
    # during a model change: the chunk set the active model still searches, kept up to date beside the new one
    serving_chunker_version: str = ""
    serving_chunks_written: int = 0

    def as_metadata(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class EmbeddingsReport:
    model_key: str
    chunker_version: str = ""
    chunks: int = 0
    embedded: int = 0
    reused: int = 0
    copied_by_hash: int = 0
    deleted: int = 0
    failed: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    provider: dict[str, int] = field(default_factory=dict)  # retries, rate limits, ... during this run
    gate: GateResult | None = None  # the quality gate, when the model was ready to take over from another

    @property
    def coverage_pct(self) -> float:
        return 100.0 if self.chunks == 0 else round(100.0 * (self.chunks - self.failed) / self.chunks, 3)

    @property
    def texts_per_second(self) -> float:
        """Model throughput inside this run (model load excluded)."""
        return round(self.embedded / self.embed_seconds, 2) if self.embed_seconds > 0 else 0.0

    def as_metadata(self) -> dict[str, object]:
        return {
            "model_key": self.model_key,
            "chunker_version": self.chunker_version,
            "chunks": self.chunks,
            "embedded": self.embedded,
            "reused": self.reused,
            "copied_by_hash": self.copied_by_hash,
            "deleted": self.deleted,
            "failed": self.failed,
            "coverage_pct": self.coverage_pct,
            "seconds": round(self.seconds, 3),
            "texts_per_second": self.texts_per_second,
            **{f"provider_{k}": v for k, v in self.provider.items()},
            **(self.gate.as_metadata() if self.gate else {}),
        }


def chunker_version_for(provider: EmbeddingProvider, overflow: str = "split") -> str:
    """Chunk texts depend on the chunker, the tokenizer and limit they were split for, and the overflow policy,
    not on the model: a switch between models sharing a tokenizer (new prefix, revision, dimensions) keeps
    every chunk and only fills the new model's vectors. Models that split differently get a chunk set each."""
    version = f"{CHUNKER_VERSION}:{provider.tokenizer.name}:{provider.identity.max_tokens}"
    return version if overflow == "split" else f"{version}:{overflow}"


def overflow_of(chunker_version: str) -> str:
    return "truncate" if chunker_version.endswith(":truncate") else "split"


def target_chunk_set(conn: psycopg.Connection, schema: str, tenant_id: str, provider: EmbeddingProvider) -> str:
    """The chunk set `provider` embeds for this tenant now (its tokenizer, limit and the tenant's policy)."""
    return chunker_version_for(provider, tenants.chunk_overflow(conn, schema, tenant_id))


def _serving_set(
    conn: psycopg.Connection, schema: str, tenant_id: str, serving: EmbeddingProvider | None, target_set: str
) -> tuple[str | None, bool]:
    """The active (serving) chunk set if it differs from the target set, and whether this code can keep it up
    to date with `serving` (the active model's provider). A set built by an older chunker stays as it is."""
    active = tenants.tenant_settings(conn, schema, tenant_id)
    version = active.active_chunker_version
    if version is None or version == target_set:
        return None, False
    rebuildable = (
        serving is not None
        and serving.identity.model_key == active.active_model_key
        and chunker_version_for(serving, overflow_of(version)) == version
    )
    return version, rebuildable


def build_blocks(conn: psycopg.Connection, schema: str, tenant_id: str, *, full: bool = False) -> BlocksReport:
    """Parse changed documents; `full` re-parses every live one (the nightly reconcile repairs rows changed
    behind the pipeline's back; unchanged texts keep their vectors, so nothing is re-embedded for it)."""
    report = BlocksReport()
    for batch in content.changed_documents(conn, schema, tenant_id, everything=full):
        parsed = [(doc, parse_blocks(doc.doc_id, doc.body, doc.format)) for doc in batch]
        report.blocks_written += content.replace_blocks(conn, schema, tenant_id, parsed)
        report.documents_parsed += len(parsed)
    removed = content.removed_documents(conn, schema, tenant_id)
    if removed:
        report.blocks_removed = content.forget_documents(conn, schema, tenant_id, removed)
        report.documents_removed = len(removed)
    return report


def _chunk_set(
    conn: psycopg.Connection,
    schema: str,
    tenant_id: str,
    provider: EmbeddingProvider,
    version: str,
    batch: int,
) -> tuple[int, int]:
    """Re-chunk the documents whose blocks changed since chunk set `version` was built; (documents, chunks)."""
    overflow, limit = overflow_of(version), provider.identity.max_tokens
    todo = content.documents_to_chunk(conn, schema, tenant_id, version)
    written = 0
    for start in range(0, len(todo), batch):
        docs = todo[start : start + batch]
        blocks = content.blocks_of(conn, schema, tenant_id, [d.doc_id for d in docs])
        options = {"overflow": overflow, "chunk_set": version}
        chunked = [(d, chunk_blocks(blocks[d.doc_id], d.title, provider.tokenizer, limit, **options)) for d in docs]
        written += content.replace_chunks(conn, schema, tenant_id, chunked, version)
    return len(todo), written


def build_chunks(
    conn: psycopg.Connection,
    schema: str,
    tenant_id: str,
    provider: EmbeddingProvider,
    batch: int = 500,
    *,
    serving: EmbeddingProvider | None = None,
) -> ChunksReport:
    """Bring the tenant's chunk set for `provider` in line with its blocks.

    During a model change to a model that splits differently, the set the active model searches (`serving` is
    that model's provider) is kept and updated too, so search keeps answering with fresh content until the
    switch. Every other chunk set of the tenant is dropped.
    """
    version = target_chunk_set(conn, schema, tenant_id, provider)
    report = ChunksReport(chunker_version=version)
    report.documents_chunked, report.chunks_written = _chunk_set(conn, schema, tenant_id, provider, version, batch)
    serving_set, rebuildable = _serving_set(conn, schema, tenant_id, serving, version)
    if serving_set is not None:
        report.serving_chunker_version = serving_set
        if rebuildable:
            assert serving is not None
            _, report.serving_chunks_written = _chunk_set(conn, schema, tenant_id, serving, serving_set, batch)
    keep = [version] + ([serving_set] if serving_set else [])
    report.chunks_removed = content.delete_orphan_chunks(conn, schema, tenant_id) + content.drop_chunk_sets(
        conn, schema, tenant_id, keep
    )
    return report


def build_embeddings(
    conn: psycopg.Connection,
    schema: str,
    tenant_id: str,
    provider: EmbeddingProvider,
    run_id: str,
    *,
    commit_every: int = 256,
    chunker_version: str | None = None,
    activate: bool = True,
    active: EmbeddingProvider | None = None,
) -> EmbeddingsReport:
    """Embed every chunk of the tenant's chunk set (by default the provider's target set) that lacks a current
    vector; raise if any is left without one.

    Each batch is committed as it finishes. A batch the provider rejects for its size or content is split in
    halves until the bad input is alone; that input is recorded in `embedding_errors` and its neighbours are
    embedded. When the provider's circuit is open the run stops at once (fail fast) and says so.
    At full coverage the model and its chunk set become the tenant's active pair (unless `activate` is False),
    if the tenant has quality queries only when the model passes the quality gate against `active` (the
    provider of the tenant's active model).
    """
    identity = provider.identity
    version = chunker_version or target_chunk_set(conn, schema, tenant_id, provider)
    vt = vectors.register_model(conn, schema, identity, getattr(provider, "spec", None))
    report = EmbeddingsReport(model_key=identity.model_key, chunker_version=version)
    stats_before = _provider_stats(provider)
    started = time.perf_counter()

    report.copied_by_hash = vectors.reuse_by_hash(conn, schema, vt, tenant_id, version)
    report.deleted = vectors.delete_orphans(conn, schema, vt, tenant_id)
    pending = vectors.pending_chunks(conn, schema, vt, tenant_id, version)
    # Sorting by length keeps padding low inside each model batch (~25% faster than arrival order).
    pending.sort(key=lambda c: len(c.text))
    if pending:
        provider.load()
    for start in range(0, len(pending), commit_every):
        batch = pending[start : start + commit_every]
        try:
            _embed_batch(conn, schema, provider, tenant_id, batch, run_id, report)
        except CircuitOpenError as exc:
            rest = pending[start:]
            _record_failure(conn, schema, identity.model_key, tenant_id, rest, "circuit_open", str(exc), report)
            report.errors.insert(0, f"stopped early, provider circuit open: {exc}")
            break

    report.seconds = time.perf_counter() - started
    report.provider = _stats_delta(stats_before, _provider_stats(provider))
    total, current = vectors.coverage(conn, schema, vt, tenant_id, version)
    report.chunks = total
    report.failed = total - current
    report.reused = current - report.embedded
    if report.failed:
        raise EmbeddingIncomplete(
            f"tenant {tenant_id!r}: {report.failed} of {total} chunks have no vector for model "
            f"{identity.model_key} after this run ({'; '.join(report.errors[:3]) or 'see embedding_errors'}); "
            "the vectors written so far are kept and the next run resumes",
            report,
        )
    if not activate:
        return report
    report.gate = gate = quality_gate(conn, schema, tenant_id, provider, version, active)
    if gate is not None and not gate.passed:
        log.warning("tenant %r stays on %s: %s fails the quality gate (%s)", tenant_id, gate.active_model,
                    identity.model_key, gate.as_metadata())  # fmt: skip
        return report
    vectors.ensure_search_index(conn, schema, identity.model_key)  # built in bulk before the model first serves
    if tenants.activate_model(conn, schema, tenant_id, identity.model_key, version):
        # the set search read until now is no longer needed (its vectors stay until the model is retired)
        content.drop_chunk_sets(conn, schema, tenant_id, [version])
    return report


def refresh_serving(
    conn: psycopg.Connection,
    schema: str,
    tenant_id: str,
    target: EmbeddingProvider,
    serving: EmbeddingProvider | None,
    run_id: str,
    *,
    commit_every: int = 256,
) -> EmbeddingsReport | None:
    """During a model change, embed what changed in the active model's own chunk set with the active model, so
    new and edited content stays searchable until the new model takes over. None when there is nothing to keep
    up (no change in progress, or the active set is one this code can no longer rebuild)."""
    active = tenants.tenant_settings(conn, schema, tenant_id)
    target_set = target_chunk_set(conn, schema, tenant_id, target)
    if serving is None or active.active_model_key is None or active.active_chunker_version is None:
        return None
    if (active.active_model_key, active.active_chunker_version) == (target.identity.model_key, target_set):
        return None
    if serving.identity.model_key != active.active_model_key:
        return None
    return build_embeddings(
        conn, schema, tenant_id, serving, run_id,
        commit_every=commit_every, chunker_version=active.active_chunker_version, activate=False,
    )  # fmt: skip


def _embed_batch(
    conn: psycopg.Connection,
    schema: str,
    provider: EmbeddingProvider,
    tenant_id: str,
    batch: list[vectors.PendingChunk],
    run_id: str,
    report: EmbeddingsReport,
) -> None:
    identity = provider.identity
    try:
        t0 = time.perf_counter()
        vecs = provider.embed_documents([c.text for c in batch])
        report.embed_seconds += time.perf_counter() - t0
        vectors.write_vectors(conn, schema, identity, tenant_id, batch, vecs, run_id)
        report.embedded += len(batch)
    except CircuitOpenError:
        raise
    except (ProviderError, vectors.VectorValidationError, RuntimeError, ValueError, OSError) as exc:
        kind = exc.kind if isinstance(exc, ProviderCallError) else None
        if kind in (ErrorKind.TOO_LARGE, ErrorKind.BAD_INPUT) and len(batch) > 1:
            mid = len(batch) // 2
            _embed_batch(conn, schema, provider, tenant_id, batch[:mid], run_id, report)
            _embed_batch(conn, schema, provider, tenant_id, batch[mid:], run_id, report)
            return
        error_kind = kind.value if kind else type(exc).__name__
        _record_failure(conn, schema, identity.model_key, tenant_id, batch, error_kind, str(exc), report)


def _record_failure(
    conn: psycopg.Connection,
    schema: str,
    model_key: str,
    tenant_id: str,
    chunks: list[vectors.PendingChunk],
    kind: str,
    message: str,
    report: EmbeddingsReport,
) -> None:
    log.error("tenant %r: %d chunks failed to embed (%s: %s)", tenant_id, len(chunks), kind, message)
    vectors.record_errors(conn, schema, model_key, tenant_id, [c.chunk_id for c in chunks], kind, message)
    if len(report.errors) < 5 and f"{kind}: {message}" not in report.errors:
        report.errors.append(f"{kind}: {message}")


def _provider_stats(provider: EmbeddingProvider) -> dict[str, int]:
    """Counters of a remote provider (calls, retries, rate limits, ...) and how often its circuit opened."""
    stats = getattr(provider, "stats", None)
    breaker = getattr(provider, "breaker", None)
    out = stats.as_metadata() if stats is not None else {}
    if breaker is not None:
        out["circuit_opened"] = int(breaker.snapshot()["opened_count"])
    return out


def _stats_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items()}
