"""The content lifecycle on the command line: folder ingest syncs deletes, `documents list|delete`, and no ghost
tenants (reading commands refuse an unknown tenant; only ingest of real documents creates one)."""

from __future__ import annotations

import json
from pathlib import Path


def _folder(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True)
    for name, body in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(body)
    return root


def _doc_ids(cli, tenant: str) -> list[str]:
    return [d["doc_id"] for d in json.loads(cli("documents", "list", "--tenant", tenant, "--json").output)["documents"]]


def _search(cli, tenant: str, query: str, mode: str = "text") -> list[str]:
    out = cli("search", query, "--tenant", tenant, "--mode", mode, "--json").output
    return [h["doc_id"] for h in json.loads(out)["hits"]]


def test_folder_ingest_syncs_deletes_per_folder(cli, tmp_path):
    notes = _folder(tmp_path / "notes", {"keep.md": "# Keep\n\nPelicans nest on the pier.\n",
                                         "gone.md": "# Gone\n\nZeppelins dock at noon.\n"})  # fmt: skip
    other = _folder(tmp_path / "other", {"faq.md": "# FAQ\n\nWalruses sleep on ice.\n", "tool.py": "x = 1\n"})
    cli("ingest", str(notes), "--tenant", "acme")
    out = cli("ingest", str(other), "--tenant", "acme").output
    assert "skipped 1 file: not markdown/text (.py)" in out
    cli("materialize", "--tenant", "acme")
    assert _search(cli, "acme", "zeppelins") == ["gone.md"]

    (notes / "gone.md").unlink()
    kept = cli("ingest", str(notes), "--tenant", "acme", "--no-delete").output
    assert "deleted" not in kept and "gone.md" in _doc_ids(cli, "acme")
    out = cli("ingest", str(notes), "--tenant", "acme").output
    assert "deleted 1 documents gone from the folder: gone.md" in out
    assert _doc_ids(cli, "acme") == ["faq.md", "keep.md"]  # the other folder's document is untouched
    cli("materialize", "--tenant", "acme")
    assert _search(cli, "acme", "zeppelins") == []
    assert _search(cli, "acme", "walruses") == ["faq.md"]


def test_documents_list_and_delete(cli, tmp_path):
    notes = _folder(tmp_path / "notes", {"a.md": "# A\n\nalpha\n", "sub/b.md": "# B\n\nbeta\n", "c.txt": "gamma"})
    cli("ingest", str(notes), "--tenant", "acme")
    listed = json.loads(cli("documents", "list", "--tenant", "acme", "--json").output)["documents"]
    assert [(d["doc_id"], d["format"], d["source"]) for d in listed] == [
        ("a.md", "markdown", str(notes.resolve())), ("c.txt", "text", str(notes.resolve())),
        ("sub/b.md", "markdown", str(notes.resolve())),
    ]  # fmt: skip
    out = cli("documents", "delete", "a.md", "sub/b.md", "--tenant", "acme").output
    assert "deleted 2 documents" in out
    assert _doc_ids(cli, "acme") == ["c.txt"]
    missing = cli("documents", "delete", "a.md", "c.txt", "--tenant", "acme", "--json", ok=False)
    assert missing.exit_code == 1
    nothing_built = {"documents": 0, "blocks": 0, "chunks": 0, "vectors": 0}  # never materialized
    assert json.loads(missing.stdout) == {"tenant": "acme", "deleted": ["c.txt"], "not_found": ["a.md"],
                                          "removed": nothing_built}  # fmt: skip
    table = cli("documents", "list", "--tenant", "acme", "--deleted").output
    assert "a.md" in table and "deleted_at" in table


def test_documents_delete_removes_chunks_and_vectors_at_once(cli, tmp_path):
    notes = _folder(tmp_path / "notes", {"keep.md": "# Keep\n\nPelicans nest on the pier.\n",
                                         "gone.md": "# Gone\n\nZeppelins dock at noon.\n"})  # fmt: skip
    cli("ingest", str(notes), "--tenant", "acme", "--materialize")
    assert _search(cli, "acme", "zeppelins") == ["gone.md"]
    out = json.loads(cli("documents", "delete", "gone.md", "--tenant", "acme", "--json").output)
    assert out["deleted"] == ["gone.md"] and out["removed"]["documents"] == 1
    assert out["removed"]["chunks"] == out["removed"]["vectors"] > 0
    assert _search(cli, "acme", "zeppelins") == [] and set(_search(cli, "acme", "zeppelins", "dense")) == {"keep.md"}
    status = json.loads(cli("status", "--tenant", "acme", "--json").output)["tenants"][0]
    assert status["documents"] == 1 and status["vectors"] == status["chunks"] and status["missing"] == 0


