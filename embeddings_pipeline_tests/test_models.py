"""Model changes, blue/green: the new model is filled side by side, search stays on the old one until the new one
covers 100%, lineage names the model of every vector, retire drops the old vectors, switching back is instant."""

from __future__ import annotations

import json

import dagster as dg
import pytest
from click.testing import CliRunner

from embeddings_pipeline.cli import main
from embeddings_pipeline.defs.resources import EmbeddingModel
from embeddings_pipeline.orchestrate import materialize_tenants
from embeddings_pipeline.search import search
from embeddings_pipeline.store.models import ModelInUse, lineage, list_models, retire_model
from embeddings_pipeline.store.tenants import tenant_settings, update_tenant

from .helpers import seed
from .test_checks import DyingModel

NEW = "sentence-transformers:all-MiniLM-L6-v2?passage_prefix=passage: &query_prefix=query: "
DOC = "\n\n".join(f"Paragraph {i}: the cold store in hall {i} keeps vaccines at 4 degrees." for i in range(300))


def hits_model(conn, schema, tenant="acme") -> set[str]:
    provider = EmbeddingModel().search_provider_for(conn, schema, tenant)
    return {h.model_key for h in search(conn, schema, provider, tenant, "vaccine storage temperature", k=5)}


def test_blue_green_model_change(conn, schema, provider, store):
    seed(conn, schema, "acme", {"cold.txt": DOC}, fmt="text")
    instance = dg.DagsterInstance.ephemeral()
    assert materialize_tenants(["acme"], instance=instance)[0].success
    old = provider.identity.model_key
    assert tenant_settings(conn, schema, "acme").active_model_key == old

    chunk_rows = conn.execute(f"SELECT array_agg(xmin::text ORDER BY chunk_id) FROM {schema}.chunks").fetchone()  # noqa: S608
    update_tenant(conn, schema, "acme", model=NEW)
    new = EmbeddingModel().provider(NEW).identity.model_key
    assert new != old
    # the new model is half built (its provider dies after the first batch): search stays on the old model
    from embeddings_pipeline.defs.assets import blocks, chunks, documents, embeddings

    partial = dg.materialize(
        [documents, blocks, chunks, embeddings], selection=[blocks, chunks, embeddings], partition_key="acme",
        instance=instance, resources={"store": store, "model": DyingModel()}, raise_on_error=False,
    )  # fmt: skip
    assert not partial.success
    assert tenant_settings(conn, schema, "acme").active_model_key == old
    assert hits_model(conn, schema) == {old}
    coverage = {m["model_key"]: m["tenants"].get("acme") for m in list_models(conn, schema)}
    assert coverage[old]["coverage_pct"] == 100.0 and coverage[old]["active"]
    assert 0 < coverage[new]["coverage_pct"] < 100.0 and not coverage[new]["active"]

    (done,) = materialize_tenants(["acme"], instance=instance)
    assert done.success and done.metadata["model_key"] == new
    # same tokenizer and limit: not one chunk row was rewritten by the switch
    assert conn.execute(f"SELECT array_agg(xmin::text ORDER BY chunk_id) FROM {schema}.chunks").fetchone() == chunk_rows  # noqa: S608
    assert tenant_settings(conn, schema, "acme").active_model_key == new
    assert hits_model(conn, schema) == {new}
    rows = lineage(conn, schema, "acme", doc_id="cold.txt")
    current_new = [r for r in rows if r["model_key"] == new]
    assert len(current_new) == 300 and all(r["current"] and r["active_model"] for r in current_new)
    assert {r["run_id"] for r in current_new} <= {partial.run_id, done.run_id}
    assert all(r["revision"] == provider.identity.revision and r["chunker_version"] for r in rows)

    # switching back before retiring is instant: nothing to embed
    update_tenant(conn, schema, "acme", model="")
    (back,) = materialize_tenants(["acme"], instance=instance)
    assert back.success and back.metadata["embedded"] == 0
    assert tenant_settings(conn, schema, "acme").active_model_key == old
    with pytest.raises(ModelInUse):
        retire_model(conn, schema, old)
    assert retire_model(conn, schema, new) == 300
    assert hits_model(conn, schema) == {old}
    assert {r["model_key"] for r in lineage(conn, schema, "acme", doc_id="cold.txt")} == {old}


def test_models_and_lineage_cli(conn, schema, provider):
    seed(conn, schema, "acme", {"a.md": "# Cold store\n\nVaccines are kept at 4 degrees."})
    assert materialize_tenants(["acme"], instance=dg.DagsterInstance.ephemeral())[0].success
    runner = CliRunner()
    listed = json.loads(runner.invoke(main, ["models", "list", "--json"], catch_exceptions=False).output)
    (model,) = listed["models"]
    assert model["model_key"] == provider.identity.model_key and model["tenants"]["acme"]["coverage_pct"] == 100.0
    out = runner.invoke(main, ["lineage", "--doc", "a.md", "--tenant", "acme", "--json"], catch_exceptions=False)
    vectors = json.loads(out.output)["vectors"]
    assert vectors and all(v["model_name"] == "all-MiniLM-L6-v2" and v["dims"] == 384 for v in vectors)
    refused = runner.invoke(main, ["models", "retire", provider.identity.model_key])
    assert refused.exit_code == 1 and "active model" in refused.output
    migrated = runner.invoke(main, ["db", "migrate"], catch_exceptions=False)
    assert migrated.exit_code == 0 and "applied nothing" in migrated.output
