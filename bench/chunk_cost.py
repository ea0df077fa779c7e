"""The pipeline's own cost per chunk, stage by stage, with the model's time taken out.

    .venv/bin/python bench/chunk_cost.py [--docs 1500] [--paragraphs 10] [--tokenizer whitespace|minilm] [--json]

One tenant of `docs` documents (a heading and `paragraphs` paragraphs each, a long-tail vocabulary), embedded by
the stand-in Ollama server (embeddings_pipeline_tests/standin_server.py), in a fresh schema of the embedded
PostgreSQL. Microseconds per chunk for:

- parse: documents -> blocks (markdown-it), in memory;
- chunk: blocks -> chunks (chunk texts, tokenizer, hashes) in memory, and within it the tokenizer calls and the
  hashes alone (`--tokenizer minilm`: the bundled model's WordPiece tokenizer, as the default model splits;
  `whitespace`: what the remote providers split with);
- blocks SQL: `build_blocks` less parse (reading changed documents, COPY of blocks, bookkeeping);
- chunks SQL: `build_chunks` less chunk (reading blocks, COPY of chunks with the generated tsvector and its GIN
  index, bookkeeping); `to_tsvector` alone: the same texts through `to_tsvector('english', ...)` in a SELECT;
  within it the BM25 statistics triggers (migration 11): the chunks deleted and COPied back with the triggers off
  and on (all of them: a first build; a tenth: a re-chunk of some documents), interleaved, best of 3;
- vectors SQL: `fill` less the provider's own time: the pending query, the binary COPY of the vectors, coverage;
- index: the partition of its own and the HNSW build when the tenant first searches with the model;
- provider: the stand-in's time (subtracted above; its own cost, not the pipeline's).

Before/after in one run, interleaved, best of 3: `chunk` with the chunker as it was before this profile (each
block tokenized twice, one call per block) against the current one (once, one batched call per document), over
the same blocks; and the pending chunks read whole and sorted in Python (before) against streamed shortest first
through a server-side cursor (after: memory of one batch).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VOCABULARY = [f"{a}{b}" for a in ("dock", "rack", "pallet", "label", "route", "audit", "sensor", "shift", "crate")
              for b in ("", "s", "ing", "ed", "er", "ful", "less", "ward", "ish", "like", "side", "way")]  # fmt: skip


def paragraph(doc: int, i: int) -> str:
    # Zipf-like: a few words are everywhere, most are rare (as in real text; tsvector and GIN costs depend on it)
    words = [VOCABULARY[int(len(VOCABULARY) * ((doc * 31 + i * 17 + k * 7) % 97 / 97) ** 3)] for k in range(40)]
    return f"Entry {doc}.{i}: " + " ".join(words) + f" (ticket {doc * 1000 + i})."


def document(doc: int, paragraphs: int) -> str:
    return f"# Log {doc}\n\n" + "\n\n".join(paragraph(doc, i) for i in range(paragraphs))


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=1500)
    ap.add_argument("--paragraphs", type=int, default=10)
    ap.add_argument("--tokenizer", choices=("whitespace", "minilm"), default="minilm")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    os.environ.setdefault("EMBEDDINGS_HOME", str(Path(tempfile.gettempdir()) / "embeddings-bench"))
    schema = f"profile_{uuid.uuid4().hex[:8]}"
    os.environ.update({"EMBEDDINGS_SCHEMA": schema, "EMBEDDINGS_MODEL": "ollama:nomic-embed-text",
                       "EMBEDDINGS_TENANT_INDEX_THRESHOLD": "1000"})  # fmt: skip

    from embeddings_pipeline.pipeline import model_change, steps
    from embeddings_pipeline.providers import load_provider
    from embeddings_pipeline.store import promotion, vector_tables
    from embeddings_pipeline.store.documents import SourceDocument, upsert_documents
    from embeddings_pipeline.store.scope import Scope
    from embeddings_pipeline.store.session import Database
    from embeddings_pipeline.text.blocks import parse_blocks
    from embeddings_pipeline.text.chunks import chunk_blocks
    from embeddings_pipeline.text.hashing import content_hash, stable_id
    from embeddings_pipeline.text.tokens import count_tokens
    from embeddings_pipeline_tests.standin_server import StandinServer

    tenant = "profiled"
    docs = [SourceDocument(f"log-{d}.md", document(d, args.paragraphs), title=f"Log {d}") for d in range(args.docs)]
    store = Database()
    out: dict[str, object] = {}
    with StandinServer(dims=384) as srv:
        os.environ["OLLAMA_HOST"] = srv.url
        provider = load_provider("ollama:nomic-embed-text")
        if args.tokenizer == "minilm":
            tokenizer = load_provider("sentence-transformers:all-MiniLM-L6-v2").tokenizer  # no torch: files only
            provider.__dict__["tokenizer"] = tokenizer  # split as the default model does (a cached property)
        else:
            tokenizer = provider.tokenizer
        max_tokens = provider.identity.max_tokens
        try:
            with store.connect() as conn:
                scope = Scope(conn, schema, tenant)
                _, ingest_s = timed(upsert_documents, conn, schema, tenant, docs)

                # pure stages, in memory, over the very documents
                parsed, parse_s = timed(lambda: [parse_blocks(d.doc_id, d.body, "markdown") for d in docs])
                chunk_set = model_change.plan(scope, target=provider).chunk_set
                chunk_s = old_chunk_s = float("inf")
                for _ in range(3):  # interleaved, best of 3: the machine is shared
                    chunked, took = timed(
                        lambda: [
                            chunk_blocks(b, d.title, tokenizer, max_tokens, chunk_set=chunk_set)
                            for d, b in zip(docs, parsed, strict=True)
                        ]
                    )
                    chunk_s = min(chunk_s, took)
                    _, took = timed(
                        lambda: [
                            _chunk_blocks_before(b, d.title, tokenizer, max_tokens, chunk_set)
                            for d, b in zip(docs, parsed, strict=True)
                        ]
                    )
                    old_chunk_s = min(old_chunk_s, took)
                texts = [c.text for cs in chunked for c in cs]
                n = len(texts)
                block_texts = [b.text for bs in parsed for b in bs]
                _, tokenize_s = timed(lambda: [count_tokens(tokenizer, t) for t in block_texts])
                _, hash_s = timed(lambda: [(content_hash(t), stable_id(t, "0", chunk_set)) for t in texts])
                from embeddings_pipeline.store import content, parsing, vectors

                sql_s: dict[str, float] = {}
                for module, names in (
                    (parsing, ("changed_documents", "replace_blocks")),
                    (content, ("documents_to_chunk", "blocks_of", "replace_chunks")),
                    (vectors, ("reuse_by_hash", "write_vectors", "coverage")),
                ):
                    for name in names:
                        sql_s[name] = 0.0
                        _time_into(module, name, sql_s, name)  # fmt: skip
                blocks_report, blocks_s = timed(steps.build_blocks, scope)
                plan = model_change.plan(scope, target=provider)
                chunks_report, chunks_s = timed(steps.build_chunks, scope, plan)
                assert chunks_report.chunks_written == n, (chunks_report.chunks_written, n)
                tsv_s = _tsvector_alone(conn, schema, tenant)
                stats_us = _statistics_cost(conn, schema, tenant)

                vt = vector_tables.register_model(conn, schema, provider.identity, provider.spec)
                read_all_s = read_batches_s = float("inf")
                for _ in range(3):  # the pending chunks read whole and sorted (before) or streamed (after)
                    _, took = timed(lambda: sorted(vectors.pending_chunks(conn, schema, vt, tenant, chunk_set),
                                                   key=lambda c: len(c.text)))  # fmt: skip
                    read_all_s = min(read_all_s, took)
                    _, took = timed(lambda: sum(len(b) for b in vectors.pending_batches(conn, schema, vt, tenant,
                                                                                       chunk_set)))  # fmt: skip
                    read_batches_s = min(read_batches_s, took)
                index_s = {"promote": 0.0, "hnsw": 0.0}
                _time_into(promotion, "promote_large", index_s, "promote")
                _time_into(vector_tables, "ensure_search_index", index_s, "hnsw")
                t0 = time.perf_counter()
                report = steps.build_embeddings(scope, plan, "profile-run")
                embeddings_s = time.perf_counter() - t0
                assert report.embedded == n and report.failed == 0

                provider_s = report.embed_seconds
                vectors_sql_s = report.seconds - provider_s - index_s["promote"]
                us = 1e6 / n
                out.update({
                    "chunks": n, "blocks": blocks_report.blocks_written, "tokenizer": tokenizer.name,
                    "ingest_us_per_chunk": round(ingest_s * us, 1),
                    "parse_us_per_chunk": round(parse_s * us, 1),
                    "chunk_us_per_chunk": round(chunk_s * us, 1),
                    "chunk_before_us_per_chunk": round(old_chunk_s * us, 1),
                    "chunk_after_over_before": round(chunk_s / old_chunk_s, 3),
                    "  tokenize_once_per_block_us_per_chunk": round(tokenize_s * us, 1),
                    "  hash_us_per_chunk": round(hash_s * us, 1),
                    "blocks_sql_us_per_chunk": round((blocks_s - parse_s) * us, 1),
                    "chunks_sql_us_per_chunk": round((chunks_s - chunk_s) * us, 1),
                    "  to_tsvector_alone_us_per_chunk": round(tsv_s * us, 1),
                    **stats_us,
                    "vectors_sql_us_per_chunk": round(vectors_sql_s * us, 1),
                    "  pending_read_whole_us_per_chunk": round(read_all_s * us, 1),
                    "  pending_read_streamed_us_per_chunk": round(read_batches_s * us, 1),
                    "index_us_per_chunk": round((index_s["promote"] + index_s["hnsw"]) * us, 1),
                    "  of_which_hnsw_us_per_chunk": round(index_s["hnsw"] * us, 1),
                    "provider_us_per_chunk": round(provider_s * us, 1),
                    **{f"  sql_{k}_us_per_chunk": round(v * us, 1) for k, v in sql_s.items()},
                    "pipeline_own_us_per_chunk": round((blocks_s + chunks_s + embeddings_s - provider_s) * us, 1),
                })  # fmt: skip
        finally:
            with psycopg.connect(store.url(), autocommit=True) as c:
                c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>40}: {v}")


def _time_into(module, name: str, into: dict[str, float], key: str) -> None:
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            into[key] += time.perf_counter() - t0

    setattr(module, name, wrapper)


def _statistics_cost(conn: psycopg.Connection, schema: str, tenant: str) -> dict[str, float]:
    """The BM25 statistics triggers' share of chunk writes (store/terms.py): the tenant's chunks deleted and
    COPied back with the triggers off (before migration 11) and on, interleaved, best of 3. `all`: every chunk
    (a first build: every term row inserted, then deleted); `tenth`: a tenth of them (a re-chunk of some documents
    in a tenant whose terms mostly exist: updated rows)."""
    from embeddings_pipeline.store.db import copy_rows, table

    columns = ("tenant_id", "chunk_id", "block_id", "doc_id", "ordinal", "text", "content_hash", "token_count",
               "chunker_version")  # fmt: skip
    chunks = table(schema, "chunks")
    select = sql.SQL("SELECT {} FROM {} WHERE tenant_id = %s ORDER BY chunk_id").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)), chunks
    )
    rows = conn.execute(select, (tenant,)).fetchall()
    best: dict[str, float] = {}
    for _ in range(3):
        for part, subset in (("all", rows), ("tenth", rows[::10])):
            for triggers in ("off", "on"):
                with conn.transaction():
                    if triggers == "off":
                        conn.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER USER").format(chunks))
                    ids = [r[1] for r in subset]
                    t0 = time.perf_counter()
                    conn.execute(sql.SQL("DELETE FROM {} WHERE tenant_id = %s AND chunk_id = ANY(%s)").format(chunks),
                                 (tenant, ids))  # fmt: skip
                    t1 = time.perf_counter()
                    copy_rows(conn, schema, "chunks", columns, iter(subset))
                    t2 = time.perf_counter()
                    conn.execute(sql.SQL("ALTER TABLE {} ENABLE TRIGGER USER").format(chunks))
                for stage, took in (("delete", t1 - t0), ("copy", t2 - t1)):
                    key = f"  chunks_{stage}_{part}_triggers_{triggers}_us_per_chunk"
                    best[key] = min(best.get(key, float("inf")), round(took * 1e6 / len(subset), 1))
    for part in ("all", "tenth"):
        for stage in ("delete", "copy"):
            on, off = (best[f"  chunks_{stage}_{part}_triggers_{t}_us_per_chunk"] for t in ("on", "off"))
            best[f"  statistics_{stage}_{part}_added_us_per_chunk"] = round(on - off, 1)
    return best


def _tsvector_alone(conn: psycopg.Connection, schema: str, tenant: str) -> float:
    t0 = time.perf_counter()
    conn.execute(
        sql.SQL("SELECT sum(length(to_tsvector('english'::regconfig, text))) FROM {}.chunks WHERE tenant_id = %s")
        .format(sql.Identifier(schema)),
        (tenant,),
    ).fetchone()  # fmt: skip
    return time.perf_counter() - t0


def _chunk_blocks_before(blocks, title, tokenizer, max_tokens, chunk_set):
    """chunk_blocks as it was before this profile: a block that fits was tokenized twice (fits? then count)."""
    from embeddings_pipeline.text.chunks import Chunk, _split, chunk_text
    from embeddings_pipeline.text.hashing import content_hash, stable_id
    from embeddings_pipeline.text.tokens import count_tokens

    chunks = []
    for block in blocks:
        text = chunk_text(block.block_type, block.text, title, block.heading_path)
        if text is None:
            continue
        fits = count_tokens(tokenizer, text) <= max_tokens
        pieces = [text] if fits else _split(block.block_type, text, tokenizer, max_tokens, 32)
        counted = ((piece, count_tokens(tokenizer, piece)) for piece in pieces)
        kept = [(p, c) for p, c in counted if c > tokenizer.special_tokens]
        for index, (piece, count) in enumerate(kept):
            chunks.append(Chunk(stable_id(block.block_id, str(index), chunk_set), block.block_id, block.doc_id,
                                len(chunks), piece, content_hash(piece), count))  # fmt: skip
    return chunks


if __name__ == "__main__":
    main()
