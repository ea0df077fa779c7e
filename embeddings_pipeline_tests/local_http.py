"""The lifecycle the tests' local HTTP servers share: a real server on 127.0.0.1 in a daemon thread.

    class EchoServer(LocalHTTPServer):
        methods = ("POST",)

        def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None: ...

    with EchoServer() as srv:
        httpx.post(srv.url, json={})

The server listens on an ephemeral port from ``__enter__`` and stops when the context exits.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar, Self


class LocalHTTPServer:
    """Base of the local test servers: subclasses answer requests in ``_handle``."""

    methods: ClassVar[tuple[str, ...]] = ("GET", "POST")  # others answer 501, as http.server does
    protocol_version: ClassVar[str] = "HTTP/1.0"  # "HTTP/1.1": keep-alive connections

    def __init__(self) -> None:
        self._stop = threading.Event()  # set when the server stops: waits in handlers return early
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        """Answer one request (called on the server's request thread)."""
        raise NotImplementedError

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:43121``."""
        assert self._server is not None, f"use {type(self).__name__} as a context manager"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> Self:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = owner.protocol_version
            # headers and body go out in separate writes: without TCP_NODELAY, Nagle + delayed ACK add ~40 ms
            # to every keep-alive request, which real servers do not
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
                pass

        for method in self.methods:  # do_GET, do_POST, ...: http.server's naming
            setattr(Handler, f"do_{method}", lambda handler, method=method: owner._handle(handler, method))

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
