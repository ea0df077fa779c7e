"""Reading files into source documents: markdown/text files, directories, and BEIR-style .jsonl corpora."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from ..store.documents import SourceDocument

MARKDOWN_SUFFIXES = {".md", ".markdown", ".mdx"}
TEXT_SUFFIXES = {".txt", ".text", ".rst"}


class IngestError(ValueError):
    """A file that cannot be read as a document; the message names the file and line."""


def read_beir_corpus(path: Path) -> Iterator[SourceDocument]:
    """BEIR corpus rows `{"_id", "title", "text"}`; the body is `title + " " + text` as BEIR/MTEB embed it."""
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                doc_id = str(row["_id"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise IngestError(f"{path}:{n}: not a BEIR corpus row with an _id ({exc})") from exc
            title = str(row.get("title") or "").strip()
            text = str(row.get("text") or "")
            body = f"{title} {text}" if title else text
            yield SourceDocument(doc_id=doc_id, title=title, body=body, format="text", metadata={"source": path.name})


def read_file(path: Path, doc_id: str) -> SourceDocument:
    raw = path.read_bytes()
    try:
        body = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IngestError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    fmt = "markdown" if path.suffix.lower() in MARKDOWN_SUFFIXES else "text"
    title = ""
    if fmt == "markdown":
        title = next((ln.lstrip("#").strip() for ln in body.splitlines() if ln.startswith("# ")), "")
    return SourceDocument(doc_id=doc_id, title=title or path.stem, body=body, format=fmt, metadata={"path": doc_id})


def read_paths(paths: list[Path]) -> Iterator[SourceDocument]:
    """Files and directories (recursive; doc_id = path relative to the argument); .jsonl = BEIR corpus."""
    for root in paths:
        if not root.exists():
            raise IngestError(f"{root}: no such file or directory")
        if root.is_file():
            if root.suffix.lower() == ".jsonl":
                yield from read_beir_corpus(root)
            else:
                yield read_file(root, root.name)
            continue
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            suffix = path.suffix.lower()
            rel = path.relative_to(root).as_posix()
            if suffix == ".jsonl":
                yield from read_beir_corpus(path)
            elif suffix in MARKDOWN_SUFFIXES | TEXT_SUFFIXES:
                yield read_file(path, rel)
