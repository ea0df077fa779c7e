"""The code location loads fast, without torch, and wires the tenant-partitioned graph."""

from __future__ import annotations

import json
import subprocess
import sys

import dagster as dg


def test_definitions_load_without_torch_or_sentence_transformers():
    code = (
        "import json, sys, time; t = time.perf_counter();"
        "import embeddings_pipeline.definitions as d;"
        "print(json.dumps({'seconds': time.perf_counter() - t, 'heavy': sorted(m for m in "
        "('torch', 'sentence_transformers', 'transformers') if m in sys.modules)}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []


def test_asset_graph_is_partitioned_by_tenant():
    from embeddings_pipeline.definitions import defs as load_defs

    defs = load_defs()

    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {"source_schema", "documents", "blocks", "chunks", "embeddings"}
    for name in ("blocks", "chunks", "embeddings"):
        node = graph.get(dg.AssetKey(name))
        assert isinstance(node.partitions_def, dg.DynamicPartitionsDefinition)
        assert node.partitions_def.name == "tenant"
    assert graph.get(dg.AssetKey("embeddings")).parent_keys == {dg.AssetKey("chunks")}
    assert graph.get(dg.AssetKey("chunks")).parent_keys == {dg.AssetKey("blocks")}
    assert graph.get(dg.AssetKey("blocks")).parent_keys == {dg.AssetKey("documents"), dg.AssetKey("source_schema")}
    assert defs.resolve_job_def("embed_tenant") is not None


def test_local_instance_allows_one_run_per_tenant(tmp_path):
    import shutil
    from pathlib import Path

    shutil.copy(Path(__file__).resolve().parents[1] / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None
        assert {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in (
            queue.tag_concurrency_limits
        )
        assert instance.get_settings("storage") == {}  # plain `dagster dev` keeps its own local storage
    finally:
        instance.dispose()


def _module_level_definitions() -> list[tuple[str, object]]:
    import importlib
    import pkgutil

    import embeddings_pipeline.defs as package

    found = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        found += [(f"{info.name}.{name}", value) for name, value in vars(module).items()]
    return found


def test_every_definition_in_the_defs_folder_is_loaded():
    """A new file or object in defs/ needs no wiring by hand: the code location loads the folder."""
    from embeddings_pipeline.definitions import defs as load_defs

    defs = load_defs()
    graph = defs.resolve_asset_graph()
    checks = {key for node in graph.asset_nodes for key in node.check_keys}
    seen = 0
    for where, value in _module_level_definitions():
        if isinstance(value, dg.AssetsDefinition):
            assert set(value.keys) <= graph.get_all_asset_keys(), where
            assert set(value.check_keys) <= checks, where
        elif isinstance(value, dg.AssetSpec):
            assert value.key in graph.get_all_asset_keys(), where
        elif isinstance(value, dg.AssetChecksDefinition):
            assert set(value.check_keys) <= checks, where
        elif isinstance(value, dg.SensorDefinition):
            assert value.name in {s.name for s in defs.sensors or []}, where
        elif isinstance(value, dg.ScheduleDefinition):
            assert value.name in {s.name for s in defs.schedules or []}, where
        elif isinstance(value, dg.JobDefinition) or type(value).__name__ == "UnresolvedAssetJobDefinition":
            assert defs.resolve_job_def(value.name) is not None, where
        else:
            continue
        seen += 1
    assert seen >= 15  # 5 assets/specs, 1 sweep check, 3 jobs, 3 schedules, 6 sensors


def test_resources_read_settings_as_env_vars(monkeypatch):
    """A setting given in the environment shows in the UI as that EnvVar (resolved inside runs); unset ones keep
    their defaults (the embedded server, the bundled model) instead of failing every run."""
    from embeddings_pipeline.definitions import defs as load_defs

    monkeypatch.setenv("EMBEDDINGS_DATABASE_URL", "postgresql://db.example/app")
    monkeypatch.setenv("EMBEDDINGS_BATCH_SIZE", "16")
    monkeypatch.delenv("EMBEDDINGS_MODEL", raising=False)
    resources = load_defs().resources or {}
    assert resources["store"].database_url == dg.EnvVar("EMBEDDINGS_DATABASE_URL")
    assert resources["model"].batch_size == dg.EnvVar.int("EMBEDDINGS_BATCH_SIZE")
    assert resources["model"].model is None


def test_dg_loads_the_project(tmp_path):
    """`dg` (the dagster-dg CLI, a dev dependency) finds the code location from `[tool.dg]` in pyproject.toml."""
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    dg_cli = Path(sys.executable).with_name("dg")
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "VIRTUAL_ENV": str(Path(sys.executable).parents[1])}
    check = subprocess.run([str(dg_cli), "check", "defs"], cwd=root, env=env, capture_output=True, text=True)
    assert check.returncode == 0 and "All definitions loaded successfully" in check.stdout + check.stderr
    listed = subprocess.run([str(dg_cli), "list", "defs", "--json"], cwd=root, env=env, capture_output=True,
                            text=True, check=True)  # fmt: skip
    payload = json.loads(listed.stdout[listed.stdout.index("{") :])
    assert {a["asset_key"] for a in payload["assets"]} == {"source_schema", "documents", "blocks", "chunks",
                                                           "embeddings"}  # fmt: skip
    assert "new_content_sensor" in {s["name"] for s in payload["sensors"]}
