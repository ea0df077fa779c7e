"""The three pipeline steps for one tenant, free of Dagster so the CLI, tests and benchmarks share them.

Each step brings its own table in line with the one upstream of it and reports what it did:
documents -> blocks (parse changed documents), blocks -> chunks (re-chunk changed documents),
chunks -> vectors (embed only chunks without a current vector, batch by batch, committing each batch).
Which model and which chunk set a step works on is `model_change`'s to say (a `ModelPlan`).
"""

from __future__ import annotations

import logging
import time

from ..providers.base import EmbeddingProvider, ProviderError
from ..providers.resilience import CircuitOpenError, ErrorKind, ProviderCallError
from ..store import content, parsing, promotion, vector_tables, vectors
from ..store.scope import Scope
from ..text.blocks import parse_blocks
from ..text.chunks import chunk_blocks
from . import model_change, shards
from .model_change import ModelPlan
from .reports import BlocksReport, ChunksReport, EmbeddingIncomplete, EmbeddingsReport

__all__ = [
    "BlocksReport",
    "ChunksReport",
    "EmbeddingIncomplete",
    "EmbeddingsReport",
    "build_blocks",
    "build_chunks",
    "build_embeddings",
    "embed_pending",
    "fill",
    "refresh_serving",
]

log = logging.getLogger(__name__)


def build_blocks(scope: Scope, *, full: bool = False) -> BlocksReport:
    """Parse changed documents; `full` re-parses every live one (the nightly reconcile repairs rows changed
    behind the pipeline's back; unchanged texts keep their vectors, so nothing is re-embedded for it).

    A source row that cannot be parsed (NULL body or updated_at, a doc id on several rows, a format or text the
    parser refuses) is recorded in `document_errors` with its reason and skipped, so the rest of the tenant goes
    on; a document parsed again, or gone from the source, leaves `document_errors`. A bad row keeps the blocks of
    its last good version."""
    report = BlocksReport()
    for batch in parsing.changed_documents(*scope, everything=full):
        parsed, rejected = [], list(batch.rejected)
        for doc in batch.documents:
            try:
                parsed.append((doc, parse_blocks(doc.doc_id, doc.body, doc.format)))
            except Exception as exc:  # one document the parser cannot read must not stop the tenant
                rejected.append(parsing.RejectedDocument(doc.doc_id, f"{type(exc).__name__}: {exc}"[:500]))
        if rejected:
            examples = "; ".join(f"{r.doc_id!r}: {r.reason}" for r in rejected[:3])
            log.warning("tenant %r: %d documents skipped (document_errors), e.g. %s", scope.tenant_id, len(rejected),
                        examples)  # fmt: skip
            parsing.record_document_errors(*scope, rejected)
        if parsed:
            report.blocks_written += parsing.replace_blocks(*scope, parsed)
        report.documents_parsed += len(parsed)
    removed = parsing.removed_documents(*scope)
    if removed:
        report.blocks_removed = parsing.forget_documents(*scope, removed)
        report.documents_removed = len(removed)
    parsing.forget_gone_errors(*scope)
    return report


def _chunk_set(scope: Scope, provider: EmbeddingProvider, chunk_set: str, batch: int) -> tuple[int, int]:
    """Re-chunk the documents whose blocks changed since `chunk_set` was built; (documents, chunks)."""
    overflow, limit = model_change.overflow_of(chunk_set), provider.identity.max_tokens
    todo = content.documents_to_chunk(*scope, chunk_set)
    written = 0
    for start in range(0, len(todo), batch):
        docs = todo[start : start + batch]
        blocks = content.blocks_of(*scope, [d.doc_id for d in docs])
        options = {"overflow": overflow, "chunk_set": chunk_set}
        chunked = [(d, chunk_blocks(blocks[d.doc_id], d.title, provider.tokenizer, limit, **options)) for d in docs]
        written += content.replace_chunks(*scope, chunked, chunk_set)
    return len(todo), written


