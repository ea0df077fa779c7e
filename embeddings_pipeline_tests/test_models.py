"""Model changes, blue/green: the new model is filled side by side, search stays on the old one until the new one
covers 100%, lineage names the model of every vector, retire drops the old vectors, switching back is instant."""

from __future__ import annotations

import json

import dagster as dg
import pytest
from click.testing import CliRunner

from embeddings_pipeline.cli import main
from embeddings_pipeline.cli.runner import materialize_tenants
from embeddings_pipeline.pipeline import model_change
from embeddings_pipeline.search import search
from embeddings_pipeline.store import vector_tables
from embeddings_pipeline.store.checks import missing_by_tenant
from embeddings_pipeline.store.models import ModelInUse, lineage, list_models, retire_model
from embeddings_pipeline.store.scope import Scope
from embeddings_pipeline.store.tenants import tenant_settings, update_tenant

from .helpers import count, seed, vector_rows
from .standin_server import StandinServer
from .test_checks import DyingModel

NEW = "sentence-transformers:all-MiniLM-L6-v2?passage_prefix=passage: &query_prefix=query: "
DOC = "\n\n".join(f"Paragraph {i}: the cold store in hall {i} keeps vaccines at 4 degrees." for i in range(300))


def hits_model(conn, schema, tenant="acme") -> set[str]:
    provider = model_change.search_provider(Scope(conn, schema, tenant))
    return {h.model_key for h in search(conn, schema, provider, tenant, "vaccine storage temperature", k=5)}


def test_blue_green_model_change(conn, schema, provider, store):
    seed(conn, schema, "acme", {"cold.txt": DOC}, fmt="text")
    instance = dg.DagsterInstance.ephemeral()
    assert materialize_tenants(["acme"], instance=instance)[0].success
    old = provider.identity.model_key
    assert tenant_settings(conn, schema, "acme").active_model_key == old

    chunk_rows = conn.execute(f"SELECT array_agg(xmin::text ORDER BY chunk_id) FROM {schema}.chunks").fetchone()  # noqa: S608
    update_tenant(conn, schema, "acme", model=NEW)
    new = model_change.default_loader(NEW).identity.model_key
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


LONG = (
    "Paragraph {i}: the cold store in hall {i} keeps vaccines at four degrees, and the site manager keeps the log "
    "of every door opening for ninety days so that an auditor can trace each excursion back to a shift."
)


