"""Prometheus metrics of the service, in a registry of its own (one per app, so tests may build many apps).

- Requests: `embeddings_service_requests_total{endpoint,method,status}`, `embeddings_service_request_errors_total
  {endpoint,status}` (status >= 400) and `embeddings_service_request_duration_seconds{endpoint}`. `endpoint` is the
  route's path (one of a fixed set, "other" for anything else), never a raw path, header or token.
- Tenants, computed at scrape time by a custom collector from a few grouped queries (`counts.py`):
  `embeddings_tenant_{documents,blocks,chunks,vectors,missing,stale,errors,documents_not_chunked,document_errors}
  {tenant,model_key}`.
- Providers the service holds warm: `embeddings_provider_events_total{model_key,event}` (calls, retries,
  rate_limited, transient_errors, circuit_rejections, circuit_opened, from `provider.counters()`) and
  `embeddings_provider_circuit_state{model_key,state}` (1 for the breaker's current state; local models have none).
- `embeddings_tenant_metrics_up` is 0 when the tenant counts could not be read (the scrape itself still answers).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from ..providers.base import EmbeddingProvider
    from ..store.status import TenantStatus

log = logging.getLogger(__name__)

TENANT_FIELDS = ("documents", "blocks", "chunks", "vectors", "missing", "stale", "errors", "documents_not_chunked",
                 "document_errors")  # fmt: skip
CIRCUIT_STATES = ("closed", "open", "half_open")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class RequestMetrics:
    def __init__(self, registry: CollectorRegistry, endpoints: Iterable[str]) -> None:
        self.endpoints = frozenset(endpoints)
        self.requests = Counter(
            "embeddings_service_requests", "HTTP requests answered", ["endpoint", "method", "status"],
            registry=registry,
        )  # fmt: skip
        self.errors = Counter(
            "embeddings_service_request_errors", "HTTP requests answered with status >= 400", ["endpoint", "status"],
            registry=registry,
        )  # fmt: skip
        self.latency = Histogram(
            "embeddings_service_request_duration_seconds", "Time to answer a request", ["endpoint"],
            buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip

    def endpoint(self, path: str) -> str:
        return path if path in self.endpoints else "other"

    def observe(self, path: str, method: str, status: int, seconds: float) -> None:
        endpoint = self.endpoint(path)
        self.requests.labels(endpoint, method, str(status)).inc()
        if status >= 400:
            self.errors.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)


class TenantCollector(Collector):
    """Per-tenant gauges computed when Prometheus scrapes: `read()` returns every tenant's counts."""

    def __init__(self, read: Callable[[], list[TenantStatus]]) -> None:
        self.read = read

    def describe(self) -> list[Metric]:
        return []  # computed at scrape time: nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("embeddings_tenant_metrics_up", "1 when the per-tenant counts could be read")
        try:
            rows = self.read()
        except Exception as exc:  # a scrape must answer even while the database is away
            log.warning("per-tenant metrics unavailable: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        families = {
            f: GaugeMetricFamily(
                f"embeddings_tenant_{f}", f"Per-tenant {f} (as `status` counts them)", labels=["tenant", "model_key"]
            )  # fmt: skip
            for f in TENANT_FIELDS
        }
        since = GaugeMetricFamily(
            "embeddings_tenant_seconds_since_last_success", "Seconds since the tenant's last successful run (every "
            "chunk embedded, checks passed); no sample for a tenant that has had none", labels=["tenant", "model_key"],
        )  # fmt: skip
        for row in rows:
            for f, family in families.items():
                family.add_metric([row.tenant, row.model_key], getattr(row, f))
            if row.seconds_since_success is not None:
                since.add_metric([row.tenant, row.model_key], row.seconds_since_success)
        yield from families.values()
        yield since


class ProviderCollector(Collector):
    """Counters and circuit state of the providers the service holds: `providers()` lists (model_key, provider)."""

    def __init__(self, providers: Callable[[], Iterable[tuple[str, EmbeddingProvider]]]) -> None:
        self.providers = providers

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        events = CounterMetricFamily(
            "embeddings_provider_events", "Provider calls, retries and failures (provider.counters())",
            labels=["model_key", "event"],
        )  # fmt: skip
        circuit = GaugeMetricFamily(
            "embeddings_provider_circuit_state", "1 for the circuit breaker's current state",
            labels=["model_key", "state"],
        )  # fmt: skip
        for key, provider in self.providers():  # (model_key, provider), one each
            for event, value in sorted(provider.counters().items()):
                events.add_metric([key, event], value)
            breaker = provider.breaker
            if breaker is not None:
                state = str(breaker.snapshot()["state"])
                for s in CIRCUIT_STATES:
                    circuit.add_metric([key, s], 1 if s == state else 0)
        yield events
        yield circuit
