"""The production deployment in deploy/, exercised as far as a machine without Docker or Kubernetes allows.

- deploy/dagster.yaml is loaded into a real DagsterInstance whose storage is the test PostgreSQL (through the same
  DAGSTER_PG_* variables compose sets), a tenant is materialized through it, and the run and its events are read
  back from Dagster's tables in PostgreSQL.
- `dagster definitions validate` passes for the root workspace.yaml, and the code server command of the image
  serves the code location over gRPC.
- docker-compose.yml, .env.example, the Helm values and the Dockerfile are parsed and checked against each other
  and against the code: every environment variable the code reads is provided; image, ports, module, paths and the
  run queue agree. These are consistency checks, not snapshots.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
import yaml
from dagster._core.errors import DagsterUserCodeUnreachableError
from dagster._grpc.client import DagsterGrpcClient
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from embeddings_pipeline.cli.runner import materialize_tenants

from .helpers import count, seed

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
PACKAGE = REPO / "embeddings_pipeline"
MODULE = "embeddings_pipeline.definitions"
DAGSTER_SERVICES = ("user_code", "webserver", "daemon")
BIN = Path(sys.executable).parent

# Variables the code reads that a deployment must not set: local tooling, the test suite, the libraries' own.
EXCLUDED_ENV_VARS = {"XDG_RUNTIME_DIR"}
EXCLUDED_ENV_PREFIXES = ("HF_", "TRANSFORMERS_", "EMBEDDINGS_TEST_")


# --- what the code reads --------------------------------------------------------------------------------------------


def _is_os_environ(node: ast.AST) -> bool:
    """`os.environ` or a bare `environ` (from os import environ)."""
    if isinstance(node, ast.Attribute) and node.attr == "environ":
        return isinstance(node.value, ast.Name) and node.value.id == "os"
    return isinstance(node, ast.Name) and node.id == "environ"


def _env_name_args(tree: ast.AST) -> Iterator[ast.AST]:
    """The name expression of every environment read: os.environ.get(X) / os.environ[X] (read) / os.getenv(X) /
    os.environ.setdefault(X) / X in os.environ / EnvVar(X) / EnvVar.int(X) (also as dg.EnvVar)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in ("get", "setdefault") and _is_os_environ(func.value):
                yield node.args[0]
            elif isinstance(func, ast.Attribute) and func.attr == "getenv":
                yield node.args[0]
            elif isinstance(func, ast.Name) and func.id in ("getenv", "EnvVar"):
                yield node.args[0]
            elif isinstance(func, ast.Attribute) and func.attr == "EnvVar":
                yield node.args[0]
            elif (
                isinstance(func, ast.Attribute)
                and func.attr in ("int", "float", "bool")
                and (
                    (isinstance(func.value, ast.Name) and func.value.id == "EnvVar")
                    or (isinstance(func.value, ast.Attribute) and func.value.attr == "EnvVar")
                )
            ):
                yield node.args[0]
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and _is_os_environ(node.value):
            yield node.slice
        elif isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.In | ast.NotIn):
            if _is_os_environ(node.comparators[0]):
                yield node.left


