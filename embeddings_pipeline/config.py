"""Settings read from the environment, in one place. Nothing here connects or imports heavy modules."""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SCHEMA = "embeddings_pipeline"
DEFAULT_MODEL = "sentence-transformers:all-MiniLM-L6-v2"
MAX_TENANT_ID_LENGTH = 128
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class InvalidTenantId(ValueError):
    """A tenant id that cannot be stored or used as a Dagster partition key."""


def embeddings_home() -> Path:
    """Where the embedded PostgreSQL and the local Dagster instance keep their data."""
    return Path(os.environ.get("EMBEDDINGS_HOME") or Path.cwd() / ".embeddings_pipeline").resolve()


def dagster_home() -> Path:
    """DAGSTER_HOME if set, else a folder under the embeddings home (so CLI runs show in `dagster dev`)."""
    return Path(os.environ.get("DAGSTER_HOME") or embeddings_home() / "dagster").resolve()


@dataclass(frozen=True)
class Settings:
    database_url: str | None
    schema: str
    model_spec: str
    batch_size: int

    @classmethod
    def from_env(cls) -> Settings:
        schema = os.environ.get("EMBEDDINGS_SCHEMA", DEFAULT_SCHEMA)
        return cls(
            database_url=os.environ.get("EMBEDDINGS_DATABASE_URL") or None,
            schema=validate_identifier(schema, "EMBEDDINGS_SCHEMA"),
            model_spec=os.environ.get("EMBEDDINGS_MODEL", DEFAULT_MODEL),
            batch_size=int(os.environ.get("EMBEDDINGS_BATCH_SIZE", "32")),
        )


def model_retention_days() -> float | None:
    """EMBEDDINGS_MODEL_RETENTION_DAYS: days a model no tenant searches any more keeps its vectors before the
    retention job retires it. Unset or empty: keep them until `models retire`."""
    raw = os.environ.get("EMBEDDINGS_MODEL_RETENTION_DAYS", "").strip()
    if not raw:
        return None
    days = float(raw)
    if not days >= 0:
        raise ValueError(f"EMBEDDINGS_MODEL_RETENTION_DAYS={raw!r} must be a number of days >= 0")
    return days


RUN_EXECUTORS = ("in_process", "multiprocess")


def run_executor() -> str:
    """EMBEDDINGS_RUN_EXECUTOR: how a Dagster run executes its steps. `in_process` (default): blocks, chunks and
    embeddings one after another in the run's own process; `multiprocess`: a new process per step (each loads the
    code location again: about 4 s on 2 idle cores, 13 s on busy ones, for no parallelism in a one-tenant run)."""
    value = os.environ.get("EMBEDDINGS_RUN_EXECUTOR", "").strip() or RUN_EXECUTORS[0]
    if value not in RUN_EXECUTORS:
        raise ValueError(f"EMBEDDINGS_RUN_EXECUTOR={value!r} must be one of {', '.join(RUN_EXECUTORS)}")
    return value


def validate_identifier(name: str, what: str) -> str:
    """Schema names are configuration, not data: keep them to plain lower-case SQL identifiers."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"{what}={name!r} is not a plain SQL identifier ([a-z_][a-z0-9_]*, at most 63 chars)")
    return name


def validate_tenant_id(tenant_id: object) -> str:
    """Tenant ids are data: any printable string of 1-128 characters (quotes, slashes, unicode are fine).

    Control characters and "..." are refused because Dagster rejects them in partition keys.
    """
    if not isinstance(tenant_id, str):
        raise InvalidTenantId(f"tenant id must be a string, got {type(tenant_id).__name__}")
    if not tenant_id.strip():
        raise InvalidTenantId("tenant id must not be empty or whitespace")
    if len(tenant_id) > MAX_TENANT_ID_LENGTH:
        raise InvalidTenantId(f"tenant id is {len(tenant_id)} characters; the limit is {MAX_TENANT_ID_LENGTH}")
    if tenant_id != tenant_id.strip():
        raise InvalidTenantId(f"tenant id {tenant_id!r} has leading or trailing whitespace")
    if "..." in tenant_id:
        raise InvalidTenantId(f"tenant id {tenant_id!r} contains '...', which Dagster partition keys forbid")
    bad = [c for c in tenant_id if unicodedata.category(c) in ("Cc", "Cs")]
    if bad:
        raise InvalidTenantId(f"tenant id {tenant_id!r} contains control characters {bad!r}")
    return tenant_id


def embed_processes() -> int:
    """EMBEDDINGS_EMBED_PROCESSES: processes that embed one tenant's pending chunks, each a disjoint shard of them
    (default 1: the run's own process). More are started only for `shard_min_chunks()` pending chunks each."""
    processes = int(os.environ.get("EMBEDDINGS_EMBED_PROCESSES", "1"))
    if processes < 1:
        raise ValueError(f"EMBEDDINGS_EMBED_PROCESSES={processes} must be >= 1")
    return processes


def concurrent_runs() -> int:
    """EMBEDDINGS_CONCURRENT_RUNS: tenant runs the CLI's `backfill` and `materialize` run at a time, each in
    a worker process of its own (default 1: one after the other, in the CLI's process)."""
    runs = int(os.environ.get("EMBEDDINGS_CONCURRENT_RUNS", "1"))
    if runs < 1:
        raise ValueError(f"EMBEDDINGS_CONCURRENT_RUNS={runs} must be >= 1")
    return runs


def shard_min_chunks() -> int:
    """EMBEDDINGS_SHARD_MIN_CHUNKS: pending chunks each extra embedding process must have to be worth starting."""
    return max(1, int(os.environ.get("EMBEDDINGS_SHARD_MIN_CHUNKS", "2000")))