def build_chunks(scope: Scope, plan: ModelPlan, batch: int = 500) -> ChunksReport:
    """Bring the tenant's chunk set for the plan's target model in line with its blocks.

    During a model change to a model that splits differently, the set the active model searches is kept and
    updated too, so search keeps answering with fresh content until the switch. Every other chunk set of the
    tenant is dropped.
    """
    report = ChunksReport(chunker_version=plan.chunk_set)
    report.documents_chunked, report.chunks_written = _chunk_set(scope, plan.target, plan.chunk_set, batch)
    keep = [plan.chunk_set]
    if plan.serving_set is not None:
        keep.append(plan.serving_set)
        report.serving_chunker_version = plan.serving_set
        if plan.serving is not None:
            _, report.serving_chunks_written = _chunk_set(scope, plan.serving, plan.serving_set, batch)
    report.chunks_removed = content.delete_orphan_chunks(*scope) + content.drop_chunk_sets(*scope, keep)
    return report


def build_embeddings(
    scope: Scope,
    plan: ModelPlan,
    run_id: str,
    *,
    commit_every: int = 256,
    processes: int = 1,
    database_url: str | None = None,
) -> EmbeddingsReport:
    """Embed the plan's chunk set with its target model (`fill`); at full coverage the target takes over the
    tenant's search if the model-change policy lets it (`model_change.take_over`)."""
    report = fill(scope, plan.target, plan.chunk_set, run_id, commit_every=commit_every, processes=processes,
                  database_url=database_url)  # fmt: skip
    report.gate = model_change.take_over(scope, plan)
    return report


def refresh_serving(scope: Scope, plan: ModelPlan, run_id: str, *, commit_every: int = 256) -> EmbeddingsReport | None:
    """During a model change, embed what changed in the active model's own chunk set with the active model, so
    new and edited content stays searchable until the new model takes over. None when there is nothing to keep
    up (no change in progress, or the active set is one this code can no longer rebuild)."""
    if not plan.refreshes_serving():
        return None
    assert plan.serving is not None and plan.active_chunk_set is not None
    return fill(scope, plan.serving, plan.active_chunk_set, run_id, commit_every=commit_every)


def fill(
    scope: Scope,
    provider: EmbeddingProvider,
    chunk_set: str,
    run_id: str,
    *,
    commit_every: int = 256,
    processes: int = 1,
    database_url: str | None = None,
) -> EmbeddingsReport:
    """Embed every chunk of `chunk_set` that lacks a current vector by `provider`; raise if any is left without.

    Each batch is committed as it finishes. A batch the provider rejects for its size or content is split in
    halves until the bad input is alone; that input is recorded in `embedding_errors` and its neighbours are
    embedded. When the provider's circuit is open the run stops at once (fail fast) and says so.

    With `processes` > 1 and enough pending chunks (`shards.worker_count`), the pending chunks are split into
    disjoint shards embedded by that many worker processes at once (`shards.embed_in_processes`, connecting to
    `database_url`, default the environment's); reuse by hash, the partition and index, and coverage are done
    once, here, before and after them.
    """
    conn, schema, tenant_id = scope
    identity = provider.identity
    threshold = vector_tables.tenant_index_threshold()
    large = content.chunk_count(conn, schema, tenant_id, chunk_set, at_most=threshold) >= threshold  # own partition
    vt = vector_tables.register_model(conn, schema, identity, provider.spec, filling=tenant_id if large else "")
    report = EmbeddingsReport(model_key=identity.model_key, chunk_set=chunk_set)
    counters_before = provider.counters()
    started = time.perf_counter()

    report.copied_by_hash = vectors.reuse_by_hash(conn, schema, vt, tenant_id, chunk_set)
    report.deleted = vectors.delete_orphans(conn, schema, vt, tenant_id)
    workers = 1
    if processes > 1:
        workers = shards.worker_count(processes, vectors.pending_count(conn, schema, vt, tenant_id, chunk_set))
    with promotion.laid_out_for_fill(conn, schema, identity.model_key, tenant_id, large):  # partition, graph
        if workers > 1:
            shards.embed_in_processes(scope, provider, chunk_set, run_id, workers, report,
                                      commit_every=commit_every, database_url=database_url)  # fmt: skip
        else:
            embed_pending(scope, provider, chunk_set, run_id, report, commit_every=commit_every)
        report.seconds = time.perf_counter() - started
        own = {k: v - counters_before.get(k, 0) for k, v in provider.counters().items()}
        report.provider = {k: own.get(k, 0) + report.provider.get(k, 0) for k in {*own, *report.provider}}
        total, current = vectors.coverage(conn, schema, vt, tenant_id, chunk_set)
        report.chunks = total
        report.failed = total - current
        report.reused = current - report.embedded
        if report.failed:  # raised inside: a graph is built in bulk only over a complete fill
            raise EmbeddingIncomplete(
                f"tenant {tenant_id!r}: {report.failed} of {total} chunks have no vector for model "
                f"{identity.model_key} after this run ({'; '.join(report.errors[:3]) or 'see embedding_errors'}); "
                "the vectors written so far are kept and the next run resumes",
                report,
            )
    return report


