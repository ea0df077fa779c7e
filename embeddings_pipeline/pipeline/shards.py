"""One tenant's embedding work over several processes: disjoint shards of its pending chunks, one per worker.

`steps.fill` does what must happen once per run (reuse by hash, orphans, then the tenant's partition, index and
coverage) and, for a large enough backlog, hands the embedding itself to `embed_in_processes`: N processes, the
run's own and N - 1 workers (`python -m embeddings_pipeline.pipeline.shards`), each embedding the pending chunks
of its shard (`vectors.Shard`: a stable hash of the content hash, so the shards are disjoint and cover every
chunk) and committing batch by batch, as one process would. A worker that fails loses nothing the others
wrote; its chunks are missing at the coverage count, the run says so, and the next run embeds only them.

The workers run under the coordinator's tenant lock (they take none of their own) and exit when the coordinator
goes away (their stdin closes), so a killed run leaves no worker writing behind the next run's back.

Across pods (`embed_shard`, the `embed-shard` command, deploy/k8s/shard-job.yaml): each of N processes, on any
machine, embeds shard I of N of the tenant's pending chunks and nothing else, under a SHARED advisory lock on the
tenant: shard processes run together, never beside a run (runs hold the tenant's lock exclusively, so a run waits
for them and they wait for a run). A final ordinary run of the tenant then reuses by hash, builds the partition
and index, counts coverage and checks, embedding only what the shards left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from ..config import shard_min_chunks
from ..providers.base import EmbeddingProvider
from ..store.scope import Scope
from ..store.vectors import Shard
from .reports import EmbeddingsReport


def worker_count(processes: int, pending: int, min_chunks: int | None = None) -> int:
    """How many processes to embed `pending` chunks with: at most `processes`, each with `min_chunks`
    (EMBEDDINGS_SHARD_MIN_CHUNKS) of them at least."""
    per_process = shard_min_chunks() if min_chunks is None else max(1, min_chunks)
    return max(1, min(processes, pending // per_process))


def job_for(provider: EmbeddingProvider, scope: Scope, chunk_set: str, run_id: str, commit_every: int) -> dict:
    """What a worker needs to load the same model and embed into the same tenant's chunk set (no secret: a key is
    named by its environment variable)."""
    return {
        "spec": provider.spec,
        "batch_size": int(getattr(provider, "batch_size", 32)),
        "device": str(getattr(provider, "device", "cpu")),
        "key_env": getattr(provider, "api_key_env", None),
        "model_key": provider.identity.model_key,
        "schema": scope.schema,
        "tenant": scope.tenant_id,
        "chunk_set": chunk_set,
        "run_id": run_id,
        "commit_every": commit_every,
    }


def embed_in_processes(
    scope: Scope,
    provider: EmbeddingProvider,
    chunk_set: str,
    run_id: str,
    workers: int,
    report: EmbeddingsReport,
    *,
    commit_every: int = 256,
    database_url: str | None = None,
) -> None:
    """Embed the tenant's pending chunks with `workers` processes, one shard each: shard 0 in this process (its
    model is loaded already), the others in worker processes started first. Their counts go into `report`
    (embed_seconds: the slowest shard's, so texts/s is the run's). A worker that dies is named in
    `report.errors`; its chunks stay pending."""
    from . import steps

    env = dict(os.environ, EMBEDDINGS_SCHEMA=scope.schema)
    if database_url:
        env["EMBEDDINGS_DATABASE_URL"] = database_url  # through the environment, never on a command line
    # each local model gets its share of the cores instead of every worker spinning on all of them
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))
    job = job_for(provider, scope, chunk_set, run_id, commit_every)
    procs = []
    try:
        for index in range(1, workers):
            proc = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    env=env, text=True)  # fmt: skip
            procs.append(proc)
            assert proc.stdin is not None
            try:
                proc.stdin.write(json.dumps({**job, "shard": [index, workers]}) + "\n")
                proc.stdin.flush()
            except BrokenPipeError:
                pass  # it died before reading its job: `_result` says so
        own = EmbeddingsReport(model_key=report.model_key, chunk_set=chunk_set)
        steps.embed_pending(scope, provider, chunk_set, run_id, own, commit_every=commit_every, shard=Shard(0, workers))
        report.embedded, report.embed_seconds = report.embedded + own.embedded, own.embed_seconds
        report.errors.extend(own.errors)
        results = [_result(proc) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    for index, result in enumerate(results, start=1):
        shard = Shard(index, workers)
        if "error" in result:
            report.errors.append(f"shard {shard}: {result['error']}")
            continue
        report.embedded += int(result["embedded"])
        report.embed_seconds = max(report.embed_seconds, float(result["embed_seconds"]))
        report.errors.extend(e for e in result["errors"] if e not in report.errors)
        for key, value in result["provider"].items():
            report.provider[key] = report.provider.get(key, 0) + int(value)
    del report.errors[5:]


def _result(proc: subprocess.Popen) -> dict:
    """The worker's last stdout line (its JSON result), once it has exited; closes its stdin after."""
    assert proc.stdout is not None and proc.stdin is not None
    lines = proc.stdout.read().splitlines()
    code = proc.wait()
    try:
        proc.stdin.close()
    except BrokenPipeError:
        pass
    try:
        result = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        result = None
    if code != 0 or not isinstance(result, dict):
        detail = result.get("error") if isinstance(result, dict) else None
        return {"error": detail or f"worker exited with status {code}"}
    return result


def _exit_with_parent() -> None:
    """Leave at once when the coordinator's end of stdin closes (it exited, was killed, or cancelled us)."""
    sys.stdin.read()
    os._exit(3)


