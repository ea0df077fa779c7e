"""Which model and chunk set serve a tenant's searches (its serving plan), remembered for a few seconds.

A plan is what `search_mode` reads before it searches: the tenant's active model (`model_change.search_provider`:
the tenant's settings, and the model's spec when it is not the tenant's own) and the chunk set the tenant searches
with it (`store.models.chunk_set_of`); the model's vector table is part of its identity. Read on every request, that
is two or three round trips to PostgreSQL; remembered, a steady tenant's search reads only its rows.

- A plan lives `ttl` seconds (PLAN_CACHE_S, 5 s; 0 reads it on every request).
- `store.tenants.activate_model` (every model or chunk-set switch: a finished model change, `models activate`)
  NOTIFYs `MODEL_CHANNEL` with the tenant id on commit; the service's listener (`listen.py`) forgets that tenant's
  plan at once. A switch made any other way (plain SQL) is seen when the entry expires.
- A plan read while a notification for its tenant arrived is used once, never remembered (no stale plan survives
  a switch that raced with its read). A tenant with no chunk set yet is never remembered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..store.models import chunk_set_of

if TYPE_CHECKING:
    import psycopg

    from ..providers.base import EmbeddingProvider
    from .warm import WarmProviders

PLAN_CACHE_S = 5.0
MAX_PLANS = 10_000


@dataclass(frozen=True)
class ServingPlan:
    provider: EmbeddingProvider  # the tenant's active model, its queries batched (`warm.WarmProviders.search`)
    chunk_set: str | None  # the chunk set it searches with that model

    @property
    def model_key(self) -> str:
        return self.provider.identity.model_key


class ServingPlans:
    """Serving plans by tenant (thread-safe; `get` reads PostgreSQL on a miss, on the caller's connection)."""

    def __init__(
        self, providers: WarmProviders, schema: str, ttl: float = PLAN_CACHE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.providers, self.schema, self.ttl, self.clock = providers, schema, ttl, clock
        self._plans: dict[str, tuple[ServingPlan, float]] = {}  # tenant -> (plan, expires)
        self._generation = 0  # bumped by every forget: a read that overlapped one is not remembered
        self._lock = threading.Lock()
        self.reads = 0  # plans read from PostgreSQL (for tests and benchmarks)

    def get(self, conn: psycopg.Connection, tenant: str) -> ServingPlan:
        if self.ttl > 0:
            with self._lock:
                entry = self._plans.get(tenant)
                if entry is not None and entry[1] > self.clock():
                    return entry[0]
                generation = self._generation
        provider = self.providers.search(conn, self.schema, tenant)
        plan = ServingPlan(provider, chunk_set_of(conn, self.schema, tenant, provider.identity.model_key))
        self.reads += 1
        if self.ttl > 0 and plan.chunk_set is not None:
            with self._lock:
                if generation == self._generation:
                    if len(self._plans) >= MAX_PLANS:
                        self._plans.clear()
                    self._plans[tenant] = (plan, self.clock() + self.ttl)
        return plan

    def forget(self, tenant: str | None = None) -> None:
        """Drop `tenant`'s plan (its model or chunk set changed), or every plan (None: notifications were lost)."""
        with self._lock:
            self._generation += 1
            if tenant is None:
                self._plans.clear()
            else:
                self._plans.pop(tenant, None)