def embed_pending(
    scope: Scope,
    provider: EmbeddingProvider,
    chunk_set: str,
    run_id: str,
    report: EmbeddingsReport,
    *,
    commit_every: int = 256,
    shard: vectors.Shard | None = None,
) -> None:
    """Embed the pending chunks of `chunk_set` (only `shard`'s, when given), batch by batch, into `report`.
    Nothing else: reuse by hash, the tenant's partition and coverage are `fill`'s, done once per run."""
    conn, schema, tenant_id = scope
    batches = vectors.pending_batches(conn, schema, provider.identity.vector_table, tenant_id, chunk_set, shard,
                                      commit_every)  # fmt: skip
    for number, batch in enumerate(batches):
        if number == 0:
            provider.load()  # not for a tenant with nothing pending
        try:
            _embed_batch(scope, provider, batch, run_id, report)
        except CircuitOpenError as exc:
            rest = [c for more in batches for c in more]
            _record_failure(scope, provider.identity.model_key, batch + rest, "circuit_open", str(exc), report)
            report.errors.insert(0, f"stopped early, provider circuit open: {exc}")
            break


def _embed_batch(
    scope: Scope,
    provider: EmbeddingProvider,
    batch: list[vectors.PendingChunk],
    run_id: str,
    report: EmbeddingsReport,
) -> None:
    identity = provider.identity
    try:
        t0 = time.perf_counter()
        vecs = provider.embed_documents([c.text for c in batch])
        report.embed_seconds += time.perf_counter() - t0
        vectors.write_vectors(scope.conn, scope.schema, identity, scope.tenant_id, batch, vecs, run_id)
        report.embedded += len(batch)
    except CircuitOpenError:
        raise
    except (ProviderError, vectors.VectorValidationError, RuntimeError, ValueError, OSError) as exc:
        kind = exc.kind if isinstance(exc, ProviderCallError) else None
        if kind in (ErrorKind.TOO_LARGE, ErrorKind.BAD_INPUT) and len(batch) > 1:
            mid = len(batch) // 2
            _embed_batch(scope, provider, batch[:mid], run_id, report)
            _embed_batch(scope, provider, batch[mid:], run_id, report)
            return
        error_kind = kind.value if kind else type(exc).__name__
        _record_failure(scope, identity.model_key, batch, error_kind, str(exc), report)


def _record_failure(
    scope: Scope,
    model_key: str,
    chunks: list[vectors.PendingChunk],
    kind: str,
    message: str,
    report: EmbeddingsReport,
) -> None:
    log.error("tenant %r: %d chunks failed to embed (%s: %s)", scope.tenant_id, len(chunks), kind, message)
    vectors.record_errors(scope.conn, scope.schema, model_key, scope.tenant_id, [c.chunk_id for c in chunks],
                          kind, message)  # fmt: skip
    if len(report.errors) < 5 and f"{kind}: {message}" not in report.errors:
        report.errors.append(f"{kind}: {message}")
