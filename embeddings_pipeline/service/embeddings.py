"""`/v1/embeddings`, OpenAI-compatible: `{"input": str | [str, ...], "model": ..., "encoding_format"?,
"dimensions"?}` -> `{"object": "list", "data": [{"object": "embedding", "index": i, "embedding": [...]}], "model",
"usage": {"prompt_tokens", "total_tokens"}}`.

**Passage embeddings.** Inputs are embedded as passages (`provider.embed_documents`, with the model's passage
prefix), with the model the calling tenant embeds with (`model_change.embedding_provider`), exactly as the
pipeline's own embeddings step embeds chunks. So the pipeline's `openai:` provider pointed at this service
(`OPENAI_BASE_URL=http://host:8900/v1`, the tenant's token in the variable its key reference names) writes the
same vectors the in-process model would. Queries are embedded by `/v1/search` itself; a client that wants a query
vector of an asymmetric model (one with a query prefix) must not use this endpoint for it.

- `model` is accepted and not used to choose: the model is the token's tenant's; the answer names its model_key.
- An input longer than the model's token limit is refused (400), never silently truncated.
- `dimensions` other than the model's, and token-array inputs, are refused (400).
- `encoding_format`: `float` (default) or `base64` (little-endian float32, as OpenAI sends it).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..providers.base import EmbeddingProvider
from ..text.tokens import count_tokens
from .errors import bad_request

MAX_INPUTS = 2048


@dataclass(frozen=True)
class EmbeddingsRequest:
    inputs: list[str]
    encoding_format: str = "float"
    dimensions: int | None = None


def parse_embeddings(body: object) -> EmbeddingsRequest:
    if not isinstance(body, Mapping):
        raise bad_request("the body must be a JSON object")
    if "tenant" in body or "tenant_id" in body:
        raise bad_request("the tenant is the token's: do not send a tenant field", "tenant")
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs:
        raise bad_request("`input` must be a non-empty string or a non-empty list of strings", "input")
    if len(inputs) > MAX_INPUTS:
        raise bad_request(f"`input` has {len(inputs)} items; at most {MAX_INPUTS}", "input")
    for i, text in enumerate(inputs):
        if not isinstance(text, str):
            raise bad_request(f"`input[{i}]` is not a string (token arrays are not supported)", "input")
        if not text.strip():
            raise bad_request(f"`input[{i}]` is empty", "input")
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise bad_request("`encoding_format` must be 'float' or 'base64'", "encoding_format")
    dims = body.get("dimensions")
    if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int) or dims < 1):
        raise bad_request("`dimensions` must be a positive integer", "dimensions")
    return EmbeddingsRequest(list(inputs), fmt, dims)


def run_embeddings(provider: EmbeddingProvider, request: EmbeddingsRequest) -> dict[str, Any]:
    identity = provider.identity
    if request.dimensions is not None and request.dimensions != identity.dims:
        raise bad_request(
            f"this tenant's model {identity.model_key} has {identity.dims} dimensions, not {request.dimensions}",
            "dimensions",
        )
    tokens = [count_tokens(provider.tokenizer, t) for t in request.inputs]
    for i, n in enumerate(tokens):
        if n > identity.max_tokens:
            raise bad_request(
                f"`input[{i}]` has {n} tokens; model {identity.model_key} takes at most {identity.max_tokens} "
                "(split it: inputs are never truncated)",
                "input",
            )
    vectors = np.asarray(provider.embed_documents(request.inputs), dtype=np.float32)
    data = [
        {"object": "embedding", "index": i, "embedding": _encode(v, request.encoding_format)}
        for i, v in enumerate(vectors)
    ]
    total = sum(tokens)
    return {"object": "list", "data": data, "model": identity.model_key,
            "usage": {"prompt_tokens": total, "total_tokens": total}}  # fmt: skip


def _encode(vector: np.ndarray, fmt: str) -> list[float] | str:
    if fmt == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]
