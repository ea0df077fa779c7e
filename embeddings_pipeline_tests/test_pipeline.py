"""The pipeline end to end through real Dagster runs, real PostgreSQL + pgvector and the real model."""

from __future__ import annotations

import dagster as dg
import pytest

from embeddings_pipeline.cli.runner import materialize_tenants
from embeddings_pipeline.config import InvalidTenantId
from embeddings_pipeline.search import search
from embeddings_pipeline.store.db import connection, tenant_lock
from embeddings_pipeline.store.documents import delete_documents
from embeddings_pipeline.store.status import tenant_status

from .helpers import chunks_of, count, seed, vector_rows

ROBOTS = """# Fleet handbook

## Charging

Robots charge at the docks overnight; each dock serves two robots and reports its temperature.

## Navigation

The planner avoids aisles that are blocked by pallets and reroutes within two seconds.

| robot | zone |
| --- | --- |
| r1 | north |
| r2 | south |
"""

CLINIC = """# Clinical data

## Consent

Patients sign a consent form before their lab results are shared with researchers.

## Retention

Lab results are kept for seven years and then anonymised.
"""


@pytest.fixture()
def instance() -> dg.DagsterInstance:
    return dg.DagsterInstance.ephemeral()


def _ok(runs) -> dict[str, dict]:
    assert all(r.success for r in runs), [r.error for r in runs]
    return {r.tenant: r.metadata for r in runs}


def test_two_tenants_fully_embedded_with_lineage(conn, schema, provider, instance):
    seed(conn, schema, "acme", {"handbook.md": ROBOTS})
    seed(conn, schema, "globex", {"clinic.md": CLINIC})
    runs = materialize_tenants(["acme", "globex"], instance=instance)
    meta = _ok(runs)
    vt = provider.identity.vector_table
    for run in runs:
        st = tenant_status(conn, schema, run.tenant, provider.identity.model_key)
        assert st.chunks > 0 and st.vectors == st.chunks and st.missing == 0 and st.stale == 0
        assert meta[run.tenant]["embedded"] == st.chunks
        assert meta[run.tenant]["coverage_pct"] == 100.0
        rows = vector_rows(conn, schema, vt, run.tenant)
        assert {r[1] for r in rows.values()} == {run.run_id}
        assert {r[3] for r in rows.values()} == {provider.identity.model_key}
    # the run shows in Dagster with the model in tags and metadata
    event = instance.get_latest_materialization_event(dg.AssetKey("embeddings"))
    assert event is not None
    assert event.asset_materialization.tags["embedding_model"] == provider.identity.model_key
    assert instance.get_dynamic_partitions("tenant") == ["acme", "globex"]


def test_editing_one_paragraph_reembeds_only_its_chunks(conn, schema, provider, instance):
    seed(conn, schema, "acme", {"handbook.md": ROBOTS})
    first = materialize_tenants(["acme"], instance=instance)[0]
    before = vector_rows(conn, schema, provider.identity.vector_table, "acme")
    edited = ROBOTS.replace("reroutes within two seconds", "reroutes within half a second")
    seed(conn, schema, "acme", {"handbook.md": edited})
    second = materialize_tenants(["acme"], instance=instance)[0]
    after = vector_rows(conn, schema, provider.identity.vector_table, "acme")
    chunks = chunks_of(conn, schema, "acme")
    changed = {cid for cid, (_, text) in chunks.items() if "half a second" in text}
    assert len(changed) == 1 and second.metadata["embedded"] == 1
    for cid, (_hash, run_id, embedded_at, _model) in after.items():
        if cid in changed:
            assert run_id == second.run_id and cid not in before
        else:
            assert (run_id, embedded_at) == (first.run_id, before[cid][2])
    assert len(after) == len(before) == len(chunks)


def test_noop_run_embeds_nothing_and_reingest_changes_nothing(conn, schema, provider, instance):
    seed(conn, schema, "acme", {"handbook.md": ROBOTS})
    _ok(materialize_tenants(["acme"], instance=instance))
    updated = conn.execute(f"SELECT updated_at FROM {schema}.documents").fetchone()  # noqa: S608
    seed(conn, schema, "acme", {"handbook.md": ROBOTS})
    assert conn.execute(f"SELECT updated_at FROM {schema}.documents").fetchone() == updated  # noqa: S608
    meta = _ok(materialize_tenants(["acme"], instance=instance))["acme"]
    assert meta["embedded"] == 0 and meta["deleted"] == 0 and meta["reused"] == meta["chunks"] > 0


def test_same_text_in_a_new_place_is_not_reembedded(conn, schema, provider, instance):
    seed(conn, schema, "acme", {"handbook.md": ROBOTS})
    _ok(materialize_tenants(["acme"], instance=instance))
    # the same content under another doc id: new chunk ids, same texts
    delete_documents(conn, schema, "acme", ["handbook.md"])
    seed(conn, schema, "acme", {"moved/handbook.md": ROBOTS})
    meta = _ok(materialize_tenants(["acme"], instance=instance))["acme"]
    assert meta["embedded"] == 0 and meta["copied_by_hash"] == meta["chunks"] > 0
    assert {d for d, _ in chunks_of(conn, schema, "acme").values()} == {"moved/handbook.md"}


