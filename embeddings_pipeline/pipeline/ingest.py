"""Reading files into source documents: markdown/text files, directories, and BEIR-style .jsonl corpora."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..store.documents import IngestReport, SourceDocument, unstorable, upsert_documents
from ..text.blocks import sanitize

if TYPE_CHECKING:
    import psycopg


MARKDOWN_SUFFIXES = {".md", ".markdown", ".mdx"}
TEXT_SUFFIXES = {".txt", ".text", ".rst"}


class IngestError(ValueError):
    """A file that cannot be read as a document; the message names the file and line."""


@dataclass
class ReadLog:
    """What a read left out. Without a log, the first refused file or row raises IngestError; with one, it is
    recorded (named by file and line) and the read goes on with the rest."""

    problems: list[str] = field(default_factory=list)  # "file[:line]: why" of each refused file or row
    skipped: Counter[str] = field(default_factory=Counter)  # suffix -> files of a folder that are not text
    keep: set[str] = field(default_factory=set)  # doc ids refused now whose stored version a sync must not delete

    def skipped_summary(self) -> str | None:
        """`skipped 12 files: not markdown/text (10 .py, 2 .bin)`, or None when nothing was skipped."""
        total = sum(self.skipped.values())
        if not total:
            return None
        kinds = ", ".join(f"{n} {suffix}" if len(self.skipped) > 1 else suffix
                          for suffix, n in self.skipped.most_common())  # fmt: skip
        return f"skipped {total} file{'s' if total != 1 else ''}: not markdown/text ({kinds})"


def _refuse(log: ReadLog | None, message: str, doc_id: str | None = None) -> None:
    if log is None:
        raise IngestError(message)
    log.problems.append(message)
    if doc_id is not None:
        log.keep.add(doc_id)


def shown(path: Path | str) -> str:
    """A path as text that can always be printed (undecodable bytes of a file name shown escaped)."""
    return str(path).encode("utf-8", "backslashreplace").decode("utf-8")


def text_suffixes(extra: Collection[str] = ()) -> set[str]:
    """The suffixes read as documents: markdown, text, and EXTRA (`csv` or `.csv`, any case) as text."""
    return MARKDOWN_SUFFIXES | TEXT_SUFFIXES | {"." + e.lower().lstrip(".") for e in extra if e.strip(".")}


def folder_sources(paths: Collection[Path]) -> list[str]:
    """The `source` of each folder among PATHS (its resolved path): what a folder ingest syncs."""
    return sorted({str(p.resolve()) for p in paths if p.is_dir()})


def read_beir_corpus(path: Path, log: ReadLog | None = None, source: str | None = None) -> Iterator[SourceDocument]:
    """BEIR corpus rows `{"_id", "title", "text"}`; the body is `title + " " + text` as BEIR/MTEB embed it.
    A row that cannot be stored (not UTF-8, not JSON, no _id, a NUL in its _id, a lone surrogate) is refused by
    file and line; the other rows are read."""
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            where = f"{shown(path)}:{n}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                _refuse(log, f"{where}: not UTF-8 ({exc.reason} at byte {exc.start})")
                continue
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                doc_id = str(row["_id"])
                title = str(row.get("title") or "").strip()
                text = str(row.get("text") or "")
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
                _refuse(log, f"{where}: not a BEIR corpus row with an _id ({exc})")
                continue
            why = unstorable(doc_id) or ("is empty" if not doc_id else None)
            if why:
                _refuse(log, f"{where}: _id {doc_id!r} {why}")
                continue
            bad = next(((name, w) for name, value in (("title", title), ("text", text))
                        if (w := unstorable(sanitize(value)))), None)  # fmt: skip
            if bad:
                _refuse(log, f"{where}: document {doc_id!r}: its {bad[0]} {bad[1]}", doc_id)
                continue
            body = f"{title} {text}" if title else text
            yield SourceDocument(
                doc_id=doc_id, title=title, body=body, format="text", metadata={"source": path.name}, source=source
            )


def read_file(path: Path, doc_id: str, source: str | None = None) -> SourceDocument:
    why = unstorable(doc_id)
    if why:
        raise IngestError(f"{shown(path)}: file name {why}; rename the file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise IngestError(f"{shown(path)}: cannot be read ({exc.strerror})") from exc
    try:
        body = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IngestError(f"{shown(path)}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    fmt = "markdown" if path.suffix.lower() in MARKDOWN_SUFFIXES else "text"
    title = ""
    if fmt == "markdown":
        title = next((ln.lstrip("#").strip() for ln in body.splitlines() if ln.startswith("# ")), "")
    return SourceDocument(
        doc_id=doc_id, title=title or path.stem, body=body, format=fmt, metadata={"path": doc_id}, source=source
    )


def _read_one(path: Path, doc_id: str, log: ReadLog | None, source: str) -> Iterator[SourceDocument]:
    try:
        yield read_file(path, doc_id, source)
    except IngestError as exc:
        _refuse(log, str(exc), doc_id if unstorable(doc_id) is None else None)


def read_paths(
    paths: list[Path], *, text_ext: Collection[str] = (), log: ReadLog | None = None
) -> Iterator[SourceDocument]:
    """Files and directories (recursive; doc_id = path relative to the argument, exactly); .jsonl = BEIR corpus.

    In a folder, files that are not markdown/text (nor in TEXT_EXT) are skipped and counted in LOG. Each document
    carries its `source`: the resolved path of the folder (or file) argument it came from."""
    suffixes = text_suffixes(text_ext)
    for root in paths:
        if not root.exists():
            raise IngestError(f"{shown(root)}: no such file or directory")
        source = str(root.resolve())
        if root.is_file():
            if root.suffix.lower() == ".jsonl":
                yield from read_beir_corpus(root, log, source)
            else:
                yield from _read_one(root, root.name, log, source)
            continue
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            suffix = path.suffix.lower()
            rel = path.relative_to(root).as_posix()
            if suffix == ".jsonl":
                yield from read_beir_corpus(path, log, source)
            elif suffix in suffixes:
                yield from _read_one(path, rel, log, source)
            elif log is not None:
                log.skipped[suffix or "(no extension)"] += 1


def ingest_documents(
    conn: psycopg.Connection,
    schema: str,
    tenant_id: str,
    docs: Iterable[SourceDocument],
    *,
    sync: Collection[str] = (),
    keep: Collection[str] = (),
) -> IngestReport:
    """`upsert_documents`, with the documents stored exactly as they are read (same title, body, format,
    metadata and source, live) found by one query first and left out of the upsert: re-ingesting an unchanged
    folder of N files costs one read, not N statements. Those count as unchanged, and a sync keeps them."""
    docs = list(docs)
    same = _stored_as_read(conn, schema, tenant_id, docs)
    fresh = [d for d in docs if d.doc_id not in same]
    report = upsert_documents(conn, schema, tenant_id, fresh, sync=sync, keep=[*same, *keep])
    report.unchanged += len(same)
    return report


def _stored_as_read(conn: psycopg.Connection, schema: str, tenant_id: str, docs: list[SourceDocument]) -> set[str]:
    """The doc ids among DOCS whose live stored row is exactly what an upsert would write (compared as
    `upsert_documents` compares them: sanitized title and body, format, metadata, source). Anything that might
    differ (a metadata value that only JSON equality would call equal) is left to the upsert."""
    from psycopg import sql

    from ..store.db import table

    if not docs:
        return set()
    rows = conn.execute(
        sql.SQL(
            "SELECT doc_id, title, sha256(convert_to(body, 'UTF8')), format, metadata, source FROM {} "
            "WHERE tenant_id = %s AND deleted_at IS NULL AND doc_id = ANY(%s)"
        ).format(table(schema, "documents")),
        (tenant_id, [d.doc_id for d in docs]),
    ).fetchall()
    stored = {r[0]: (r[1], bytes(r[2]), r[3], _canonical(r[4]), r[5]) for r in rows}
    read_once = {doc_id for doc_id, n in Counter(d.doc_id for d in docs).items() if n == 1}
    same = set()
    for d in docs:
        held = stored.get(d.doc_id)
        if held is None or d.doc_id not in read_once:  # read twice: the upsert keeps the last, as it always did
            continue
        metadata = _canonical(json.loads(json.dumps(d.metadata).replace("\\u0000", "\\ufffd")))
        body = hashlib.sha256(sanitize(d.body).encode("utf-8")).digest()
        if held == (sanitize(d.title), body, d.format, metadata, d.source):
            same.add(d.doc_id)
    return same


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
