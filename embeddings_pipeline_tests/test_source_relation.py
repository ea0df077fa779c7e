"""An application's own table as the source, mapped with one CREATE VIEW (EMBEDDINGS_SOURCE_RELATION). A change to
the view that changes the text re-embeds; an unrelated new column does not."""

from __future__ import annotations

import dagster as dg

from embeddings_pipeline.cli.runner import materialize_tenants
from embeddings_pipeline.defs.assets import REASON_TAG
from embeddings_pipeline.defs.sensors import schema_change_sensor
from embeddings_pipeline.store.status import tenant_status

VIEW = """
CREATE OR REPLACE VIEW {s}.insight_docs AS
SELECT tenant AS tenant_id, id::text AS doc_id, ''::text AS title, {body} AS body, 'text'::text AS format,
       '{{}}'::jsonb AS metadata, updated_at, NULL::timestamptz AS deleted_at
  FROM {s}.workflow_insights
"""


def test_app_table_through_a_view(conn, schema, store, provider, monkeypatch):
    conn.execute(
        f"CREATE TABLE {schema}.workflow_insights (tenant text, id int, summary text, details text, "
        "updated_at timestamptz DEFAULT clock_timestamp(), PRIMARY KEY (tenant, id))"
    )
    conn.execute(VIEW.format(s=schema, body="summary"))
    conn.execute(
        f"INSERT INTO {schema}.workflow_insights (tenant, id, summary, details) VALUES "  # noqa: S608
        "('acme', 1, 'Churn rose in March.', 'Mostly small accounts.'), "
        "('acme', 2, 'Support tickets fell.', 'After the new FAQ.'), "
        "('acme', 3, 'Renewals are up.', 'Enterprise tier.')"
    )
    monkeypatch.setenv("EMBEDDINGS_SOURCE_RELATION", "insight_docs")
    instance = dg.DagsterInstance.ephemeral()
    (first,) = materialize_tenants(["acme"], instance=instance)
    assert first.success and first.metadata["embedded"] == 3
    assert tenant_status(conn, schema, "acme", provider.identity.model_key).documents == 3

    with dg.instance_for_test() as sensor_instance:
        sensor_instance.add_dynamic_partitions("tenant", ["acme"])

        def look(cursor):
            with dg.build_sensor_context(instance=sensor_instance, resources={"store": store}, cursor=cursor) as ctx:
                return schema_change_sensor(ctx)

        baseline = look(None).cursor
        conn.execute(f"ALTER TABLE {schema}.workflow_insights ADD COLUMN owner text")  # unrelated to the text
        unrelated = look(baseline)
        assert [r.partition_key for r in unrelated.run_requests] == ["acme"]
        (run,) = materialize_tenants(["acme"], instance=instance, tags=dict(unrelated.run_requests[0].tags))
        assert run.success and run.metadata["embedded"] == 0  # re-read everything, re-embedded nothing

        conn.execute(VIEW.format(s=schema, body="summary || ' ' || details"))  # the text itself changes
        related = look(unrelated.cursor)
        assert related.run_requests and related.run_requests[0].tags[REASON_TAG] == "schema_change"
        (run,) = materialize_tenants(["acme"], instance=instance, tags=dict(related.run_requests[0].tags))
        assert run.success and run.metadata["embedded"] == 3 and run.metadata["deleted"] == 3
    texts = sorted(r[0] for r in conn.execute(f"SELECT text FROM {schema}.chunks").fetchall())  # noqa: S608
    assert texts[0] == "Churn rose in March. Mostly small accounts."
