"""Failure classification, backoff, circuit breaking and the retry loop (pure logic, a fake clock)."""

from __future__ import annotations

import errno
import json

import httpx
import pytest

from embeddings_pipeline.providers.resilience import (
    CallStats,
    CircuitBreaker,
    CircuitOpenError,
    ErrorKind,
    ProviderCallError,
    RetryPolicy,
    call_with_retries,
    classify,
)


def status_error(status: int, headers: dict[str, str] | None = None) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://127.0.0.1:9/v1/embeddings")
    response = httpx.Response(status, headers=headers or {}, request=request)
    return httpx.HTTPStatusError(f"status {status}", request=request, response=response)


@pytest.mark.parametrize(
    "status, kind",
    [(429, ErrorKind.RATE_LIMITED), (413, ErrorKind.TOO_LARGE), (500, ErrorKind.TRANSIENT),
     (503, ErrorKind.TRANSIENT), (408, ErrorKind.TRANSIENT), (400, ErrorKind.BAD_INPUT),
     (422, ErrorKind.BAD_INPUT), (401, ErrorKind.FATAL), (403, ErrorKind.FATAL), (404, ErrorKind.FATAL)],
)  # fmt: skip
def test_http_statuses(status, kind):
    assert classify(status_error(status))[:2] == (kind, status)


def test_retry_after_is_read():
    assert classify(status_error(429, {"Retry-After": "7"})) == (ErrorKind.RATE_LIMITED, 429, 7.0)
    assert classify(status_error(429, {"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}))[2] is None


def _wrapped(inner: BaseException, outer: Exception, implicit: bool = False) -> Exception:
    try:
        try:
            raise inner
        except BaseException as e:
            if implicit:
                raise outer  # noqa: B904 (an implicit __context__ chain on purpose)
            raise outer from e
    except Exception as caught:
        return caught


def test_cause_and_context_chains_are_followed():
    """`fetch failed` whose real cause is ETIMEDOUT is transient (the production story)."""
    timeout = OSError(errno.ETIMEDOUT, "Connection timed out")
    assert classify(_wrapped(timeout, RuntimeError("fetch failed")))[0] == ErrorKind.TRANSIENT
    assert classify(_wrapped(ConnectionResetError(), ValueError("bad"), implicit=True))[0] == ErrorKind.TRANSIENT
    assert classify(_wrapped(status_error(503), RuntimeError("wrapped")))[:2] == (ErrorKind.TRANSIENT, 503)
    assert classify(ValueError("something else"))[0] == ErrorKind.FATAL
    assert classify(json.JSONDecodeError("x", "doc", 0))[0] == ErrorKind.TRANSIENT
    assert classify(httpx.ReadTimeout("slow"))[0] == ErrorKind.TRANSIENT


def test_backoff_is_full_jitter_and_honours_retry_after():
    policy = RetryPolicy(base_delay=0.5, max_delay=4.0, max_retry_after=10.0)
    assert policy.delay(0, rng=lambda: 1.0) == 0.5
    assert policy.delay(3, rng=lambda: 1.0) == 4.0
    assert policy.delay(10, rng=lambda: 1.0) == 4.0  # capped
    assert policy.delay(5, rng=lambda: 0.0) == 0.0  # full jitter reaches zero
    assert policy.delay(0, retry_after=3.0, rng=lambda: 0.1) == 3.0
    assert policy.delay(0, retry_after=99.0, rng=lambda: 0.1) == 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_escalates_and_closes():
    clock = Clock()
    breaker = CircuitBreaker("ollama test", failure_threshold=3, cooldowns=(5, 15, 60), clock=clock)
    for _ in range(3):
        breaker.before_call()
        breaker.record_failure()
    assert breaker.snapshot()["state"] == "open"
    with pytest.raises(CircuitOpenError) as err:
        breaker.before_call()
    assert err.value.retry_in == pytest.approx(5)
    clock.now += 5
    breaker.before_call()  # half-open: one probe
    with pytest.raises(CircuitOpenError):
        breaker.before_call()  # a second caller while the probe is out
    breaker.record_failure()
    assert breaker.snapshot()["cooldown_s"] == 15
    clock.now += 14
    with pytest.raises(CircuitOpenError):
        breaker.before_call()
    clock.now += 1
    breaker.before_call()
    breaker.record_success()
    snap = breaker.snapshot()
    assert (snap["state"], snap["cooldown_s"], snap["opened_count"]) == ("closed", 5, 2)


def flaky(failures: list[BaseException], value: str = "ok"):
    calls = {"n": 0}

    def fn() -> str:
        calls["n"] += 1
        if failures:
            raise failures.pop(0)
        return value

    return fn, calls


def test_retries_transient_failures_then_succeeds():
    sleeps: list[float] = []
    stats = CallStats()
    fn, calls = flaky([status_error(503), status_error(429, {"Retry-After": "2"}), httpx.ConnectError("reset")])
    result = call_with_retries(
        fn,
        policy=RetryPolicy(base_delay=0.01),
        breaker=CircuitBreaker("t"),
        stats=stats,
        describe="x",
        sleep=sleeps.append,
    )
    assert result == "ok" and calls["n"] == 4
    assert (stats.retries, stats.rate_limited, stats.transient_errors) == (3, 1, 2)
    assert sleeps[1] >= 2.0  # Retry-After honoured


def test_fatal_and_bad_input_are_not_retried():
    for status, kind in ((401, ErrorKind.FATAL), (400, ErrorKind.BAD_INPUT), (413, ErrorKind.TOO_LARGE)):
        fn, calls = flaky([status_error(status)])
        with pytest.raises(ProviderCallError) as err:
            call_with_retries(
                fn, policy=RetryPolicy(), breaker=CircuitBreaker("t"), stats=CallStats(), describe="openai m",
                sleep=lambda s: None,
            )  # fmt: skip
        assert (err.value.kind, err.value.status, calls["n"]) == (kind, status, 1)
        assert str(err.value).startswith("openai m:")


def test_gives_up_after_the_last_attempt_and_the_breaker_then_fails_fast():
    clock = Clock()
    breaker = CircuitBreaker("down", failure_threshold=3, clock=clock)
    fn, calls = flaky([status_error(503)] * 10)
    with pytest.raises(ProviderCallError, match="gave up after 2 attempts"):
        call_with_retries(fn, policy=RetryPolicy(attempts=2), breaker=breaker, stats=CallStats(), describe="d",
                          sleep=lambda s: None)  # fmt: skip
    stats = CallStats()
    with pytest.raises(CircuitOpenError):
        call_with_retries(fn, policy=RetryPolicy(attempts=5), breaker=breaker, stats=stats, describe="d",
                          sleep=lambda s: None)  # fmt: skip
    assert calls["n"] == 3 and stats.circuit_rejections == 1  # the third failure opened it; nothing after
