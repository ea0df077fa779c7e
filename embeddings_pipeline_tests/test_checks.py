"""Each asset check passing and failing on real rows, in real Dagster runs where it matters."""

from __future__ import annotations

import dagster as dg
import pytest

from embeddings_pipeline.cli.runner import materialize_tenants
from embeddings_pipeline.defs.checks import evaluate_tenant_checks
from embeddings_pipeline.defs.resources import EmbeddingModel
from embeddings_pipeline.pipeline import model_change
from embeddings_pipeline.store.scope import Scope

from .helpers import chunks_of, seed
from .test_embedding_step import StopsAfter

DOC = "\n\n".join(f"Paragraph {i}: the conveyor in hall {i} is inspected weekly." for i in range(6))


@pytest.fixture()
def embedded(conn, schema, provider):
    """Two tenants, fully embedded through Dagster."""
    seed(conn, schema, "acme", {"doc.txt": DOC}, fmt="text")
    seed(conn, schema, "globex", {"doc.txt": DOC.replace("conveyor", "elevator")}, fmt="text")
    runs = materialize_tenants(["acme", "globex"], instance=dg.DagsterInstance.ephemeral())
    assert all(r.success for r in runs)
    return runs


def checks(conn, schema, provider, tenant="acme") -> dict[str, dg.AssetCheckResult]:
    chunk_set = model_change.target_chunk_set(Scope(conn, schema, tenant), provider)
    return {r.check_name: r for r in evaluate_tenant_checks(conn, schema, provider.identity, tenant, chunk_set)}


def vt(schema, provider) -> str:
    return f"{schema}.{provider.identity.vector_table}"


def test_all_checks_pass_in_the_run(embedded):
    for run in embedded:
        assert run.checks == {
            "no_missing_vectors": True,
            "no_stale_vectors": True,
            "single_model": True,
            "vectors_well_formed": True,
            "no_truncation": True,
            "quality_gate": True,  # nothing to compare: the tenant's first model
            "source_rows_valid": True,
        }


def some_chunk(conn, schema, tenant="acme") -> str:
    return sorted(chunks_of(conn, schema, tenant))[0]


@pytest.mark.parametrize("how", ["null", "delete"])
def test_missing_or_null_vectors_fail_with_examples(embedded, conn, schema, provider, how):
    cid = some_chunk(conn, schema)
    if how == "null":
        conn.execute(f"UPDATE {vt(schema, provider)} SET embedding = NULL WHERE chunk_id = %s", (cid,))  # noqa: S608
    else:
        conn.execute(f"DELETE FROM {vt(schema, provider)} WHERE chunk_id = %s", (cid,))  # noqa: S608
    result = checks(conn, schema, provider)["no_missing_vectors"]
    assert not result.passed and result.severity == dg.AssetCheckSeverity.ERROR
    assert result.metadata["count"].value == 1
    assert result.metadata["example_chunk_ids"].value == [cid]
    assert result.metadata["tenant"].value == "acme"
    assert checks(conn, schema, provider, "globex")["no_missing_vectors"].passed  # other tenant untouched


def test_stale_vector_fails(embedded, conn, schema, provider):
    cid = some_chunk(conn, schema)
    conn.execute(f"UPDATE {schema}.chunks SET content_hash = 'changed' WHERE chunk_id = %s", (cid,))  # noqa: S608
    result = checks(conn, schema, provider)["no_stale_vectors"]
    assert not result.passed and result.metadata["count"].value == 1


def test_two_models_in_one_tenant_warn(embedded, conn, schema, provider):
    conn.execute(
        f"UPDATE {vt(schema, provider)} SET model_key = 'other_model' WHERE chunk_id = %s",  # noqa: S608
        (some_chunk(conn, schema),),
    )
    result = checks(conn, schema, provider)["single_model"]
    assert not result.passed and result.severity == dg.AssetCheckSeverity.WARN
    assert sorted(result.metadata["model_keys"].value) == sorted(["other_model", provider.identity.model_key])


@pytest.mark.parametrize("value", ["zero", "unnormalized", "wrong_dims"])
def test_malformed_vectors_fail(embedded, conn, schema, provider, value):
    table, cid = vt(schema, provider), some_chunk(conn, schema)
    if value == "wrong_dims":  # only possible where the column lost its declared dimension (drift)
        conn.execute(f"ALTER TABLE {table} ALTER COLUMN embedding TYPE vector")
        conn.execute(f"UPDATE {table} SET embedding = '[1,0,0]' WHERE chunk_id = %s", (cid,))  # noqa: S608
    else:
        fill = 0 if value == "zero" else 0.5
        conn.execute(
            f"UPDATE {table} SET embedding = array_fill(%s::real, ARRAY[384])::vector WHERE chunk_id = %s",  # noqa: S608
            (fill, cid),
        )
    result = checks(conn, schema, provider)["vectors_well_formed"]
    assert not result.passed and result.metadata["example_chunk_ids"].value == [cid]


