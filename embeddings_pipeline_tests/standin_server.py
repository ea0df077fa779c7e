"""A real local HTTP server speaking the Ollama and OpenAI embeddings wire protocols, with injectable faults.

    with StandinServer(dims=384, api_key="sk-test") as srv:
        client = ollama.Client(host=srv.url)          # GET /api/tags, POST /api/show, POST /api/embed, ...
        httpx.post(f"{srv.url}/v1/embeddings", ...)   # the OpenAI-compatible endpoint
        srv.faults.error_rate = 0.3                   # change faults at any time, from any thread

Endpoints (the shapes the real servers answer, as far as clients read them):

- Ollama: ``GET /api/version``, ``GET /api/tags``, ``POST /api/show``, ``POST /api/embed`` (``input`` a string or a
  list of strings; optional ``truncate`` and ``dimensions``). An unknown model answers 404
  ``{"error": "model \\"x\\" not found, try pulling it first"}``. The ``ollama`` client (0.6.x) sends JSON bodies
  with ``Content-Type``/``Accept: application/json``, ``User-Agent: ollama-python/...`` and an ``Authorization``
  header only when ``OLLAMA_API_KEY`` is set.
- OpenAI: ``POST /v1/embeddings`` (``input`` a string or a list of strings; optional ``dimensions`` and
  ``encoding_format`` ``float``/``base64``) and ``GET /v1/models``. With ``api_key`` configured every request needs
  ``Authorization: Bearer <key>``; otherwise 401 with an ``invalid_request_error`` (the message echoes a masked key
  the way OpenAI does, so a provider that forwards server messages verbatim leaks part of it).

Vectors are deterministic functions of the text (``standin_vector``): identical texts give identical vectors,
different texts differ, all L2-normalized float32 values (exact through JSON).

Faults (``srv.faults``, thread-safe, decided by a seeded RNG so runs repeat): ``down`` (every request 503),
``error_rate`` (share answered 500), ``rate_limit_rate`` (share answered 429 with ``Retry-After: retry_after``),
``reset_rate`` (share whose connection is closed with a TCP reset, no response), ``malformed_rate`` (share
answered 200 with a truncated JSON body), ``hang`` (seconds every request waits before answering, e.g. past a client
timeout; or ``hang_next`` requests wait ``hang_for`` seconds),
``delay`` / ``delay_per_input`` (slow model), ``wrong_dims`` (embeddings of that many dimensions). Each ``*_rate``
has a ``*_next`` count too: the next N requests get that fault for sure. ``paths`` limits faults to some paths
(default: all). Configured ``max_batch`` (more inputs answer 413) and ``bad_input`` (a request containing this exact
input answers 400) are request-shape errors, not random faults. ``leaky_errors`` makes every error message echo the
request's Authorization header, as some misbehaving gateways do, to test that providers redact it.

Observations: ``srv.requests`` (Counter of requests received per path), ``srv.faults_injected`` (Counter per fault),
``srv.embed_batches`` (the input lists of the embedding requests answered 200), ``srv.log`` (one record per
request: method, path, status, fault, inputs, user agent) and ``srv.auth_seen`` (the Authorization values received,
so tests can assert what was sent; never printed by this module).
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any

import numpy as np

from .local_http import LocalHTTPServer

DEFAULT_OLLAMA_MODEL = "nomic-embed-text:latest"
DEFAULT_DIGEST = hashlib.sha256(b"standin nomic-embed-text v1").hexdigest()


def standin_vector(text: str, dims: int = 384) -> np.ndarray:
    """The vector the stand-in serves for ``text``: seeded by sha256 of the text, L2-normalized, float32."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
    vec = np.random.default_rng(seed).standard_normal(dims)
    return (vec / np.linalg.norm(vec)).astype(np.float32)


def _count_tokens(text: str) -> int:
    return len(text.split())


def _mask_key(value: str) -> str:
    """How OpenAI echoes a wrong key: a few leading and the last four characters."""
    return f"{value[:3]}{'*' * 8}{value[-4:]}" if len(value) > 8 else "*" * len(value)


