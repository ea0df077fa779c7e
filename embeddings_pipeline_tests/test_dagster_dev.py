"""End to end with nobody pressing a button: the real `dagster dev` (webserver + daemon) on a temporary
DAGSTER_HOME against the test database. New rows for a brand-new tenant and an edit in an existing tenant are
embedded by the sensor + automation alone."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import httpx
import pytest

from embeddings_pipeline.cli.runner import ensure_dagster_home, materialize_tenants
from embeddings_pipeline.store.status import tenant_status

from .helpers import chunks_of, seed

DEADLINE_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, "dagster dev exited early"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError(url)


@pytest.mark.slow
def test_new_and_changed_rows_are_embedded_by_themselves(conn, schema, provider, tmp_path: Path):
    home = ensure_dagster_home()
    seed(conn, schema, "old-tenant", {"notes.md": "# Notes\n\nThe loading bay closes at noon.\n\nKeys are at desk."})
    (run,) = materialize_tenants(["old-tenant"], instance=dg.DagsterInstance.get())
    assert run.success

    port = _free_port()
    log = open(tmp_path / "dagster-dev.log", "w")  # noqa: SIM115
    env = {**os.environ, "DAGSTER_HOME": str(home), "EMBEDDINGS_SENSOR_LAG_SECONDS": "1"}
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster")), "dev", "-m", "embeddings_pipeline.definitions",
         "-p", str(port), "-h", "127.0.0.1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        _wait_http(f"http://127.0.0.1:{port}/server_info", proc, timeout=120)
        started = time.monotonic()
        seed(conn, schema, "new-tenant", {"intro.md": "# Intro\n\nForklifts are charged in bay four."})
        seed(conn, schema, "old-tenant", {"notes.md": "# Notes\n\nThe loading bay closes at two.\n\nKeys are at desk."})
        key = provider.identity.model_key
        latency = None
        while time.monotonic() - started < DEADLINE_S:
            new = tenant_status(conn, schema, "new-tenant", key)
            old = tenant_status(conn, schema, "old-tenant", key)
            edited = any("closes at two" in t for _, t in chunks_of(conn, schema, "old-tenant").values())
            if new.chunks and not new.missing and edited and not old.missing and not old.stale:
                latency = time.monotonic() - started
                break
            time.sleep(1)
        assert latency is not None, f"not embedded within {DEADLINE_S}s; see {tmp_path / 'dagster-dev.log'}"
        print(f"\nnew/changed rows embedded {latency:.1f}s after they were written")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
