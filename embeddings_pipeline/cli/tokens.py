"""`tenants token create|list|revoke`: per-tenant API tokens of the HTTP service (`embeddings-pipeline serve`).

A token is printed once, by `create`, and stored only as its sha256; `list` shows ids, never tokens.
"""

from __future__ import annotations

import click

from .common import connect, console, echo_json, err_console, json_option, print_table, tenant_argument, tenant_option


@click.group()
def token() -> None:
    """API tokens of the HTTP service: the tenant a request reads is its token's."""


@token.command("create")
@tenant_argument()
@json_option
def token_create(tenant: str, as_json: bool) -> None:
    """Create a token for TENANT and print it (once: only its hash is kept)."""
    from ..store.tokens import create_token

    with connect() as (conn, schema):
        token_id, secret = create_token(conn, schema, tenant)
    if as_json:
        echo_json({"token_id": token_id, "tenant_id": tenant, "token": secret})
        return
    err_console.print(f"token {token_id} for tenant {tenant!r}; it is shown this once, keep it secret:")
    click.echo(secret)


@token.command("list")
@tenant_option(multiple=True)
@json_option
def token_list(tenants: list[str], as_json: bool) -> None:
    """Tokens (ids, tenants, when created, used, revoked) of every tenant or of the `--tenant`s, never the tokens."""
    from ..store.tokens import list_tokens

    with connect() as (conn, schema):
        rows = [t.as_dict() for t in list_tokens(conn, schema) if not tenants or t.tenant_id in tenants]
    if as_json:
        echo_json({"tokens": rows})
        return
    print_table("API tokens", ["token_id", "tenant_id", "created_at", "last_used_at", "revoked_at"], rows,
                cell=lambda v: "-" if v is None else str(v))  # fmt: skip


@token.command("revoke")
@click.argument("token_id")
def token_revoke(token_id: str) -> None:
    """Revoke TOKEN_ID: requests with it answer 401 from now on."""
    from ..store.tokens import revoke_token

    with connect() as (conn, schema):
        info = revoke_token(conn, schema, token_id)
    if info is None:
        raise click.ClickException(f"no token {token_id!r}; see `embeddings-pipeline tenants token list`")
    console.print(f"token {info.token_id} of tenant {info.tenant_id!r} revoked at {info.revoked_at}")