def test_model_change_to_another_tokenizer_limit_and_dimension(conn, schema, provider, monkeypatch):
    """384 -> 768 dimensions and a tokenizer/limit that splits the same text differently: the new model gets its
    own chunk set and table, search stays on the old set and model (and sees new content) until the switch."""
    monkeypatch.setenv("EMBEDDINGS_RETRY_BASE_DELAY", "0.01")
    monkeypatch.setenv("EMBEDDINGS_TENANT_INDEX_THRESHOLD", "10")  # acme has a vector partition of its own
    instance = dg.DagsterInstance.ephemeral()
    docs = {"cold.txt": "\n\n".join(LONG.format(i=i) for i in range(12)), "poison.txt": "POISON"}
    seed(conn, schema, "acme", docs, fmt="text")
    seed(conn, schema, "other", {"o.txt": "Other tenant, other text."}, fmt="text")
    assert all(r.success for r in materialize_tenants(["acme", "other"], instance=instance))
    old = provider.identity.model_key
    old_set = tenant_settings(conn, schema, "acme").active_chunk_set
    old_vectors = count(conn, schema, provider.identity.vector_table, "acme")
    other_before = vector_rows(conn, schema, provider.identity.vector_table, "other")

    with StandinServer(dims=768, bad_input="POISON") as srv:
        monkeypatch.setenv("OLLAMA_HOST", srv.url)
        update_tenant(conn, schema, "acme", model="ollama:nomic-embed-text?max_tokens=24")
        target = model_change.default_loader("ollama:nomic-embed-text?max_tokens=24")
        new, new_set = target.identity.model_key, model_change.chunk_set_for(target)
        assert target.identity.dims == 768 and new_set != old_set

        # the provider refuses one input: the new model stays below 100%, the tenant keeps searching the old one
        (partial,) = materialize_tenants(["acme"], instance=instance)
        assert not partial.success
        assert sets(conn, schema) == {old_set: 13, new_set: 25}  # every paragraph split in two, plus POISON
        assert tenant_settings(conn, schema, "acme").active_model_key == old
        assert hits_model(conn, schema) == {old}
        coverage = {m["model_key"]: m["tenants"].get("acme") for m in list_models(conn, schema)}
        assert coverage[old] == {"chunker_version": old_set, "chunks": 13, "vectors": 13, "coverage_pct": 100.0,
                                 "active": True}  # fmt: skip
        assert coverage[new]["chunker_version"] == new_set and coverage[new]["vectors"] == 24
        hnsw = f"{schema}.{vector_tables.tenant_partition(new, 'acme')}_hnsw"
        assert conn.execute("SELECT to_regclass(%s)", (hnsw,)).fetchone() == (None,)  # built at the switch
        # the sweep checks what search reads (the active model on its own set): nothing is missing there
        assert missing_by_tenant(conn, schema, old) == ({}, [])

        # content written during the migration is searchable at once, through the old model and its own set
        seed(conn, schema, "acme", {"news.txt": "The vaccine fridge of hall 99 moved to building C."}, fmt="text")
        (during,) = materialize_tenants(["acme"], instance=instance)
        assert not during.success and during.metadata["serving_embedded"] == 1
        provider_old = model_change.search_provider(Scope(conn, schema, "acme"))
        top = search(conn, schema, provider_old, "acme", "where did the vaccine fridge move?", k=1)[0]
        assert (top.doc_id, top.model_key) == ("news.txt", old)

        srv.bad_input = None
        (done,) = materialize_tenants(["acme"], instance=instance)
        assert done.success, done.error
        settings = tenant_settings(conn, schema, "acme")
        assert (settings.active_model_key, settings.active_chunk_set) == (new, new_set)
        assert conn.execute("SELECT to_regclass(%s)::text", (hnsw,)).fetchone() == (hnsw,)
        assert set(sets(conn, schema)) == {new_set}  # the old set went with the switch
        rows = lineage(conn, schema, "acme", doc_id="cold.txt")
        assert len(rows) == 24 and all(
            r["model_key"] == new and r["dims"] == 768 and r["chunker_version"] == new_set and r["serving"]
            for r in rows
        )
        exact = search(conn, schema, target, "acme", "POISON", k=1)[0]  # the stand-in's vectors match exact text
        assert (exact.doc_id, exact.model_key, round(exact.score, 4)) == ("poison.txt", new, 1.0)
        vt_type = conn.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = to_regclass(%s) "
            "AND attname = 'embedding'",
            (f"{schema}.{target.identity.vector_table}",),
        ).fetchone()
        assert vt_type == ("vector(768)",)
        # the old model's vectors are kept (for switching back) and another tenant was never touched
        assert count(conn, schema, provider.identity.vector_table, "acme") == old_vectors + 1
        assert vector_rows(conn, schema, provider.identity.vector_table, "other") == other_before

        # switching back before retiring is instant: the old set comes back with its ids, nothing is embedded
        update_tenant(conn, schema, "acme", model="")
        (back,) = materialize_tenants(["acme"], instance=instance)
        assert back.success and back.metadata["embedded"] == 0 and back.metadata["chunks"] == 14
        assert tenant_settings(conn, schema, "acme").active_chunk_set == old_set
        assert hits_model(conn, schema) == {old}
    assert retire_model(conn, schema, new) == 26  # 24 + POISON + news
    assert {m["model_key"]: m["status"] for m in list_models(conn, schema)}[new] == "retired"


def sets(conn, schema, tenant="acme") -> dict[str, int]:
    rows = conn.execute(
        f"SELECT chunker_version, count(*) FROM {schema}.chunks WHERE tenant_id = %s GROUP BY 1",  # noqa: S608
        (tenant,),
    ).fetchall()
    return dict(rows)


