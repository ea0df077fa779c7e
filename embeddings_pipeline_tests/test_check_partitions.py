"""What the UI's checks tab shows, read through the same GraphQL the Dagster UI sends (a real code server on the
repo's workspace.yaml, a real instance): every per-tenant check result is recorded on its tenant partition, and the
all-tenant sweep reads as evaluated after tenant runs (automation sweeps again after them)."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from embeddings_pipeline.defs.checks import CHECK_SPECS

from .helpers import seed

DOC = "\n\n".join(f"Paragraph {i}: the conveyor in hall {i} is inspected weekly." for i in range(6))
WORKSPACE = str(Path(__file__).resolve().parents[1] / "workspace.yaml")
EMBEDDINGS = {"path": ["embeddings"]}
TENANT_CHECKS = sorted(spec.name for spec in CHECK_SPECS)

# The fields the checks tab reads (AssetChecksQuery and AssetCheckDetailsQuery of the 1.13 UI, trimmed).
CHECKS = """
query($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) { ... on AssetNode { assetChecksOrError { ... on AssetChecks { checks {
    name
    partitionDefinition { description }
    partitionStatuses { ... on AssetCheckDefaultPartitionStatuses { succeededPartitions failedPartitions } }
    executionForLatestMaterialization { runId status partition evaluation { partition description } }
  } } } } }
}
"""
EXECUTIONS = """
query($key: AssetKeyInput!, $name: String!, $partition: String) {
  assetCheckExecutions(assetKey: $key, checkName: $name, partition: $partition, limit: 10) {
    runId status partition evaluation { partition description }
  }
}
"""


@pytest.fixture()
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        inst.add_dynamic_partitions("tenant", ["acme", "globex"])
        yield inst


def materialize(instance: dg.DagsterInstance, store, tenant: str) -> dg.ExecuteInProcessResult:
    from embeddings_pipeline.defs.assets import blocks, chunks, documents, embeddings
    from embeddings_pipeline.defs.resources import EmbeddingModel

    return dg.materialize(
        [documents, blocks, chunks, embeddings],
        selection=[blocks, chunks, embeddings],
        partition_key=tenant,
        instance=instance,
        resources={"store": store, "model": EmbeddingModel()},
    )


def sweep(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    from embeddings_pipeline.definitions import defs

    return defs().resolve_job_def("vector_sweep").execute_in_process(instance=instance)


class UI:
    """GraphQL requests as the webserver serves them: one code server of the repo's workspace.yaml, and for each
    request a workspace request context, entered (which lets dynamic partitions load from the instance)."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        from dagster_graphql.test.utils import define_out_of_process_workspace

        self.workspace = define_out_of_process_workspace(WORKSPACE, None, instance)

    def ask(self, query: str, **variables: object) -> dict:
        from dagster_graphql.test.utils import execute_dagster_graphql

        with self.workspace.create_request_context() as context:
            result = execute_dagster_graphql(context, query, variables)
        assert result.errors is None, result.errors
        return result.data

    def checks_tab(self) -> dict[str, dict]:
        data = self.ask(CHECKS, key=EMBEDDINGS)
        return {c["name"]: c for c in data["assetNodeOrError"]["assetChecksOrError"]["checks"]}


@pytest.fixture()
def ui(instance: dg.DagsterInstance) -> Iterator[UI]:
    view = UI(instance)
    with view.workspace:
        yield view


def test_each_tenant_check_result_is_recorded_on_its_partition(conn, schema, store, provider, instance, ui):
    seed(conn, schema, "acme", {"doc.txt": DOC}, fmt="text")
    seed(conn, schema, "globex", {"doc.txt": DOC.replace("conveyor", "elevator")}, fmt="text")
    for tenant in ("acme", "globex"):
        evaluations = materialize(instance, store, tenant).get_asset_check_evaluations()
        assert sorted(e.check_name for e in evaluations) == TENANT_CHECKS
        assert {e.partition for e in evaluations} == {tenant}
    # globex only: a chunk longer than the model reads (WARN), found by globex's next run
    conn.execute(f"UPDATE {schema}.chunks SET token_count = 300 WHERE tenant_id = 'globex'")  # noqa: S608
    evaluations = {e.check_name: e for e in materialize(instance, store, "globex").get_asset_check_evaluations()}
    assert not evaluations["no_truncation"].passed and evaluations["no_truncation"].partition == "globex"

    tab = ui.checks_tab()
    for name in TENANT_CHECKS:  # the tab shows a Partitions view and a Partition column for each tenant check
        assert tab[name]["partitionDefinition"] == {"description": 'Dynamic partitions: "tenant"'}
    statuses = {name: tab[name]["partitionStatuses"] for name in TENANT_CHECKS}
    assert statuses.pop("no_truncation") == {"succeededPartitions": ["acme"], "failedPartitions": ["globex"]}
    assert all(s == {"succeededPartitions": ["acme", "globex"], "failedPartitions": []} for s in statuses.values())
    latest = tab["no_missing_vectors"]["executionForLatestMaterialization"]
    assert latest["status"] == "SUCCEEDED" and latest["evaluation"]["partition"] == "globex"

    for tenant, runs in (("acme", 1), ("globex", 2)):
        history = ui.ask(EXECUTIONS, key=EMBEDDINGS, name="no_missing_vectors", partition=tenant)
        executions = history["assetCheckExecutions"]
        assert len(executions) == runs
        assert {(e["partition"], e["evaluation"]["partition"]) for e in executions} == {(tenant, tenant)}
        assert executions[0]["evaluation"]["description"] == f"tenant {tenant}: no missing vectors: none"
    everyone = ui.ask(EXECUTIONS, key=EMBEDDINGS, name="no_truncation", partition=None)
    assert [(e["partition"], e["status"]) for e in everyone["assetCheckExecutions"]] == [
        ("globex", "FAILED"),
        ("globex", "SUCCEEDED"),
        ("acme", "SUCCEEDED"),
    ]


