"""Alerting against a real local webhook and real Dagster instances: no mocks of Dagster or HTTP."""

from __future__ import annotations

import json
import logging
import time

import dagster as dg
import pytest

from embeddings_pipeline.defs import alerts as alerts_defs
from embeddings_pipeline.defs.alerts import check_failure_alert, run_failure_alert
from embeddings_pipeline.pipeline import alerts as alerting
from embeddings_pipeline.pipeline.alerts import Alert, format_slack, send_alert

from .webhook_server import WebhookServer

TENANT = "o'brien/ü"
SECRET = "SECRETTOKEN"
FAST = {"base_delay": 0.01, "timeout": 2.0}


def _alert(**overrides) -> Alert:
    fields = {
        "title": "asset check failed",
        "tenant": TENANT,
        "check": "no_truncation",
        "severity": "WARN",
        "counts": {"count": 3},
        "run_id": "abc-123",
        "details": "example chunk ids: 1, 2, 3",
    }
    return Alert(**{**fields, **overrides})


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(alerting.WEBHOOK_ENV, raising=False)
    monkeypatch.setenv(alerting.WEBSERVER_ENV, "http://dagster.example:3000/")


# --- send_alert ------------------------------------------------------------------------------------------------


def test_format_slack_keeps_tenant_and_links_the_run():
    text = format_slack(_alert(tenant="a\"b'c/ü <x> & y"))["text"]
    assert "tenant: a\"b'c/ü &lt;x&gt; &amp; y" in text  # Slack shows &lt; &gt; &amp; as < > &
    assert "check: no_truncation" in text and "count=3" in text and "[WARN]" in text
    assert "<http://dagster.example:3000/runs/abc-123|abc-123>" in text


def test_delivers_once():
    with WebhookServer() as hook:
        assert send_alert(_alert(), hook.url, **FAST) is True
    assert len(hook.requests) == 1
    assert hook.received == [format_slack(_alert())]
    assert TENANT in hook.received[0]["text"]


def test_retries_through_two_500s():
    with WebhookServer(fail_first=2, status=500) as hook:
        assert send_alert(_alert(), hook.url, **FAST) is True
    assert [r["status"] for r in hook.requests] == [500, 500, 200]
    assert len(hook.received) == 1


def test_retries_429_honouring_retry_after():
    with WebhookServer(fail_first=1, status=429, retry_after="0.4") as hook:
        start = time.monotonic()
        assert send_alert(_alert(), hook.url, base_delay=0.0, timeout=2.0) is True
        elapsed = time.monotonic() - start
    assert [r["status"] for r in hook.requests] == [429, 200]
    assert len(hook.received) == 1
    assert elapsed >= 0.4  # the backoff alone (base_delay 0) would not wait


def test_retry_after_zero_then_delivers_exactly_once():
    with WebhookServer(fail_first=1, status=429, retry_after="0") as hook:
        assert send_alert(_alert(), hook.url, **FAST) is True
    assert len(hook.requests) == 2 and len(hook.received) == 1


def test_gives_up_after_attempts_on_permanent_500():
    with WebhookServer(fail_first=None, status=500) as hook:
        assert send_alert(_alert(), hook.url, attempts=3, **FAST) is False
    assert len(hook.requests) == 3 and hook.received == []


def test_no_retry_on_400():
    with WebhookServer(fail_first=None, status=400) as hook:
        assert send_alert(_alert(), hook.url, attempts=4, **FAST) is False
    assert len(hook.requests) == 1


def test_timeout_is_retried():
    with WebhookServer(fail_first=1, delay=1.5) as hook:
        start = time.monotonic()
        assert send_alert(_alert(), hook.url, attempts=2, timeout=0.3, base_delay=0.01) is True
        assert time.monotonic() - start < 1.4  # did not wait for the slow answer
    assert len(hook.requests) == 2