def test_retention_retires_a_model_only_once_no_tenant_has_searched_with_it_for_long_enough(
    conn, schema, provider, monkeypatch
):
    from embeddings_pipeline.definitions import defs as load_defs

    defs = load_defs()

    instance = dg.DagsterInstance.ephemeral()
    for tenant in ("acme", "globex"):
        seed(conn, schema, tenant, {"a.txt": f"{tenant}: vaccines are kept at four degrees."}, fmt="text")
    assert all(r.success for r in materialize_tenants(["acme", "globex"], instance=instance))
    old, new = provider.identity.model_key, model_change.default_loader(NEW).identity.model_key
    runner = CliRunner()

    def released(key: str):
        return {m["model_key"]: m["released_at"] for m in list_models(conn, schema)}[key]

    def age(key: str, days: int) -> None:  # let time pass for the model's release
        conn.execute(
            f"UPDATE {schema}.embedding_models SET released_at = released_at - make_interval(days => %s) "  # noqa: S608
            "WHERE model_key = %s",
            (days, key),
        )

    def retention_job() -> dict[str, int]:
        result = defs.resolve_job_def("model_retention").execute_in_process(instance=instance)
        assert result.success
        return result.output_for_node("retire_expired_models")

    update_tenant(conn, schema, "acme", model=NEW)
    assert materialize_tenants(["acme"], instance=instance)[0].success
    assert released(old) is None and released(new) is None  # globex still searches with the old model

    update_tenant(conn, schema, "globex", model=NEW)
    assert materialize_tenants(["globex"], instance=instance)[0].success
    assert released(old) is not None and released(new) is None
    age(old, 10)
    assert retention_job() == {}  # retention unset: nothing is ever retired by itself
    monkeypatch.setenv("EMBEDDINGS_MODEL_RETENTION_DAYS", "30")
    assert retention_job() == {}  # not out of service for long enough

    age(old, 25)
    dry = runner.invoke(main, ["models", "prune", "--dry-run", "--json"], catch_exceptions=False)
    assert json.loads(dry.output)["models"] == {old: 2}
    assert {m["model_key"]: m["status"] for m in list_models(conn, schema)}[old] == "active"  # dry run kept it
    assert retention_job() == {old: 2}
    assert {m["model_key"]: m["status"] for m in list_models(conn, schema)} == {old: "retired", new: "active"}
    assert hits_model(conn, schema, "globex") == {new}

    # a retired model comes back when a tenant switches to it again: it is re-embedded and serves again
    update_tenant(conn, schema, "globex", model="")
    (back,) = materialize_tenants(["globex"], instance=instance)
    assert back.success and back.metadata["embedded"] == 1 and hits_model(conn, schema, "globex") == {old}
    assert released(old) is None and released(new) is None  # acme still searches with the new model


def test_model_change_sensor_requests_a_run_when_a_tenants_model_changes(conn, schema, provider, store, monkeypatch):
    from embeddings_pipeline.defs.assets import REASON_TAG
    from embeddings_pipeline.defs.sensors import model_change_sensor

    instance = dg.DagsterInstance.ephemeral()
    seed(conn, schema, "acme", {"a.txt": "Vaccines are kept at four degrees."}, fmt="text")
    seed(conn, schema, "globex", {"g.txt": "Pallets are stacked three high."}, fmt="text")
    assert all(r.success for r in materialize_tenants(["acme", "globex"], instance=instance))

    def tick(cursor):
        with dg.build_sensor_context(instance=instance, resources={"store": store}, cursor=cursor) as ctx:
            result = model_change_sensor(ctx)
        return [r.partition_key for r in result.run_requests or []], result, result.cursor

    requested, _, cursor = tick(None)
    assert requested == []  # every tenant searches with the model it should use
    update_tenant(conn, schema, "acme", model=NEW)
    requested, result, cursor = tick(cursor)
    assert requested == ["acme"] and result.run_requests[0].tags[REASON_TAG] == "model_change"
    assert tick(cursor)[0] == []  # requested once, not at every tick while it runs

    (run,) = materialize_tenants(["acme"], instance=instance)
    assert run.success and tenant_settings(conn, schema, "acme").active_model_key == run.metadata["model_key"]
    requested, _, cursor = tick(cursor)
    assert requested == [] and json.loads(cursor)["requested"] == {}
    update_tenant(conn, schema, "acme", model="")  # back to the default
    requested, _, cursor = tick(cursor)
    assert requested == ["acme"]

    # a new EMBEDDINGS_MODEL is a new code version: the automation rebuilds tenants on the default, not this sensor
    monkeypatch.setenv("EMBEDDINGS_MODEL", NEW)
    requested, _, cursor = tick(cursor)
    assert requested == []
    update_tenant(conn, schema, "globex", model="sentence-transformers:all-MiniLM-L6-v2")  # pinned to the old one
    assert tick(cursor)[0] == []  # ... which is what it searches with already


def test_backfill_of_another_model_fills_it_without_switching_search(conn, schema, provider):
    from embeddings_pipeline.defs.assets import MODEL_TAG

    instance = dg.DagsterInstance.ephemeral()
    seed(conn, schema, "acme", {"a.txt": "Vaccines are kept at four degrees."}, fmt="text")
    seed(conn, schema, "beta", {"b.txt": "Pallets are stacked three high."}, fmt="text")
    update_tenant(conn, schema, "beta", model=NEW)  # registers NEW (with its spec) by using it
    assert all(r.success for r in materialize_tenants(["acme", "beta"], instance=instance))
    new = tenant_settings(conn, schema, "beta").active_model_key
    assert new != provider.identity.model_key

    (run,) = materialize_tenants(["acme"], instance=instance, tags={MODEL_TAG: new})
    assert run.success and run.metadata["model_key"] == new and run.metadata["embedded"] == 1
    assert tenant_settings(conn, schema, "acme").active_model_key == provider.identity.model_key  # not switched
    coverage = {m["model_key"]: m["tenants"].get("acme") for m in list_models(conn, schema)}
    assert coverage[new]["coverage_pct"] == 100.0 and not coverage[new]["active"]
    assert hits_model(conn, schema) == {provider.identity.model_key}


