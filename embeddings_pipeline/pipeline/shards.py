"""One tenant's embedding work over several processes: disjoint shards of its pending chunks, one per worker.

`steps.fill` does what must happen once per run (reuse by hash, orphans, then the tenant's partition, index and
coverage) and, for a large enough backlog, hands the embedding itself to `embed_in_processes`: N processes, the
run's own and N - 1 workers (`python -m embeddings_pipeline.pipeline.shards`), each embedding the pending chunks
of its shard (`vectors.Shard`: a stable hash of the content hash, so the shards are disjoint and cover every
chunk) and committing batch by batch, as one process would. A worker that fails loses nothing the others
wrote; its chunks are missing at the coverage count, the run says so, and the next run embeds only them.

The workers run under the coordinator's tenant lock (they take none of their own) and exit when the coordinator
goes away (their stdin closes), so a killed run leaves no worker writing behind the next run's back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

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
    from . import steps

    provider = load_provider(job["spec"], job["batch_size"], job["device"], job["key_env"])
    if provider.identity.model_key != job["model_key"]:
        return {"error": f"the worker loaded model {provider.identity.model_key}, not {job['model_key']}"}
    shard = Shard(*job["shard"])
    report = EmbeddingsReport(model_key=job["model_key"], chunk_set=job["chunk_set"])
    before = provider.counters()
    started = time.perf_counter()
    with Database(schema_name=job["schema"]).connect() as conn:
        scope = Scope(conn, job["schema"], job["tenant"])
        steps.embed_pending(scope, provider, job["chunk_set"], job["run_id"], report,
                            commit_every=job["commit_every"], shard=shard)  # fmt: skip
    return {
        "shard": str(shard),
        "embedded": report.embedded,
        "embed_seconds": report.embed_seconds,
        "seconds": time.perf_counter() - started,
        "errors": report.errors,
        "provider": {k: v - before.get(k, 0) for k, v in provider.counters().items()},
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
