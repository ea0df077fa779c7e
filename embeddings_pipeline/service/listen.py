"""What the service remembers for a few seconds is forgotten at once when PostgreSQL says it changed.

One connection LISTENs, in a thread of its own, on the channels of what the service caches: a revoked token
(`store.tokens.REVOKED_CHANNEL`, payload the token id) and a tenant's new search model or chunk set
(`store.tenants.MODEL_CHANNEL`, payload the tenant id; sent by `activate_model`). Each channel's handler is called
with the payload (None for an empty one). While the connection is down it retries every few seconds and calls every
handler with None (forget everything: a notification may have been lost); cached entries also expire on their own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

Forget = Callable[[str | None], None]


class Listener:
    def __init__(self, url: str, handlers: Mapping[str, Forget], retry_s: float = 3.0) -> None:
        self.url, self.handlers, self.retry_s = url, dict(handlers), retry_s
        self._stop = threading.Event()
        self.listening = threading.Event()
        self._thread = threading.Thread(target=self._run, name="embeddings-service-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _forget_all(self) -> None:
        for forget in self.handlers.values():
            forget(None)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                    for channel in self.handlers:
                        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    self._forget_all()  # anything changed while nobody listened
                    self.listening.set()
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            forget = self.handlers.get(note.channel)
                            if forget is not None:
                                forget(note.payload or None)
            except psycopg.Error as exc:
                log.warning("change notifications not heard (%s); cached entries expire on their own",
                            type(exc).__name__)  # fmt: skip
            self.listening.clear()
            self._forget_all()
            self._stop.wait(self.retry_s)
