"""The shared retry pacing and the one cause-chain walker: pure logic, plus a real Dagster failure's error info."""

from __future__ import annotations

import math

import dagster as dg
import pytest

from embeddings_pipeline.providers import resilience
from embeddings_pipeline.retry import RetryPolicy, causes, parse_retry_after


def test_resilience_reexports_the_one_policy():
    assert resilience.RetryPolicy is RetryPolicy


def test_delay_is_full_jitter_capped_and_floored_by_a_capped_retry_after():
    policy = RetryPolicy(base_delay=0.5, max_delay=4.0, max_retry_after=10.0)
    assert [policy.delay(n, rng=lambda: 1.0) for n in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert policy.delay(2, rng=lambda: 0.25) == 0.5  # a quarter of the way to the ceiling of 2.0
    assert policy.delay(3, rng=lambda: 0.0) == 0.0
    assert policy.delay(0, retry_after=3.0, rng=lambda: 0.1) == 3.0  # Retry-After is a floor
    assert policy.delay(3, retry_after=1.0, rng=lambda: 1.0) == 4.0  # ... not a ceiling
    assert policy.delay(0, retry_after=99.0, rng=lambda: 0.0) == 10.0  # capped
    assert policy.delay(0, retry_after=0.0, rng=lambda: 1.0) == 0.5


def test_delay_stays_finite_for_late_attempts_and_an_unbounded_ceiling():
    assert RetryPolicy(max_delay=30.0).delay(10_000, rng=lambda: 1.0) == 30.0
    unbounded = RetryPolicy(base_delay=0.5, max_delay=math.inf)
    assert unbounded.delay(3, rng=lambda: 1.0) == 4.0
    assert math.isfinite(unbounded.delay(10_000, rng=lambda: 1.0))


@pytest.mark.parametrize(
    "value, seconds",
    [("7", 7.0), (" 2.5 ", 2.5), ("0", 0.0), ("inf", math.inf), (None, None), ("", None), ("soon", None),
     ("Wed, 21 Oct 2026 07:28:00 GMT", None), ("nan", None), ("-1", None)],
)  # fmt: skip
def test_parse_retry_after(value, seconds):
    assert parse_retry_after(value) == seconds


def _raised(outer: Exception, inner: BaseException, *, explicit: bool) -> Exception:
    try:
        try:
            raise inner
        except BaseException as e:
            if explicit:
                raise outer from e
            raise outer  # noqa: B904 (an implicit __context__ on purpose)
    except Exception as caught:
        return caught


def test_causes_follow_cause_then_context():
    root = OSError("reset")
    middle = _raised(ValueError("parse"), root, explicit=False)
    top = _raised(RuntimeError("fetch failed"), middle, explicit=True)
    assert [str(e) for e in causes(top)] == ["fetch failed", "parse", "reset"]
    assert [str(e) for e in causes(top, follow_context=False)] == ["fetch failed", "parse"]
    assert [str(e) for e in causes(top, limit=2)] == ["fetch failed", "parse"]
    assert list(causes(None)) == []


def test_causes_stop_at_a_cycle():
    a, b = ValueError("a"), ValueError("b")
    a.__cause__, b.__cause__ = b, a
    assert [str(e) for e in causes(a)] == ["a", "b"]


def test_causes_walk_dagster_error_info():
    """A real step failure: Dagster's wrapper, then the asset's own error and what it was raised from."""

    @dg.asset
    def exploding() -> None:
        try:
            raise ConnectionResetError("socket closed by peer")
        except ConnectionResetError as exc:
            raise RuntimeError("provider exploded") from exc

    result = dg.materialize([exploding], raise_on_error=False)
    (failure,) = result.get_step_failure_events()
    error = failure.step_failure_data.error
    assert error is not None
    chain = list(causes(error))
    assert chain[0] is error and all(not isinstance(e, BaseException) for e in chain)
    messages = [e.message for e in chain]
    assert messages[0].startswith("dagster.") and len(messages) == 3
    assert "provider exploded" in messages[1] and "socket closed by peer" in messages[2]
    assert [e.message for e in causes(error, limit=2)] == messages[:2]
