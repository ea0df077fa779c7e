"""Retry pacing and cause chains, shared by the providers' resilience layer and the alert sender (no Dagster here).

- ``RetryPolicy``: how many attempts, and how long to wait before the next one (exponential backoff with full
  jitter, never less than the server's Retry-After, capped).
- ``parse_retry_after``: a ``Retry-After`` header in seconds, or None when it is not a usable number.
- ``causes``: an error and the errors behind it, for exceptions (``__cause__``/``__context__``) and for Dagster's
  ``SerializableErrorInfo`` (``.cause``/``.context``) alike.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

_MAX_EXPONENT = 64  # 2**64 times any sane base delay is past every cap; keeps the float math finite


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` calls at most; before retry ``n`` (0-based, counting the failed attempt) wait ``delay(n)``."""

    attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_retry_after: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None, rng: Callable[[], float] = random.random) -> float:
        """Full jitter: uniform in [0, min(max_delay, base_delay * 2**attempt)]; never less than Retry-After, which
        counts up to ``max_retry_after``."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** min(max(attempt, 0), _MAX_EXPONENT))
        backoff = rng() * ceiling
        if retry_after is not None:
            return max(backoff, min(retry_after, self.max_retry_after))
        return backoff


def parse_retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` value in seconds; None when absent, an HTTP date, NaN or negative (the caller then falls
    back to its own backoff)."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if math.isnan(seconds) or seconds < 0:
        return None
    return seconds


def _next(obj: Any, follow_context: bool) -> Any:
    if isinstance(obj, BaseException):
        return obj.__cause__ or (obj.__context__ if follow_context else None)
    return getattr(obj, "cause", None) or (getattr(obj, "context", None) if follow_context else None)


def causes(obj: Any, *, limit: int | None = None, follow_context: bool = True) -> Iterator[Any]:
    """``obj``, then what caused it, outermost first: ``__cause__`` else ``__context__`` for exceptions, ``.cause``
    else ``.context`` for anything else (Dagster's ``SerializableErrorInfo``). Each object is yielded once (a cycle
    ends the walk); at most ``limit`` objects when given. ``follow_context=False`` follows explicit causes only."""
    seen: set[int] = set()
    while obj is not None and id(obj) not in seen and (limit is None or len(seen) < limit):
        seen.add(id(obj))
        yield obj
        obj = _next(obj, follow_context)