def test_the_sweep_reads_evaluated_again_soon_after_a_tenant_run(conn, schema, store, provider, instance, ui):
    from embeddings_pipeline.definitions import defs as load_defs

    seed(conn, schema, "acme", {"doc.txt": DOC}, fmt="text")
    seed(conn, schema, "globex", {"doc.txt": DOC.replace("conveyor", "elevator")}, fmt="text")
    defs = load_defs()
    start = datetime.datetime(2026, 1, 1, 12, 0, 10, tzinfo=datetime.UTC)

    def automation(cursor, minutes: float):
        when = start + datetime.timedelta(minutes=minutes)
        return dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor, evaluation_time=when)

    baseline = automation(None, 0)
    assert baseline.total_requested == 0
    for tenant in ("acme", "globex"):
        materialize(instance, store, tenant)
    (evaluation,) = sweep(instance).get_asset_check_evaluations()
    assert evaluation.passed and evaluation.partition is None
    latest = ui.checks_tab()["missing_vectors_sweep"]["executionForLatestMaterialization"]
    assert latest is not None and latest["status"] == "SUCCEEDED"
    assert latest["evaluation"]["description"] == "0 missing vectors in 0 tenants"

    # A tenant's run after the sweep: Dagster compares the sweep with the asset's latest materialization of any
    # tenant, so the sweep reads "Not evaluated" (null) until it runs again...
    materialize(instance, store, "acme")
    assert ui.checks_tab()["missing_vectors_sweep"]["executionForLatestMaterialization"] is None
    # ...which automation does at its next once-a-minute slot, and only then.
    same_minute = automation(baseline.cursor, 0.5)
    assert same_minute.total_requested == 0
    next_minute = automation(same_minute.cursor, 1)
    assert next_minute.total_requested == 1  # the sweep: no tenant partition of any asset is requested
    assert not any(next_minute.get_requested_partitions(dg.AssetKey(k)) for k in ("blocks", "chunks", "embeddings"))
    sweep(instance)
    latest = ui.checks_tab()["missing_vectors_sweep"]["executionForLatestMaterialization"]
    assert latest is not None and latest["status"] == "SUCCEEDED"
    assert automation(next_minute.cursor, 2).total_requested == 0  # the sweep is current again: nothing to do


NUMERIC = (dg.IntMetadataValue, dg.FloatMetadataValue)


def test_plotted_figures_are_per_run_findings_not_constants(conn, schema, store, provider, instance):
    """The UI plots every int/float metadata entry (a partitioned asset by partition, a check over time): those of
    a tenant's run are what it did and found; the model's dimensions and token limit, which never change, are
    text, and the serving chunk set's figures appear only during a model change."""
    seed(conn, schema, "acme", {"doc.txt": DOC}, fmt="text")
    result = materialize(instance, store, "acme")

    def plotted(metadata) -> set[str]:
        return {k for k, v in metadata.items() if isinstance(v, NUMERIC)}

    figures = {m.asset_key.path[-1]: m.metadata for m in result.asset_materializations_for_node("embeddings")}
    for node in ("blocks", "chunks"):
        (materialization,) = result.asset_materializations_for_node(node)
        figures[node] = materialization.metadata
    assert plotted(figures["blocks"]) == {"documents_parsed", "documents_removed", "blocks_written", "blocks_removed"}
    assert plotted(figures["chunks"]) == {"documents_chunked", "chunks_written", "chunks_removed"}
    assert plotted(figures["embeddings"]) == {
        "chunks", "embedded", "reused", "copied_by_hash", "deleted", "failed", "coverage_pct", "seconds",
        "texts_per_second", "provider_calls", "dagster/row_count",
    }  # fmt: skip
    assert figures["embeddings"]["model_dims"] == dg.MetadataValue.text("384")
    assert "serving_chunks_written" not in figures["chunks"]

    checks = {e.check_name: e.metadata for e in result.get_asset_check_evaluations()}
    assert {name: plotted(m) for name, m in checks.items()} == {
        "no_missing_vectors": {"count", "document_errors"},
        "no_stale_vectors": {"count"},
        "single_model": set(),
        "vectors_well_formed": {"count"},
        "no_truncation": {"count"},
        "quality_gate": set(),
        "source_rows_valid": {"count"},
    }
    assert checks["vectors_well_formed"]["dims"] == dg.MetadataValue.text("384")
    assert checks["no_truncation"]["max_tokens"] == dg.MetadataValue.text("256")


# A direct import: Dagster's own loader of the defs folder (load_from_defs_folder, as `defs()` and the code server
# use it) switches Dagster's warnings off while it imports, so only a direct import (a test, a script) would show one.
IMPORT_WITH_PREVIEW_AS_ERROR = """
import warnings
import dagster as dg
warnings.simplefilter("error", dg.PreviewWarning)
import embeddings_pipeline.defs.checks
"""


def test_importing_the_checks_prints_no_preview_warning():
    """Partitioned checks are Preview in Dagster 1.13: the warning for exactly that use is filtered where the specs
    are built (any other Preview API would still warn)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", IMPORT_WITH_PREVIEW_AS_ERROR], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