def env_vars_read(source: str) -> tuple[set[str], list[str]]:
    """Names of the environment variables a module reads, and the reads whose name is not a constant.

    A name is found when it is a string literal, a module-level string constant (`WEBHOOK_ENV = "..."`), or the
    loop variable of a loop over a module-level tuple/list of strings. Anything else (a credential read by a name
    that is data, such as a tenant's api-key variable) is returned as unresolved, with its line.
    """
    tree = ast.parse(source)
    constants: dict[str, str | tuple[str, ...]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            value = node.value
            for target in targets:
                if not isinstance(target, ast.Name) or value is None:
                    continue
                if isinstance(value, ast.Constant) and isinstance(value.value, str):
                    constants[target.id] = value.value
                elif isinstance(value, ast.Tuple | ast.List) and all(
                    isinstance(e, ast.Constant) and isinstance(e.value, str) for e in value.elts
                ):
                    constants[target.id] = tuple(e.value for e in value.elts)  # type: ignore[misc]
    loops: dict[str, str] = {}  # loop variable -> the module constant it iterates over
    for node in ast.walk(tree):
        if isinstance(node, ast.For | ast.comprehension):
            if isinstance(node.target, ast.Name) and isinstance(node.iter, ast.Name):
                loops[node.target.id] = node.iter.id
    found: set[str] = set()
    unresolved: list[str] = []
    for arg in _env_name_args(tree):
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            found.add(arg.value)
            continue
        if isinstance(arg, ast.Name):
            value = constants.get(arg.id)
            if value is None and arg.id in loops:
                value = constants.get(loops[arg.id])
            if isinstance(value, str):
                found.add(value)
                continue
            if isinstance(value, tuple):
                found.update(value)
                continue
        unresolved.append(f"line {getattr(arg, 'lineno', '?')}: {ast.unparse(arg)}")
    return found, unresolved


def deployment_env_vars() -> set[str]:
    """Every environment variable the package reads that a deployment may set."""
    names: set[str] = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        found, _ = env_vars_read(path.read_text(encoding="utf-8"))
        names |= found
    return {n for n in names if n not in EXCLUDED_ENV_VARS and not any(n.startswith(p) for p in EXCLUDED_ENV_PREFIXES)}


def test_env_scan_finds_every_form_of_read() -> None:
    source = """
import os
import dagster as dg
from dagster import EnvVar
A_ENV = "FROM_CONSTANT"
ENDPOINTS = ("FROM_TUPLE_1", "FROM_TUPLE_2")
os.environ["WRITTEN_ONLY"] = "x"
x = os.environ.get("FROM_GET", "d")
y = os.environ["FROM_SUBSCRIPT"]
z = os.getenv("FROM_GETENV")
w = os.environ.get(A_ENV)
v = tuple(os.environ.get(e, "") for e in ENDPOINTS)
r = dg.EnvVar("FROM_DG_ENVVAR")
s = EnvVar.int("FROM_ENVVAR_INT")
t = "FROM_IN" in os.environ
os.environ.setdefault("FROM_SETDEFAULT", "1")
u = os.environ.get(tenant.api_key_env)
"""
    found, unresolved = env_vars_read(source)
    assert found == {
        "FROM_CONSTANT",
        "FROM_TUPLE_1",
        "FROM_TUPLE_2",
        "FROM_GET",
        "FROM_SUBSCRIPT",
        "FROM_GETENV",
        "FROM_DG_ENVVAR",
        "FROM_ENVVAR_INT",
        "FROM_IN",
        "FROM_SETDEFAULT",
    }
    assert unresolved == ["line 17: tenant.api_key_env"]


def test_env_scan_of_the_package_sees_the_known_settings() -> None:
    names = deployment_env_vars()
    # a literal read (config.py), a read through a module constant (alerting.py), and DAGSTER_HOME
    assert {"EMBEDDINGS_DATABASE_URL", "EMBEDDINGS_ALERT_WEBHOOK_URL", "DAGSTER_HOME"} <= names
    assert not names & EXCLUDED_ENV_VARS
    assert not [n for n in names if n.startswith(EXCLUDED_ENV_PREFIXES)]


# --- parsing the deployment files -------------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {raw!r}"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def dockerfile() -> dict[str, Any]:
    """The instructions of deploy/Dockerfile that the checks need: ARG defaults, ENV, EXPOSE, COPY, CMD, ..."""
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    lines: list[str] = []
    buf = ""
    for raw in text.splitlines():
        if not buf and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        if raw.rstrip().endswith("\\"):
            buf += raw.rstrip()[:-1] + " "
            continue
        lines.append(buf + raw)
        buf = ""
    out: dict[str, Any] = {"ARG": {}, "ENV": {}, "EXPOSE": [], "COPY": [], "USER": None, "FROM": [], "RUN": []}
    for line in lines:
        word, _, rest = line.strip().partition(" ")
        word, rest = word.upper(), rest.strip()
        if word == "ARG":
            name, _, default = rest.partition("=")
            out["ARG"][name] = default.strip('"')
        elif word == "ENV":
            for part in shlex.split(rest):
                key, _, value = part.partition("=")
                out["ENV"][key] = value
        elif word == "EXPOSE":
            out["EXPOSE"] += [int(p.split("/")[0]) for p in rest.split()]
        elif word == "COPY":
            *sources, dest = [p for p in rest.split() if not p.startswith("--")]
            dest = re.sub(r"\$\{(\w+)\}", lambda m: out["ENV"].get(m.group(1), m.group(0)), dest)
            out["COPY"].append((sources, dest))
        elif word in ("CMD", "HEALTHCHECK"):
            out[word] = json.loads(rest[rest.index("[") :]) if "[" in rest else shlex.split(rest)
        elif word in ("USER",):
            out["USER"] = rest
        elif word in ("FROM", "RUN"):
            out[word].append(rest)
    return out


def flag(command: list[str], *names: str) -> str:
    """The value after the first of `names` in an argument list."""
    for i, arg in enumerate(command[:-1]):
        if arg in names:
            return command[i + 1]
    raise AssertionError(f"none of {names} in {command}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(DEPLOY / "docker-compose.yml")


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return read_env_file(DEPLOY / ".env.example")


@pytest.fixture(scope="module")
def helm() -> dict[str, Any]:
    return load_yaml(DEPLOY / "helm" / "values.yaml")


def helm_code_server(helm: dict[str, Any]) -> dict[str, Any]:
    deployments = helm["dagster-user-deployments"]["deployments"]
    matching = [d for d in deployments if MODULE in (d.get("dagsterApiGrpcArgs") or d.get("codeServerArgs") or [])]
    assert len(matching) == 1, f"exactly one user deployment should serve {MODULE}: {deployments}"
    return matching[0]


def compose_env(compose: dict[str, Any], env_example: dict[str, str], service: str) -> set[str]:
    """Names a compose service gets: its `environment` plus, with `env_file: .env`, the keys of .env.example."""
    svc = compose["services"][service]
    environment = svc.get("environment") or {}
    names = set(environment) if isinstance(environment, dict) else {e.partition("=")[0] for e in environment}
    env_files = svc.get("env_file") or []
    env_files = [env_files] if isinstance(env_files, str | dict) else env_files
    paths = [f["path"] if isinstance(f, dict) else f for f in env_files]
    if ".env" in paths or "./.env" in paths:
        names |= set(env_example)
    return names


def helm_env(helm: dict[str, Any]) -> set[str]:
    """Names the chart gives the code server (and, through includeConfigInLaunchedRuns, every run pod)."""
    env = helm_code_server(helm).get("env") or []
    names = set(env) if isinstance(env, dict) else {e["name"] for e in env}
    if (helm.get("global") or {}).get("dagsterHome") or helm.get("dagsterHome"):
        names.add("DAGSTER_HOME")  # the chart sets DAGSTER_HOME on every pod from this value
    return names


def env_refs(node: Any) -> set[str]:
    """The {env: X} references in a Dagster instance config."""
    if isinstance(node, dict):
        refs = {node["env"]} if set(node) == {"env"} else set()
        return refs.union(*(env_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(env_refs(v) for v in node))
    return set()


def instance_env_vars() -> set[str]:
    """The {env: X} references of deploy/dagster.yaml."""
    return env_refs(load_yaml(DEPLOY / "dagster.yaml"))


# --- 1. deploy/dagster.yaml on PostgreSQL, with a real tenant run ----------------------------------------------------


@pytest.fixture()
def dagster_pg_database(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """A fresh database on the test server for Dagster's tables, and the DAGSTER_PG_* variables pointing at it.

    The test server may listen on a unix socket only: then DAGSTER_PG_HOST is empty and libpq takes the socket
    directory from PGHOST (dagster-postgres builds `postgresql://user@host:port/db`, where a path cannot go).
    Returns (database name, a URL to it).
    """
    info = conninfo_to_dict(pg_url)
    name = f"dagster_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    host = str(info.get("host") or "")
    if host.startswith("/"):
        monkeypatch.setenv("DAGSTER_PG_HOST", "")
        monkeypatch.setenv("PGHOST", host)
    else:
        monkeypatch.setenv("DAGSTER_PG_HOST", host or "localhost")
    monkeypatch.setenv("DAGSTER_PG_PORT", str(info.get("port") or 5432))
    monkeypatch.setenv("DAGSTER_PG_DB", name)
    monkeypatch.setenv("DAGSTER_PG_USER", str(info.get("user") or "postgres"))
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", str(info.get("password") or ""))
    yield name, make_conninfo(pg_url, dbname=name)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_deploy_instance_stores_a_tenant_run_in_postgres(
    conn, schema, dagster_pg_database, tmp_path, monkeypatch
) -> None:
    db_name, dagster_db_url = dagster_pg_database
    assert set(instance_env_vars()) == {
        "DAGSTER_PG_HOST",
        "DAGSTER_PG_PORT",
        "DAGSTER_PG_DB",
        "DAGSTER_PG_USER",
        "DAGSTER_PG_PASSWORD",
    }
    home = tmp_path / "prod_dagster_home"
    home.mkdir()
    shutil.copyfile(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    seed(conn, schema, "acme", {"guide.md": "# Docks\n\nRobots charge at the docks overnight.\n\n- one\n- two\n"})

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        storages = {type(instance.run_storage).__name__, type(instance.event_log_storage).__name__}
        storages.add(type(instance.schedule_storage).__name__)
        assert storages == {"PostgresRunStorage", "PostgresEventLogStorage", "PostgresScheduleStorage"}
        url = instance.run_storage.postgres_url  # type: ignore[attr-defined]
        assert url.startswith("postgresql+psycopg2://") and url.endswith(f"/{db_name}")
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None and queue.max_concurrent_runs >= 1
        assert {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in (
            queue.tag_concurrency_limits
        )
        assert instance.run_monitoring_enabled and instance.run_retries_enabled
        assert instance.get_settings("telemetry") == {"enabled": False}

        [run] = materialize_tenants(["acme"], instance=instance)
        assert run.success, run.error
        assert run.metadata.get("coverage_pct") == 100.0
        with psycopg.connect(dagster_db_url) as probe:  # Dagster's storage kept a connection, not one per query
            (held,) = probe.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (db_name,)
            ).fetchone() or (0,)
        assert held >= 1
    finally:
        instance.dispose()
    assert count(conn, schema, "chunks", "acme") > 0

    # What the webserver of a deployment would read: Dagster's own tables, in PostgreSQL.
    with psycopg.connect(dagster_db_url) as dagster_db:
        status, partition = dagster_db.execute(
            "SELECT status, partition FROM runs WHERE run_id = %s", (run.run_id,)
        ).fetchone() or (None, None)
        assert (status, partition) == ("SUCCESS", "acme")
        materialized = dagster_db.execute(
            "SELECT asset_key, partition FROM event_logs WHERE run_id = %s AND dagster_event_type = %s",
            (run.run_id, "ASSET_MATERIALIZATION"),
        ).fetchall()
        assert (dg.AssetKey("embeddings").to_string(), "acme") in materialized
        assert {key for key, _ in materialized} >= {'["blocks"]', '["chunks"]', '["embeddings"]'}
        tenants = dagster_db.execute(
            "SELECT partition FROM dynamic_partitions WHERE partitions_def_name = 'tenant'"
        ).fetchall()
        assert ("acme",) in tenants


def test_root_dagster_yaml_stays_storage_free() -> None:
    """`dagster dev` uses ./dagster.yaml when DAGSTER_HOME is unset: it must work with no environment set."""
    root = load_yaml(REPO / "dagster.yaml")
    assert not {"storage", "run_storage", "event_log_storage", "schedule_storage", "run_launcher"} & set(root)
    assert not env_refs(root)
    # The same per-tenant run limit locally and in production.
    prod = load_yaml(DEPLOY / "dagster.yaml")
    partition_limit = {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    assert partition_limit in root["concurrency"]["runs"]["tag_concurrency_limits"]
    assert partition_limit in prod["concurrency"]["runs"]["tag_concurrency_limits"]


# --- 2. the code location loads: validate, and the image's gRPC command serves it -----------------------------------


def test_definitions_validate_root_workspace(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "EMBEDDINGS_"))}
    env["DAGSTER_HOME"] = str(home)
    proc = subprocess.run(
        [str(BIN / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "embeddings_pipeline" in proc.stdout + proc.stderr
    # the root workspace and the deployment load the same module
    [entry] = load_yaml(REPO / "workspace.yaml")["load_from"]
    assert entry["python_module"]["module_name"] == MODULE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_image_command_serves_the_code_location(tmp_path: Path) -> None:
    """The Dockerfile's CMD, on a free port, serves the code location; the healthcheck command sees it."""
    cmd = list(dockerfile()["CMD"])
    port = _free_port()
    cmd[cmd.index("-p") + 1] = str(port)
    cmd[cmd.index("-h") + 1] = "127.0.0.1"
    assert cmd[0] == "dagster"
    cmd[0] = str(BIN / "dagster")
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env["DAGSTER_HOME"] = str(home)
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        client = DagsterGrpcClient(port=port, host="127.0.0.1")
        deadline = time.monotonic() + 60
        while True:
            try:
                assert client.ping("deploy")["echo"] == "deploy"
                break
            except DagsterUserCodeUnreachableError:
                if server.poll() is not None or time.monotonic() > deadline:
                    output = (tmp_path / "server.log").read_text()
                    raise AssertionError(f"gRPC server did not come up: {output}") from None
                time.sleep(0.3)
        health = [str(BIN / "dagster") if a == "dagster" else a for a in dockerfile()["HEALTHCHECK"]]
        health[health.index("-p") + 1] = str(port)
        check = subprocess.run(health, env=env, capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stdout + check.stderr
        response = json.loads(client.list_repositories())
        assert response["__class__"] == "ListRepositoriesResponse", response
        pointers = response["repository_code_pointer_dict"].values()
        assert [p["module"] for p in pointers] == [MODULE]
    finally:
        log.close()
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# --- 3. compose, Helm, Dockerfile and workspace agree -----------------------------------------------------------------


def test_compose_provides_every_variable_the_code_reads(compose, env_example) -> None:
    needed = deployment_env_vars() | instance_env_vars()
    for service in DAGSTER_SERVICES:
        missing = needed - compose_env(compose, env_example, service)
        assert not missing, f"compose service {service} lacks {sorted(missing)} (environment or deploy/.env.example)"


def test_helm_provides_every_variable_the_code_reads(helm) -> None:
    missing = deployment_env_vars() - helm_env(helm)
    assert not missing, f"deploy/helm/values.yaml user deployment env lacks {sorted(missing)}"


def test_secrets_come_from_secrets_not_files(helm, env_example) -> None:
    # .env.example is committed: placeholders only.
    for key, value in env_example.items():
        if re.search(r"PASSWORD|SECRET|TOKEN|API_KEY", key):
            assert value in ("", "change-me"), f".env.example {key} must be empty or change-me"
        userinfo = re.match(r"^\w+://([^/@]*)@", value)
        if userinfo and ":" in userinfo.group(1):
            assert userinfo.group(1).split(":", 1)[1] == "change-me", f".env.example {key} carries a password"
    # Helm: the database URL and the webhook come from a Secret; Dagster's password from an existing secret.
    env = {e["name"]: e for e in helm_code_server(helm)["env"]}
    for name in ("EMBEDDINGS_DATABASE_URL", "EMBEDDINGS_ALERT_WEBHOOK_URL", "OPENAI_API_KEY"):
        assert "secretKeyRef" in env[name].get("valueFrom", {}), f"{name} must come from a Secret"
        assert "value" not in env[name]
    assert helm["postgresql"]["enabled"] is False
    assert helm["generatePostgresqlPasswordSecret"] is False
    assert helm["global"]["postgresqlSecretName"]


def test_image_is_the_same_everywhere(compose, helm) -> None:
    images = {compose["services"][s]["image"] for s in DAGSTER_SERVICES}
    assert len(images) == 1, f"compose Dagster services use different images: {images}"
    [image] = images
    code_server = helm_code_server(helm)["image"]
    helm_images = {
        f"{img['repository']}:{img['tag']}"
        for img in (code_server, helm["dagsterDaemon"]["image"], helm["dagsterWebserver"]["image"])
    }
    assert helm_images == {image}, f"Helm images {helm_images} differ from compose's {image}"
    # compose builds that image from deploy/Dockerfile
    build = compose["services"]["user_code"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == (DEPLOY / "Dockerfile").resolve()


def test_grpc_port_module_and_paths_agree(compose, helm) -> None:
    df = dockerfile()
    cmd = df["CMD"]
    user_code = compose["services"]["user_code"]["command"]
    code_server = helm_code_server(helm)
    workspace = load_yaml(DEPLOY / "workspace.yaml")
    [location] = workspace["load_from"]
    grpc = location["grpc_server"]

    # one gRPC port: Dockerfile CMD, its HEALTHCHECK, compose command and healthcheck, workspace, Helm
    port = int(flag(cmd, "-p", "--port"))
    assert port in df["EXPOSE"]
    assert int(flag(df["HEALTHCHECK"], "-p", "--port")) == port
    assert int(flag(user_code, "-p", "--port")) == port
    assert int(flag(compose["services"]["user_code"]["healthcheck"]["test"], "-p", "--port")) == port
    assert int(grpc["port"]) == port
    assert int(code_server["port"]) == port

    # one module, and it exists
    assert flag(cmd, "-m", "--module-name") == MODULE
    assert flag(user_code, "-m", "--module-name") == MODULE
    assert flag(code_server["dagsterApiGrpcArgs"], "-m", "--module-name") == MODULE
    assert importlib.util.find_spec(MODULE) is not None

    # the workspace points at the compose service that serves the code
    assert grpc["host"] in compose["services"] and grpc["host"] == "user_code"
    assert grpc["location_name"] == "embeddings_pipeline"

    # the webserver and daemon read the workspace file where the image puts it
    copied = {Path(src[0]).as_posix(): dest for src, dest in df["COPY"] if len(src) == 1}
    for service in ("webserver", "daemon"):
        command = compose["services"][service]["command"]
        assert flag(command, "-w", "--workspace") == copied["deploy/workspace.yaml"]
    assert compose["services"]["webserver"]["command"][0] == "dagster-webserver"
    assert compose["services"]["daemon"]["command"][:2] == ["dagster-daemon", "run"]

    # the instance file lands in DAGSTER_HOME, and DAGSTER_HOME is the same in the image, compose and Helm
    dagster_home = df["ENV"]["DAGSTER_HOME"]
    assert copied["deploy/dagster.yaml"] == f"{dagster_home}/dagster.yaml"
    for service in DAGSTER_SERVICES:
        assert compose["services"][service]["environment"]["DAGSTER_HOME"] == dagster_home
    assert helm["global"]["dagsterHome"] == dagster_home


def test_webserver_port_agrees(compose) -> None:
    df = dockerfile()
    web = compose["services"]["webserver"]
    port = int(flag(web["command"], "-p", "--port"))
    assert port in df["EXPOSE"]
    published = {int(str(p).rsplit(":", 1)[-1]) for p in web["ports"]}
    assert port in published
    assert f"localhost:{port}/" in " ".join(web["healthcheck"]["test"])


def test_dockerfile_basics() -> None:
    df = dockerfile()
    assert df["ARG"]["BASE_IMAGE"].startswith("python:3.11")
    assert "${BASE_IMAGE}" in df["FROM"][0]
    assert df["ARG"]["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert any("${TORCH_INDEX_URL}" in r and "torch==" in r for r in df["RUN"])
    assert any("pip install ." in r for r in df["RUN"])  # the bundled model comes with the project's dependencies
    assert df["USER"] not in (None, "root", "0")
    assert "HEALTHCHECK" in df
    assert df["CMD"][:3] == ["dagster", "api", "grpc"]


def test_compose_services_wait_for_healthy_dependencies(compose, env_example) -> None:
    services = compose["services"]
    assert services["postgres"]["image"].startswith("pgvector/pgvector:")
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    for name in ("postgres", *DAGSTER_SERVICES, "ollama"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for name in DAGSTER_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
    for name in ("webserver", "daemon"):
        assert services[name]["depends_on"]["user_code"]["condition"] == "service_healthy"
    assert services["ollama"]["profiles"] == ["ollama"]
    assert services["ollama-pull"]["profiles"] == ["ollama"]
    assert services["ollama-pull"]["depends_on"]["ollama"]["condition"] == "service_healthy"
    named = set(compose["volumes"])
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in named, f"{name} mounts undeclared volume {source}"
    # ${VAR} interpolations in the compose file are defined in .env.example (or have a default)
    text = (DEPLOY / "docker-compose.yml").read_text(encoding="utf-8")
    for var, default in re.findall(r"(?<!\$)\$\{(\w+)(:?[-?][^}]*)?\}", text):
        assert var in env_example or default.startswith((":-", "-")), f"${{{var}}} is not in .env.example"


def test_run_queue_agrees_between_compose_and_helm(helm) -> None:
    prod = load_yaml(DEPLOY / "dagster.yaml")["concurrency"]["runs"]
    queued = helm["dagsterDaemon"]["runCoordinator"]
    assert queued["type"] == "QueuedRunCoordinator"
    config = queued["config"]["queuedRunCoordinator"]
    assert config["maxConcurrentRuns"] == prod["max_concurrent_runs"]
    assert config["tagConcurrencyLimits"] == prod["tag_concurrency_limits"]
    # monitoring and retries: the chart's dagster.yaml gets the same sections as deploy/dagster.yaml, once
    instance = load_yaml(DEPLOY / "dagster.yaml")
    extra = helm["additionalInstanceConfig"]
    for section, chart_key in (("run_monitoring", "runMonitoring"), ("run_retries", "runRetries")):
        assert extra[section] == instance[section]
        assert extra[section]["enabled"] is True
        assert helm["dagsterDaemon"][chart_key]["enabled"] is False, f"{section} would be written twice"
    assert helm["telemetry"]["enabled"] is False


def test_helm_runs_one_pod_per_run_sized_for_the_model(helm) -> None:
    launcher = helm["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    requests = launcher["config"]["k8sRunLauncher"]["resources"]["requests"]
    assert float(requests["cpu"]) >= 1
    assert requests["memory"].endswith("Gi") and float(requests["memory"][:-2]) >= 2
    assert helm_code_server(helm)["includeConfigInLaunchedRuns"]["enabled"] is True


def test_helm_dagster_storage_matches_the_instance_file(helm) -> None:
    """The chart writes its own instance config; its PostgreSQL driver must be the one deploy/dagster.yaml proves."""
    prod = load_yaml(DEPLOY / "dagster.yaml")["storage"]["postgres"]["postgres_db"]
    assert helm["postgresql"]["postgresqlScheme"] == prod["scheme"] == "postgresql+psycopg2"
    assert int(helm["postgresql"]["service"]["port"]) == 5432


# --- 4. one large tenant over N pods: deploy/k8s/shard-job.yaml -------------------------------------------------------

SHARD_JOB = DEPLOY / "k8s" / "shard-job.yaml"
# what the embedding path of a shard reads: the database, the model and its provider, batches, locks and retries
SHARD_ENV = {
    "EMBEDDINGS_DATABASE_URL", "EMBEDDINGS_SCHEMA", "EMBEDDINGS_SOURCE_RELATION", "EMBEDDINGS_MODEL",
    "EMBEDDINGS_BATCH_SIZE", "EMBEDDINGS_LOCK_TIMEOUT", "EMBEDDINGS_RETRY_ATTEMPTS", "EMBEDDINGS_RETRY_BASE_DELAY",
    "OLLAMA_HOST", "OPENAI_BASE_URL", "OPENAI_API_KEY",
}  # fmt: skip


def test_shard_job_runs_one_shard_per_completion_index(helm) -> None:
    from click.testing import CliRunner

    from embeddings_pipeline.cli import main
    from embeddings_pipeline.pipeline.shards import parse_shard
    from embeddings_pipeline.store.vectors import Shard

    job = load_yaml(SHARD_JOB)
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    n = spec["completions"]
    assert isinstance(n, int) and n >= 2 and spec["parallelism"] == n
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"  # the Job's backoff and podFailurePolicy decide retries
    [container] = pod["containers"]
    command = container["command"]
    assert command[:2] == ["embeddings-pipeline", "embed-shard"]
    shard = flag(command, "--shard")
    assert shard == f"$(JOB_COMPLETION_INDEX)/{n}"
    assert [parse_shard(shard.replace("$(JOB_COMPLETION_INDEX)", str(i))) for i in range(n)] == [
        Shard(i, n) for i in range(n)
    ]
    # the command exists in the CLI, with every option the Job passes
    runner = CliRunner()
    help_out = runner.invoke(main, ["embed-shard", "--help"])
    assert help_out.exit_code == 0, help_out.output
    for arg in command[2:]:
        if arg.startswith("--"):
            assert arg in help_out.output, f"embed-shard has no option {arg}"
    # every $(VAR) the command expands is defined in the pod (JOB_COMPLETION_INDEX: by the Job controller)
    env = {e["name"]: e for e in container["env"]}
    for var in re.findall(r"\$\((\w+)\)", " ".join(command)):
        assert var in env or var == "JOB_COMPLETION_INDEX", f"$({var}) is not in the shard pod's env"
    # a usage error (exit 2) fails the Job at once; the container named there is this one
    [rule] = spec["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["containerName"] == container["name"]


def test_shard_job_has_the_code_locations_image_settings_and_secrets(helm) -> None:
    job = load_yaml(SHARD_JOB)
    [container] = job["spec"]["template"]["spec"]["containers"]
    code_server = helm_code_server(helm)
    assert container["image"] == f"{code_server['image']['repository']}:{code_server['image']['tag']}"
    env = {e["name"]: e for e in container["env"]}
    helm_env_entries = {e["name"]: e for e in code_server["env"]}
    missing = SHARD_ENV - set(env)
    assert not missing, f"the shard pods lack {sorted(missing)}"
    known = deployment_env_vars()
    for name, entry in env.items():
        if name in ("TENANT", "JOB_NAME"):
            continue
        assert name in known | set(helm_env_entries), f"the shard pods set {name}, which nothing reads"
        # the same value, or the same Secret reference, as the code server and the run pods get
        assert entry == helm_env_entries.get(name), f"{name} differs from deploy/helm/values.yaml"
    for name in ("EMBEDDINGS_DATABASE_URL", "OPENAI_API_KEY"):
        assert "secretKeyRef" in env[name]["valueFrom"] and "value" not in env[name]
    requests = container["resources"]["requests"]
    assert requests == helm["runLauncher"]["config"]["k8sRunLauncher"]["resources"]["requests"]
