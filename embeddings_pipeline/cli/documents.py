"""`documents list|delete`: a tenant's documents, one by one."""

from __future__ import annotations

import click

from .common import connect, echo_json, json_option, print_table, say, tenant_option

LIST_COLUMNS = ["doc_id", "title", "format", "updated_at", "source"]


@click.group()
def documents() -> None:
    """A tenant's documents: list them, delete some by doc_id."""


@documents.command("list")
@tenant_option()
@click.option("--deleted", is_flag=True, help="also soft-deleted documents the next run has yet to remove")
@json_option
def documents_list(tenant: str, deleted: bool, as_json: bool) -> None:
    """TENANT's documents, by doc_id: title, format, last change, the folder it was ingested from."""
    from ..store.documents import list_documents

    with connect() as (conn, schema):
        rows = list_documents(conn, schema, tenant, deleted=deleted)
    if as_json:
        echo_json({"tenant": tenant, "documents": rows})
        return
    columns = LIST_COLUMNS + (["deleted_at"] if deleted else [])
    print_table(f"{tenant}: {len(rows)} documents", columns, rows, cell=lambda v: "-" if v is None else str(v))


@documents.command("delete")
@click.argument("doc_ids", nargs=-1, required=True)
@tenant_option()
@json_option
def documents_delete(doc_ids: tuple[str, ...], tenant: str, as_json: bool) -> None:
    """Delete TENANT's documents DOC_IDS (exact ids, as `documents list` shows them).

    Their blocks, chunks and vectors (of every model) go at once, with no run. Exits 1 if an id is not one of the
    tenant's documents.

    \b
    Examples:
      embeddings-pipeline documents delete runbooks/fire.md intro.md --tenant acme
    """
    from ..pipeline.removals import remove_deleted
    from ..store.db import source_parts
    from ..store.documents import delete_document_ids
    from ..store.scope import Scope

    with connect() as (conn, schema):
        source = source_parts(schema)
        if source != (schema, "documents"):
            raise click.ClickException(
                f"documents come from {'.'.join(source)} (EMBEDDINGS_SOURCE_RELATION), the application's: "
                "delete them there"
            )
        deleted = delete_document_ids(conn, schema, tenant, list(doc_ids))
        removal = remove_deleted(Scope(conn, schema, tenant)) if deleted else None
    missing = sorted(set(doc_ids) - set(deleted))
    if as_json:
        echo_json({"tenant": tenant, "deleted": deleted, "not_found": missing,
                   "removed": removal.as_dict() if removal else None})  # fmt: skip
    else:
        say(f"tenant {tenant}: deleted {len(deleted)} documents")
        for doc_id in deleted:
            say(f"  {doc_id!r}" if doc_id != doc_id.strip() or not doc_id.isprintable() else f"  {doc_id}")
        if removal:
            say(f"removed their {removal.chunks} chunks and {removal.vectors} vectors")
    if missing:
        say(f"not documents of {tenant!r} (or deleted already): " + ", ".join(map(repr, missing)), err=True)
        raise SystemExit(1)
