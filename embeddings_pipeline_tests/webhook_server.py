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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WEBHOOK_PATH = "/services/T000/B000/SECRETTOKEN"


class WebhookServer:
    def __init__(
        self,
        *,
        fail_first: int | None = 0,
        status: int = 500,
        retry_after: str | None = None,
        delay: float = 0.0,
        path: str = WEBHOOK_PATH,
    ) -> None:
        self.fail_first = fail_first
        self.status = status
        self.retry_after = retry_after
        self.delay = delay
        self.path = path
        self.received: list[Any] = []  # bodies answered with 2xx
        self.requests: list[dict[str, Any]] = []  # every request: path, body, status answered
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "use WebhookServer as a context manager"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{self.path}"

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
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

    def __enter__(self) -> WebhookServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # http.server's naming
                owner._answer(self)

            def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

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
