"""The persistent local Dagster instance (DAGSTER_HOME) of CLI runs: processes starting on a fresh one at the same
moment initialise it once, and a run whose process was killed with -9 is marked failed by the next run of its
tenant instead of staying STARTED forever."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg

from embeddings_pipeline.cli.runner import local_instance, materialize_tenants, process_alive

from .helpers import seed

STARTERS = 6
# Each process imports everything first, says so, then waits for the go file to open the instance.
OPEN_AT_ONCE = """
import pathlib, sys, time
import dagster
from embeddings_pipeline.cli.runner import local_instance
go = pathlib.Path(sys.argv[1])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.001)
instance = local_instance()
print(instance.get_runs_count(), len(instance.get_dynamic_partitions("tenant")), len(instance.all_instigator_state()))
"""


def alembic_heads(home: Path) -> dict[str, int]:
    """alembic_version rows of each SQLite database of the instance (one each when healthy)."""
    heads = {}
    for db in home.rglob("*.db"):
        with sqlite3.connect(db) as c:
            if c.execute("SELECT 1 FROM sqlite_master WHERE name = 'alembic_version'").fetchone():
                heads[str(db.relative_to(home))] = c.execute("SELECT count(*) FROM alembic_version").fetchone()[0]
    return heads


def test_processes_starting_at_once_on_a_fresh_home_initialise_it_once(conn, schema, tmp_path, monkeypatch):
    for attempt in range(2):  # the race is a matter of milliseconds: several fresh homes, each opened at once
        home, go = tmp_path / f"fresh-home-{attempt}", tmp_path / f"go-{attempt}"
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", OPEN_AT_ONCE, str(go)],
                env=os.environ.copy(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(STARTERS)
        ]
        assert [p.stdout.readline().strip() for p in procs if p.stdout] == ["ready"] * STARTERS
        go.touch()
        outcomes = [p.communicate(timeout=120) for p in procs]
        failed = [err[-2000:] for p, (_, err) in zip(procs, outcomes, strict=True) if p.returncode != 0]
        assert not failed, failed
        assert [out.split() for out, _ in outcomes] == [["0", "0", "0"]] * STARTERS
        heads = alembic_heads(home)
        assert heads and set(heads.values()) == {1}, heads

    # and the instance works: a real run on it
    seed(conn, schema, "acme", {"a.txt": "The gate code changes every month."}, fmt="text")
    (run,) = materialize_tenants(["acme"])
    assert run.success, run.error
    assert local_instance().get_run_by_id(run.run_id).status == dg.DagsterRunStatus.SUCCESS


def test_a_run_killed_with_minus_9_is_marked_failed_by_the_next_run_of_its_tenant(conn, schema):
    notes = "\n\n".join(f"Note {i}: the pallet in rack {i} moved to aisle {i % 7}." for i in range(60))
    seed(conn, schema, "acme", {"notes.txt": notes}, fmt="text")
    seed(conn, schema, "globex", {"g.txt": "The other tenant's only note."}, fmt="text")
    instance = local_instance()
    proc = subprocess.Popen(
        [sys.executable, "-m", "embeddings_pipeline.cli", "materialize", "--tenant", "acme"],
        env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    started = dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED], tags={"dagster/partition": "acme"})
    deadline = time.monotonic() + 120
    while not instance.get_runs(filters=started) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    (killed,) = instance.get_runs(filters=started)
    time.sleep(1)
    assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.STARTED  # nobody else will end it

    (other,) = materialize_tenants(["globex"])  # another tenant's run leaves it alone
    assert other.success and instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.STARTED
    (run,) = materialize_tenants(["acme"])
    assert run.success, run.error
    assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.FAILURE
    failure = [e for e in instance.all_logs(killed.run_id) if e.dagster_event and e.dagster_event.is_run_failure]
    assert failure and f"process {proc.pid}" in failure[0].message
    assert materialize_tenants(["acme"])[0].success  # and nothing is left to fail


def test_process_alive_knows_its_own_and_a_dead_process():
    me = Path("/proc/self/stat").read_text().rpartition(")")[2].split()[19]
    assert process_alive(os.getpid()) and process_alive(os.getpid(), me)
    assert not process_alive(os.getpid(), "1")  # the same pid, started at another time: pid reuse
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert not process_alive(dead.pid)
