"""Client overhead of the remote provider paths, measured against the model time in the same run.

    .venv/bin/python bench/providers.py [--texts 512]

The stand-in server (embeddings_pipeline_tests/standin_server.py) answers the real Ollama `/api/embed` and
OpenAI `/v1/embeddings` protocols on 127.0.0.1, computing every vector with the bundled all-MiniLM-L6-v2. For
batch sizes 1, 16 and 64 the script embeds the same texts (1) with the model directly in the same batches and
(2) through OllamaProvider (the official `ollama` client) and OpenAICompatibleProvider (httpx). It prints each
path's throughput and path/direct ratio: what HTTP, JSON and the client cost next to the model.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "scifact" / "corpus.jsonl"


def _texts(n: int) -> list[str]:
    if DEFAULT_CORPUS.exists():
        with open(DEFAULT_CORPUS) as fh:
            rows = (json.loads(line) for line in fh)
            return [f"{r['title']} {r['text']}"[:600] for r in itertools.islice(rows, n)]
    return [f"Paragraph {i} about warehouse robots, docks and pallets in aisle {i % 9}." for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=512)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from embeddings_pipeline.providers.ollama import OllamaProvider
    from embeddings_pipeline.providers.openai import OpenAICompatibleProvider
    from embeddings_pipeline.providers.sentence_transformers import SentenceTransformerProvider
    from embeddings_pipeline_tests.standin_server import StandinServer

    local = SentenceTransformerProvider()
    model = local._load()
    texts = _texts(args.texts)
    model.encode(texts[:32], batch_size=32)  # warm up

    def real_model(inputs: list[str]):
        return list(model.encode(inputs, batch_size=len(inputs), convert_to_numpy=True, show_progress_bar=False))

    results = []
    with StandinServer(dims=local.identity.dims, embed_fn=real_model, api_key="bench-key") as srv:
        os.environ["BENCH_KEY"] = "bench-key"
        for batch in (1, 16, 64):
            t0 = time.perf_counter()
            for i in range(0, len(texts), batch):
                real_model(texts[i : i + batch])
            direct = time.perf_counter() - t0
            row = {"batch": batch, "direct_texts_per_s": round(len(texts) / direct, 1)}
            paths = {
                "ollama": OllamaProvider("nomic-embed-text", host=srv.url, batch_size=batch),
                "openai": OpenAICompatibleProvider("text-embedding-3-small", base_url=srv.openai_url,
                                                   api_key_env="BENCH_KEY", batch_size=batch),
            }  # fmt: skip
            for name, provider in paths.items():
                provider.load()
                t0 = time.perf_counter()
                provider.embed_documents(texts)
                took = time.perf_counter() - t0
                row[f"{name}_texts_per_s"] = round(len(texts) / took, 1)
                row[f"{name}_over_direct"] = round(direct / took, 3)
            results.append(row)
    if args.json:
        print(json.dumps(results))
        return
    for row in results:
        print("  ".join(f"{k}={v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
