"""Running tenant partitions through Dagster from the CLI, on the persistent local instance."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import dagster_home

if TYPE_CHECKING:
    import dagster as dg
    import psycopg

_REPO_INSTANCE_YAML = Path(__file__).resolve().parents[2] / "dagster.yaml"
_DEFAULT_INSTANCE_YAML = "telemetry:\n  enabled: false\n"
# The CLI shows its own progress; Dagster's console logger speaks only of problems (the UI keeps everything).
_QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
JOB = "embed_tenant"
# Who runs a CLI run: a run left STARTED by a process that is gone (kill -9) is failed by the tenant's next run.
PID_TAG, HOST_TAG, PROCESS_START_TAG = "embeddings/pid", "embeddings/host", "embeddings/process_start"
_UNFINISHED = ("NOT_STARTED", "STARTING", "STARTED")


@contextmanager
def _home_lock(home: Path) -> Iterator[None]:
    """An exclusive file lock on DAGSTER_HOME: one process at a time creates its config and databases (two
    processes creating the SQLite storages at once leave two alembic heads, and every later run fails)."""
    from ..locks import file_lock

    with file_lock(home / ".embeddings-init.lock"):
        yield


def ensure_dagster_home() -> Path:
    """DAGSTER_HOME with a dagster.yaml in it, so CLI runs and `dagster dev` share one instance."""
    home = dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    with _home_lock(home):
        if not config.exists():
            tmp = home / f".dagster.yaml.{os.getpid()}"
            if _REPO_INSTANCE_YAML.exists():
                shutil.copyfile(_REPO_INSTANCE_YAML, tmp)
            else:
                tmp.write_text(_DEFAULT_INSTANCE_YAML)
            tmp.replace(config)  # never seen half written
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def local_instance() -> dg.DagsterInstance:
    """The persistent local instance. Opened under the DAGSTER_HOME lock: opening creates (and stamps) its SQLite
    databases when they are new, which processes starting at the same moment must not do together."""
    import dagster as dg

    home = ensure_dagster_home()
    with _home_lock(home):
        return dg.DagsterInstance.get()


def _process_start(pid: int) -> str | None:
    """The kernel's start time of process `pid` (clock ticks since boot); None where it is gone, a zombie, or
    /proc cannot say."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after the command name: state is field 3, starttime field 22
    return None if fields[0] in ("Z", "X") else fields[19]


