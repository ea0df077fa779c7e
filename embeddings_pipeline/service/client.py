"""The CLI's client of a running service: `embeddings-pipeline search` asks it when EMBEDDINGS_SERVICE_URL is set
(with the tenant's token in EMBEDDINGS_SERVICE_TOKEN), and says so on stderr. The token is sent only as a bearer
header and never printed."""

from __future__ import annotations

import os

import click

from ..search import SearchHit


class ServiceError(click.ClickException):
    """The service could not answer; the message names the service URL and its error, never the token."""


def service_url() -> str | None:
    return os.environ.get("EMBEDDINGS_SERVICE_URL", "").strip().rstrip("/") or None


def search_through_service(tenant: str, query: str, k: int, mode: str) -> tuple[list[SearchHit], str] | None:
    """`(hits, model_key)` of the tenant from the service, or None when no service is configured (the CLI
    searches in-process then)."""
    import httpx

    url = service_url()
    if url is None:
        return None
    token = os.environ.get("EMBEDDINGS_SERVICE_TOKEN", "").strip()
    if not token:
        raise ServiceError("EMBEDDINGS_SERVICE_URL is set but EMBEDDINGS_SERVICE_TOKEN (the tenant's token) is not")
    click.echo(f"searching through the service at {url}", err=True)
    try:
        response = httpx.post(f"{url}/v1/search", json={"query": query, "k": k, "mode": mode},
                              headers={"Authorization": f"Bearer {token}"}, timeout=60)  # fmt: skip
    except httpx.HTTPError as exc:
        raise ServiceError(f"the service at {url} cannot be reached ({type(exc).__name__})") from None
    try:
        payload = response.json()
    except ValueError:
        payload = {}
    if response.status_code != 200:
        message = (payload.get("error") or {}).get("message") if isinstance(payload, dict) else None
        raise ServiceError(f"the service at {url} answered {response.status_code}: {message or response.reason_phrase}")
    if payload.get("tenant") != tenant:
        raise ServiceError(f"EMBEDDINGS_SERVICE_TOKEN is not a token of tenant {tenant!r}")
    hits = [
        SearchHit(h["chunk_id"], h["doc_id"], h["text"], float(h["score"]), h["model_key"], h["run_id"],
                  h.get("title"), h.get("metadata"))  # fmt: skip
        for h in payload["hits"]
        if not h.get("context")
    ]
    return hits, str(payload["model_key"])
