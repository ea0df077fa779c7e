"""Tenant runs N at a time (`materialize_tenants(concurrent_runs=N)`): a pool of worker processes, each loading
Dagster and the definitions once and running its tenants' runs on the caller's instance."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from .runner import JOB, TenantRun, run_tenant

if TYPE_CHECKING:
    import dagster as dg


_WORKER: dict[str, object] = {}  # a worker process's instance and job (`_start_worker`)


def _start_worker(instance_ref: object) -> None:
    import threading

    import dagster as dg

    # A worker outlives a parent killed with SIGTERM or -9 (the pool cannot tell it): it exits as soon as its parent
    # is gone, and the run it leaves is failed by its tenant's next run (`fail_abandoned_runs`).
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="parent-watch", daemon=True).start()

    from ..definitions import defs as load_defs
    from ..defs.resources import hold_connections

    _WORKER["instance"] = instance = dg.DagsterInstance.from_ref(instance_ref)  # type: ignore[arg-type]
    hold_connections(instance)
    _WORKER["job"] = load_defs().resolve_job_def(JOB)


def _exit_with_parent(parent: int) -> None:
    import time

    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _run_in_worker(tenant: str, tags: dict[str, str] | None, assets: Sequence[str] | None) -> TenantRun:
    return run_tenant(_WORKER["job"], _WORKER["instance"], tenant, tags, assets)  # type: ignore[arg-type]


def run_in_workers(
    tenants: Sequence[str],
    instance: dg.DagsterInstance,
    on_done: Callable[[TenantRun], None] | None,
    tags: dict[str, str] | None,
    assets: Sequence[str] | None,
    workers: int,
) -> list[TenantRun]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    if instance.is_ephemeral:
        raise ValueError("concurrent runs need an instance other processes can open (not an ephemeral one)")
    ref = instance.get_ref()
    # spawned, not forked: a fork would copy this process's open SQLite and database connections and threads
    context = multiprocessing.get_context("spawn")
    runs: dict[str, TenantRun] = {}
    # A worker that dies (killed, out of memory) breaks the pool: every tenant it had not finished gets one more
    # round in a fresh pool (its abandoned run is failed by the next run of its tenant); a second death fails them.
    for last_round in (False, True):
        todo = [t for t in tenants if t not in runs]
        if not todo:
            break
        size = min(workers, len(todo))
        with ProcessPoolExecutor(size, mp_context=context, initializer=_start_worker, initargs=(ref,)) as pool:
            futures = {pool.submit(_run_in_worker, t, tags, assets): t for t in todo}
            for future in as_completed(futures):
                tenant = futures[future]
                try:
                    run = future.result()
                except BrokenProcessPool as exc:
                    if not last_round:
                        continue
                    run = TenantRun(tenant, False, "", error=f"worker process died: {exc}")
                runs[tenant] = run
                if on_done:
                    on_done(run)
    return [runs[t] for t in tenants]
