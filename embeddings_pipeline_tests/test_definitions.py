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
    from embeddings_pipeline.definitions import defs

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
