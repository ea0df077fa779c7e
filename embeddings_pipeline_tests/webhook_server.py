"""A real local HTTP webhook for tests: records every JSON body it receives and injects faults on demand.

    with WebhookServer(fail_first=2, status=500) as hook:
        send_alert(alert, hook.url)
        assert len(hook.received) == 1   # the delivered body; hook.requests counts every attempt

Faults apply to the first `fail_first` requests: answer `status` (500, 429 with `Retry-After`, 400, ...), after
sleeping `delay` seconds first when given (past a client timeout). `fail_first=None` fails every request.
The server listens on 127.0.0.1 with an ephemeral port and stops when the context exits.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from .local_http import LocalHTTPServer

WEBHOOK_PATH = "/services/T000/B000/SECRETTOKEN"


class WebhookServer(LocalHTTPServer):
    methods = ("POST",)

    def __init__(
        self,
        *,
        fail_first: int | None = 0,
        status: int = 500,
        retry_after: str | None = None,
        delay: float = 0.0,
        path: str = WEBHOOK_PATH,
    ) -> None:
        super().__init__()
        self.fail_first = fail_first
        self.status = status
        self.retry_after = retry_after
        self.delay = delay
        self.path = path
        self.received: list[Any] = []  # bodies answered with 2xx
        self.requests: list[dict[str, Any]] = []  # every request: path, body, status answered
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The webhook's URL: the server's address and ``path``."""
        return f"{super().url}{self.path}"

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw.decode("utf-8")) if raw else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            body = raw
        with self._lock:
            index = len(self.requests)
            faulty = self.fail_first is None or index < self.fail_first
            record = {"path": handler.path, "body": body, "status": None}
            self.requests.append(record)
        if faulty and self.delay:
            self._stop.wait(self.delay)  # returns early when the server stops
        status = self.status if faulty else 200
        if handler.path != self.path:
            status = 404
        record["status"] = status
        if 200 <= status < 300:
            with self._lock:
                self.received.append(body)
        payload = b"ok" if 200 <= status < 300 else b"error"
        try:
            handler.send_response(status)
            if status == 429 and self.retry_after is not None:
                handler.send_header("Retry-After", self.retry_after)
            handler.send_header("Content-Type", "text/plain")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        except OSError:  # the client gave up (timed out) first
            pass

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Any]:
        """The received bodies once there are at least `count` (or when `timeout` passes)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                if len(self.received) >= count:
                    break
            time.sleep(0.01)
        with self._lock:
            return list(self.received)