def test_deleting_a_document_removes_blocks_chunks_and_vectors(conn, schema, provider, instance):
    seed(conn, schema, "acme", {"handbook.md": ROBOTS, "other.md": CLINIC})
    _ok(materialize_tenants(["acme"], instance=instance))
    assert delete_documents(conn, schema, "acme", ["handbook.md"]) == 1
    meta = _ok(materialize_tenants(["acme"], instance=instance))["acme"]
    assert meta["deleted"] > 0
    for name in ("blocks", "chunks"):
        assert conn.execute(
            f"SELECT count(*) FROM {schema}.{name} WHERE doc_id = 'handbook.md'"  # noqa: S608
        ).fetchone() == (0,)
    vt = provider.identity.vector_table
    assert set(vector_rows(conn, schema, vt, "acme")) == set(chunks_of(conn, schema, "acme"))
    assert count(conn, schema, "chunks", "acme") > 0


def test_search_never_crosses_tenants(conn, schema, provider, instance):
    seed(conn, schema, "acme", {"handbook.md": ROBOTS})
    seed(conn, schema, "globex", {"clinic.md": CLINIC})
    _ok(materialize_tenants(["acme", "globex"], instance=instance))
    acme_chunks = set(chunks_of(conn, schema, "acme"))
    # a query about globex's content, asked in acme, with k larger than acme's whole corpus
    hits = search(conn, schema, provider, "acme", "how long are lab results kept?", k=50)
    assert hits and {h.chunk_id for h in hits} <= acme_chunks
    top = search(conn, schema, provider, "globex", "how long are lab results kept?", k=1)[0]
    assert "seven years" in top.text and top.doc_id == "clinic.md"


ODD_TENANTS = [
    'o\'brien "quoted"',
    "a/b\\c",
    "ünïcødé-テナント",
    "'; DROP TABLE documents; --",
    "x" * 128,
    "spaces inside id",
]


def test_odd_tenant_ids_work(conn, schema, provider, instance):
    for t in ODD_TENANTS:
        seed(conn, schema, t, {f"{t}.md": f"# {t}\n\nNotes of tenant {t} about shipping containers."})
    _ok(materialize_tenants(ODD_TENANTS, instance=instance))
    for t in ODD_TENANTS:
        st = tenant_status(conn, schema, t, provider.identity.model_key)
        assert st.documents == 1 and st.chunks > 0 and st.missing == 0
        hits = search(conn, schema, provider, t, "shipping containers", k=5)
        assert hits and {h.doc_id for h in hits} == {f"{t}.md"}


@pytest.mark.parametrize("bad", ["", "   ", "x" * 129, "line\nbreak", "tab\tid", "a...b", " lead", "nul\x00"])
def test_invalid_tenant_ids_are_refused_clearly(conn, schema, bad):
    with pytest.raises(InvalidTenantId):
        seed(conn, schema, bad, {"a.md": "text"})
    assert conn.execute(f"SELECT count(*) FROM {schema}.documents").fetchone() == (0,)  # noqa: S608


def test_one_tenant_failing_does_not_stop_the_others(conn, schema, pg_url, provider, instance, monkeypatch):
    seed(conn, schema, "busy", {"a.md": ROBOTS})
    seed(conn, schema, "free", {"b.md": CLINIC})
    monkeypatch.setenv("EMBEDDINGS_LOCK_TIMEOUT", "0.5")
    with connection(pg_url) as other, tenant_lock(other, schema, "busy"):
        runs = {r.tenant: r for r in materialize_tenants(["busy", "free"], instance=instance)}
    assert not runs["busy"].success and "locked by another run" in (runs["busy"].error or "")
    assert runs["free"].success
    assert tenant_status(conn, schema, "free", provider.identity.model_key).missing == 0
    # the busy tenant catches up on its next run
    _ok(materialize_tenants(["busy"], instance=instance))


def test_bad_documents_lose_nothing(conn, schema, provider, instance):
    huge = " ".join(f"word{i}" for i in range(30_000))
    seed(
        conn,
        schema,
        "acme",
        {
            "nul.md": "# Nul\n\nbefore\x00after the nul byte",
            "empty.md": "",
            "broken.md": "# Broken\n\n```python\nunclosed fence\n| a | b\n|--|\n<div>",
            "huge.txt": huge,
        },
    )
    _ok(materialize_tenants(["acme"], instance=instance))
    st = tenant_status(conn, schema, "acme", provider.identity.model_key)
    assert st.documents == 4 and st.missing == 0 and st.stale == 0
    texts = [t for _, t in chunks_of(conn, schema, "acme").values()]
    assert any("before\ufffdafter" in t for t in texts)
    assert any("unclosed fence" in t for t in texts)
    words = set()
    for t in texts:
        words.update(w for w in t.split() if w.startswith("word"))
    assert len(words) == 30_000  # every word of the huge document is in some chunk
    longest = conn.execute(f"SELECT max(token_count) FROM {schema}.chunks").fetchone()  # noqa: S608
    assert longest is not None and longest[0] <= provider.identity.max_tokens


def test_changing_the_overflow_policy_rechunks_and_embeds_only_new_texts(conn, schema, provider, instance):
    from embeddings_pipeline.store.tenants import set_chunk_overflow

    long = " ".join(f"Sentence {i} describes how the forklift battery {i} is charged." for i in range(60))
    seed(conn, schema, "acme", {"a.txt": f"Short intro.\n\n{long}\n\nShort outro."}, fmt="text")
    split = _ok(materialize_tenants(["acme"], instance=instance))["acme"]
    assert split["chunks"] >= 4  # the long paragraph was split
    set_chunk_overflow(conn, schema, "acme", "truncate")
    truncated = _ok(materialize_tenants(["acme"], instance=instance))["acme"]
    assert truncated["chunks"] == 3 and truncated["embedded"] == 1 and truncated["reused"] == 2
    versions = conn.execute(f"SELECT DISTINCT chunker_version FROM {schema}.chunks").fetchall()  # noqa: S608
    assert [v[0].endswith(":truncate") for v in versions] == [True]
