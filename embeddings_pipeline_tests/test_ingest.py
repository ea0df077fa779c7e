"""Reading files into documents: doc_ids are stored exactly (never merged), bad rows and files are named by file and
line while the good ones are kept, skipped files are counted, and each document remembers its folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from psycopg import sql

from embeddings_pipeline.pipeline.ingest import (
    IngestError,
    ReadLog,
    folder_sources,
    ingest_documents,
    read_beir_corpus,
    read_paths,
)
from embeddings_pipeline.store.db import table
from embeddings_pipeline.store.documents import SourceDocument, list_documents, upsert_documents


def _stored(conn, schema: str, tenant: str) -> dict[str, str]:
    rows = conn.execute(
        sql.SQL("SELECT doc_id, body FROM {} WHERE tenant_id = %s").format(table(schema, "documents")), (tenant,)
    ).fetchall()
    return dict(rows)


def test_doc_ids_differing_only_in_line_endings_stay_three_documents(conn, schema, tmp_path):
    root = tmp_path / "odd"
    root.mkdir()
    names = ["a\r\nb.md", "a\rb.md", "a\nb.md"]
    for i, name in enumerate(names):
        (root / name).write_text(f"# Note {i}\n\nword{i}\n")
    report = upsert_documents(conn, schema, "acme", read_paths([root]))
    assert report.inserted == 3
    stored = _stored(conn, schema, "acme")
    assert sorted(stored) == sorted(names)
    for i, name in enumerate(names):
        assert f"word{i}" in stored[name]


def test_api_doc_ids_are_stored_exactly_and_nul_is_refused(conn, schema):
    ids = ["x\r\ny", "x\ry", "x\ny", "x\ufffdy", " padded "]
    report = upsert_documents(conn, schema, "acme", [SourceDocument(doc_id=d, body=f"body {d!r}") for d in ids])
    assert report.inserted == len(ids)
    assert sorted(_stored(conn, schema, "acme")) == sorted(ids)
    with pytest.raises(ValueError, match="NUL"):
        upsert_documents(conn, schema, "acme", [SourceDocument(doc_id="x\x00y", body="b")])
    with pytest.raises(ValueError, match="surrogate"):
        upsert_documents(conn, schema, "acme", [SourceDocument(doc_id="x\ud800y", body="b")])
    assert len(_stored(conn, schema, "acme")) == len(ids)  # nothing merged, nothing replaced


def _corpus(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_lone_surrogate_row_is_named_and_the_good_rows_are_kept(conn, schema, tmp_path):
    corpus = _corpus(
        tmp_path / "corpus.jsonl",
        [
            json.dumps({"_id": "d1", "title": "One", "text": "first good row"}),
            '{"_id": "d2", "title": "Two", "text": "bad \\ud800 row"}',  # a lone surrogate, as JSON allows
            json.dumps({"_id": "d3", "title": "Three", "text": "second good row"}),
            '{"_id": "a\\u0000b", "text": "NUL in the id"}',
            json.dumps({"_id": "a\ufffdb", "text": "U+FFFD in the id"}),
            "not json",
        ],
    )
    with pytest.raises(IngestError, match=r"corpus\.jsonl:2: .*surrogate"):
        list(read_beir_corpus(corpus))  # without a log, the first bad row stops the read, named
    log = ReadLog()
    report = upsert_documents(conn, schema, "acme", read_paths([corpus], log=log), keep=log.keep)
    assert report.inserted == 3
    assert sorted(_stored(conn, schema, "acme")) == ["a\ufffdb", "d1", "d3"]
    assert [p.split(": ")[0] for p in log.problems] == [f"{corpus}:2", f"{corpus}:4", f"{corpus}:6"]
    assert "surrogate" in log.problems[0] and "NUL" in log.problems[1]
    assert log.keep == {"d2"}  # a refused row whose id is fine: its stored version is not deleted by a sync


def test_invalid_utf8_line_and_file_are_named_and_skipped_files_counted(tmp_path):
    root = tmp_path / "mixed"
    root.mkdir()
    (root / "good.md").write_text("# Good\n\ntext\n")
    (root / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    (root / "rows.jsonl").write_bytes(b'{"_id": "r1", "text": "ok"}\n{"_id": "r2", "text": "caf\xe9"}\n')
    (root / "script.py").write_text("print(1)\n")
    (root / "tool.py").write_text("print(2)\n")
    (root / "table.csv").write_text("a,b\n1,2\n")
    log = ReadLog()
    docs = list(read_paths([root], log=log))
    assert sorted(d.doc_id for d in docs) == ["good.md", "r1"]
    assert [p.split(" (")[0] for p in log.problems] == [
        f"{root / 'latin1.txt'}: not UTF-8 text",
        f"{root / 'rows.jsonl'}:2: not UTF-8",
    ]
    assert log.problems[0].endswith("at byte 3)") and log.problems[1].endswith("at byte 26)")
    assert log.skipped_summary() == "skipped 3 files: not markdown/text (2 .py, 1 .csv)"
    with_csv = ReadLog()
    docs = list(read_paths([root], text_ext=["csv"], log=with_csv))
    assert "table.csv" in {d.doc_id for d in docs} and with_csv.skipped_summary() == (
        "skipped 2 files: not markdown/text (.py)"
    )
    assert {d.source for d in docs} == {str(root.resolve())} == set(folder_sources([root, root / "good.md"]))


def test_folder_sync_deletes_only_that_folders_missing_documents(conn, schema, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, names in ((first, ["a.md", "b.md"]), (second, ["c.md"])):
        folder.mkdir()
        for n in names:
            (folder / n).write_text(f"# {n}\n\nabout {n}\n")

    def ingest(folder: Path, sync: bool = True):
        return upsert_documents(
            conn, schema, "acme", read_paths([folder]), sync=folder_sources([folder]) if sync else ()
        )

    ingest(first), ingest(second)
    (first / "b.md").unlink()
    assert ingest(first).deleted == ["b.md"]
    assert ingest(first).deleted == []  # deleted once
    live = {d["doc_id"]: d["source"] for d in list_documents(conn, schema, "acme")}
    assert live == {"a.md": str(first.resolve()), "c.md": str(second.resolve())}
    (second / "c.md").unlink()
    assert ingest(second, sync=False).deleted == []
    assert ingest(second).deleted == ["c.md"]
    assert ingest(first).deleted == []  # the first folder's document survives the second folder's sync
    assert [d["doc_id"] for d in list_documents(conn, schema, "acme")] == ["a.md"]


def test_an_empty_folder_creates_no_tenant(conn, schema, tmp_path):
    (tmp_path / "empty").mkdir()
    report = upsert_documents(conn, schema, "ghost", read_paths([tmp_path / "empty"]), sync=[str(tmp_path)])
    assert (report.inserted, report.deleted) == (0, [])
    row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table(schema, "tenants"))).fetchone()
    assert row == (0,)


def test_ingest_documents_writes_only_what_changed_and_a_sync_keeps_the_rest(conn, schema, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir(), second.mkdir()
    for n in ("a.md", "b.md", "c.md"):
        (first / n).write_text(f"# {n}\n\nabout {n}\n")

    def ingest(*folders: Path):
        return ingest_documents(conn, schema, "acme", list(read_paths(list(folders))), sync=folder_sources(folders))

    def stamps() -> dict[str, object]:
        rows = conn.execute(
            sql.SQL("SELECT doc_id, updated_at FROM {} WHERE tenant_id = 'acme'").format(table(schema, "documents"))
        ).fetchall()
        return dict(rows)

    assert ingest(first).inserted == 3
    before = stamps()
    again = ingest(first)
    assert (again.inserted, again.updated, again.unchanged, again.deleted) == (0, 0, 3, [])
    assert stamps() == before  # nothing rewritten
    (first / "b.md").write_text("# b.md\n\nabout b, revised\n")
    (first / "c.md").rename(second / "c.md")  # same text, another folder: claimed by it, not deleted
    changed = ingest(first, second)
    assert (changed.inserted, changed.updated, changed.unchanged, changed.deleted) == (0, 1, 2, [])
    after = stamps()
    assert after["a.md"] == before["a.md"] and after["c.md"] == before["c.md"] and after["b.md"] > before["b.md"]
    live = {d["doc_id"]: d["source"] for d in list_documents(conn, schema, "acme")}
    assert live == {"a.md": str(first.resolve()), "b.md": str(first.resolve()), "c.md": str(second.resolve())}
    assert _stored(conn, schema, "acme")["b.md"] == "# b.md\n\nabout b, revised\n"
    (first / "a.md").unlink()
    assert ingest(first).deleted == ["a.md"]
    # metadata compared as stored: a value only JSON equality calls equal (1 vs 1.0, true vs 1) is upserted
    docs = [SourceDocument(doc_id="m", title="M", body="meta", format="text", metadata={"v": 1})]
    ingest_documents(conn, schema, "acme", docs)
    flipped = [SourceDocument(doc_id="m", title="M", body="meta", format="text", metadata={"v": True})]
    assert ingest_documents(conn, schema, "acme", flipped).updated == 1
    assert ingest_documents(conn, schema, "acme", flipped).unchanged == 1
