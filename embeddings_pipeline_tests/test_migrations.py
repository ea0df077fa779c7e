"""Migrations are versioned, idempotent and safe to run from several processes at once."""

from __future__ import annotations

import hashlib
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
from psycopg import sql

from embeddings_pipeline.store.db import connection
from embeddings_pipeline.store.migrations import LATEST_VERSION, MIGRATIONS, migrate


def test_concurrent_migrations_apply_each_version_once(pg_url):
    schema = f"m_{uuid.uuid4().hex[:10]}"

    def run(_: int) -> list[int]:
        with connection(pg_url) as conn:
            return migrate(conn, schema)

    try:
        with ThreadPoolExecutor(4) as pool:
            applied = list(pool.map(run, range(4)))
        assert sorted(v for a in applied for v in a) == [v for v, _, _ in MIGRATIONS]
        with connection(pg_url) as conn:
            assert migrate(conn, schema) == []
            versions = conn.execute(
                sql.SQL("SELECT version FROM {}.schema_migrations ORDER BY 1").format(sql.Identifier(schema))
            ).fetchall()
            assert versions[-1] == (LATEST_VERSION,)
            tables = {
                r[0]
                for r in conn.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
                )
            }
            assert {"documents", "blocks", "chunks", "embedding_models", "embedding_errors", "tenants"} <= tables
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_upgrade_to_chunk_sets_keeps_what_was_chunked_and_active(pg_url):
    """A database chunked and embedded before chunk sets existed (v3) upgrades without re-chunking anything."""
    schema = f"m_{uuid.uuid4().hex[:10]}"
    s = sql.Identifier(schema)
    try:
        with connection(pg_url) as conn:
            assert migrate(conn, schema, upto=3) == [1, 2, 3]
            conn.execute(
                sql.SQL(
                    """
                    INSERT INTO {s}.parsed_documents VALUES ('acme', 'd1', now(), 2, 2, 'blocks-v1:tok:256'),
                                                            ('acme', 'd2', now(), 1, NULL, NULL);
                    INSERT INTO {s}.chunks VALUES ('acme', 'c1', 'b1', 'd1', 0, 'text', 'h', 1, 'blocks-v1:tok:256');
                    INSERT INTO {s}.tenants (tenant_id, active_model_key) VALUES ('acme', 'st_x'), ('idle', NULL);
                    """
                ).format(s=s)
            )
            assert migrate(conn, schema) == [v for v, _, _ in MIGRATIONS if v > 3]
            chunked = conn.execute(sql.SQL("SELECT * FROM {}.chunked_documents").format(s)).fetchall()
            assert chunked == [("acme", "d1", "blocks-v1:tok:256", 2)]  # d2 was never chunked: still to do
            active = conn.execute(
                sql.SQL("SELECT tenant_id, active_chunker_version FROM {}.tenants ORDER BY 1").format(s)
            ).fetchall()
            assert active == [("acme", "blocks-v1:tok:256"), ("idle", None)]
            columns = {
                r[0]
                for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                    "AND table_name = 'parsed_documents'",
                    (schema,),
                )
            }
            assert columns == {"tenant_id", "doc_id", "source_updated_at", "blocks_version"}
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_upgrade_to_tenant_scoped_text_search_keeps_rows_and_answers(pg_url):
    """v9 -> v10 rebuilds the tsvector with each row's tenant lexeme: every chunk kept, text search scoped to its
    tenant even when other tenants' rows (odd ids included) hold the same words and ids."""
    from embeddings_pipeline.search.text import search_text

    schema = f"m_{uuid.uuid4().hex[:10]}"
    s = sql.Identifier(schema)
    odd = "o'dd \\ tenant 'tenant x'"
    try:
        with connection(pg_url) as conn:
            assert migrate(conn, schema, upto=9)[-1] == 9
            rows = [
                (t, f"c{i}", f"b{i}", f"d{i}", 0, text, f"h{i}", len(text.split()), "v1")
                for t in ("acme", odd, "acme2")
                for i, text in enumerate(["pump impeller seals", "impeller impeller rpm", "dock forklift"])
            ]
            with conn.cursor() as cur:
                cur.executemany(
                    sql.SQL("INSERT INTO {}.chunks VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)").format(s), rows
                )
            assert migrate(conn, schema, upto=10) == [10]
            kept = conn.execute(sql.SQL("SELECT tenant_id, chunk_id, text FROM {}.chunks").format(s)).fetchall()
            assert sorted(kept) == sorted((r[0], r[1], r[5]) for r in rows)
            for tenant in ("acme", odd):
                lexemes = conn.execute(
                    sql.SQL(
                        "SELECT DISTINCT l FROM {}.chunks, unnest(tsvector_to_array(tsv)) l "
                        "WHERE tenant_id = %s AND l LIKE 'tenant %%'"
                    ).format(s),
                    (tenant,),
                ).fetchall()
                assert lexemes == [(f"tenant {hashlib.md5(tenant.encode()).hexdigest()}",)]
                hits = search_text(conn, schema, tenant, "impeller", k=10)
                assert [h.chunk_id for h in hits] == ["c1", "c0"]  # tf 2 beats tf 1, same tenant only
                assert hits[0].score > hits[1].score > 0
            assert search_text(conn, schema, "acme3", "impeller") == []  # a tenant with no rows: nothing
            assert search_text(conn, schema, "acme", "tenant") == [] != search_text(conn, schema, "acme", "pump")
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_upgrade_to_term_statistics_counts_existing_chunks(pg_url):
    """v10 -> v11 creates the BM25 statistics and counts them from the rows already there (two tenants, one with
    an odd id, sharing chunk ids and words, two chunk sets); later writes keep them exact; search answers as the
    counted statistics did before the upgrade."""
    from embeddings_pipeline.search.text import search_text

    from .test_term_stats import ODD, add, assert_exact, row

    schema = f"m_{uuid.uuid4().hex[:10]}"
    texts = ["pump impeller seals", "impeller impeller rpm", "dock forklift", "pump station pump"]
    queries = ["impeller", "pump rpm", "forklift seals", "station"]
    try:
        with connection(pg_url) as conn:
            assert migrate(conn, schema, upto=10)[-1] == 10
            add(conn, schema, [row(t, i + 10 * (s == "v2"), x, s) for t in ("acme", ODD) for s in ("v1", "v2")
                               for i, x in enumerate(texts) if s == "v1" or i % 2])  # fmt: skip
            before = {(t, q, s): [(h.chunk_id, round(h.score, 9)) for h in search_text(conn, schema, t, q, 10, s)]
                      for t in ("acme", ODD) for q in queries for s in (None, "v1", "v2")}  # fmt: skip
            assert migrate(conn, schema, upto=11) == [11]
            assert_exact(conn, schema)
            after = {key: [(h.chunk_id, round(h.score, 9)) for h in search_text(conn, schema, *key[:2], 10, key[2])]
                     for key in before}  # fmt: skip
            assert after == before and before[("acme", "impeller", None)]
            add(conn, schema, [row(ODD, 9, "impeller added after the upgrade")])
            assert_exact(conn, schema)
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
