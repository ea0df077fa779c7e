"""Bad rows in an application's source view (unknown format, NULL body, NULL updated_at, a duplicate doc_id) are
recorded per document with their reason, the rest of the tenant is embedded, and the counts show in `status`, in a
check and in the sweep; an error clears when its row becomes good or leaves the source."""

from __future__ import annotations

import dagster as dg
import pytest

from embeddings_pipeline.cli.runner import materialize_tenants
from embeddings_pipeline.defs.sensors import new_content_sensor
from embeddings_pipeline.store.changes import Watermark, changes_since
from embeddings_pipeline.store.status import tenant_status

TABLE = """
CREATE TABLE {s}.app_notes (tenant text, slug text, body text, kind text,
                            changed timestamptz DEFAULT clock_timestamp(), removed boolean NOT NULL DEFAULT false)
"""
VIEW = """
CREATE VIEW {s}.note_docs AS
SELECT tenant AS tenant_id, slug AS doc_id, ''::text AS title, body, kind AS format, '{{}}'::jsonb AS metadata,
       changed AS updated_at, CASE WHEN removed THEN changed END AS deleted_at
  FROM {s}.app_notes
"""
GOOD = [
    ("good-1", "The forklift battery is swapped every Monday.", "text"),
    ("good-2", "# Dock\n\nTrucks arrive at dock four before noon.", "markdown"),
]


@pytest.fixture()
def notes(conn, schema, monkeypatch):
    conn.execute(TABLE.format(s=schema))
    conn.execute(VIEW.format(s=schema))
    monkeypatch.setenv("EMBEDDINGS_SOURCE_RELATION", "note_docs")

    def add(tenant: str, slug: str, body: str | None, kind: str | None = "text", *, changed: str = "now") -> None:
        conn.execute(
            f"INSERT INTO {schema}.app_notes (tenant, slug, body, kind, changed) "  # noqa: S608
            "VALUES (%s, %s, %s, %s, CASE WHEN %s = 'null' THEN NULL ELSE clock_timestamp() END)",
            (tenant, slug, body, kind, changed),
        )

    return add


def add_bad_rows(add) -> None:
    for slug, body, kind in GOOD:
        add("acme", slug, body, kind)
    add("acme", "bad-format", "<p>An HTML note.</p>", "html")
    add("acme", "null-body", None)
    add("acme", "null-updated", "Its row has no timestamp.", changed="null")
    add("acme", "dup", "The first copy.")
    add("acme", "dup", "The second copy.")


def errors_of(conn, schema, tenant="acme") -> dict[str, str]:
    query = f"SELECT doc_id, reason FROM {schema}.document_errors WHERE tenant_id = %s"  # noqa: S608
    return dict(conn.execute(query, (tenant,)).fetchall())


def chunked_docs(conn, schema, tenant="acme") -> set[str]:
    rows = conn.execute(f"SELECT DISTINCT doc_id FROM {schema}.chunks WHERE tenant_id = %s", (tenant,)).fetchall()  # noqa: S608
    return {r[0] for r in rows}


def test_bad_rows_are_recorded_and_the_rest_is_embedded(notes, conn, schema, provider):
    add_bad_rows(notes)
    instance = dg.DagsterInstance.ephemeral()
    (run,) = materialize_tenants(["acme"], instance=instance)

    assert run.success, run.error
    assert chunked_docs(conn, schema) == {"good-1", "good-2"}
    assert run.metadata["embedded"] > 0 and run.metadata["failed"] == 0
    errors = errors_of(conn, schema)
    assert set(errors) == {"bad-format", "null-body", "null-updated", "dup"}
    assert "html" in errors["bad-format"]
    assert "body" in errors["null-body"]
    assert "updated_at" in errors["null-updated"]
    assert "duplicate" in errors["dup"]

    # not silent: status counts them, the warning check fails with examples, the sweep sees the missing documents
    st = tenant_status(conn, schema, "acme", provider.identity.model_key)
    assert (st.document_errors, st.documents_not_chunked) == (4, 4)
    assert st.missing == 4 and st.vectors == st.chunks
    assert run.checks["source_rows_valid"] is False and run.checks["no_missing_vectors"] is True

    # fix every row: the errors clear and everything is embedded
    conn.execute(f"UPDATE {schema}.app_notes SET kind = 'text' WHERE slug = 'bad-format'")  # noqa: S608
    conn.execute(f"UPDATE {schema}.app_notes SET body = 'Now it has a body.' WHERE slug = 'null-body'")  # noqa: S608
    conn.execute(f"UPDATE {schema}.app_notes SET changed = clock_timestamp() WHERE slug = 'null-updated'")  # noqa: S608
    conn.execute(f"DELETE FROM {schema}.app_notes WHERE slug = 'dup' AND body = 'The second copy.'")  # noqa: S608
    (again,) = materialize_tenants(["acme"], instance=instance)
    assert again.success, again.error
    assert errors_of(conn, schema) == {}
    assert chunked_docs(conn, schema) == {"good-1", "good-2", "bad-format", "null-body", "null-updated", "dup"}
    st = tenant_status(conn, schema, "acme", provider.identity.model_key)
    assert (st.document_errors, st.documents_not_chunked, st.missing) == (0, 0, 0)
    assert again.checks["source_rows_valid"] is True


