"""Every local model call of the service runs on one thread (`service/model_thread.py`), whichever request thread
asks: torch's OpenMP teams are one per calling thread, and more of them than CPUs slows every call. Remote
providers and rerankers are left as they are (their calls wait on the network)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from embeddings_pipeline.providers import ProviderError
from embeddings_pipeline.providers.rerank import CrossEncoderReranker, HttpReranker
from embeddings_pipeline.service import model_thread
from embeddings_pipeline.service.warm import WarmProviders


class Recorder:
    """A stand-in target: records the thread of each call; `fail` raises."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    def embed_query(self, text: str) -> str:
        self.threads.append(threading.get_ident())
        return text.upper()

    def fail(self) -> None:
        raise ProviderError("the model is not loadable")

    name = "recorder"


def test_pinned_methods_run_on_one_thread_whoever_calls():
    target = Recorder()
    pinned = model_thread.Pinned(target, ("embed_query", "fail"))
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(pinned.embed_query, [f"q{i}" for i in range(64)]))
    assert answers == [f"Q{i}" for i in range(64)]
    assert len(set(target.threads)) == 1 and target.threads[0] != threading.get_ident()
    assert pinned.name == "recorder"  # other attributes are the target's own
    with pytest.raises(ProviderError, match="not loadable"):
        pinned.fail()
    assert model_thread.run(model_thread.run, len, "abc") == 3  # a call from the model thread itself runs in place


def test_the_bundled_model_is_pinned_and_answers_as_in_process(provider):
    pinned = model_thread.pin_provider(provider)
    assert isinstance(pinned, model_thread.Pinned) and pinned.identity == provider.identity
    query = "which impeller fits the XJ-9000 pump?"
    with ThreadPoolExecutor(4) as pool:
        vectors = list(pool.map(pinned.embed_query, [query] * 4))
    for v in vectors:
        np.testing.assert_allclose(v, provider.embed_query(query), atol=1e-6)
    np.testing.assert_allclose(pinned.embed_documents([query])[0], provider.embed_documents([query])[0], atol=1e-6)


def test_the_service_pins_local_models_only(provider, tmp_path):
    warm = WarmProviders(load=lambda spec, key_env: provider)
    assert isinstance(warm.load(None, None), model_thread.Pinned)
    remote = object()
    assert WarmProviders(load=lambda spec, key_env: remote).load(None, None) is remote
    http = HttpReranker("http://127.0.0.1:9/rerank")
    assert model_thread.pin_reranker(http) is http and model_thread.pin_reranker(None) is None
    (tmp_path / "config.json").write_text("{}")
    local = model_thread.pin_reranker(CrossEncoderReranker(tmp_path))
    assert isinstance(local, model_thread.Pinned) and local.name == f"cross-encoder:{tmp_path.name}"
