"""The corpus of bench/serve.py: two tenants of one model with `total` vectors between them, written the way
production writes them, without embedding every chunk with the real model (100k chunks would take an hour on 2
cores).

1. Base documents: the SciFact documents relevant to the bench's queries first, then the corpus in order, up to
   `base_docs`; every tenth goes to the small tenant, the rest to the large one. The pipeline's own steps parse and
   chunk them (`pipeline.steps.build_blocks`, `build_chunks`) and the real model embeds their chunks.
2. Variants: each base document is copied as `<doc_id>~<j>` as many times as its tenant's size needs (in up to four
   rounds), its sentences rotated by j and one of them dropped, so the words (and BM25's statistics) stay
   SciFact's and no two texts are the same. The steps parse and chunk them too.
3. Vectors: a base chunk gets its real vector; a variant's chunk gets the real vector of its base document's chunk
   at the same position plus Gaussian noise (cosine ~0.9 to it), normalized. `pipeline.steps.build_embeddings` with
   a provider that answers from that table (the real model's identity and spec) then writes every vector, moves
   the large tenant to a partition of its own with its own HNSW graph (`store/vector_tables.py`) and activates the
   model, as a run of the real model would. Queries are embedded by the real model.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from psycopg import sql

NOISE = 0.35  # |noise| relative to a unit vector: cosine(variant, base) ~ 1 / sqrt(1 + 0.35^2) ~ 0.94 before the
# base chunk of another position is taken


def load(dataset: Path, queries: int, base_docs: int) -> tuple[list[Any], list[tuple[str, str]], dict[str, set[str]]]:
    """(base documents, [(query id, text)], query id -> relevant doc ids)."""
    from embeddings_pipeline.pipeline.ingest import read_beir_corpus

    relevant: dict[str, set[str]] = {}
    for split in ("test", "train", "dev"):
        path = dataset / "qrels" / f"{split}.tsv"
        if path.exists():
            with open(path) as fh:
                for row in itertools.islice(csv.reader(fh, delimiter="\t"), 1, None):
                    if len(row) >= 3 and int(row[2]) > 0:
                        relevant.setdefault(row[0], set()).add(row[1])
    picked = []
    with open(dataset / "queries.jsonl") as fh:
        for line in fh:
            row = json.loads(line)
            if str(row["_id"]) in relevant:
                picked.append((str(row["_id"]), row["text"]))
            if len(picked) == queries:
                break
    wanted = list(dict.fromkeys(d for qid, _ in picked for d in sorted(relevant[qid])))
    corpus = {d.doc_id: d for d in read_beir_corpus(dataset / "corpus.jsonl")}
    order = list(dict.fromkeys([d for d in wanted if d in corpus] + list(corpus)))[:base_docs]
    return [corpus[d] for d in order], picked, relevant


def vary(body: str, j: int) -> str:
    """Variant j of a text: its sentences rotated by j, one dropped (when it has more than three)."""
    sentences = [s.strip() for s in body.replace("\n", " ").split(". ") if s.strip()]
    n = len(sentences)
    if n > 3:
        del sentences[(j * 7) % n]
        n -= 1
    r = j % max(n, 1)
    return ". ".join(sentences[r:] + sentences[:r])


class TableProvider:
    """The real model's identity, spec and tokenizer, with `embed_documents` answering from a table of vectors by
    text (every chunk's vector is computed before the fill)."""

    def __init__(self, real: Any, vectors: dict[bytes, np.ndarray]) -> None:
        self._real, self._vectors = real, vectors

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        return np.stack([self._vectors[_key(t)] for t in texts])

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _key(text: str) -> bytes:
    return hashlib.sha1(text.encode()).digest()


def _chunks(conn: Any, schema: str, tenant: str) -> list[tuple[str, int, str]]:
    from embeddings_pipeline.store.db import table

    return conn.execute(
        sql.SQL("SELECT doc_id, ordinal, text FROM {} WHERE tenant_id = %s ORDER BY doc_id, ordinal").format(
            table(schema, "chunks")
        ),
        (tenant,),
    ).fetchall()


def _count(conn: Any, schema: str, tenant: str) -> int:
    from embeddings_pipeline.store.db import table

    query = sql.SQL("SELECT count(*) FROM {} WHERE tenant_id = %s").format(table(schema, "chunks"))
    return int(conn.execute(query, (tenant,)).fetchone()[0])


def build(conn: Any, schema: str, real: Any, docs: list[Any], sizes: dict[str, int], seed: int = 0) -> dict[str, Any]:
    """Write the two tenants (`sizes`: tenant -> vectors wanted) and return what was written."""
    from embeddings_pipeline.pipeline import model_change, steps
    from embeddings_pipeline.store.documents import upsert_documents
    from embeddings_pipeline.store.scope import Scope

    small, large = list(sizes)
    dims = real.identity.dims
    split = {small: docs[::10], large: [d for i, d in enumerate(docs) if i % 10]}
    out: dict[str, Any] = {}
    seconds = dict.fromkeys(("ingest", "parse_and_chunk", "real_model", "vectors_table", "fill_and_index"), 0.0)

    def timed(phase: str, t0: float) -> float:
        seconds[phase] += time.perf_counter() - t0
        return time.perf_counter()

    def parse_and_chunk(tenant: str) -> None:
        t0 = time.perf_counter()
        scope = Scope(conn, schema, tenant)
        steps.build_blocks(scope)
        steps.build_chunks(scope, model_change.plan(scope, target=real))
        timed("parse_and_chunk", t0)

    for tenant, base in split.items():
        upsert_documents(conn, schema, tenant, base)
        parse_and_chunk(tenant)
    base_chunks = {t: _chunks(conn, schema, t) for t in split}
    texts = sorted({text for rows in base_chunks.values() for _, _, text in rows}, key=len)
    t0 = time.perf_counter()
    real_vectors = {_key(t): v for t, v in zip(texts, real.embed_documents(texts), strict=True)}
    timed("real_model", t0)
    out["real_vectors"] = len(real_vectors)
    rng = np.random.default_rng(seed)
    for tenant, base in split.items():
        copies, count = 0, len(base_chunks[tenant])
        per_copy = float(count)  # chunks one more copy of every base document adds (a variant drops a sentence)
        for _ in range(4):  # rounds until the tenant has its size
            more = math.ceil(max(0, sizes[tenant] - count) / max(per_copy, 1.0))
            if more == 0:
                break
            variants = [replace(d, doc_id=f"{d.doc_id}~{j}", body=vary(d.body, j))
                        for j in range(copies + 1, copies + more + 1) for d in base]  # fmt: skip
            t0 = time.perf_counter()
            for start in range(0, len(variants), 5000):
                upsert_documents(conn, schema, tenant, variants[start : start + 5000])
            timed("ingest", t0)
            parse_and_chunk(tenant)
            added = _count(conn, schema, tenant) - count
            copies, count, per_copy = copies + more, count + added, added / more
        t0 = time.perf_counter()
        by_position: dict[str, list[np.ndarray]] = {}
        for doc_id, _, text in base_chunks[tenant]:
            by_position.setdefault(doc_id, []).append(real_vectors[_key(text)])
        table: dict[bytes, np.ndarray] = {}
        rows = _chunks(conn, schema, tenant)
        for doc_id, ordinal, text in rows:
            if _key(text) in real_vectors:
                table[_key(text)] = real_vectors[_key(text)]
                continue
            around = by_position[doc_id.split("~", 1)[0]]
            v = around[min(ordinal, len(around) - 1)] + rng.normal(0, NOISE / math.sqrt(dims), dims).astype(np.float32)
            table[_key(text)] = v / np.linalg.norm(v)
        t0 = timed("vectors_table", t0)
        scope = Scope(conn, schema, tenant)
        provider = TableProvider(real, table)
        steps.build_embeddings(scope, model_change.plan(scope, target=provider), "bench-serve-synthetic")
        timed("fill_and_index", t0)
        out[tenant] = {"documents": len(base) * (copies + 1), "base_documents": len(base), "chunks": len(rows),
                       "copies": copies}  # fmt: skip
    out["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    return out
