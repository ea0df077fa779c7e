"""Alerts: always logged, and posted to a Slack incoming webhook when `EMBEDDINGS_ALERT_WEBHOOK_URL` is set.

No Dagster here; the sensors in `defs/alerts.py` turn run failures and failed checks into `Alert`s. Sending is
bounded in time (a sensor tick has 60 s) and never raises. The webhook URL carries a secret token, so it never
appears in a log line or an exception text: messages say "the alert webhook" instead.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field

import httpx

from ..retry import RetryPolicy, parse_retry_after

LOG = logging.getLogger(__name__)

WEBHOOK_ENV = "EMBEDDINGS_ALERT_WEBHOOK_URL"
WEBSERVER_ENV = "DAGSTER_WEBSERVER_URL"
DEFAULT_WEBSERVER = "http://localhost:3000"

MAX_TOTAL_SLEEP_S = 20.0  # the sum of all backoff sleeps of one send_alert call
MAX_RETRY_AFTER_S = 10.0  # a numeric Retry-After is honoured up to this
MAX_DETAILS_CHARS = 3000  # Slack truncates long messages; keep the useful head

SEVERITY_ICON = {"ERROR": ":red_circle:", "WARN": ":warning:", "WARNING": ":warning:", "INFO": ":information_source:"}


def webhook_url() -> str | None:
    url = os.environ.get(WEBHOOK_ENV, "").strip()
    return url or None


def webserver_url() -> str:
    return (os.environ.get(WEBSERVER_ENV, "").strip() or DEFAULT_WEBSERVER).rstrip("/")


def run_link(run_id: str) -> str:
    return f"{webserver_url()}/runs/{run_id}"


@dataclass
class Alert:
    title: str
    tenant: str | None = None
    check: str | None = None
    severity: str = "ERROR"
    counts: dict[str, int] = field(default_factory=dict)
    run_id: str | None = None
    details: str = ""


def _slack_escape(text: str) -> str:
    """Slack's three control characters; Slack shows them as typed, everything else (quotes, slashes, unicode)
    is passed through unchanged."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _render(alert: Alert, *, slack: bool) -> str:
    esc = _slack_escape if slack else (lambda text: text)
    severity = (alert.severity or "ERROR").upper()
    lines = [f"{SEVERITY_ICON.get(severity, ':bell:')} [{esc(severity)}] embeddings pipeline: {esc(alert.title)}"]
    if alert.tenant is not None:
        lines.append(f"tenant: {esc(alert.tenant)}")
    if alert.check:
        lines.append(f"check: {esc(alert.check)}")
    if alert.counts:
        lines.append("counts: " + ", ".join(f"{esc(str(k))}={v}" for k, v in alert.counts.items()))
    details = (alert.details or "").strip()
    if details:
        if len(details) > MAX_DETAILS_CHARS:
            details = details[:MAX_DETAILS_CHARS] + " …(truncated)"
        lines.append(esc(details))
    if alert.run_id:
        link = run_link(alert.run_id)
        lines.append(f"run: <{link}|{esc(alert.run_id)}>" if slack else f"run: {link}")
    return "\n".join(lines)


def format_text(alert: Alert) -> str:
    """One readable multi-line text: the log line."""
    return _render(alert, slack=False)


def format_slack(alert: Alert) -> dict:
    """Slack incoming-webhook payload: the same text, escaped for Slack, with the run as a `<url|run id>` link."""
    return {"text": _render(alert, slack=True)}


class _HideWebhookRequests(logging.Filter):
    """httpx logs every request URL at INFO; drop the lines that name a webhook we post to."""

    secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:
            return True
        return not any(secret in message for secret in self.secrets)


_HIDE = _HideWebhookRequests()
for _name in ("httpx", "httpcore"):
    logging.getLogger(_name).addFilter(_HIDE)


def _redact(text: str, url: str) -> str:
    text = text.replace(url, "the alert webhook")
    try:
        path = httpx.URL(url).raw_path.decode("ascii", "replace")
    except Exception:
        return "(details withheld)"
    if len(path) > 1:
        text = text.replace(path, "/…")
    return text


def send_alert(
    alert: Alert,
    url: str | None = None,
    *,
    attempts: int = 4,
    timeout: float = 5.0,
    base_delay: float = 0.5,
    logger: logging.Logger | None = None,
    deadline: float | None = None,
) -> bool:
    """Log the alert, then post it to the webhook (`url` or `EMBEDDINGS_ALERT_WEBHOOK_URL`) if one is configured.

    Retries connection errors, timeouts, 429 and 5xx with exponential backoff and full jitter (never shorter than
    a numeric Retry-After, which counts up to 10 s); other 4xx are final. Sleeps add up to at most 20 s, and no
    attempt starts after `deadline` (a `time.monotonic()` value). Returns True when delivered; never raises.
    """
    log = logger or LOG
    try:
        text = format_text(alert)
    except Exception as exc:  # alerting must never take the caller down
        log.error("alert could not be formatted (%s: %s): %r", type(exc).__name__, exc, alert)
        return False
    log.warning("ALERT %s", text)

    url = url or webhook_url()
    if not url:
        log.info("no alert webhook configured (%s); the alert was only logged", WEBHOOK_ENV)
        return False

    _HIDE.secrets.add(url)
    try:
        payload = format_slack(alert)
    except Exception as exc:
        log.error("alert could not be formatted for the alert webhook: %s", type(exc).__name__)
        return False

    # read at call time: the limits are module settings (tests lower them)
    policy = RetryPolicy(
        attempts=max(1, int(attempts)), base_delay=base_delay, max_delay=math.inf, max_retry_after=MAX_RETRY_AFTER_S
    )
    attempts = policy.attempts
    slept = 0.0
    last_problem = "no attempt was made"
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            for attempt in range(1, attempts + 1):
                request_timeout = timeout
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0.05:
                        last_problem = "the time budget ran out"
                        break
                    request_timeout = min(timeout, remaining)
                retry_after: float | None = None
                try:
                    response = client.post(url, json=payload, timeout=request_timeout)
                except httpx.TimeoutException as exc:
                    last_problem = f"timed out ({type(exc).__name__})"
                except httpx.TransportError as exc:
                    last_problem = f"connection error ({type(exc).__name__}: {_redact(str(exc), url)})"
                else:
                    status = response.status_code
                    if 200 <= status < 300:
                        if attempt > 1:
                            log.info("alert delivered to the alert webhook on attempt %d", attempt)
                        return True
                    last_problem = f"HTTP {status}"
                    if status != 429 and not 500 <= status < 600:
                        log.error("the alert webhook rejected the alert (HTTP %d); not retrying", status)
                        return False
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                if attempt == attempts:
                    break
                delay = policy.delay(attempt - 1, retry_after)
                if slept + delay > MAX_TOTAL_SLEEP_S or (deadline is not None and time.monotonic() + delay >= deadline):
                    last_problem += "; the time budget for retries ran out"
                    break
                log.info(
                    "the alert webhook failed (%s), attempt %d of %d; retrying in %.2fs",
                    last_problem,
                    attempt,
                    attempts,
                    delay,
                )
                time.sleep(delay)
                slept += delay
    except Exception as exc:  # e.g. an invalid URL: its message may contain it
        log.error("alert not delivered to the alert webhook: %s", type(exc).__name__)
        return False
    log.error("alert not delivered to the alert webhook after %d attempt(s): %s", attempt, last_problem)
    return False