def test_sleeps_and_deadline_are_bounded(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(alerting, "MAX_TOTAL_SLEEP_S", 0.5)
    with WebhookServer(fail_first=None, status=429, retry_after="5") as hook:
        start = time.monotonic()
        assert send_alert(_alert(), hook.url, attempts=4, **FAST) is False
        assert time.monotonic() - start < 2.0  # Retry-After 5 s exceeds the sleep budget: give up
        assert len(hook.requests) == 1
    with WebhookServer(fail_first=None, status=500) as hook:
        start = time.monotonic()
        ok = send_alert(_alert(), hook.url, attempts=50, base_delay=0.2, deadline=time.monotonic() + 0.6)
        assert ok is False and time.monotonic() - start < 2.0
        assert 1 <= len(hook.requests) < 50


def test_no_url_only_logs(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.DEBUG)
    assert send_alert(_alert()) is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and TENANT in warnings[0].getMessage() and "no_truncation" in warnings[0].getMessage()


def test_env_url_is_used_and_never_logged(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch):
    caplog.set_level(logging.DEBUG)  # includes httpx's own request lines
    with WebhookServer(fail_first=1, status=500) as ok_hook:
        monkeypatch.setenv(alerting.WEBHOOK_ENV, ok_hook.url)
        assert SECRET in ok_hook.url
        assert send_alert(_alert(), **FAST) is True
        assert len(ok_hook.received) == 1
    with WebhookServer(fail_first=None, status=403) as hook:
        assert send_alert(_alert(), hook.url, **FAST) is False
    with WebhookServer(fail_first=None, status=503) as hook:
        assert send_alert(_alert(), hook.url, attempts=2, **FAST) is False
    with WebhookServer(fail_first=None, delay=1.0) as hook:
        assert send_alert(_alert(), hook.url, attempts=1, timeout=0.2) is False
    closed = hook.url  # the server is gone: connection refused
    assert send_alert(_alert(), closed, attempts=2, **FAST) is False
    assert send_alert(_alert(), f"not a url {closed}", attempts=1, **FAST) is False
    assert "ALERT" in caplog.text and "alert webhook" in caplog.text
    assert SECRET not in caplog.text
    assert "/services/T000" not in caplog.text


# --- sensors on a real instance --------------------------------------------------------------------------------

tenants = dg.DynamicPartitionsDefinition(name="tenant")
CHECKS = [
    dg.AssetCheckSpec("no_missing_vectors", asset="embeddings", blocking=True),
    dg.AssetCheckSpec("no_truncation", asset="embeddings"),
]


def _embeddings(*, missing: int = 0, truncated: int = 0, error: str | None = None) -> dg.AssetsDefinition:
    @dg.asset(name="embeddings", partitions_def=tenants, check_specs=CHECKS)
    def embeddings(context) -> dg.MaterializeResult:  # no annotation: a string under `from __future__`
        tenant = context.partition_key
        if error:
            raise ValueError(error)
        return dg.MaterializeResult(
            check_results=[
                dg.AssetCheckResult(
                    check_name="no_missing_vectors",
                    passed=missing == 0,
                    severity=dg.AssetCheckSeverity.ERROR,
                    metadata={"tenant": tenant, "count": missing, "example_chunk_ids": [7, 8][:missing]},
                ),
                dg.AssetCheckResult(
                    check_name="no_truncation",
                    passed=truncated == 0,
                    severity=dg.AssetCheckSeverity.WARN,
                    metadata={"tenant": tenant, "count": truncated, "example_chunk_ids": [101, 102, 103]},
                ),
            ]
        )

    return embeddings


@pytest.fixture(params=["run_sharded_sqlite", "consolidated_sqlite"])
def instance(request: pytest.FixtureRequest, tmp_path):
    """The default local instance (run-sharded SQLite: per-run event ids) and a non-sharded one (global ids, like
    Postgres)."""
    overrides = None
    if request.param == "consolidated_sqlite":
        overrides = {
            "event_log_storage": {
                "module": "dagster._core.storage.event_log",
                "class": "ConsolidatedSqliteEventLogStorage",
                "config": {"base_dir": str(tmp_path / "events")},
            }
        }
    with dg.instance_for_test(overrides=overrides) as inst:
        assert inst.event_log_storage.is_run_sharded == (request.param == "run_sharded_sqlite")
        inst.add_dynamic_partitions("tenant", [TENANT])
        yield inst


def _materialize(instance: dg.DagsterInstance, asset: dg.AssetsDefinition) -> dg.ExecuteInProcessResult:
    return dg.materialize([asset], partition_key=TENANT, instance=instance, raise_on_error=False)


def _evaluate_check_sensor(instance: dg.DagsterInstance, cursor: str | None) -> str | None:
    with dg.build_sensor_context(instance=instance, cursor=cursor) as ctx:
        check_failure_alert(ctx)
        return ctx.cursor


def _evaluate_run_sensor(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> None:
    with dg.build_run_status_sensor_context(
        sensor_name="run_failure_alert",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
    ) as ctx:
        run_failure_alert(ctx)


def test_sensors_load_and_start_running():
    defs = dg.Definitions(assets=[_embeddings()], sensors=[run_failure_alert, check_failure_alert])
    dg.Definitions.validate_loadable(defs)
    for name in ("run_failure_alert", "check_failure_alert"):
        sensor = defs.resolve_sensor_def(name)
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
        assert sensor.minimum_interval_seconds == 30


def test_check_failure_alert_sends_each_failed_evaluation_once(instance, monkeypatch):
    with WebhookServer() as hook:
        monkeypatch.setenv(alerting.WEBHOOK_ENV, hook.url)
        first = _materialize(instance, _embeddings(truncated=3))
        assert first.success

        cursor = _evaluate_check_sensor(instance, None)
        assert cursor is not None
        assert len(hook.received) == 1
        text = hook.received[0]["text"]
        assert f"tenant: {TENANT}" in text
        assert "check: no_truncation" in text and "no_missing_vectors" not in text
        assert "count=3" in text and "[WARN]" in text
        assert "101, 102, 103" in text
        assert f"/runs/{first.run_id}" in text

        assert _evaluate_check_sensor(instance, cursor) == cursor  # nothing new
        assert len(hook.received) == 1

        second = _materialize(instance, _embeddings(truncated=5))  # the open incident got worse: sent again
        assert second.success
        cursor2 = _evaluate_check_sensor(instance, cursor)
        assert _after(cursor2) > _after(cursor)
        assert len(hook.received) == 2 and f"/runs/{second.run_id}" in hook.received[1]["text"]
        assert _evaluate_check_sensor(instance, cursor2) == cursor2
        assert len(hook.received) == 2


def _after(cursor: str | None) -> int:
    assert cursor is not None
    return int(json.loads(cursor)["after"])


def test_a_failing_check_is_one_incident_until_it_passes(instance, monkeypatch):
    """Re-evaluations with the same or lower counts (a sweep after every tenant run) repeat nothing; a pass closes
    the incident and the next failure opens a new one; an old plain-id cursor is still read."""
    with WebhookServer() as hook:
        monkeypatch.setenv(alerting.WEBHOOK_ENV, hook.url)
        assert _materialize(instance, _embeddings(truncated=3)).success
        cursor = _evaluate_check_sensor(instance, None)
        for truncated in (3, 2):
            assert _materialize(instance, _embeddings(truncated=truncated)).success
            cursor = _evaluate_check_sensor(instance, cursor)
        assert len(hook.received) == 1
        assert _materialize(instance, _embeddings(truncated=0)).success  # passes: closed
        cursor = _evaluate_check_sensor(instance, cursor)
        assert json.loads(cursor)["open"] == {}
        third = _materialize(instance, _embeddings(truncated=1))
        assert third.success
        cursor = _evaluate_check_sensor(instance, cursor)
        assert len(hook.received) == 2 and f"/runs/{third.run_id}" in hook.received[1]["text"]
        monkeypatch.setattr(alerts_defs, "REMIND_AFTER_S", 0.0)  # the reminder is due: the same failure again
        assert _materialize(instance, _embeddings(truncated=1)).success
        _evaluate_check_sensor(instance, cursor)
        assert len(hook.received) == 3
        assert _evaluate_check_sensor(instance, str(_after(cursor))) is not None  # an older plain-id cursor


def test_check_failure_alert_advances_when_the_webhook_is_down(instance, monkeypatch):
    monkeypatch.setattr(alerting, "MAX_TOTAL_SLEEP_S", 0.1)
    with WebhookServer(fail_first=None, status=500) as hook:
        monkeypatch.setenv(alerting.WEBHOOK_ENV, hook.url)
        assert _materialize(instance, _embeddings(truncated=2)).success
        cursor = _evaluate_check_sensor(instance, None)
        assert cursor is not None and hook.received == [] and 1 <= len(hook.requests) <= 4
        attempts = len(hook.requests)
        assert _evaluate_check_sensor(instance, cursor) == cursor
        assert len(hook.requests) == attempts  # not sent again


def test_run_failure_alert_reports_a_failed_run(instance, monkeypatch):
    with WebhookServer() as hook:
        monkeypatch.setenv(alerting.WEBHOOK_ENV, hook.url)
        result = _materialize(instance, _embeddings(error="provider exploded for tenant o'brien"))
        assert not result.success
        _evaluate_run_sensor(instance, result)
        assert len(hook.received) == 1
        text = hook.received[0]["text"]
        assert "run failed" in text and "[ERROR]" in text
        assert f"job: {result.dagster_run.job_name}" in text
        assert f"tenant: {TENANT}" in text
        assert "provider exploded for tenant o'brien" in text
        assert f"/runs/{result.run_id}" in text
        # no check evaluation failed, so the check sensor has nothing to add
        _evaluate_check_sensor(instance, None)
        assert len(hook.received) == 1


def test_blocking_check_failure_is_one_alert_from_the_check_sensor(instance, monkeypatch):
    with WebhookServer() as hook:
        monkeypatch.setenv(alerting.WEBHOOK_ENV, hook.url)
        result = _materialize(instance, _embeddings(missing=2))
        assert not result.success  # the blocking ERROR check failed the run

        _evaluate_run_sensor(instance, result)
        assert hook.received == []

        _evaluate_check_sensor(instance, None)
        assert len(hook.received) == 1
        text = hook.received[0]["text"]
        assert "check: no_missing_vectors" in text and "[ERROR]" in text
        assert f"tenant: {TENANT}" in text and "count=2" in text and "7, 8" in text
        assert f"/runs/{result.run_id}" in text