def test_odd_doc_ids_are_three_documents_each_searchable(cli, tmp_path):
    names = {"a\r\nb.md": "aardvarks", "a\rb.md": "baboons", "a\nb.md": "capybaras"}
    root = _folder(tmp_path / "odd", {n: f"# Note\n\nThe {w} gather here.\n" for n, w in names.items()})
    assert "3 new" in cli("ingest", str(root), "--tenant", "acme").output
    assert sorted(_doc_ids(cli, "acme")) == sorted(names)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "n\\u0000l", "text": "nul"}\n{"_id": "n\\ufffdl", "text": "Dromedaries wander."}\n')
    refused = cli("ingest", str(corpus), "--tenant", "acme", ok=False)
    assert refused.exit_code == 1 and f"{corpus}:1: _id 'n\\x00l' contains a NUL character" in refused.output
    cli("materialize", "--tenant", "acme")
    for name, word in {**names, "n\ufffdl": "dromedaries"}.items():
        assert _search(cli, "acme", word)[:1] == [name]


def test_reading_commands_refuse_an_unknown_tenant(cli, tmp_path):
    from embeddings_pipeline.cli.runner import local_instance

    cli("ingest", str(_folder(tmp_path / "n", {"a.md": "# A\n\nalpha\n"})), "--tenant", "acme-robotics")
    for args in (
        ["search", "alpha", "--tenant", "acme-robotic"],
        ["status", "--tenant", "acme-robotic"],
        ["materialize", "--tenant", "acme-robotic"],
        ["backfill", "--tenant", "acme-robotic", "--dry-run"],
        ["lineage", "--doc", "a.md", "--tenant", "acme-robotic"],
        ["models", "activate", "some-model", "--tenant", "acme-robotic"],
        ["documents", "list", "--tenant", "acme-robotic"],
        ["documents", "delete", "a.md", "--tenant", "acme-robotic"],
        ["gate", "show", "--tenant", "acme-robotic"],
        ["tenants", "delete", "acme-robotic", "--yes"],
    ):
        result = cli(*args, ok=False)
        assert result.exit_code == 2, (args, result.output)
        assert "no tenant 'acme-robotic'" in result.output and "did you mean 'acme-robotics'?" in result.output
    unrelated = cli("status", "--tenant", "zzz", ok=False)
    assert unrelated.exit_code == 2 and "known tenants: 'acme-robotics'" in unrelated.output
    assert local_instance().get_dynamic_partitions("tenant") == []  # no ghost partition either


def test_a_folder_without_documents_creates_no_tenant(cli, tmp_path):
    empty = _folder(tmp_path / "empty", {"only.py": "x = 1\n"})
    result = cli("ingest", str(empty), "--tenant", "ghost", ok=False)
    assert result.exit_code == 1 and "tenant 'ghost' was not created" in result.output
    assert "skipped 1 file" in result.output
    assert json.loads(cli("tenants", "show", "--json").output)["tenants"] == []
    assert cli("status", "--tenant", "ghost", ok=False).exit_code == 2


def test_removing_deleted_documents_at_once_touches_only_that_tenants_deleted_rows(conn, schema, provider):
    """`remove_deleted` (what `ingest --materialize` does for a removal-only ingest) drops exactly the deleted
    documents' blocks, chunks and vectors; the same doc id of another tenant (odd ids) keeps all of its rows."""
    import dagster as dg

    from embeddings_pipeline.cli.runner import materialize_tenants
    from embeddings_pipeline.pipeline.removals import remove_deleted
    from embeddings_pipeline.store.documents import delete_documents
    from embeddings_pipeline.store.scope import Scope

    from .helpers import chunks_of, count, seed, vector_rows

    docs = {"a b.md": "# A\n\nAlbatross glide for hours.\n", "ß/é.md": "# E\n\nEiders dive for mussels.\n"}
    tenants = ["Acme", "acme"]  # stored exactly: two tenants, not one
    for tenant in tenants:
        seed(conn, schema, tenant, docs)
    assert all(r.success for r in materialize_tenants(tenants, instance=dg.DagsterInstance.ephemeral()))
    vt = provider.identity.vector_table
    before = {t: (chunks_of(conn, schema, t), vector_rows(conn, schema, vt, t), count(conn, schema, "blocks", t))
              for t in tenants}  # fmt: skip
    assert delete_documents(conn, schema, "Acme", ["ß/é.md"]) == 1

    removal = remove_deleted(Scope(conn, schema, "Acme"))

    chunks, vecs, blocks = before["Acme"]
    gone = {c for c, (doc, _) in chunks.items() if doc == "ß/é.md"}
    assert gone and removal.as_dict() == {"documents": 1, "blocks": blocks - count(conn, schema, "blocks", "Acme"),
                                          "chunks": len(gone), "vectors": len(gone)}  # fmt: skip
    assert removal.blocks > 0
    assert set(chunks_of(conn, schema, "Acme")) == set(chunks) - gone
    assert vector_rows(conn, schema, vt, "Acme") == {c: v for c, v in vecs.items() if c not in gone}
    other_chunks, other_vecs, other_blocks = before["acme"]
    assert chunks_of(conn, schema, "acme") == other_chunks and vector_rows(conn, schema, vt, "acme") == other_vecs
    assert count(conn, schema, "blocks", "acme") == other_blocks
    assert remove_deleted(Scope(conn, schema, "Acme")).as_dict() == {"documents": 0, "blocks": 0, "chunks": 0,
                                                                     "vectors": 0}  # fmt: skip