def test_truncated_chunks_warn(embedded, conn, schema, provider):
    conn.execute(f"UPDATE {schema}.chunks SET token_count = 300 WHERE chunk_id = %s", (some_chunk(conn, schema),))  # noqa: S608
    result = checks(conn, schema, provider)["no_truncation"]
    assert not result.passed and result.severity == dg.AssetCheckSeverity.WARN


class DyingModel(EmbeddingModel):
    def provider(self, spec=None, key_env=None):
        return StopsAfter(super().provider(spec, key_env), 1)


def test_a_run_that_leaves_chunks_missing_fails_on_the_blocking_check(conn, schema, store, provider):
    from embeddings_pipeline.defs.assets import blocks, chunks, documents, embeddings

    big = "\n\n".join(f"Line {i} of the maintenance log." for i in range(300))
    seed(conn, schema, "acme", {"log.txt": big}, fmt="text")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("tenant", ["acme"])
    result = dg.materialize(
        [documents, blocks, chunks, embeddings],
        selection=[blocks, chunks, embeddings],
        partition_key="acme",
        instance=instance,
        resources={"store": store, "model": DyingModel()},
        raise_on_error=False,
    )
    assert not result.success
    evaluation = {e.check_name: e for e in result.get_asset_check_evaluations()}["no_missing_vectors"]
    assert not evaluation.passed
    assert evaluation.metadata["count"].value == 300 - 256  # the first batch of 256 was committed
    assert "provider went away" in evaluation.metadata["run_error"].value


def test_sweep_reports_missing_vectors_per_tenant(embedded, conn, schema, provider):
    from embeddings_pipeline.definitions import defs as load_defs

    defs = load_defs()

    table = vt(schema, provider)
    conn.execute(f"UPDATE {table} SET embedding = NULL WHERE tenant_id = 'acme'")  # noqa: S608
    conn.execute(f"DELETE FROM {table} WHERE chunk_id = %s", (some_chunk(conn, schema, "globex"),))  # noqa: S608
    result = defs.resolve_job_def("vector_sweep").execute_in_process(instance=dg.DagsterInstance.ephemeral())
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == "missing_vectors_sweep" and not evaluation.passed
    assert evaluation.metadata["missing_by_tenant"].value == {"acme": 6, "globex": 1}
    assert evaluation.metadata["missing_total"].value == 7


def test_documents_never_chunked_count_as_missing_in_status_and_the_sweep(conn, schema, provider, monkeypatch):
    """A tenant whose run failed before chunking (its provider down) and one never run at all have no chunk to
    miss a vector, yet nothing of theirs is searchable: status and the sweep count their documents as missing."""
    import json

    from click.testing import CliRunner

    from embeddings_pipeline.cli import main
    from embeddings_pipeline.definitions import defs as load_defs
    from embeddings_pipeline.store.status import tenant_status
    from embeddings_pipeline.store.tenants import update_tenant

    from .standin_server import StandinServer

    monkeypatch.setenv("EMBEDDINGS_RETRY_BASE_DELAY", "0.01")
    seed(conn, schema, "local", {"doc.txt": DOC}, fmt="text")
    seed(conn, schema, "remote", {"a.txt": DOC, "b.txt": "The loading bay closes at six."}, fmt="text")
    instance = dg.DagsterInstance.ephemeral()
    with StandinServer() as srv:
        srv.faults.down = True
        monkeypatch.setenv("OLLAMA_HOST", srv.url)
        update_tenant(conn, schema, "remote", model="ollama:nomic-embed-text")
        runs = {r.tenant: r for r in materialize_tenants(["local", "remote"], instance=instance)}
    assert runs["local"].success and not runs["remote"].success
    seed(conn, schema, "fresh", {"new.txt": "Ingested, never run."}, fmt="text")

    key = provider.identity.model_key
    remote = tenant_status(conn, schema, "remote", key)
    assert (remote.chunks, remote.documents_not_chunked, remote.missing) == (0, 2, 2)
    assert tenant_status(conn, schema, "local", key).missing == 0
    out = CliRunner().invoke(main, ["status", "--tenant", "fresh", "--json"], catch_exceptions=False)
    (fresh,) = json.loads(out.output)["tenants"]
    assert (fresh["missing"], fresh["documents_not_chunked"]) == (1, 1)

    result = load_defs().resolve_job_def("vector_sweep").execute_in_process(instance=instance)
    (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed
    assert evaluation.metadata["missing_by_tenant"].value == {"fresh": 1, "remote": 2}
    assert evaluation.metadata["documents_not_chunked_by_tenant"].value == {"fresh": 1, "remote": 2}


def test_every_check_result_says_which_tenant_and_what_it_found(embedded, conn, schema, provider):
    """The checks tab lists evaluations of all tenants: each description names its tenant and its finding."""
    conn.execute(f"UPDATE {vt(schema, provider)} SET embedding = NULL WHERE chunk_id = %s",  # noqa: S608
                 (some_chunk(conn, schema),))  # fmt: skip
    results = checks(conn, schema, provider)
    assert all(r.description and r.description.startswith("tenant acme: ") for r in results.values())
    assert results["no_missing_vectors"].description.startswith("tenant acme: no missing vectors: 1 (e.g. ")
    assert results["no_stale_vectors"].description == "tenant acme: no stale vectors: none"