def test_a_good_row_that_turns_bad_keeps_its_vectors_until_it_is_fixed_or_removed(notes, conn, schema, provider):
    for slug, body, kind in GOOD:
        notes("acme", slug, body, kind)
    instance = dg.DagsterInstance.ephemeral()
    assert materialize_tenants(["acme"], instance=instance)[0].success
    vectors_before = tenant_status(conn, schema, "acme", provider.identity.model_key).vectors

    conn.execute(f"UPDATE {schema}.app_notes SET body = NULL, changed = clock_timestamp() WHERE slug = 'good-1'")  # noqa: S608
    (run,) = materialize_tenants(["acme"], instance=instance)
    assert run.success and run.checks["source_rows_valid"] is False
    assert set(errors_of(conn, schema)) == {"good-1"}
    st = tenant_status(conn, schema, "acme", provider.identity.model_key)
    assert (st.vectors, st.missing, st.document_errors) == (vectors_before, 0, 1)  # the last good text still serves
    first_seen = conn.execute(f"SELECT first_seen_at, last_seen_at FROM {schema}.document_errors").fetchone()  # noqa: S608

    assert materialize_tenants(["acme"], instance=instance)[0].success
    seen = conn.execute(f"SELECT first_seen_at, last_seen_at FROM {schema}.document_errors").fetchone()  # noqa: S608
    assert seen[0] == first_seen[0] and seen[1] > first_seen[1]  # still bad: seen again, not forgotten

    conn.execute(f"UPDATE {schema}.app_notes SET removed = true, changed = clock_timestamp() WHERE slug = 'good-1'")  # noqa: S608
    assert materialize_tenants(["acme"], instance=instance)[0].success
    assert errors_of(conn, schema) == {}
    assert chunked_docs(conn, schema) == {"good-2"}


def test_null_updated_at_does_not_break_or_stall_the_sensor(notes, conn, schema, store, monkeypatch):
    notes("acme", "good-1", "A row with a timestamp.")
    notes("acme", "no-time", "A row without one.", changed="null")
    notes("globex", "only-null", "The tenant's only row has no timestamp.", changed="null")
    page = changes_since(conn, schema, Watermark(), lag_seconds=0)
    assert (page.rows, set(page.tenants)) == (1, {"acme"})
    assert changes_since(conn, schema, page.watermark, lag_seconds=0).rows == 0

    monkeypatch.setenv("EMBEDDINGS_SENSOR_LAG_SECONDS", "0")
    with dg.instance_for_test() as instance:

        def tick(cursor):
            with dg.build_sensor_context(instance=instance, resources={"store": store}, cursor=cursor) as ctx:
                return new_content_sensor(ctx)

        first = tick(None)
        assert [e.partition for e in first.asset_events] == ["acme"]
        assert isinstance(tick(first.cursor), dg.SkipReason)  # nothing new: no loop over the NULL rows
        notes("acme", "good-2", "A later row.")
        later = tick(first.cursor)
        assert [e.metadata["documents_changed"].value for e in later.asset_events] == [1]  # not stuck behind them
