"""The embedded server: concurrent starts share one server, `db` commands, external URL honoured."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

CLI = [sys.executable, "-m", "embeddings_pipeline.cli"]


def _cli(home: Path, *args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EMBEDDINGS_DATABASE_URL"}
    env.update({"EMBEDDINGS_HOME": str(home), **(extra_env or {})})
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120)


def test_two_processes_starting_at_once_share_one_server(tmp_path):
    home = tmp_path / "home"
    try:
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(lambda _: _cli(home, "db", "url"), range(2)))
        assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
        urls = {r.stdout.strip() for r in results}
        assert len(urls) == 1
        (url,) = urls
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT '[1,0]'::vector <=> '[0,1]'::vector").fetchone() == (1.0,)
        assert (home / "selftest-ok").exists()
        status = _cli(home, "db", "status", "--json")
        assert '"running": true' in status.stdout
    finally:
        assert "stopped" in _cli(home, "db", "stop").stdout
    assert '"running": false' in _cli(home, "db", "status", "--json").stdout


def test_external_url_means_nothing_is_started(tmp_path, pg_url):
    home = tmp_path / "home"
    out = _cli(home, "db", "start", extra_env={"EMBEDDINGS_DATABASE_URL": pg_url})
    assert out.returncode == 0 and "nothing to start" in out.stdout
    assert _cli(home, "db", "url", extra_env={"EMBEDDINGS_DATABASE_URL": pg_url}).stdout.strip() == pg_url
    assert not (home / "pgdata").exists()
