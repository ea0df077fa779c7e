"""`serve`: the HTTP service (starlette + uvicorn), one long-running process keeping tenants' models warm."""

from __future__ import annotations

import click


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8900, show_default=True, type=click.IntRange(1, 65535))
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))  # fmt: skip
def serve(host: str, port: int, log_level: str) -> None:
    """Serve /v1/search, /v1/embeddings, /health, /live, /ready and /metrics.

    \b
    Tenants call with `Authorization: Bearer <token>` (`embeddings-pipeline tenants token create TENANT`);
    /metrics takes EMBEDDINGS_ADMIN_TOKEN. Limits: EMBEDDINGS_RATE_LIMIT / EMBEDDINGS_RATE_BURST per token,
    EMBEDDINGS_POOL_SIZE database connections. The access log shows paths, never headers or tokens.
    EMBEDDINGS_RERANKER (cross-encoder:PATH or http:URL) enables `"rerank": true` over the top
    EMBEDDINGS_RERANK_CANDIDATES (default 50) hits.
    """
    import os

    import uvicorn

    from ..providers import ProviderError
    from ..providers.rerank import load_reranker
    from ..service.app import create_app

    spec = os.environ.get("EMBEDDINGS_RERANKER", "").strip()
    try:  # a bad spec stops here, before the server starts
        reranker = load_reranker(spec) if spec else None
    except ProviderError as exc:
        raise click.ClickException(f"EMBEDDINGS_RERANKER: {exc}") from None

    # one process: the models and the connection pool are shared by every request; scale with replicas
    uvicorn.run(create_app(reranker=reranker), host=host, port=port, log_level=log_level, workers=1, proxy_headers=True,
                server_header=False)  # fmt: skip
