"""Shared resilience for every remote provider: classify failures (through exception chains), retry with
exponential backoff and full jitter (honouring Retry-After; the pacing is ``embeddings_pipeline.retry``), and a
circuit breaker per endpoint with escalating cooldowns, so a provider outage fails fast and loud instead of leaving
rows NULL in silence."""

from __future__ import annotations

import errno
import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import TypeVar

from ..retry import RetryPolicy, causes, parse_retry_after
from .base import ProviderError

__all__ = [
    "CallStats", "CircuitBreaker", "CircuitOpenError", "ErrorKind", "ProviderCallError", "RetryPolicy",
    "breaker_for", "call_with_retries", "classify", "kind_of_status", "provider_counters",
]  # fmt: skip

T = TypeVar("T")


class ErrorKind(StrEnum):
    TRANSIENT = "transient"  # timeouts, resets, 5xx, malformed answers: retry
    RATE_LIMITED = "rate_limited"  # 429: retry after the server's delay
    TOO_LARGE = "too_large"  # 413 / token cap: the caller splits the batch
    BAD_INPUT = "bad_input"  # 400/422: an input the provider refuses; retrying will not help
    FATAL = "fatal"  # 401/403/404 and the unknown: stop, say why


class ProviderCallError(ProviderError):
    """A classified provider failure. The message names provider, model and status, never credentials."""

    def __init__(
        self, message: str, *, kind: ErrorKind, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.kind, self.status, self.retry_after = kind, status, retry_after


class CircuitOpenError(ProviderError):
    """The endpoint failed repeatedly; calls fail fast until the cooldown ends."""

    def __init__(self, message: str, retry_in: float) -> None:
        super().__init__(message)
        self.retry_in = retry_in


_TRANSIENT_ERRNOS = {
    errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.EPIPE,
    errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.EAGAIN,
}  # fmt: skip


def kind_of_status(status: int) -> ErrorKind:
    if status == 429:
        return ErrorKind.RATE_LIMITED
    if status == 413:
        return ErrorKind.TOO_LARGE
    if status in (408, 409, 425) or status >= 500:
        return ErrorKind.TRANSIENT
    if status in (400, 422):
        return ErrorKind.BAD_INPUT
    return ErrorKind.FATAL


def classify(exc: BaseException) -> tuple[ErrorKind, int | None, float | None]:
    """(kind, HTTP status, Retry-After seconds) of a failure, looking through __cause__/__context__ chains:
    a `fetch failed` whose real cause is ETIMEDOUT is transient, not fatal."""
    import httpx

    found: tuple[ErrorKind, int | None, float | None] | None = None
    for e in causes(exc):
        if isinstance(e, CircuitOpenError):
            return ErrorKind.TRANSIENT, None, e.retry_in
        if isinstance(e, ProviderCallError):
            return e.kind, e.status, e.retry_after
        if isinstance(e, httpx.HTTPStatusError):
            code = e.response.status_code
            return kind_of_status(code), code, parse_retry_after(e.response.headers.get("retry-after"))
        status = getattr(e, "status_code", None)  # ollama.ResponseError and friends
        if isinstance(status, int) and status >= 400:
            return kind_of_status(status), status, None
        if isinstance(e, httpx.TimeoutException | httpx.TransportError | TimeoutError | ConnectionError):
            found = found or (ErrorKind.TRANSIENT, None, None)
        elif isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNOS:
            found = found or (ErrorKind.TRANSIENT, None, None)
        elif isinstance(e, json.JSONDecodeError):
            found = found or (ErrorKind.TRANSIENT, None, None)
    return found or (ErrorKind.FATAL, None, None)


class CircuitBreaker:
    """closed -> (failure_threshold consecutive failures) -> open for cooldowns[n] -> half-open: one probe ->
    success closes (and resets the escalation), failure re-opens with the next, longer cooldown."""

    def __init__(
        self,
        name: str,
        failure_threshold: int = 8,  # above RetryPolicy.attempts: one unlucky call alone never opens it
        cooldowns: tuple[float, ...] = (5, 15, 60, 180, 600),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name, self.failure_threshold, self.cooldowns, self.clock = name, failure_threshold, cooldowns, clock
        self.state = "closed"
        self.consecutive_failures = 0
        self.opened_count = 0
        self._level = 0
        self._open_until = 0.0
        self._probing = False
        self._lock = threading.Lock()

    def before_call(self) -> None:
        with self._lock:
            if self.state == "open":
                wait = self._open_until - self.clock()
                if wait > 0:
                    raise CircuitOpenError(
                        f"circuit for {self.name} is open after {self.consecutive_failures} consecutive failures; "
                        f"failing fast for another {wait:.0f}s",
                        retry_in=wait,
                    )
                self.state = "half_open"
                self._probing = False
            if self.state == "half_open":
                if self._probing:
                    raise CircuitOpenError(f"circuit for {self.name} is half-open; a probe is in flight", 1.0)
                self._probing = True

    def record_success(self) -> None:
        with self._lock:
            self.state, self.consecutive_failures, self._level, self._probing = "closed", 0, 0, False

    def record_failure(self) -> None:
        with self._lock:
            self.consecutive_failures += 1
            if self.state == "half_open" or self.consecutive_failures >= self.failure_threshold:
                if self.state == "half_open":
                    self._level = min(self._level + 1, len(self.cooldowns) - 1)
                self.state = "open"
                self.opened_count += 1
                self._open_until = self.clock() + self.cooldowns[self._level]
                self._probing = False

    def snapshot(self) -> dict[str, object]:
        with self._lock:
            retry_in = max(0.0, self._open_until - self.clock()) if self.state == "open" else 0.0
            return {
                "state": self.state,
                "consecutive_failures": self.consecutive_failures,
                "opened_count": self.opened_count,
                "cooldown_s": self.cooldowns[self._level],
                "retry_in_s": round(retry_in, 1),
            }


_BREAKERS: dict[str, CircuitBreaker] = {}
_BREAKERS_LOCK = threading.Lock()


def breaker_for(key: str) -> CircuitBreaker:
    """One breaker per endpoint per process, shared by every tenant and run that calls it."""
    with _BREAKERS_LOCK:
        if key not in _BREAKERS:
            _BREAKERS[key] = CircuitBreaker(key)
        return _BREAKERS[key]


@dataclass
class CallStats:
    calls: int = 0
    retries: int = 0
    rate_limited: int = 0
    transient_errors: int = 0
    circuit_rejections: int = 0
    history: list[str] = field(default_factory=list, repr=False)

    def as_metadata(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if isinstance(v, int)}


def provider_counters(stats: CallStats, breaker: CircuitBreaker | None) -> dict[str, int]:
    """A provider's counters: ``stats`` as metadata, plus ``circuit_opened`` when it has a breaker."""
    out = stats.as_metadata()
    if breaker is not None:
        out["circuit_opened"] = breaker.opened_count
    return out


def call_with_retries(
    fn: Callable[[], T],
    *,
    policy: RetryPolicy,
    breaker: CircuitBreaker,
    stats: CallStats,
    describe: str,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `fn`, retrying transient failures and rate limits; every other failure is raised at once, classified."""
    for attempt in range(policy.attempts):
        try:
            breaker.before_call()
        except CircuitOpenError:
            stats.circuit_rejections += 1
            raise
        stats.calls += 1
        try:
            result = fn()
        except Exception as exc:
            kind, status, retry_after = classify(exc)
            where = f"{describe}: {kind.value}" + (f" (HTTP {status})" if status else f" ({type(exc).__name__})")
            if kind not in (ErrorKind.TRANSIENT, ErrorKind.RATE_LIMITED):
                breaker.record_success()  # the endpoint answered; the request was wrong
                raise ProviderCallError(where, kind=kind, status=status, retry_after=retry_after) from exc
            if kind == ErrorKind.TRANSIENT:
                breaker.record_failure()  # a 429 means the endpoint is up: it slows us, it does not trip us
            stats.transient_errors += kind == ErrorKind.TRANSIENT
            stats.rate_limited += kind == ErrorKind.RATE_LIMITED
            if len(stats.history) < 20:
                stats.history.append(where)
            if attempt + 1 >= policy.attempts:
                raise ProviderCallError(
                    f"{where}; gave up after {policy.attempts} attempts", kind=kind, status=status
                ) from exc
            stats.retries += 1
            sleep(policy.delay(attempt, retry_after))
            continue
        breaker.record_success()
        return result
    raise AssertionError("unreachable")  # pragma: no cover
