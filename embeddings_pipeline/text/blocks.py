"""Parse a document (markdown or plain text) into typed, stably identified blocks.

Markdown is parsed with markdown-it-py (CommonMark + GFM tables) and only its top-level structure becomes
blocks: a nested list stays inside its top-level list block. Decisions where the format leaves room:

* a blockquote becomes ONE ``paragraph`` block: its source lines with one level of ``>`` markers removed
  (nested quotes, lists or code inside it stay as written);
* an html block becomes a ``paragraph`` with its source; a thematic break (``---``) produces no block;
* an empty heading (``#`` alone) is kept as a block with empty text but does not enter ``heading_path``;
* heading text is the heading's raw inline source without the ``#`` markers (emphasis/code markup kept).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from markdown_it import MarkdownIt
from markdown_it.token import Token

from embeddings_pipeline.text.hashing import content_hash, stable_id

BLOCK_TYPES = ("paragraph", "heading", "list", "table", "code", "mermaid")
FORMATS = ("markdown", "text")

_BLANK_LINES = re.compile(r"\n\s*\n")
_QUOTE_MARKER = re.compile(r"^ {0,3}> ?")
_SOURCE_BLOCKS = {  # top-level container tokens whose markdown source becomes the block text
    "bullet_list_open": "list",
    "ordered_list_open": "list",
    "table_open": "table",
    "paragraph_open": "paragraph",
}


@dataclass(frozen=True, slots=True)
class Block:
    block_id: str
    doc_id: str
    ordinal: int  # 0-based position in the document
    block_type: str  # one of BLOCK_TYPES
    heading_path: tuple[str, ...]  # enclosing headings; for a heading block its parents, not itself
    text: str
    content_hash: str  # content_hash(text)


def sanitize(text: str) -> str:
    """Replace NUL with U+FFFD and normalise ``\\r\\n`` and ``\\r`` line endings to ``\\n``; nothing else."""
    return text.replace("\x00", "\ufffd").replace("\r\n", "\n").replace("\r", "\n")


def markdown_parser() -> MarkdownIt:
    """The markdown-it configuration used for documents and tables: CommonMark plus GFM tables."""
    return MarkdownIt("commonmark").enable("table")


@functools.cache
def _block_parser() -> MarkdownIt:
    """``markdown_parser`` without inline parsing: blocks only need block tokens and raw inline source. Built once
    per process (building one costs more than parsing a short document); parsing keeps no state in it."""
    return markdown_parser().disable(["inline", "text_join"])


def parse_blocks(doc_id: str, body: str, fmt: str = "markdown") -> list[Block]:
    """Split ``body`` into blocks in document order; ``fmt`` is ``"markdown"`` or ``"text"``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown document format {fmt!r}: expected one of {', '.join(FORMATS)}")
    clean = sanitize(body)
    raw = _markdown_blocks(clean) if fmt == "markdown" else _text_blocks(clean)
    return _identify(doc_id, raw)


def _identify(doc_id: str, raw: Sequence[tuple[str, tuple[str, ...], str]]) -> list[Block]:
    """Number the blocks and give each an id from its type, text and occurrence of that (type, text) pair."""
    seen: dict[tuple[str, str], int] = {}
    blocks: list[Block] = []
    for ordinal, (block_type, heading_path, text) in enumerate(raw):
        occurrence = seen.get((block_type, text), 0)
        seen[(block_type, text)] = occurrence + 1
        blocks.append(
            Block(
                block_id=stable_id(doc_id, block_type, text, str(occurrence)),
                doc_id=doc_id,
                ordinal=ordinal,
                block_type=block_type,
                heading_path=heading_path,
                text=text,
                content_hash=content_hash(text),
            )
        )
    return blocks


def _text_blocks(body: str) -> list[tuple[str, tuple[str, ...], str]]:
    """Plain text: paragraphs separated by one or more blank (empty or whitespace-only) lines."""
    paragraphs = (part.strip() for part in _BLANK_LINES.split(body))
    return [("paragraph", (), paragraph) for paragraph in paragraphs if paragraph]


def _markdown_blocks(body: str) -> list[tuple[str, tuple[str, ...], str]]:
    """Markdown: (block_type, heading_path, text) for each top-level block."""
    lines = body.split("\n")
    headings: list[tuple[int, str]] = []  # (level, text) of the enclosing headings, outermost first
    raw: list[tuple[str, tuple[str, ...], str]] = []
    for token, inline in _top_level(_block_parser().parse(body)):
        path = tuple(text for _, text in headings)
        if token.type == "heading_open":
            level = int(token.tag[1:])
            text = inline.content.strip() if inline is not None else ""
            headings = [(lvl, txt) for lvl, txt in headings if lvl < level]
            raw.append(("heading", tuple(txt for _, txt in headings), text))
            if text:
                headings.append((level, text))
        elif token.type in ("fence", "code_block"):
            raw.append((_code_type(token), path, token.content.rstrip("\n")))
        elif token.type == "hr":
            continue
        elif token.type == "blockquote_open":
            quoted = (_QUOTE_MARKER.sub("", line) for line in _source(lines, token).split("\n"))
            raw.append(("paragraph", path, "\n".join(quoted).strip()))
        else:  # paragraph, list, table, html_block and any other top-level container: its source
            text = _source(lines, token)
            block_type = _SOURCE_BLOCKS.get(token.type, "paragraph")
            if text or block_type != "paragraph":
                raw.append((block_type, path, text))
    return raw


def _top_level(tokens: Sequence[Token]) -> Iterator[tuple[Token, Token | None]]:
    """Yield each top-level block token with the inline token right after it (headings use it)."""
    for index, token in enumerate(tokens):
        if token.level != 0 or token.nesting == -1 or token.type == "inline":
            continue
        following = tokens[index + 1] if index + 1 < len(tokens) else None
        yield token, following if following is not None and following.type == "inline" else None


def _source(lines: Sequence[str], token: Token) -> str:
    """The markdown source lines of a block token, stripped."""
    if token.map is None:
        return token.content.strip()
    start, end = token.map
    return "\n".join(lines[start:end]).strip()


def _code_type(token: Token) -> str:
    """``mermaid`` for a fence whose info string starts with the word mermaid, else ``code``."""
    words = token.info.split() if token.type == "fence" else []
    return "mermaid" if words and words[0].lower() == "mermaid" else "code"
