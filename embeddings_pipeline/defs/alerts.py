"""Alert sensors: one message per incident, to the webhook of `pipeline.alerts` (and always to the log).

- `run_failure_alert`: a run of this code location failed. Runs that failed only because a blocking asset check
  failed are left to `check_failure_alert`, which reports that incident with its counts and examples.
- `check_failure_alert`: failed asset check evaluations (WARN and ERROR), read from the event log after a cursor
  (the last storage id handled), so each evaluation is read once. A failing (check, tenant) is one incident: it
  is sent when it opens, again only when a count grew or REMIND_AFTER_S passed, and closed by a passing
  evaluation (so a sweep re-run after every tenant run does not repeat the same alert).

Neither sensor lets the webhook (down, slow, rejecting) fail or stall a tick.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import dagster as dg

from ..pipeline import alerts as alerting
from ..retry import causes

PARTITION_TAG = "dagster/partition"
CHECK_BATCH = 500
# A sensor tick has 60 s. The check sensor stops sending after this and resumes at the next tick; the run-failure
# sensor handles up to 5 runs per tick (DAGSTER_RUN_STATUS_SENSOR_PROCESS_LIMIT), each with this budget.
CHECK_TICK_BUDGET_S = 40.0
RUN_ALERT_BUDGET_S = 10.0
# On its very first tick the check sensor looks back this far instead of replaying the whole history.
FIRST_TICK_LOOKBACK_S = 24 * 3600.0
CHECK_FAILED_ERROR = "DagsterAssetCheckFailedError"
MAX_LISTED = 10
MAX_CAUSES = 5  # an error and at most four causes in an alert
REMIND_AFTER_S = 6 * 3600.0  # an open incident with the same or lower counts is sent again after this


# --- run failures ----------------------------------------------------------------------------------------------


def _chain(error: object | None) -> Iterator[object]:
    """A SerializableErrorInfo and its causes (``.cause``, else ``.context``), outermost first (at most 5)."""
    return causes(error, limit=MAX_CAUSES)


def _error_chain(error: object | None) -> list[str]:
    """Messages of an error and its causes (no stack traces)."""
    return [m for e in _chain(error) if (m := (getattr(e, "message", "") or "").strip())]


def _error_classes(error: object | None) -> set[str]:
    return {name for e in _chain(error) if (name := getattr(e, "cls_name", None))}


def _step_error(event: dg.DagsterEvent) -> object | None:
    return getattr(event.event_specific_data, "error", None)


def _failed_blocking_checks(instance: dg.DagsterInstance, run_id: str) -> list[dg.AssetCheckEvaluation]:
    records = instance.get_records_for_run(run_id=run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    failed = []
    for record in records:
        evaluation = record.event_log_entry.dagster_event.event_specific_data  # type: ignore[union-attr]
        if (
            isinstance(evaluation, dg.AssetCheckEvaluation)
            and not evaluation.passed
            and evaluation.blocking
            and evaluation.severity == dg.AssetCheckSeverity.ERROR
        ):
            failed.append(evaluation)
    return failed


def _run_failure_alert(context: dg.RunFailureSensorContext) -> alerting.Alert | None:
    """The alert for a failed run, or None when a failing blocking check explains every failed step."""
    run = context.dagster_run
    step_failures = context.get_step_failure_events()
    other_failures = [e for e in step_failures if CHECK_FAILED_ERROR not in _error_classes(_step_error(e))]
    if step_failures and not other_failures and _failed_blocking_checks(context.instance, run.run_id):
        return None

    details = [f"job: {run.job_name}"]
    failure = context.failure_event
    if failure.message:
        details.append(f"error: {failure.message.strip()}")
    run_error = _error_chain(getattr(failure.event_specific_data, "error", None))
    if run_error:
        details.append("\n".join(run_error))
    for event in other_failures[:MAX_LISTED]:
        messages = _error_chain(_step_error(event))
        details.append(f"step {event.step_key} failed: " + ("\n".join(messages) if messages else "(no error message)"))
    return alerting.Alert(
        title="run failed",
        tenant=run.tags.get(PARTITION_TAG),
        check=None,
        severity="ERROR",
        counts={},
        run_id=run.run_id,
        details="\n".join(details),
    )


@dg.run_failure_sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts one alert per failed run (job, tenant, error, link) to EMBEDDINGS_ALERT_WEBHOOK_URL and "
    "logs it. Runs failed by a blocking asset check are reported by check_failure_alert instead.",
)
def run_failure_alert(context: dg.RunFailureSensorContext) -> None:
    run = context.dagster_run
    try:
        alert = _run_failure_alert(context)
    except Exception as exc:  # still tell someone the run failed
        context.log.exception("could not build the full alert for failed run %s", run.run_id)
        alert = alerting.Alert(
            title="run failed",
            tenant=run.tags.get(PARTITION_TAG),
            run_id=run.run_id,
            details=f"job: {run.job_name}\n(details unavailable: {type(exc).__name__})",
        )
    if alert is None:
        context.log.info("run %s failed on a blocking asset check; check_failure_alert reports it", run.run_id)
        return
    alerting.send_alert(alert, logger=context.log, deadline=time.monotonic() + RUN_ALERT_BUDGET_S)


# --- failed asset checks ---------------------------------------------------------------------------------------


def _plain(value: object) -> object:
    return getattr(value, "value", value)


def _listed(values: Iterable[object]) -> str:
    values = list(values)
    shown = ", ".join(str(v) for v in values[:MAX_LISTED])
    return shown + (f", … ({len(values)} in all)" if len(values) > MAX_LISTED else "")


def _metadata_details(metadata: Mapping[str, dg.MetadataValue]) -> list[str]:
    lines = []
    for key, value in metadata.items():
        if key == "tenant" or isinstance(value, dg.IntMetadataValue | dg.BoolMetadataValue):
            continue
        plain = _plain(value)
        if key == "example_chunk_ids" and isinstance(plain, list | tuple):
            lines.append(f"example chunk ids: {_listed(plain)}" if plain else "example chunk ids: none")
        elif isinstance(plain, Mapping):
            items = sorted(plain.items(), key=lambda kv: (-kv[1], str(kv[0])) if isinstance(kv[1], int) else (0, ""))
            lines.append(f"{key}: {_listed(f'{k}={v}' for k, v in items)}")
        elif isinstance(plain, list | tuple):
            lines.append(f"{key}: {_listed(plain)}")
        elif plain is not None:
            text = plain if isinstance(plain, str) else json.dumps(plain, default=str)
            lines.append(f"{key}: {text[:500]}")
    return lines


def _tenant_of(evaluation: dg.AssetCheckEvaluation) -> str | None:
    metadata = evaluation.metadata or {}
    if evaluation.partition is None and "tenant" in metadata:
        return str(_plain(metadata["tenant"]))
    return evaluation.partition


def _incident(evaluation: dg.AssetCheckEvaluation) -> str:
    return json.dumps([evaluation.asset_key.to_user_string(), evaluation.check_name, _tenant_of(evaluation)])


def check_alert(record: dg.EventLogRecord) -> alerting.Alert | None:
    """The alert for one ASSET_CHECK_EVALUATION record, or None when the check passed."""
    entry = record.event_log_entry
    evaluation = entry.dagster_event.event_specific_data  # type: ignore[union-attr]
    if not isinstance(evaluation, dg.AssetCheckEvaluation) or evaluation.passed:
        return None
    metadata = evaluation.metadata or {}
    tenant = _tenant_of(evaluation)
    counts = {
        key: value.value
        for key, value in metadata.items()
        if isinstance(value, dg.IntMetadataValue) and isinstance(value.value, int)
    }
    details = [f"asset: {evaluation.asset_key.to_user_string()}"]
    if evaluation.description:
        details.append(evaluation.description)
    details += _metadata_details(metadata)
    return alerting.Alert(
        title="asset check failed",
        tenant=tenant,
        check=evaluation.check_name,
        severity=evaluation.severity.value,
        counts=counts,
        run_id=entry.run_id or None,
        details="\n".join(details),
    )


def _check_evaluation_records(instance: dg.DagsterInstance, after: int | None, limit: int) -> list[dg.EventLogRecord]:
    """ASSET_CHECK_EVALUATION records with a storage id above `after`, oldest first (the first tick: the last day).

    Read with the event log storage's `get_event_records` (`DagsterInstance.get_event_records` is the same query,
    deprecated for 2.0 with no replacement for check evaluations across all checks). Postgres and consolidated
    SQLite number events globally and take the plain query. The default local instance (run-sharded SQLite)
    numbers events per run: its override of `get_event_records` walks the run shards and refuses a plain id cursor,
    but every check evaluation is mirrored into its cross-run index shard with a global id, and the method it
    overrides (the generic SQL query, reached through `super()`: no private import) reads exactly that shard.
    """
    records_filter = dg.EventRecordsFilter(
        event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION,
        after_cursor=after,
        after_timestamp=None if after is not None else time.time() - FIRST_TICK_LOOKBACK_S,
    )
    storage = instance.event_log_storage
    if storage.is_run_sharded:
        generic_sql: Any = super(type(storage), storage)
        return list(generic_sql.get_event_records(records_filter, limit=limit, ascending=True))
    return list(storage.get_event_records(records_filter, limit=limit, ascending=True))


def _cursor(context: dg.SensorEvaluationContext) -> tuple[int | None, dict[str, Any]]:
    """(last storage id handled, open incidents: key -> {"counts", "at"}); a plain id is an older cursor."""
    if not context.cursor:
        return None, {}
    try:
        state = json.loads(context.cursor)
        if isinstance(state, int):
            return state, {}
        return (int(state["after"]) if state["after"] is not None else None), dict(state["open"])
    except (ValueError, TypeError, KeyError):
        context.log.warning("ignoring unreadable cursor %r; starting from the lookback window", context.cursor)
        return None, {}


def _repeats(alert: alerting.Alert, incident: dict[str, Any] | None, now: float) -> bool:
    """Whether `alert` only repeats its open incident: no count grew and the reminder is not due."""
    if incident is None or now - float(incident["at"]) >= REMIND_AFTER_S:
        return False
    before = incident["counts"]
    return not any(value > before.get(key, 0) for key, value in alert.counts.items())


@dg.sensor(
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Posts one alert per incident of a failed asset check (WARN and ERROR: tenant, check, counts, "
    "examples, link) to EMBEDDINGS_ALERT_WEBHOOK_URL and logs it; again only when a count grew or 6 h passed. "
    "The cursor is the last event storage id handled and the open incidents.",
)
def check_failure_alert(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    after, incidents = _cursor(context)
    records = _check_evaluation_records(context.instance, after, CHECK_BATCH)
    if not records:
        return dg.SkipReason("no new asset check evaluations")

    deadline = time.monotonic() + CHECK_TICK_BUDGET_S
    handled = after
    sent = undelivered = skipped = repeated = 0
    for record in records:
        if handled is not None and time.monotonic() >= deadline:
            context.log.warning("alert time budget of this tick used up; continuing at the next tick")
            break
        handled = record.storage_id
        try:
            evaluation = record.event_log_entry.dagster_event.event_specific_data  # type: ignore[union-attr]
            alert = check_alert(record)
            key = _incident(evaluation) if isinstance(evaluation, dg.AssetCheckEvaluation) else None
        except Exception:
            context.log.exception("skipping check evaluation %s: it could not be turned into an alert", handled)
            skipped += 1
            continue
        if alert is None or key is None:
            incidents.pop(key, None)  # passed: the incident (if any) is closed
            continue
        now = time.time()
        if _repeats(alert, incidents.get(key), now):
            repeated += 1
            continue
        incidents[key] = {"counts": alert.counts, "at": now}
        if alerting.send_alert(alert, logger=context.log, deadline=deadline):
            sent += 1
        else:
            undelivered += 1  # logged by send_alert; never block the sensor on the webhook
    if handled is not None:
        context.update_cursor(json.dumps({"after": handled, "open": incidents}))
    return dg.SkipReason(
        f"{len(records)} check evaluation(s) read: {sent} alert(s) delivered, {undelivered} only logged, "
        f"{repeated} repeating an open incident, {skipped} skipped"
    )
