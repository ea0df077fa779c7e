"""The Ollama and OpenAI-compatible providers against the stand-in server on 127.0.0.1: the real ``ollama`` client
and real httpx over real sockets, no mocks. Faults are injected by the server; retries use short delays."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Iterator

import numpy as np
import pytest

from embeddings_pipeline.providers.base import EmbeddingProvider, ProviderError
from embeddings_pipeline.providers.ollama import OllamaProvider, normalize_host
from embeddings_pipeline.providers.openai import OpenAICompatibleProvider, estimate_tokens
from embeddings_pipeline.providers.registry import canonical_spec, load_provider
from embeddings_pipeline.providers.resilience import (
    CircuitBreaker,
    CircuitOpenError,
    ErrorKind,
    ProviderCallError,
    RetryPolicy,
)
from embeddings_pipeline.text.tokens import WhitespaceTokenizer

from .standin_server import DEFAULT_DIGEST, StandinServer, standin_vector

FAST = RetryPolicy(base_delay=0.01, max_delay=0.05)
KEY_ENV = "EMBEDDINGS_TEST_TENANT_KEY"
KEY = "sk-test-TENANTSECRET-7f3a9c1e5b"
DIMS = 384
OLLAMA_MODEL = "nomic-embed-text"
OPENAI_MODEL = "text-embedding-3-small"
EMBED_PATH = {"ollama": "/api/embed", "openai": "/v1/embeddings"}
KINDS = ["ollama", "openai"]

Provider = OllamaProvider | OpenAICompatibleProvider


@pytest.fixture()
def srv(monkeypatch: pytest.MonkeyPatch) -> Iterator[StandinServer]:
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.delenv("OLLAMA_API_KEY", raising=False)  # the ollama client would send it as a bearer token
    with StandinServer(dims=DIMS, api_key=KEY) as server:
        yield server


def make(kind: str, srv: StandinServer, **kw: object) -> Provider:
    kw.setdefault("policy", FAST)
    if kind == "ollama":
        return OllamaProvider(OLLAMA_MODEL, host=srv.url, **kw)  # type: ignore[arg-type]
    return OpenAICompatibleProvider(OPENAI_MODEL, base_url=srv.openai_url, api_key_env=KEY_ENV, **kw)  # type: ignore[arg-type]


def expected(texts: list[str], dims: int = DIMS) -> np.ndarray:
    return np.stack([standin_vector(t, dims) for t in texts])


# ---------------------------------------------------------------------------------------------------- identity


def test_ollama_identity_from_tags_show_and_probe(srv: StandinServer) -> None:
    p = OllamaProvider(OLLAMA_MODEL, host=srv.url, policy=FAST)
    assert sum(srv.requests.values()) == 0, "constructing a provider must not touch the network"
    assert isinstance(p.tokenizer, WhitespaceTokenizer)
    p.load()
    ident = p.identity
    assert ident.provider == "ollama" and ident.name == OLLAMA_MODEL
    assert ident.revision == DEFAULT_DIGEST  # the digest of `nomic-embed-text:latest` in /api/tags
    assert ident.dims == DIMS  # from the probe response
    assert ident.max_tokens == 2048  # nomic-bert.context_length from /api/show
    assert ident.normalized is True
    assert srv.requests["/api/tags"] == 1 and srv.requests["/api/show"] == 1 and srv.requests["/api/embed"] == 1
    _ = p.identity
    assert srv.requests["/api/embed"] == 1, "the identity is resolved once"
    assert all(r.user_agent and r.user_agent.startswith("ollama-python/") for r in srv.log)

    # pulling a new version of the same tag changes the revision and so the model key
    new_digest = srv.new_version()
    p2 = OllamaProvider(f"{OLLAMA_MODEL}:latest", host=srv.url, policy=FAST, max_tokens=512)
    assert p2.identity.revision == new_digest != DEFAULT_DIGEST
    assert p2.identity.max_tokens == 512  # explicit wins
    assert p2.identity.model_key != ident.model_key


def test_ollama_host_from_environment(srv: StandinServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", srv.url)
    p = OllamaProvider(OLLAMA_MODEL, policy=FAST)
    assert p.embed_documents(["hello"]).shape == (1, DIMS)
    assert srv.requests["/api/embed"] == 2


def test_ollama_unknown_model_is_fatal_and_not_retried(srv: StandinServer) -> None:
    p = OllamaProvider("no-such-model", host=srv.url, policy=FAST)
    with pytest.raises(ProviderCallError) as info:
        p.load()
    err = info.value
    assert err.kind == ErrorKind.FATAL and err.status == 404
    assert "no-such-model" in str(err) and "HTTP 404" in str(err) and "not found" in str(err)
    assert srv.requests["/api/show"] == 1 and p.stats.retries == 0


def test_openai_identity_without_and_with_dimensions(srv: StandinServer) -> None:
    p = make("openai", srv)
    assert sum(srv.requests.values()) == 0
    ident = p.identity
    host = srv.url.removeprefix("http://")
    assert (ident.provider, ident.revision, ident.dims, ident.normalized) == (
        "openai",
        f"{host}/{OPENAI_MODEL}",
        DIMS,
        True,
    )
    assert ident.max_tokens == 8191
    assert srv.requests["/v1/embeddings"] == 1  # the dimension probe

    q = make("openai", srv, dimensions=128)
    assert q.identity.dims == 128 and q.identity.revision.endswith("@128d")
    assert srv.requests["/v1/embeddings"] == 1, "a requested dimension needs no probe"
    vectors = q.embed_documents(["alpha beta", "gamma"])
    assert vectors.shape == (2, 128)
    assert all(np.isclose(np.linalg.norm(v), 1.0, atol=1e-5) for v in vectors)
    assert q.identity.model_key != ident.model_key


# ---------------------------------------------------------------------------------------------------- vectors, batching


@pytest.mark.parametrize("kind", KINDS)
def test_batches_and_deterministic_vectors(kind: str, srv: StandinServer) -> None:
    p = make(kind, srv, batch_size=64)
    texts = [f"document number {i} about topic {i % 7}" for i in range(130)]
    vectors = p.embed_documents(texts)
    assert vectors.dtype == np.float32 and vectors.shape == (130, DIMS)
    # 3 batches of at most 64 + the one-text dimension probe
    assert [len(b) for b in srv.embed_batches] == [1, 64, 64, 2]
    assert srv.requests[EMBED_PATH[kind]] == 4
    assert np.array_equal(vectors, expected(texts)), "vectors are exactly what the server computed, in order"
    again = p.embed_documents([texts[5], texts[5], texts[6]])
    assert np.array_equal(again[0], again[1]) and not np.allclose(again[0], again[2])
    assert np.array_equal(p.embed_query(texts[9]), vectors[9])


@pytest.mark.parametrize("kind", KINDS)
def test_prefixes_are_sent(kind: str, srv: StandinServer) -> None:
    p = make(kind, srv, query_prefix="search_query: ", passage_prefix="search_document: ")
    doc = p.embed_documents(["a passage"])[0]
    query = p.embed_query("a question")
    assert srv.embed_batches[-2:] == [["search_document: a passage"], ["search_query: a question"]]
    assert np.array_equal(doc, standin_vector("search_document: a passage"))
    assert np.array_equal(query, standin_vector("search_query: a question"))
    assert p.identity.query_prefix == "search_query: " and p.identity.passage_prefix == "search_document: "


def test_openai_batches_bounded_by_token_budget_and_sorted_by_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    with StandinServer(dims=DIMS, api_key=KEY, shuffle=True) as srv:
        p = make("openai", srv, dimensions=DIMS, batch_size=64, max_batch_tokens=100)
        texts = [" ".join(f"w{i}x{j}" for j in range(20)) for i in range(10)]  # 26 estimated tokens each
        assert estimate_tokens(texts[0]) == 26
        vectors = p.embed_documents(texts)
        assert [len(b) for b in srv.embed_batches] == [3, 3, 3, 1]
        assert np.array_equal(vectors, expected(texts)), "`data` arrives shuffled; vectors must follow `index`"
        huge = "word " * 200  # over the budget on its own: sent alone, not dropped
        p.embed_documents(["short", huge, "short too"])
        assert [len(b) for b in srv.embed_batches[-3:]] == [1, 1, 1]
        q = make("openai", srv, dimensions=DIMS, batch_size=2, max_batch_tokens=10_000)
        q.embed_documents(texts[:5])
        assert [len(b) for b in srv.embed_batches[-3:]] == [2, 2, 1]


# ---------------------------------------------------------------------------------------------------- faults


@pytest.mark.parametrize("kind", KINDS)
def test_thirty_percent_5xx_and_429_still_embeds_everything(kind: str, srv: StandinServer) -> None:
    p = make(kind, srv, batch_size=16)
    p.load()
    srv.faults.error_rate = 0.15
    srv.faults.rate_limit_rate = 0.15
    texts = [f"chunk {i}: some words of text" for i in range(500)]
    vectors = p.embed_documents(texts)
    assert np.array_equal(vectors, expected(texts))
    assert srv.faults_injected["500"] > 0 and srv.faults_injected["429"] > 0
    meta = p.stats.as_metadata()
    assert meta["retries"] == srv.faults_injected["500"] + srv.faults_injected["429"]
    assert meta["rate_limited"] == srv.faults_injected["429"] and meta["transient_errors"] == srv.faults_injected["500"]
    assert p.breaker.snapshot()["state"] == "closed"


@pytest.mark.parametrize("kind", KINDS)
def test_hang_past_timeout_is_retried_then_succeeds(kind: str, srv: StandinServer) -> None:
    p = make(kind, srv, timeout=0.3)
    p.load()
    srv.faults.hang_next, srv.faults.hang_for = 2, 2.0
    start = time.monotonic()
    vectors = p.embed_documents(["slow text"])
    assert np.array_equal(vectors[0], standin_vector("slow text"))
    assert p.stats.retries == 2 and p.stats.transient_errors == 2
    assert srv.requests[EMBED_PATH[kind]] == 1 + 3  # probe + two timed-out attempts + the answered one
    assert time.monotonic() - start < 1.8, "the client timed out instead of waiting for the hang"


@pytest.mark.parametrize("kind", KINDS)
def test_hang_gives_up_with_a_transient_error(kind: str, srv: StandinServer) -> None:
    p = make(kind, srv, timeout=0.2, policy=RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02))
    p.load()
    srv.faults.hang = 1.0
    with pytest.raises(ProviderCallError) as info:
        p.embed_documents(["never answered"])
    err = info.value
    assert err.kind == ErrorKind.TRANSIENT
    assert "gave up after 2 attempts" in str(err) and "Timeout" in str(err)
    assert srv.requests[EMBED_PATH[kind]] == 1 + 2


@pytest.mark.parametrize("kind", KINDS)
def test_connection_reset_and_malformed_json_are_retried(kind: str, srv: StandinServer) -> None:
    p = make(kind, srv)
    p.load()
    srv.faults.reset_next = 1
    srv.faults.malformed_next = 1
    vectors = p.embed_documents(["one", "two"])
    assert np.array_equal(vectors, expected(["one", "two"]))
    assert srv.faults_injected["reset"] == 1 and srv.faults_injected["malformed"] == 1
    assert p.stats.retries == 2 and p.stats.transient_errors == 2
    assert [r.fault for r in srv.log[-3:]] == ["reset", "malformed", None]


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_dimension_is_rejected_before_anything_is_returned(kind: str, srv: StandinServer) -> None:
    p = make(kind, srv)
    p.load()
    srv.faults.wrong_dims = 256
    with pytest.raises(ProviderCallError) as info:
        p.embed_documents(["a", "b", "c"])
    err = info.value
    assert err.kind == ErrorKind.FATAL
    assert "returned 256 dimensions, expected 384" in str(err)
    assert p.stats.retries == 0

    srv.faults.wrong_dims = None
    srv.faults.drop_last = True
    with pytest.raises(ProviderCallError, match="returned 2 embeddings for 3 inputs"):
        p.embed_documents(["a", "b", "c"])


def test_ollama_dimension_checked_against_model_record(srv: StandinServer) -> None:
    srv.faults.wrong_dims = 768
    p = make("ollama", srv)
    with pytest.raises(ProviderCallError, match=r"returned 768 dimensions, expected 384 \(the model record"):
        p.load()


def test_openai_dimension_checked_against_requested(srv: StandinServer) -> None:
    p = make("openai", srv, dimensions=DIMS)
    srv.faults.wrong_dims = 1536
    with pytest.raises(ProviderCallError, match="returned 1536 dimensions, expected 384"):
        p.embed_documents(["x"])


def test_openai_too_large_batch_is_raised_for_the_caller_to_split(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)
    with StandinServer(dims=DIMS, api_key=KEY, max_batch=10, bad_input="<<bad>>") as srv:
        p = make("openai", srv, dimensions=DIMS, batch_size=64)
        with pytest.raises(ProviderCallError) as info:
            p.embed_documents([f"t{i}" for i in range(20)])
        err = info.value
        assert err.kind == ErrorKind.TOO_LARGE and err.status == 413
        assert "maximum is 10 inputs" in str(err)
        assert srv.requests["/v1/embeddings"] == 1, "not retried and not split inside the provider"
        assert p.breaker.snapshot()["consecutive_failures"] == 0

        with pytest.raises(ProviderCallError) as info:
            p.embed_documents(["fine", "<<bad>>"])
        assert info.value.kind == ErrorKind.BAD_INPUT and info.value.status == 400
        assert "index 1" in str(info.value)
        assert srv.requests["/v1/embeddings"] == 2


# ---------------------------------------------------------------------------------------------------- keys


def test_openai_sends_the_key_from_the_named_variable(srv: StandinServer) -> None:
    p = make("openai", srv, dimensions=DIMS)
    p.embed_documents(["x"])
    assert srv.auth_seen and all(value == f"Bearer {KEY}" for value in srv.auth_seen)
    assert KEY not in repr(p) and KEY_ENV in repr(p)
    assert KEY not in str(vars(p))


def test_openai_wrong_key_is_fatal_not_retried_and_not_echoed(
    srv: StandinServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "sk-wrong-WRONGSECRET-0a1b2c3d"
    monkeypatch.setenv(KEY_ENV, wrong)
    caplog.set_level(logging.DEBUG)
    p = make("openai", srv, dimensions=DIMS)
    with pytest.raises(ProviderCallError) as info:
        p.embed_documents(["x"])
    err = info.value
    assert err.kind == ErrorKind.FATAL and err.status == 401
    assert srv.requests["/v1/embeddings"] == 1, "a 401 is not retried"
    text = "".join(traceback.format_exception(err)) + caplog.text
    assert "HTTP Request: POST" in caplog.text
    assert KEY_ENV in str(err)
    for secret in (wrong, "WRONGSECRET", KEY):
        assert secret not in text
    assert "*****" not in str(err), "the server's masked echo of the key is not forwarded"


def test_openai_missing_key_variable(srv: StandinServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV)
    p = make("openai", srv)
    with pytest.raises(ProviderError, match=f"environment variable {KEY_ENV} .*is not set"):
        p.load()
    assert sum(srv.requests.values()) == 0


def test_key_never_appears_in_logs_or_errors(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(KEY_ENV, KEY)
    errors: list[BaseException] = []
    # a gateway that echoes the Authorization header in its error messages: the provider must redact it
    with StandinServer(dims=DIMS, api_key=KEY, max_batch=4, bad_input="<<bad>>", leaky_errors=True) as srv:
        p = make("openai", srv, timeout=0.2, policy=RetryPolicy(attempts=2, base_delay=0.01, max_delay=0.02))
        p.load()
        faults = [
            {"error_rate": 1.0},
            {"rate_limit_rate": 1.0},
            {"reset_rate": 1.0},
            {"malformed_rate": 1.0},
            {"hang": 0.5},
            {"wrong_dims": 7},
            {"drop_last": True},
            {"down": True},
        ]
        for fault in faults:
            srv.faults.clear()
            for name, value in fault.items():
                setattr(srv.faults, name, value)
            with pytest.raises(ProviderError) as info:
                p.embed_documents(["some text"])
            errors.append(info.value)
            p.breaker.record_success()  # keep the breaker closed between the cases
        srv.faults.clear()
        for texts in (["<<bad>>"], ["a"] * 5):
            with pytest.raises(ProviderCallError) as info:
                p.embed_documents(texts)
            errors.append(info.value)
        assert srv.auth_seen and all(value == f"Bearer {KEY}" for value in srv.auth_seen)
    assert len(errors) == 10
    text = caplog.text + "".join("".join(traceback.format_exception(e)) for e in errors)
    text += repr(p) + str(p.stats) + " ".join(p.stats.history)
    assert "HTTP 500" in text and "HTTP 429" in text  # the search covered real failure messages
    assert "HTTP Request: POST" in caplog.text  # and the logs were captured (httpx logs every request)
    assert "[redacted]" in text  # the echoed key was there to be found, and was redacted
    assert KEY not in text and "TENANTSECRET" not in text


# ---------------------------------------------------------------------------------------------------- circuit breaker


@pytest.mark.parametrize("kind", KINDS)
def test_server_down_opens_the_circuit_and_calls_fail_fast(kind: str, srv: StandinServer) -> None:
    p = make(kind, srv, dimensions=DIMS) if kind == "openai" else make(kind, srv)
    p.policy = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)
    threshold = p.breaker.failure_threshold
    assert threshold > p.policy.attempts  # one call's own retries never open it
    srv.faults.down = True
    try:
        with pytest.raises(ProviderCallError) as info:  # 3 attempts, all 503
            p.load()
        assert info.value.kind == ErrorKind.TRANSIENT and "HTTP 503" in str(info.value)
        assert "gave up after 3 attempts" in str(info.value)
        for _ in range(threshold):  # further calls keep failing until the threshold opens the breaker
            try:
                p.load()
            except CircuitOpenError:
                break
            except ProviderCallError:
                continue
        assert sum(srv.requests.values()) == threshold
        assert p.breaker.snapshot()["state"] == "open"

        start = time.monotonic()
        with pytest.raises(CircuitOpenError) as opened:
            p.embed_documents(["x"]) if kind == "openai" else p.load()
        assert time.monotonic() - start < 0.1
        assert opened.value.retry_in > 0
        assert sum(srv.requests.values()) == threshold, "no request reaches the server while the circuit is open"
        assert p.stats.circuit_rejections >= 2
    finally:
        p.breaker.record_success()  # breakers are per process: leave this endpoint's closed


# ---------------------------------------------------------------------------------------------------- ollama hosts

IPV6 = "[0001:002:003:0004::1]"


@pytest.mark.parametrize(
    "host, url",
    [  # the ollama client's own rules (the examples of its host parser)
        (None, "http://127.0.0.1:11434"), ("", "http://127.0.0.1:11434"), ("1.2.3.4", "http://1.2.3.4:11434"),
        (":56789", "http://127.0.0.1:56789"), ("1.2.3.4:56789", "http://1.2.3.4:56789"),
        ("http://1.2.3.4", "http://1.2.3.4:80"), ("https://1.2.3.4", "https://1.2.3.4:443"),
        ("https://1.2.3.4:56789", "https://1.2.3.4:56789"), ("example.com", "http://example.com:11434"),
        ("example.com:56789", "http://example.com:56789"), ("http://example.com", "http://example.com:80"),
        ("https://example.com", "https://example.com:443"), ("example.com/", "http://example.com:11434"),
        ("example.com:56789/", "http://example.com:56789"), ("example.com/path", "http://example.com:11434/path"),
        ("https://example.com:56789/path", "https://example.com:56789/path"),
        ("example.com:56789/path/", "http://example.com:56789/path"), (IPV6, f"http://{IPV6}:11434"),
        (f"{IPV6}:56789", f"http://{IPV6}:56789"), (f"http://{IPV6}", f"http://{IPV6}:80"),
        (f"https://{IPV6}", f"https://{IPV6}:443"), (f"{IPV6}:56789/path/", f"http://{IPV6}:56789/path"),
        # user info is dropped, as the client drops it; a port that is not a number is left for the client to refuse
        ("http://user:hunter2@example.com:8080/x", "http://example.com:8080/x"),
        ("example.com:port/", "example.com:port"),
    ],
)  # fmt: skip
def test_ollama_host_is_normalised_like_the_client(host: str | None, url: str) -> None:
    assert normalize_host(host) == url


def test_ollama_host_without_scheme_reaches_the_server(srv: StandinServer) -> None:
    port = srv.url.rsplit(":", 1)[1]
    p = OllamaProvider(OLLAMA_MODEL, host=f"127.0.0.1:{port}/", policy=FAST)
    assert p.host == f"http://127.0.0.1:{port}" and p.breaker.name == f"ollama http://127.0.0.1:{port}"
    assert p.embed_query("hello").shape == (DIMS,)
    assert srv.requests["/api/embed"] == 2


# ---------------------------------------------------------------------------------------------------- the protocol


def _protocol_members(p: EmbeddingProvider) -> tuple[str, dict[str, int], object]:
    """Reads every member of the protocol through its type (not through the concrete class)."""
    assert p.identity.dims > 0 and p.tokenizer is not None
    return p.spec, p.counters(), p.breaker


@pytest.mark.parametrize("kind", KINDS)
def test_counters_are_the_stats_and_how_often_the_circuit_opened(kind: str, srv: StandinServer) -> None:
    breaker = CircuitBreaker(f"{kind} counters {srv.url}", failure_threshold=1, cooldowns=(0.0,))
    p = make(kind, srv, breaker=breaker)
    p.load()
    before = p.counters()
    assert before == {**p.stats.as_metadata(), "circuit_opened": 0} and before["retries"] == 0
    srv.faults.error_next = 1  # one 500: retried, and (threshold 1) it opens the circuit once
    p.embed_documents(["a", "b"])
    _, counters, provider_breaker = _protocol_members(p)
    assert provider_breaker is breaker and breaker.opened_count == 1
    assert counters == {**p.stats.as_metadata(), "circuit_opened": 1}
    assert counters["calls"] - before["calls"] == 2 and counters["retries"] == 1 and counters["transient_errors"] == 1


def test_spec_is_the_one_loaded_from(srv: StandinServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", srv.url)
    monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_url)
    spec = "ollama:nomic-embed-text?passage_prefix=search_document:+&max_tokens=24"
    p = load_provider(spec)
    assert isinstance(p, OllamaProvider)
    assert p.spec == spec  # as given, not re-spelled
    assert (p.max_tokens, p.passage_prefix, p.query_prefix) == (24, "search_document: ", "")
    assert load_provider(spec) is p  # cached: one instance, one spec

    q = load_provider("openai:text-embedding-3-small?dimensions=64&query_prefix=q:+", key_env=KEY_ENV)
    assert isinstance(q, OpenAICompatibleProvider)
    assert (q.dimensions, q.max_tokens, q.query_prefix, q.api_key_env) == (64, 8191, "q: ", KEY_ENV)
    r = load_provider("openai:text-embedding-3-small?max_tokens=100", key_env=KEY_ENV)
    assert isinstance(r, OpenAICompatibleProvider) and (r.max_tokens, r.dimensions) == (100, None)


def test_a_directly_built_provider_names_a_spec_that_loads_the_same_model(
    srv: StandinServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_HOST", srv.url)
    monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_url)
    ollama = make("ollama", srv, max_tokens=24, query_prefix="search_query: ")
    openai = make("openai", srv, dimensions=64, passage_prefix="doc: ")
    assert ollama.spec == "ollama:nomic-embed-text?max_tokens=24&query_prefix=search_query%3A%20"
    assert openai.spec == "openai:text-embedding-3-small?dimensions=64&passage_prefix=doc%3A%20"
    assert make("ollama", srv).spec == "ollama:nomic-embed-text"
    for p in (ollama, openai):
        assert canonical_spec(p.spec) == p.spec
        again = load_provider(p.spec, key_env=KEY_ENV)
        assert again.identity.model_key == p.identity.model_key


def test_the_local_provider_counts_calls_and_has_no_breaker(provider: EmbeddingProvider) -> None:
    before = provider.counters()
    provider.embed_query("a question")
    provider.embed_documents(["one passage", "another"])
    provider.embed_documents([])  # nothing to encode: no call
    spec, after, breaker = _protocol_members(provider)
    assert breaker is None and "circuit_opened" not in after
    assert after["calls"] == before["calls"] + 2
    assert set(after) == {"calls"}  # no figure that never moves (retries, rate limits) in the run metadata
    assert spec == "sentence-transformers:all-MiniLM-L6-v2"  # the spec conftest loaded it from
