"""Per-token rate limits: a token bucket per API token, refilled at `rate` requests per second up to `burst`.

EMBEDDINGS_RATE_LIMIT (requests per second per token, default 20; 0 turns limiting off) and EMBEDDINGS_RATE_BURST
(default twice the rate, at least 1). A refused request answers 429 with `Retry-After` (whole seconds, at least 1).
Buckets live in the process: with several service replicas, each allows the rate on its own.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_RATE = 20.0


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, rate: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if rate < 0 or (burst is not None and burst < 1):
            raise ValueError(f"rate must be >= 0 and burst >= 1, got rate={rate}, burst={burst}")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1.0, 2 * rate))
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> RateLimiter:
        rate = float(os.environ.get("EMBEDDINGS_RATE_LIMIT", "") or DEFAULT_RATE)
        burst = os.environ.get("EMBEDDINGS_RATE_BURST", "").strip()
        return cls(rate, float(burst) if burst else None)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def acquire(self, key: str) -> float:
        """Take one request from `key`'s bucket: 0.0 when allowed, else the seconds until one is available."""
        if not self.enabled:
            return 0.0
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(self.burst, now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return 0.0
            return (1 - bucket.tokens) / self.rate

    @staticmethod
    def retry_after_header(wait_s: float) -> str:
        return str(max(1, math.ceil(wait_s)))