def process_alive(pid: int, started: str | None = None) -> bool:
    """Whether process `pid` of this machine still runs (and, given `started`, is the process that started then,
    not a later one that reused its pid)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    if not Path("/proc/self/stat").exists():
        return True
    now = _process_start(pid)
    return now is not None and (not started or now == started)


def _owner_tags() -> dict[str, str]:
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname(),
            PROCESS_START_TAG: _process_start(os.getpid()) or ""}  # fmt: skip


def fail_abandoned_runs(instance: dg.DagsterInstance, tenant: str, job_name: str = JOB) -> list[str]:
    """Runs of `job_name` for `tenant` that a CLI process on this machine started and can no longer finish (the
    process is gone: killed with -9, the machine's OOM killer) are reported failed; returns their ids. Runs of
    live processes, other machines, or launched by the daemon (no owner tags) are left alone."""
    import dagster as dg

    runs = instance.get_runs(
        filters=dg.RunsFilter(
            job_name=job_name,
            statuses=[dg.DagsterRunStatus[s] for s in _UNFINISHED],
            tags={"dagster/partition": tenant},
        )
    )
    host, failed = socket.gethostname(), []
    for run in runs:
        pid = run.tags.get(PID_TAG, "")
        if not pid.isdigit() or run.tags.get(HOST_TAG) != host:
            continue
        if process_alive(int(pid), run.tags.get(PROCESS_START_TAG)):
            continue
        instance.report_run_failed(
            run,
            message=f"process {pid} on {host} that ran this run is gone (killed?); marked failed by the next run "
            f"of tenant {tenant!r}",
        )
        failed.append(run.run_id)
    return failed


def sync_tenant_partitions(instance: dg.DagsterInstance, tenants: Sequence[str]) -> list[str]:
    """Add tenants that have no partition yet; returns the ones added."""
    from ..defs.partitions import tenant_partitions

    assert tenant_partitions.name is not None
    known = set(instance.get_dynamic_partitions(tenant_partitions.name))
    new = [t for t in tenants if t not in known]
    if new:
        instance.add_dynamic_partitions(tenant_partitions.name, new)
    return new


@dataclass
class TenantRun:
    tenant: str
    success: bool
    run_id: str
    metadata: dict[str, object] = field(default_factory=dict)
    error: str | None = None
    checks: dict[str, bool] = field(default_factory=dict)  # check name -> passed


def _metadata_of(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, object]:
    mats = [m for m in result.get_asset_materialization_events() if m.asset_key and m.asset_key.path == [asset]]
    if not mats:
        return {}
    return {k: v.value for k, v in mats[-1].materialization.metadata.items()}


def _failure_of(result: dg.ExecuteInProcessResult) -> str:
    """The reason a person needs: a failed check's own explanation, else the failing step's error (the first in
    its cause chain that is not one of Dagster's own wrappers)."""
    from ..retry import causes

    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed and evaluation.blocking:
            meta = evaluation.metadata
            why = meta.get("run_error") or meta.get("count")
            return f"check {evaluation.check_name} failed" + (f": {why.value}" if why is not None else "")
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            err = event.step_failure_data.error
            for cause in causes(event.step_failure_data.error, follow_context=False):
                err = cause
                if not cause.message.startswith("dagster."):
                    break
            return f"{event.step_key}: {err.message.strip()}"
    return "run failed"


def materialize_tenants(
    tenants: Sequence[str],
    instance: dg.DagsterInstance | None = None,
    on_done: Callable[[TenantRun], None] | None = None,
    tags: dict[str, str] | None = None,
    assets: Sequence[str] | None = None,
    concurrent_runs: int = 1,
) -> list[TenantRun]:
    """One Dagster run per tenant (blocks, chunks, embeddings; only `assets` when given), in the order given. A
    failing tenant never stops the others.

    `concurrent_runs` > 1 runs that many tenants at a time, each run in one of as many worker processes (started
    once, so Dagster is imported and the definitions loaded once per worker, not per run), on the same instance:
    one tenant's Dagster bookkeeping and chunking overlap another's embedding. It needs an instance other
    processes can open (the local one, not `DagsterInstance.ephemeral()`)."""
    from ..definitions import defs as load_defs
    from ..defs.resources import hold_connections

    instance = instance or local_instance()
    hold_connections(instance)
    sync_tenant_partitions(instance, tenants)
    if concurrent_runs > 1 and len(tenants) > 1:
        from .run_pool import run_in_workers

        return run_in_workers(tenants, instance, on_done, tags, assets, min(concurrent_runs, len(tenants)))
    job = load_defs().resolve_job_def(JOB)
    runs = []
    for tenant in tenants:
        run = run_tenant(job, instance, tenant, tags, assets)
        runs.append(run)
        if on_done:
            on_done(run)
    return runs


def run_tenant(
    job: dg.JobDefinition,
    instance: dg.DagsterInstance,
    tenant: str,
    tags: dict[str, str] | None = None,
    assets: Sequence[str] | None = None,
) -> TenantRun:
    import dagster as dg

    fail_abandoned_runs(instance, tenant)
    result = job.execute_in_process(
        partition_key=tenant,
        instance=instance,
        raise_on_error=False,
        run_config=_QUIET,
        tags={**(tags or {}), **_owner_tags()},
        asset_selection=[dg.AssetKey(a) for a in assets] if assets else None,
    )
    return TenantRun(
        tenant=tenant,
        success=result.success,
        run_id=result.run_id,
        metadata=_metadata_of(result, "embeddings"),
        error=None if result.success else _failure_of(result),
        checks={e.check_name: e.passed for e in result.get_asset_check_evaluations()},
    )


def left_to_do(conn: psycopg.Connection, schema: str, tenant: str, changed: bool) -> str | None:
    """Why TENANT needs a run after an ingest (`changed`: it added or changed documents, or removed some that it
    did not remove itself), or None when a run would change nothing (then `ingest --materialize` launches none:
    no Dagster import, no run)."""
    if changed:
        return "documents changed"
    from ..pipeline.backfill import work_left
    from ..pipeline.model_change import embedding_provider
    from ..providers import ProviderError
    from ..store.scope import Scope

    scope = Scope(conn, schema, tenant)
    try:
        return work_left(scope, embedding_provider(scope))
    except ProviderError as exc:  # the run meets it again and reports it
        return f"model unavailable ({exc})"


def run_summary(run: TenantRun | None, reason: str | None) -> dict[str, object] | None:
    """A run as `--json` shows it: id, outcome, why it was launched and what it embedded, reused and deleted."""
    if run is None:
        return None
    counts = {k: run.metadata.get(k, 0) for k in ("embedded", "reused", "deleted")}
    return {"run_id": run.run_id, "success": run.success, "reason": reason, "error": run.error, **counts}
