"""Markdown tables as embeddable text: one ``column: value`` line per cell, one group per row."""

from __future__ import annotations

from collections.abc import Sequence

from markdown_it.token import Token

from .blocks import markdown_parser

ROW_SEPARATOR = "\n\n"
_PLAIN_INLINE = ("text", "code_inline", "html_inline", "image")
_BREAKS = ("softbreak", "hardbreak")


def flatten_table(markdown_table: str) -> str:
    """A markdown table as ``column: value`` lines, one group per body row, groups separated by a blank line.

    Empty cells are left out; an empty header cell is named ``column N`` (1-based). A header-only table gives
    its non-empty header names joined by ``", "``. Ragged rows are tolerated (markdown-it pads
    or drops cells). Text that does not parse as a table is returned unchanged.
    """
    tokens = markdown_parser().parse(markdown_table)
    if not any(token.type == "table_open" for token in tokens):
        return markdown_table
    tables: list[str] = []
    header: list[str] = []
    rows: list[list[str]] = []
    cells: list[str] = []
    in_head = False
    for index, token in enumerate(tokens):
        if token.type in ("thead_open", "thead_close"):
            in_head = token.type == "thead_open"
        elif token.type == "tr_open":
            cells = []
        elif token.type in ("th_open", "td_open"):
            following = tokens[index + 1] if index + 1 < len(tokens) else None
            cells.append(_plain_text(following) if following is not None and following.type == "inline" else "")
        elif token.type == "tr_close":
            if in_head:
                header = cells
            else:
                rows.append(cells)
        elif token.type == "table_close":
            tables.append(_format_table(header, rows))
            header, rows = [], []
    return ROW_SEPARATOR.join(table for table in tables if table)


def _format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    names = [name or f"column {number}" for number, name in enumerate(header, start=1)]
    groups = []
    for row in rows:
        lines = [f"{_column(names, i)}: {value}" for i, value in enumerate(row) if value]
        if lines:
            groups.append("\n".join(lines))
    if groups:
        return ROW_SEPARATOR.join(groups)
    return ", ".join(name for name in header if name)


def _column(names: Sequence[str], index: int) -> str:
    return names[index] if index < len(names) else f"column {index + 1}"


def _plain_text(inline: Token) -> str:
    """The visible text of an inline token: markup removed, escapes resolved, line breaks as spaces."""
    parts: list[str] = []
    for child in inline.children or []:
        if child.type in _PLAIN_INLINE:
            parts.append(child.content)
        elif child.type in _BREAKS:
            parts.append(" ")
    return " ".join("".join(parts).split())
