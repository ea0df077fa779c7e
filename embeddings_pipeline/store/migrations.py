"""Versioned, idempotent migrations of the pipeline's own tables, run by the pipeline itself.

Each migration is plain SQL with `{s}` standing for the schema identifier. They run in one transaction under an
advisory lock, so concurrent processes (CLI, run workers, sensors) apply each version exactly once.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from . import terms

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "core tables",
        """
        CREATE TABLE IF NOT EXISTS {s}.tenants (
            tenant_id        text PRIMARY KEY CHECK (length(tenant_id) BETWEEN 1 AND 128),
            active_model_key text,
            provider_override text,
            credential_env   text,
            created_at       timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE IF NOT EXISTS {s}.documents (
            tenant_id  text NOT NULL CHECK (length(tenant_id) BETWEEN 1 AND 128),
            doc_id     text NOT NULL,
            title      text NOT NULL DEFAULT '',
            body       text NOT NULL,
            format     text NOT NULL DEFAULT 'markdown' CHECK (format IN ('markdown', 'text')),
            metadata   jsonb NOT NULL DEFAULT '{{}}'::jsonb,
            updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            deleted_at timestamptz,
            PRIMARY KEY (tenant_id, doc_id)
        );
        CREATE INDEX IF NOT EXISTS documents_updated_idx ON {s}.documents (updated_at, tenant_id, doc_id);
        CREATE TABLE IF NOT EXISTS {s}.parsed_documents (
            tenant_id        text NOT NULL,
            doc_id           text NOT NULL,
            source_updated_at timestamptz NOT NULL,
            blocks_version   bigint NOT NULL,
            chunked_version  bigint,
            chunker_version  text,
            PRIMARY KEY (tenant_id, doc_id)
        );
        CREATE TABLE IF NOT EXISTS {s}.blocks (
            tenant_id    text NOT NULL,
            block_id     text NOT NULL,
            doc_id       text NOT NULL,
            ordinal      integer NOT NULL,
            block_type   text NOT NULL,
            heading_path text[] NOT NULL DEFAULT '{{}}',
            text         text NOT NULL,
            content_hash text NOT NULL,
            PRIMARY KEY (tenant_id, block_id)
        );
        CREATE INDEX IF NOT EXISTS blocks_doc_idx ON {s}.blocks (tenant_id, doc_id);
        CREATE TABLE IF NOT EXISTS {s}.chunks (
            tenant_id       text NOT NULL,
            chunk_id        text NOT NULL,
            block_id        text NOT NULL,
            doc_id          text NOT NULL,
            ordinal         integer NOT NULL,
            text            text NOT NULL,
            content_hash    text NOT NULL,
            token_count     integer NOT NULL,
            chunker_version text NOT NULL,
            PRIMARY KEY (tenant_id, chunk_id)
        );
        CREATE INDEX IF NOT EXISTS chunks_doc_idx ON {s}.chunks (tenant_id, doc_id);
        CREATE INDEX IF NOT EXISTS chunks_hash_idx ON {s}.chunks (tenant_id, content_hash);
        CREATE TABLE IF NOT EXISTS {s}.embedding_models (
            model_key      text PRIMARY KEY,
            provider       text NOT NULL,
            name           text NOT NULL,
            revision       text NOT NULL,
            dims           integer NOT NULL CHECK (dims > 0),
            normalized     boolean NOT NULL,
            query_prefix   text NOT NULL DEFAULT '',
            passage_prefix text NOT NULL DEFAULT '',
            max_tokens     integer NOT NULL,
            vector_table   text NOT NULL UNIQUE,
            status         text NOT NULL DEFAULT 'active',
            created_at     timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE IF NOT EXISTS {s}.embedding_errors (
            tenant_id       text NOT NULL,
            chunk_id        text NOT NULL,
            model_key       text NOT NULL,
            error_kind      text NOT NULL,
            message         text NOT NULL,
            attempts        integer NOT NULL DEFAULT 1,
            last_attempt_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, chunk_id, model_key)
        );
        """,
    ),
    (
        2,
        "per-tenant chunk overflow policy",
        """
        ALTER TABLE {s}.tenants ADD COLUMN IF NOT EXISTS chunk_overflow text NOT NULL DEFAULT 'split'
            CHECK (chunk_overflow IN ('split', 'truncate'));
        """,
    ),
    (
        3,
        "model spec on each identity, to load the provider of a tenant's active model",
        """
        ALTER TABLE {s}.embedding_models ADD COLUMN IF NOT EXISTS spec text;
        """,
    ),
    (
        4,
        "chunk sets side by side, one per chunker version; the tenant's active set beside its active model; "
        "when a model stopped serving (retention)",
        """
        CREATE TABLE IF NOT EXISTS {s}.chunked_documents (
            tenant_id       text NOT NULL,
            doc_id          text NOT NULL,
            chunker_version text NOT NULL,
            blocks_version  bigint NOT NULL,
            PRIMARY KEY (tenant_id, doc_id, chunker_version)
        );
        INSERT INTO {s}.chunked_documents (tenant_id, doc_id, chunker_version, blocks_version)
        SELECT tenant_id, doc_id, chunker_version, chunked_version FROM {s}.parsed_documents
         WHERE chunked_version IS NOT NULL AND chunker_version IS NOT NULL
        ON CONFLICT DO NOTHING;
        ALTER TABLE {s}.parsed_documents DROP COLUMN IF EXISTS chunked_version,
                                         DROP COLUMN IF EXISTS chunker_version;
        ALTER TABLE {s}.tenants ADD COLUMN IF NOT EXISTS active_chunker_version text;
        UPDATE {s}.tenants t
           SET active_chunker_version = (SELECT max(c.chunker_version) FROM {s}.chunks c
                                          WHERE c.tenant_id = t.tenant_id)
         WHERE t.active_model_key IS NOT NULL AND t.active_chunker_version IS NULL;
        CREATE INDEX IF NOT EXISTS chunks_set_idx ON {s}.chunks (tenant_id, chunker_version);
        ALTER TABLE {s}.embedding_models ADD COLUMN IF NOT EXISTS released_at timestamptz;
        """,
    ),
    (
        5,
        "full-text search over chunks (hybrid search): a generated tsvector and its GIN index",
        """
        ALTER TABLE {s}.chunks ADD COLUMN IF NOT EXISTS tsv tsvector
            GENERATED ALWAYS AS (to_tsvector('english'::regconfig, text)) STORED;
        CREATE INDEX IF NOT EXISTS chunks_tsv_idx ON {s}.chunks USING gin (tsv);
        """,
    ),
    (
        6,
        "per-tenant quality queries: the retrieval-quality gate a new model passes before it takes over",
        """
        CREATE TABLE IF NOT EXISTS {s}.quality_queries (
            tenant_id text NOT NULL,
            query_id  text NOT NULL,
            text      text NOT NULL,
            relevant  jsonb NOT NULL,
            PRIMARY KEY (tenant_id, query_id)
        );
        """,
    ),
    (
        7,
        "each document's origin (the folder `ingest` read it from), so a folder ingest deletes only its own",
        """
        ALTER TABLE {s}.documents ADD COLUMN IF NOT EXISTS source text;
        CREATE INDEX IF NOT EXISTS documents_source_idx ON {s}.documents (tenant_id, source);
        """,
    ),
    (
        8,
        "source rows that cannot be parsed (unknown format, NULL body or updated_at, a duplicate doc_id), per "
        "document with the reason, until the row becomes good or leaves the source",
        """
        CREATE TABLE IF NOT EXISTS {s}.document_errors (
            tenant_id     text NOT NULL,
            doc_id        text NOT NULL,
            reason        text NOT NULL,
            first_seen_at timestamptz NOT NULL DEFAULT now(),
            last_seen_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (tenant_id, doc_id)
        );
        """,
    ),
    (
        9,
        "per-tenant API tokens of the HTTP service: only a sha256 of each token is kept",
        """
        CREATE TABLE IF NOT EXISTS {s}.api_tokens (
            token_id     text PRIMARY KEY,
            tenant_id    text NOT NULL CHECK (length(tenant_id) BETWEEN 1 AND 128),
            token_hash   text NOT NULL UNIQUE,
            created_at   timestamptz NOT NULL DEFAULT now(),
            revoked_at   timestamptz,
            last_used_at timestamptz
        );
        CREATE INDEX IF NOT EXISTS api_tokens_tenant_idx ON {s}.api_tokens (tenant_id);
        """,
    ),
    (
        10,
        "text search bounded by the tenant's own size: each chunk's tsvector also holds one lexeme naming its "
        "tenant ('tenant ' || md5(tenant_id), which no text parses to), so the GIN index answers (terms AND "
        "tenant) from the tenant's own postings instead of filtering every tenant's matches; the chunk-set index "
        "carries token_count, so BM25's corpus statistics are an index-only scan",
        """
        ALTER TABLE {s}.chunks DROP COLUMN IF EXISTS tsv;
        ALTER TABLE {s}.chunks ADD COLUMN tsv tsvector GENERATED ALWAYS AS (
            to_tsvector('english'::regconfig, text) || array_to_tsvector(ARRAY['tenant ' || md5(tenant_id)])
        ) STORED;
        CREATE INDEX IF NOT EXISTS chunks_tsv_idx ON {s}.chunks USING gin (tsv);
        DROP INDEX IF EXISTS {s}.chunks_set_idx;
        CREATE INDEX chunks_set_idx ON {s}.chunks (tenant_id, chunker_version) INCLUDE (token_count);
        """,
    ),
    (
        11,
        "BM25 statistics per tenant and chunk set (store/terms.py): each lexeme's document frequency and each set's "
        "size and token total, kept exact by statement-level triggers on chunks and counted now from the rows",
        terms.MIGRATION,
    ),
    (
        12,
        "each tenant's last successful run (every chunk embedded, its checks passed): when and which run, for "
        "`status` and the service's seconds-since-last-success gauge",
        """
        ALTER TABLE {s}.tenants ADD COLUMN IF NOT EXISTS last_success_at timestamptz;
        ALTER TABLE {s}.tenants ADD COLUMN IF NOT EXISTS last_success_run_id text;
        """,
    ),
    (
        13,
        "BM25 bounds per term (store/terms.py): the most occurrences of a lexeme in one chunk and the fewest tokens "
        "of a chunk holding it, kept by the same triggers and counted now, so text search prunes with each term's "
        "own bound instead of idf * (k1 + 1)",
        terms.BOUNDS,
    ),
]

LATEST_VERSION = MIGRATIONS[-1][0]


def migrate(conn: psycopg.Connection, schema: str, upto: int | None = None) -> list[int]:
    """Bring `schema` up to the latest version (or `upto`); returns the versions applied now (usually none)."""
    ident = sql.Identifier(schema)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{schema}:migrate",))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(ident)
        )
        done = {r[0] for r in conn.execute(sql.SQL("SELECT version FROM {}.schema_migrations").format(ident))}
        applied = []
        for version, name, template in MIGRATIONS:
            if version in done or (upto is not None and version > upto):
                continue
            apply_migration(conn, schema, template)
            conn.execute(
                sql.SQL("INSERT INTO {}.schema_migrations (version, name) VALUES (%s, %s)").format(ident),
                (version, name),
            )
            applied.append(version)
    return applied


def apply_migration(conn: psycopg.Connection, schema: str, template: str) -> None:
    conn.execute(sql.SQL(template).format(s=sql.Identifier(schema)))  # type: ignore[arg-type]