def work(job: dict) -> dict:
    """Embed one shard of a tenant's pending chunks (the worker's body, callable in-process by tests)."""
    from ..providers import load_provider
    from ..store.session import Database

    provider = load_provider(job["spec"], job["batch_size"], job["device"], job["key_env"])
    if provider.identity.model_key != job["model_key"]:
        return {"error": f"the worker loaded model {provider.identity.model_key}, not {job['model_key']}"}
    with Database(schema_name=job["schema"]).connect() as conn:
        scope = Scope(conn, job["schema"], job["tenant"])
        return _embed_one(scope, provider, job["chunk_set"], job["run_id"], Shard(*job["shard"]), job["commit_every"])


def _embed_one(
    scope: Scope, provider: EmbeddingProvider, chunk_set: str, run_id: str, shard: Shard, commit_every: int
) -> dict:
    """`steps.embed_pending` of one shard, as a JSON-able summary (embedded, timings, errors, provider counters)."""
    from . import steps

    report = EmbeddingsReport(model_key=provider.identity.model_key, chunk_set=chunk_set)
    before = provider.counters()
    started = time.perf_counter()
    steps.embed_pending(scope, provider, chunk_set, run_id, report, commit_every=commit_every, shard=shard)
    return {
        "shard": str(shard),
        "embedded": report.embedded,
        "embed_seconds": report.embed_seconds,
        "seconds": time.perf_counter() - started,
        "errors": report.errors,
        "provider": {k: v - before.get(k, 0) for k, v in provider.counters().items()},
    }


# --- one shard in a process of its own, on any machine (`embed-shard`, a Kubernetes Indexed Job) ------------------


class NothingToShard(RuntimeError):
    """The tenant has no chunks for the model yet: a run of blocks and chunks must build them first."""


def parse_shard(spec: str) -> Shard:
    """`I/N` (e.g. `0/4`, or `$JOB_COMPLETION_INDEX/4` expanded) -> Shard(I, N), or ValueError saying what is wrong."""
    index, sep, count = spec.strip().partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        raise ValueError(f"{spec!r} is not I/N (shard I of N, e.g. 0/4)") from None
    if not sep or n < 1:
        raise ValueError(f"{spec!r}: N (the number of shards) must be at least 1")
    if not 0 <= i < n:
        raise ValueError(f"{spec!r}: I must be between 0 and N - 1 = {n - 1}")
    return Shard(i, n)


def embed_shard(
    scope: Scope,
    shard: Shard,
    run_id: str,
    *,
    model_key: str | None = None,
    commit_every: int = 256,
    wait_s: float | None = None,
    load: Callable | None = None,
) -> dict:
    """Embed shard `shard` of the tenant's pending chunks for its model (or the registered `model_key`), in this
    process, committing batch by batch, under the tenant's SHARED lock (waits `wait_s`, default
    EMBEDDINGS_LOCK_TIMEOUT, while a run holds it; then TenantBusy). Builds no blocks or chunks, reuses nothing by
    hash, builds no index and runs no check: the tenant's next run does those once, after every shard.

    Raises NothingToShard when the tenant has no chunks for the model, ProviderError when the model cannot be
    reached (nothing is written then). Returns the summary (`missing`: the shard's chunks still without a vector)."""
    from ..store import backlog, vector_tables, vectors
    from ..store.db import tenant_lock
    from . import model_change

    conn, schema, tenant = scope
    asked = time.perf_counter()
    with tenant_lock(conn, schema, tenant, wait_s, shared=True):
        lock_wait = time.perf_counter() - asked
        provider = model_change.embedding_provider(scope, load or model_change.default_loader, model_key)
        identity = provider.identity  # a remote model is reached here: unreachable -> ProviderError
        chunk_set = model_change.target_chunk_set(scope, provider)
        chunks = backlog.chunk_count(conn, schema, tenant, chunk_set)
        if chunks == 0:
            raise NothingToShard(
                f"tenant {tenant!r} has no chunks for model {identity.model_key} (chunk set {chunk_set}) yet: "
                f"build them first with `embeddings-pipeline backfill --tenant {tenant} --chunks-only` (a run of "
                "the blocks and chunks assets, embedding nothing), then start the shards"
            )
        vt = vector_tables.register_model(conn, schema, identity, provider.spec)
        pending = vectors.pending_count(conn, schema, vt, tenant, chunk_set, shard)
        result = _embed_one(scope, provider, chunk_set, run_id, shard, commit_every)
        # every pending chunk of the shard was written or recorded as failed, and nothing else writes them while
        # the lock is held; counting again would join the tenant's new rows on stale statistics (seconds per call)
        missing = pending - int(result["embedded"])
        not_chunked = backlog.documents_not_chunked(conn, schema, tenant, chunk_set)
    embedded, took = int(result["embedded"]), float(result["embed_seconds"])
    return {
        **result,
        "ok": missing == 0,
        "tenant": tenant,
        "model_key": identity.model_key,
        "chunk_set": chunk_set,
        "run_id": run_id,
        "chunks": chunks,
        "pending": pending,
        "missing": missing,
        "documents_not_chunked": not_chunked,
        "texts_per_second": round(embedded / took, 2) if took > 0 else 0.0,
        "lock_wait_seconds": round(lock_wait, 3),
        "total_seconds": round(time.perf_counter() - asked, 3),
    }


def main() -> int:
    job = json.loads(sys.stdin.readline())
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    try:
        result = work(job)
    except Exception as exc:  # reported to the coordinator, which names the shard in the run's errors
        result = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    print(json.dumps(result), flush=True)
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
