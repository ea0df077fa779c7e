"""`tenants delete`: after erasing a tenant no table of the schema holds a row of it, its Dagster partition is gone,
and the other tenants (odd ids included) are untouched and still searchable."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
from psycopg import sql

from embeddings_pipeline.store.db import table

ERASED = 'o\'brien/"q" [x]'
OTHERS = ["ünï-cödé/ß", "plain"]
WORDS = {ERASED: "zeppelins", OTHERS[0]: "pelicans", OTHERS[1]: "walruses"}


def _tables(conn: psycopg.Connection, schema: str) -> list[str]:
    rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", (schema,)).fetchall()
    return [r[0] for r in rows]


def _strings(value: object):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _rows_mentioning(conn: psycopg.Connection, schema: str, tenant: str) -> dict[str, int]:
    """Per table of the schema, the rows with TENANT in any column (whole rows read as JSON)."""
    found = {}
    for name in _tables(conn, schema):
        rows = conn.execute(sql.SQL("SELECT to_jsonb(t)::text FROM {} t").format(table(schema, name))).fetchall()
        n = sum(any(tenant in s for s in _strings(json.loads(r[0]))) for r in rows)
        if n:
            found[name] = n
    return found


def _tenant_counts(conn: psycopg.Connection, schema: str, tenant: str) -> dict[str, int]:
    counts = {}
    for name in _tables(conn, schema):
        has = conn.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
            "AND column_name = 'tenant_id'",
            (schema, name),
        ).fetchone()
        if has:
            q = sql.SQL("SELECT count(*) FROM {} WHERE tenant_id = %s").format(table(schema, name))
            counts[name] = conn.execute(q, (tenant,)).fetchone()[0]
    return counts


def _beir(root: Path, doc_id: str) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "airships"}) + "\n")
    (root / "qrels" / "test.tsv").write_text(f"query-id\tcorpus-id\tscore\nq1\t{doc_id}\t1\n")
    return root


def test_erasing_a_tenant_leaves_no_row_of_it_and_the_others_intact(cli, conn, schema, tmp_path):
    from embeddings_pipeline.cli.runner import local_instance

    for i, (tenant, word) in enumerate(WORDS.items()):
        folder = tmp_path / f"t{i}"
        folder.mkdir()
        (folder / "note.md").write_text(f"# Note\n\nThe {word} of {tenant} gather at dawn.\n")
        (folder / "more.md").write_text(f"# More\n\nA second note for {tenant}.\n")
        cli("ingest", str(folder), "--tenant", tenant)
    cli("gate", "set", str(_beir(tmp_path / "beir", "note.md")), "--tenant", ERASED)
    cli("materialize", *[a for t in WORDS for a in ("--tenant", t)])
    # a failed embedding on record, and a table a later migration might add
    conn.execute(
        sql.SQL("INSERT INTO {} (tenant_id, chunk_id, model_key, error_kind, message) VALUES (%s, 'c', 'm', 'k', 'x')")
        .format(table(schema, "embedding_errors")),
        (ERASED,),
    )  # fmt: skip
    conn.execute(sql.SQL("CREATE TABLE {} (tenant_id text, note text)").format(table(schema, "added_later")))
    for t in WORDS:
        conn.execute(sql.SQL("INSERT INTO {} VALUES (%s, 'n')").format(table(schema, "added_later")), (t,))
    before = {t: _tenant_counts(conn, schema, t) for t in OTHERS}
    held = _tenant_counts(conn, schema, ERASED)
    assert all(held[n] > 0 for n in ("documents", "chunks", "blocks", "embedding_errors", "quality_queries"))
    assert any(n.startswith("vectors_") and held[n] > 0 for n in held)
    assert {"documents", "chunks", "tenants", "added_later"} <= set(_rows_mentioning(conn, schema, ERASED))

    declined = cli("tenants", "delete", ERASED, input="n\n", ok=False)
    assert declined.exit_code == 1 and _tenant_counts(conn, schema, ERASED) == held

    out = cli("tenants", "delete", ERASED, input="y\n").output
    assert "documents" in out and "chunks" in out and "added_later" in out and "partition dropped" in out
    assert _rows_mentioning(conn, schema, ERASED) == {}
    assert set(_tenant_counts(conn, schema, ERASED).values()) == {0}
    assert {t: _tenant_counts(conn, schema, t) for t in OTHERS} == before
    assert sorted(local_instance().get_dynamic_partitions("tenant")) == sorted(OTHERS)
    for t in OTHERS:
        hits = json.loads(cli("search", WORDS[t], "--tenant", t, "--json").output)["hits"]
        assert hits and hits[0]["doc_id"] == "note.md"
    gone = cli("search", "zeppelins", "--tenant", ERASED, ok=False)
    assert gone.exit_code == 2 and "no tenant" in gone.output


APP_TABLE = """
CREATE TABLE {t} (tenant_id text, doc_id text, title text DEFAULT '', body text, format text DEFAULT 'text',
                  metadata jsonb DEFAULT '{{}}', updated_at timestamptz DEFAULT clock_timestamp(),
                  deleted_at timestamptz, PRIMARY KEY (tenant_id, doc_id))
"""


def test_an_application_source_is_left_to_the_application(cli, conn, schema, monkeypatch):
    app = table(schema, "app_docs")
    conn.execute(sql.SQL(APP_TABLE).format(t=app))
    for t in ("gone", "stays"):
        conn.execute(sql.SQL("INSERT INTO {} (tenant_id, doc_id, body) VALUES (%s, 'd1', 'Herons fish.')").format(app),
                     (t,))  # fmt: skip
    monkeypatch.setenv("EMBEDDINGS_SOURCE_RELATION", "app_docs")
    cli("materialize", "--tenant", "gone", "--tenant", "stays")
    result = cli("tenants", "delete", "gone", "--yes", "--json")
    report = json.loads(result.stdout)
    assert report["app_source"] == f"{schema}.app_docs" and report["removed"]["chunks"] == 1
    assert "app_docs" not in report["removed"] and "is the application's" in result.stderr
    assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(app)).fetchone() == (2,)
    assert _tenant_counts(conn, schema, "gone")["chunks"] == 0
    assert _tenant_counts(conn, schema, "stays")["chunks"] == 1
