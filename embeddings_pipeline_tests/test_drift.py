"""Schema drift behind the pipeline's back: the sweep reports the loss, the next run repairs and re-embeds."""

from __future__ import annotations

import dagster as dg
import pytest

from embeddings_pipeline.cli.runner import materialize_tenants
from embeddings_pipeline.store import promotion, vector_tables
from embeddings_pipeline.store.status import tenant_status

from .helpers import seed

DOC = "\n\n".join(f"Paragraph {i}: shelf {i} holds spare wheels." for i in range(5))


@pytest.fixture()
def two_tenants(conn, schema, provider):
    seed(conn, schema, "acme", {"a.txt": DOC}, fmt="text")
    seed(conn, schema, "globex", {"g.txt": DOC.replace("wheels", "belts")}, fmt="text")
    instance = dg.DagsterInstance.ephemeral()
    assert all(r.success for r in materialize_tenants(["acme", "globex"], instance=instance))
    return instance


def sweep(instance):
    from embeddings_pipeline.definitions import defs as load_defs

    defs = load_defs()

    result = defs.resolve_job_def("vector_sweep").execute_in_process(instance=instance)
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


@pytest.mark.parametrize(
    "damage",
    [
        "ALTER TABLE {vt} DROP COLUMN embedding",
        "DROP TABLE {vt}",
        "ALTER TABLE {vt} DROP COLUMN content_hash",
    ],
)
def test_dropped_storage_is_reported_then_repaired(two_tenants, conn, schema, provider, damage):
    vt = f"{schema}.{provider.identity.vector_table}"
    conn.execute(damage.format(vt=vt))
    evaluation = sweep(two_tenants)
    if "content_hash" not in damage:  # vectors gone: every chunk of both tenants is missing
        assert not evaluation.passed
        assert evaluation.metadata["missing_by_tenant"].value == {"acme": 5, "globex": 5}
        assert "vector storage of" in evaluation.metadata["storage_damage"].value

    (run,) = materialize_tenants(["acme"], instance=two_tenants)
    assert run.success and run.metadata["embedded"] == 5  # re-embedded what was lost
    key = provider.identity.model_key
    assert tenant_status(conn, schema, "acme", key).missing == 0
    if "content_hash" not in damage:
        assert tenant_status(conn, schema, "globex", key).missing == 5  # repaired storage, its run comes next
    assert materialize_tenants(["globex"], instance=two_tenants)[0].success
    assert tenant_status(conn, schema, "globex", key).missing == 0
    assert sweep(two_tenants).passed


def test_dropped_index_and_retyped_column_are_restored(two_tenants, conn, schema, provider, monkeypatch):
    key = provider.identity.model_key
    vt = f"{schema}.{provider.identity.vector_table}"
    monkeypatch.setenv("EMBEDDINGS_TENANT_INDEX_THRESHOLD", "2")  # acme gets its own partition and HNSW graph
    assert promotion.promote_large(conn, schema, key, "acme") == ["acme"]
    hnsw = f"{vector_tables.tenant_partition(key, 'acme')}_hnsw"
    conn.execute(f"DROP INDEX {schema}.{hnsw}")
    conn.execute(f"ALTER TABLE {vt} ALTER COLUMN embedding TYPE vector")
    conn.execute(f"UPDATE {vt} SET embedding = '[1,2,3]' WHERE tenant_id = 'acme' AND chunk_id IN "  # noqa: S608
                 f"(SELECT chunk_id FROM {vt} WHERE tenant_id = 'acme' LIMIT 1)")  # fmt: skip
    (run,) = materialize_tenants(["acme"], instance=two_tenants)
    assert run.success and run.metadata["embedded"] == 1  # only the wrong-sized vector was redone
    column_type = conn.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass "
        "AND attname = 'embedding'",
        (vt,),
    ).fetchone()
    assert column_type == ("vector(384)",)
    index = conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", (hnsw,)).fetchone()
    assert index is not None and "hnsw" in index[0]
    assert tenant_status(conn, schema, "globex", key).missing == 0  # globex's vectors were kept throughout


CORE_DAMAGE = [
    "DROP TABLE {s}.chunks",
    "ALTER TABLE {s}.chunks DROP COLUMN token_count",
    "ALTER TABLE {s}.blocks ALTER COLUMN ordinal TYPE bigint",
    "DROP INDEX {s}.chunks_set_idx; DROP INDEX {s}.blocks_doc_idx",
    "ALTER TABLE {s}.tenants DROP COLUMN chunk_overflow",
    "DROP TABLE {s}.parsed_documents",
]


@pytest.mark.parametrize("damage", CORE_DAMAGE)
def test_damaged_pipeline_tables_are_rebuilt_and_nothing_is_re_embedded(
    two_tenants, conn, schema, provider, store, damage
):
    from embeddings_pipeline.store.repair import describe, reference

    key = provider.identity.model_key
    vectors_before = vector_count(conn, schema, provider)
    conn.execute(damage.format(s=schema))
    runs = materialize_tenants(["acme", "globex"], instance=two_tenants)
    assert all(r.success for r in runs), [r.error for r in runs]
    assert all(r.metadata["embedded"] == 0 for r in runs)  # chunk ids are deterministic: every vector was found
    for tenant in ("acme", "globex"):
        st = tenant_status(conn, schema, tenant, key)
        assert (st.chunks, st.vectors, st.missing, st.stale) == (5, 5, 0, 0)
    actual, ref = describe(conn, schema), reference(conn)
    assert all(actual.columns[t] == cols for t, cols in ref.columns.items())
    assert all(actual.indexes[i] == d for i, d in ref.indexes.items())
    assert vector_count(conn, schema, provider) == vectors_before
    assert sweep(two_tenants).passed


def test_a_dropped_source_table_is_an_error_and_nothing_is_touched(two_tenants, conn, schema, provider):
    conn.execute(f"DROP TABLE {schema}.documents")
    (run,) = materialize_tenants(["acme"], instance=two_tenants)
    assert not run.success and "restore it from a backup" in run.error
    assert conn.execute(f"SELECT to_regclass('{schema}.documents')").fetchone() == (None,)  # not recreated empty
    assert vector_count(conn, schema, provider) == 10  # every vector kept


def vector_count(conn, schema, provider) -> int:
    row = conn.execute(f"SELECT count(*) FROM {schema}.{provider.identity.vector_table}").fetchone()  # noqa: S608
    return int(row[0])