@dataclass
class Faults:
    """Faults injected into responses. Plain attributes: set them at any time from any thread."""

    down: bool = False
    error_rate: float = 0.0
    error_next: int = 0
    rate_limit_rate: float = 0.0
    rate_limit_next: int = 0
    retry_after: str | None = "0"
    reset_rate: float = 0.0
    reset_next: int = 0
    malformed_rate: float = 0.0
    malformed_next: int = 0
    hang: float = 0.0
    hang_next: int = 0
    hang_for: float = 2.0
    delay: float = 0.0
    delay_per_input: float = 0.0
    wrong_dims: int | None = None
    drop_last: bool = False  # answer one embedding fewer than the inputs
    paths: tuple[str, ...] | None = None  # faults apply to these paths only (None: every path)

    def clear(self) -> None:
        for name, value in Faults().__dict__.items():
            setattr(self, name, value)


@dataclass
class RequestRecord:
    method: str
    path: str
    status: int | None = None  # None: the connection was reset without a response
    fault: str | None = None
    inputs: list[str] | None = None
    model: str | None = None
    user_agent: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class _Reset(Exception):
    """Close the connection with a TCP reset instead of answering."""


class StandinServer(LocalHTTPServer):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real servers

    def __init__(
        self,
        *,
        dims: int = 384,
        ollama_models: tuple[str, ...] = (DEFAULT_OLLAMA_MODEL,),
        openai_models: tuple[str, ...] | None = None,  # None: any model name is served
        digest: str = DEFAULT_DIGEST,
        context_length: int = 2048,
        architecture: str = "nomic-bert",
        api_key: str | None = None,
        max_batch: int = 2048,
        bad_input: str | None = None,
        shuffle: bool = False,  # OpenAI: return `data` in a shuffled order (clients must sort by `index`)
        leaky_errors: bool = False,  # error messages echo the Authorization header, as some misbehaving proxies do
        embed_fn: Callable[[list[str]], list[np.ndarray]] | None = None,  # a real model behind the API (benchmarks)
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.dims = dims
        self.ollama_models = tuple(ollama_models)
        self.openai_models = tuple(openai_models) if openai_models is not None else None
        self.digest = digest
        self.context_length = context_length
        self.architecture = architecture
        self.api_key = api_key
        self.max_batch = max_batch
        self.bad_input = bad_input
        self.shuffle = shuffle
        self.leaky_errors = leaky_errors
        self.embed_fn = embed_fn
        self.faults = Faults()
        self.requests: Counter[str] = Counter()
        self.faults_injected: Counter[str] = Counter()
        self.embed_batches: list[list[str]] = []
        self.log: list[RequestRecord] = []
        self.auth_seen: list[str | None] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ addresses (``url``: LocalHTTPServer's)

    @property
    def openai_url(self) -> str:
        """``url + "/v1"``, the base URL OpenAI clients use."""
        return f"{self.url}/v1"

    # ------------------------------------------------------------------ helpers for tests

    def new_version(self, label: str = "v2") -> str:
        """Switch the served model's digest, as pulling a new version of the same tag does; returns it."""
        self.digest = hashlib.sha256(f"standin {self.ollama_models[0]} {label}".encode()).hexdigest()
        return self.digest

    def reset_counters(self) -> None:
        with self._lock:
            self.requests.clear()
            self.faults_injected.clear()
            self.embed_batches.clear()
            self.log.clear()
            self.auth_seen.clear()

    def count(self, path: str) -> int:
        with self._lock:
            return self.requests[path]

    def vector(self, text: str, dims: int | None = None) -> np.ndarray:
        return standin_vector(text, dims or self.dims)

    # ------------------------------------------------------------------ request handling

    def _draw(self, rate_name: str, next_name: str) -> bool:
        """Under the lock: does this request get the fault? ``*_next`` counts win, then the seeded share."""
        pending = getattr(self.faults, next_name)
        if pending > 0:
            setattr(self.faults, next_name, pending - 1)
            return True
        rate = getattr(self.faults, rate_name)
        return rate > 0 and self._rng.random() < rate

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        path = handler.path.split("?", 1)[0]
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        record = RequestRecord(method=method, path=path, user_agent=handler.headers.get("User-Agent"))
        openai = path.startswith("/v1/")
        with self._lock:
            self.requests[path] += 1
            self.log.append(record)
            self.auth_seen.append(handler.headers.get("Authorization"))
            faults = self.faults
            applies = faults.paths is None or path in faults.paths
            fault: str | None = None
            if applies:
                if faults.down:
                    fault = "down"
                elif self._draw("reset_rate", "reset_next"):
                    fault = "reset"
                elif self._draw("error_rate", "error_next"):
                    fault = "500"
                elif self._draw("rate_limit_rate", "rate_limit_next"):
                    fault = "429"
                elif self._draw("malformed_rate", "malformed_next"):
                    fault = "malformed"
            hang, delay, retry_after = (faults.hang, faults.delay, faults.retry_after) if applies else (0.0, 0.0, None)
            if applies and faults.hang_next > 0:
                faults.hang_next -= 1
                hang = max(hang, faults.hang_for)
            wrong_dims = faults.wrong_dims if applies else None
            drop_last = faults.drop_last and applies
            per_input = faults.delay_per_input if applies else 0.0
            if fault:
                self.faults_injected[fault] += 1
            if hang:
                self.faults_injected["hang"] += 1
        record.fault = fault or ("hang" if hang else None)
        if hang:
            self._stop.wait(hang)  # returns early when the server stops
        if delay:
            self._stop.wait(delay)
        try:
            if fault == "down":
                self._send_error(handler, record, 503, "service unavailable", openai)
            elif fault == "reset":
                raise _Reset
            elif fault == "500":
                self._send_error(handler, record, 500, "internal server error (injected)", openai)
            elif fault == "429":
                headers = {"Retry-After": retry_after} if retry_after is not None else {}
                self._send_error(handler, record, 429, "rate limit reached (injected)", openai, headers=headers)
            else:
                try:
                    body = json.loads(raw.decode("utf-8")) if raw else {}
                except (UnicodeDecodeError, json.JSONDecodeError):
                    self._send_error(handler, record, 400, "invalid JSON body", openai)
                    return
                status, payload, headers = self._route(handler, method, path, body, record, wrong_dims, per_input)
                if drop_last and status == 200 and isinstance(payload, dict):
                    key = "data" if openai else "embeddings"
                    if payload.get(key):
                        payload[key] = payload[key][:-1]
                        record.fault = "drop_last"
                        with self._lock:
                            self.faults_injected["drop_last"] += 1
                if fault == "malformed" and status == 200:
                    data = json.dumps(payload).encode()
                    self._send_raw(handler, record, 200, data[: max(1, len(data) // 2)], headers)
                else:
                    self._send_json(handler, record, status, payload, headers)
        except _Reset:
            self._reset(handler)
        except OSError:  # the client gave up (timed out) first
            handler.close_connection = True

    def _reset(self, handler: BaseHTTPRequestHandler) -> None:
        sock = handler.connection
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # linger 0: the peer sees a reset, not a response
        except OSError:
            pass
        handler.close_connection = True

    def _send_raw(
        self, handler: BaseHTTPRequestHandler, record: RequestRecord, status: int, data: bytes, headers: dict
    ) -> None:
        record.status = status
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)
        handler.wfile.flush()

    def _send_json(
        self,
        handler: BaseHTTPRequestHandler,
        record: RequestRecord,
        status: int,
        payload: Any,
        headers: dict | None = None,
    ) -> None:
        if self.leaky_errors and status >= 400 and isinstance(payload, dict):
            leak = f" (request authorization: {handler.headers.get('Authorization')})"
            error = payload.get("error")
            if isinstance(error, dict):
                error["message"] = f"{error.get('message')}{leak}"
            elif isinstance(error, str):
                payload["error"] = error + leak
        self._send_raw(handler, record, status, json.dumps(payload).encode(), headers or {})

    def _send_error(
        self,
        handler: BaseHTTPRequestHandler,
        record: RequestRecord,
        status: int,
        message: str,
        openai: bool,
        *,
        kind: str = "server_error",
        code: str | None = None,
        headers: dict | None = None,
    ) -> None:
        if openai:
            if status < 500 and kind == "server_error":
                kind = "invalid_request_error"
            payload: Any = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        else:
            payload = {"error": message}
        self._send_json(handler, record, status, payload, headers)

    def _route(
        self,
        handler: BaseHTTPRequestHandler,
        method: str,
        path: str,
        body: Any,
        record: RequestRecord,
        wrong_dims: int | None,
        per_input: float,
    ) -> tuple[int, Any, dict]:
        routes = {
            ("GET", "/api/version"): self._ollama_version,
            ("GET", "/api/tags"): self._ollama_tags,
            ("POST", "/api/show"): self._ollama_show,
            ("POST", "/api/embed"): self._ollama_embed,
            ("GET", "/v1/models"): self._openai_models,
            ("POST", "/v1/embeddings"): self._openai_embeddings,
        }
        route = routes.get((method, path))
        if route is None:
            if path.startswith("/v1/"):
                return (
                    404,
                    {"error": {"message": f"Unknown request URL: {method} {path}", "type": "invalid_request_error"}},
                    {},
                )
            return 404, {"error": "404 page not found"}, {}
        if not isinstance(body, dict):
            body = {}
        return route(handler=handler, body=body, record=record, wrong_dims=wrong_dims, per_input=per_input)

    # ------------------------------------------------------------------ Ollama

    def _ollama_model(self, name: Any) -> str | None:
        if not isinstance(name, str) or not name:
            return None
        for model in self.ollama_models:
            if name == model or f"{name}:latest" == model:
                return model
        return None

    def _ollama_details(self) -> dict[str, Any]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": self.architecture,
            "families": [self.architecture],
            "parameter_size": "137M",
            "quantization_level": "F16",
        }

    def _ollama_version(self, **_: Any) -> tuple[int, Any, dict]:
        return 200, {"version": "0.6.0"}, {}

    def _ollama_tags(self, **_: Any) -> tuple[int, Any, dict]:
        now = datetime.now(UTC).isoformat()
        models = [
            {
                "name": model,
                "model": model,
                "modified_at": now,
                "size": 274302450,
                "digest": self.digest,
                "details": self._ollama_details(),
            }
            for model in self.ollama_models
        ]
        return 200, {"models": models}, {}

    def _not_found(self, name: Any) -> tuple[int, Any, dict]:
        return 404, {"error": f'model "{name}" not found, try pulling it first'}, {}

    def _ollama_show(self, *, body: dict, record: RequestRecord, **_: Any) -> tuple[int, Any, dict]:
        record.model = body.get("model")
        if self._ollama_model(body.get("model")) is None:
            return self._not_found(body.get("model"))
        arch = self.architecture
        return (
            200,
            {
                "modelfile": "",
                "parameters": "",
                "template": "",
                "details": self._ollama_details(),
                "model_info": {
                    "general.architecture": arch,
                    "general.parameter_count": 136727040,
                    f"{arch}.context_length": self.context_length,
                    f"{arch}.embedding_length": self.dims,
                },
                "capabilities": ["embedding"],
                "modified_at": datetime.now(UTC).isoformat(),
            },
            {},
        )

    def _inputs(self, value: Any) -> list[str] | None:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        return None

    def _vectors(self, inputs: list[str], dims: int, wrong_dims: int | None, per_input: float) -> list[np.ndarray]:
        if per_input:
            time.sleep(per_input * len(inputs))
        served = wrong_dims or dims
        if self.embed_fn is not None and served == self.dims:
            return self.embed_fn(inputs)
        if served == self.dims or served > self.dims:
            return [standin_vector(t, served) for t in inputs]
        # fewer dimensions than the model's: truncate and renormalize (Matryoshka-style, as OpenAI does)
        out = []
        for t in inputs:
            v = standin_vector(t, self.dims)[:served].astype(np.float64)
            out.append((v / np.linalg.norm(v)).astype(np.float32))
        return out

    def _shape_error(self, inputs: list[str], record: RequestRecord, openai: bool) -> tuple[int, Any, dict] | None:
        if len(inputs) > self.max_batch:
            message = f"Too many inputs: {len(inputs)}; the maximum is {self.max_batch} inputs per request"
            return 413, self._error_payload(message, openai), {}
        if self.bad_input is not None and self.bad_input in inputs:
            index = inputs.index(self.bad_input)
            return 400, self._error_payload(f"Invalid input at index {index}", openai), {}
        return None

    @staticmethod
    def _error_payload(message: str, openai: bool) -> Any:
        if openai:
            return {"error": {"message": message, "type": "invalid_request_error", "param": "input", "code": None}}
        return {"error": message}

    def _ollama_embed(
        self, *, body: dict, record: RequestRecord, wrong_dims: int | None, per_input: float, **_: Any
    ) -> tuple[int, Any, dict]:
        record.model = body.get("model")
        model = self._ollama_model(body.get("model"))
        if model is None:
            return self._not_found(body.get("model"))
        inputs = self._inputs(body.get("input"))
        if inputs is None:
            return 400, {"error": "invalid input type"}, {}
        record.inputs = inputs
        error = self._shape_error(inputs, record, openai=False)
        if error:
            return error
        if body.get("truncate") is False and any(_count_tokens(t) > self.context_length for t in inputs):
            return 400, {"error": "the input length exceeds the context length"}, {}
        dims = body.get("dimensions") or self.dims
        start = time.perf_counter_ns()
        vectors = self._vectors(inputs, int(dims), wrong_dims, per_input)
        with self._lock:
            self.embed_batches.append(inputs)
        return (
            200,
            {
                "model": model,
                "embeddings": [v.tolist() for v in vectors],
                "total_duration": time.perf_counter_ns() - start,
                "load_duration": 1000,
                "prompt_eval_count": sum(_count_tokens(t) for t in inputs),
            },
            {},
        )

    # ------------------------------------------------------------------ OpenAI

    def _openai_auth(self, handler: BaseHTTPRequestHandler) -> tuple[int, Any, dict] | None:
        if self.api_key is None:
            return None
        header = handler.headers.get("Authorization") or ""
        if header == f"Bearer {self.api_key}":
            return None
        given = header.removeprefix("Bearer ").strip()
        if given:
            message = f"Incorrect API key provided: {_mask_key(given)}. You can find your API key at the dashboard."
        else:
            message = "You didn't provide an API key. You need to provide your API key in an Authorization header."
        return (
            401,
            {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}},
            {},
        )

    def _openai_models(self, *, handler: BaseHTTPRequestHandler, **_: Any) -> tuple[int, Any, dict]:
        denied = self._openai_auth(handler)
        if denied:
            return denied
        names = self.openai_models or ("text-embedding-3-small",)
        data = [{"id": n, "object": "model", "created": 1705948997, "owned_by": "standin"} for n in names]
        return 200, {"object": "list", "data": data}, {}

    def _openai_embeddings(
        self,
        *,
        handler: BaseHTTPRequestHandler,
        body: dict,
        record: RequestRecord,
        wrong_dims: int | None,
        per_input: float,
    ) -> tuple[int, Any, dict]:
        denied = self._openai_auth(handler)
        if denied:
            return denied
        name = body.get("model")
        record.model = name
        if not isinstance(name, str) or (self.openai_models is not None and name not in self.openai_models):
            message = f"The model `{name}` does not exist or you do not have access to it."
            payload = {
                "error": {"message": message, "type": "invalid_request_error", "param": None, "code": "model_not_found"}
            }
            return 404, payload, {}
        inputs = self._inputs(body.get("input"))
        if inputs is None:
            return 400, self._error_payload("'input' must be a string or an array of strings", True), {}
        record.inputs = inputs
        error = self._shape_error(inputs, record, openai=True)
        if error:
            return error
        dims = body.get("dimensions")
        if dims is not None and (not isinstance(dims, int) or dims < 1 or dims > self.dims):
            return 400, self._error_payload(f"Invalid 'dimensions': {dims}", True), {}
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            return 400, self._error_payload(f"Invalid 'encoding_format': {encoding}", True), {}
        vectors = self._vectors(inputs, dims or self.dims, wrong_dims, per_input)
        with self._lock:
            self.embed_batches.append(inputs)
        tokens = sum(_count_tokens(t) for t in inputs)
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": (
                    base64.b64encode(v.astype("<f4").tobytes()).decode() if encoding == "base64" else v.tolist()
                ),
            }
            for i, v in enumerate(vectors)
        ]
        if self.shuffle:
            with self._lock:
                self._rng.shuffle(data)
        return (
            200,
            {"object": "list", "data": data, "model": name, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}},
            {},
        )