TOPICS = ["vaccine storage", "forklift batteries", "invoice disputes", "fire drills", "parking permits",
          "server backups", "coffee machines", "badge access", "holiday rota", "printer toner",
          "loading docks", "sick leave", "bicycle racks", "visitor wifi", "recycling bins"]  # fmt: skip


def test_quality_gate_keeps_a_worse_model_from_taking_over(conn, schema, provider, monkeypatch, tmp_path):
    monkeypatch.setenv("EMBEDDINGS_RETRY_BASE_DELAY", "0.01")
    instance = dg.DagsterInstance.ephemeral()
    docs = {f"d{i}.txt": f"Policy on {topic}: who to ask and what the rules on {topic} are." for i, topic in
            enumerate(TOPICS)}  # fmt: skip
    seed(conn, schema, "acme", docs, fmt="text")
    assert materialize_tenants(["acme"], instance=instance)[0].success
    dataset = tmp_path / "golden"
    (dataset / "qrels").mkdir(parents=True)
    (dataset / "queries.jsonl").write_text(
        "\n".join(json.dumps({"_id": f"q{i}", "text": f"rules about {t}"}) for i, t in enumerate(TOPICS))
    )
    (dataset / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}.txt\t1\n" for i in range(len(TOPICS)))
    )
    runner = CliRunner()
    loaded = runner.invoke(main, ["gate", "set", str(dataset), "--tenant", "acme"], catch_exceptions=False)
    assert f"{len(TOPICS)} quality queries" in loaded.output
    shown = json.loads(runner.invoke(main, ["gate", "show", "--tenant", "acme", "--json"]).output)
    assert shown == {"tenant": "acme", "queries": len(TOPICS), "max_drop": 0.02}

    with StandinServer(dims=384) as srv:  # its vectors are hashes of the text: fully embedded, useless for search
        monkeypatch.setenv("OLLAMA_HOST", srv.url)
        update_tenant(conn, schema, "acme", model="ollama:nomic-embed-text")
        (run,) = materialize_tenants(["acme"], instance=instance)
        assert run.success and run.metadata["coverage_pct"] == 100.0  # the gate is an alert, not a failed run
        assert run.checks["quality_gate"] is False and run.metadata["quality_gate_passed"] is False
        assert run.metadata["quality_active_ndcg10"] > 0.9 > run.metadata["quality_candidate_ndcg10"] + 0.3
        assert tenant_settings(conn, schema, "acme").active_model_key == provider.identity.model_key
        assert hits_model(conn, schema) == {provider.identity.model_key}

        # a person who knows better switches anyway; a model that is not filled is refused
        bad = run.metadata["model_key"]
        unknown = runner.invoke(main, ["models", "activate", bad, "--tenant", "acme", "--tenant", "nobody"])
        assert unknown.exit_code == 2 and "no tenant 'nobody'" in unknown.output
        seed(conn, schema, "beta", {"b.txt": "Pallets are stacked three high."}, fmt="text")  # not filled by `bad`
        refused = runner.invoke(main, ["models", "activate", bad, "--tenant", "acme", "--tenant", "beta"])
        assert refused.exit_code == 1 and "covers 0 of 0" in refused.output
        assert tenant_settings(conn, schema, "acme").active_model_key == provider.identity.model_key
        assert len(sets(conn, schema)) == 2  # the stand-in splits on its own tokenizer: its chunk set is beside
        forced = runner.invoke(main, ["models", "activate", bad, "--tenant", "acme"], catch_exceptions=False)
        assert forced.exit_code == 0 and tenant_settings(conn, schema, "acme").active_model_key == bad
        # the switch by hand drops the chunk set search read until then, as the automatic switch does
        assert set(sets(conn, schema)) == {tenant_settings(conn, schema, "acme").active_chunk_set}

        # going back to the default passes the gate and switches at once, even with the active provider down
        srv.faults.down = True
        update_tenant(conn, schema, "acme", model="")
        (back,) = materialize_tenants(["acme"], instance=instance)
        assert back.checks["quality_gate"] and back.metadata["quality_gate_passed"]
        assert back.metadata["quality_active_ndcg10"] == 0.0 and "could not be scored" in back.metadata["quality_note"]
        assert tenant_settings(conn, schema, "acme").active_model_key == provider.identity.model_key
