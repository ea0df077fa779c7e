"""Turn blocks into chunks: the exact texts sent to the embedding model, each within its token limit.

``max_tokens`` is always the model's limit INCLUDING the special tokens it adds (256 for all-MiniLM-L6-v2), so
the budget for content is ``max_tokens - tokenizer.special_tokens``. A block text within the limit is one
chunk; a longer one is split into overlapping token windows (tables: whole rows are packed first). Every
piece is re-tokenized and guaranteed to fit, because WordPiece may tokenize a slice differently
from the whole text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from markdown_it.token import Token

from embeddings_pipeline.text.blocks import Block, markdown_parser
from embeddings_pipeline.text.hashing import content_hash, stable_id
from embeddings_pipeline.text.tokens import Tokenizer, count_tokens

CHUNKER_VERSION = "blocks-v1"  # bump when chunk texts would change
DEFAULT_OVERLAP = 32

HEADING_SEPARATOR = " > "
ROW_SEPARATOR = "\n\n"
_SENTENCE_END = (".", "!", "?", ";", "。", "！", "？", "；")
_START_LOOKBACK = 8  # tokens a window start may move back to begin at a word boundary
_PLAIN_INLINE = ("text", "code_inline", "html_inline", "image")
_BREAKS = ("softbreak", "hardbreak")


@dataclass(frozen=True, slots=True)
class Chunk:
    chunk_id: str
    block_id: str
    doc_id: str
    ordinal: int  # 0-based position among the document's chunks
    text: str  # EXACTLY the text sent to the model (no prefix)
    content_hash: str  # content_hash(text)
    token_count: int  # count_tokens(tokenizer, text): special tokens included


def chunk_text(block_type: str, text: str, title: str, heading_path: Sequence[str]) -> str | None:
    """The text to embed for a block, before splitting; ``None`` when the block is not embedded.

    Headings become their breadcrumb (``title > parents > heading``), tables are flattened to
    ``column: value`` lines, paragraphs, lists and code are kept as they are; mermaid diagrams and
    blank texts are skipped.
    """
    if block_type == "mermaid" or not text.strip():
        return None
    if block_type == "heading":
        parts: list[str] = []
        for part in (p.strip() for p in (title, *heading_path, text)):
            # a document's title is usually also its first heading: say it once
            if part and (not parts or parts[-1].casefold() != part.casefold()):
                parts.append(part)
        return HEADING_SEPARATOR.join(parts)
    if block_type == "table":
        flat = flatten_table(text)
        return flat if flat.strip() else None
    return text


OVERFLOW_POLICIES = ("split", "truncate")


def chunk_blocks(
    blocks: Sequence[Block],
    title: str,
    tokenizer: Tokenizer,
    max_tokens: int,
    overlap: int = DEFAULT_OVERLAP,
    overflow: str = "split",
    chunk_set: str = "",
) -> list[Chunk]:
    """Chunks of all ``blocks`` of one document, numbered in block order.

    ``chunk_set`` (the chunker version) is part of every chunk id, so the chunk sets that two models with
    different tokenizers or limits read can live side by side without sharing an id.

    ``overflow`` decides what happens to a block longer than ``max_tokens``: ``split`` (the default) splits it
    so nothing is truncated; ``truncate`` keeps it whole, so the model reads only its first ``max_tokens``
    tokens (the protocol of published benchmarks such as MTEB). Such chunks keep their real ``token_count``,
    so they stay visible as truncated.

    Besides the blocks ``chunk_text`` skips, pieces in which the tokenizer finds no token at all (e.g. only
    control characters or U+FFFD, which BERT's normaliser removes) are left out: they would embed nothing.
    """
    _budget(tokenizer, max_tokens)  # fail early on an impossible limit
    if overflow not in OVERFLOW_POLICIES:
        raise ValueError(f"overflow must be one of {OVERFLOW_POLICIES}, not {overflow!r}")
    chunks: list[Chunk] = []
    for block in blocks:
        text = chunk_text(block.block_type, block.text, title, block.heading_path)
        if text is None:
            continue
        pieces = [text] if overflow == "truncate" else _pieces(block.block_type, text, tokenizer, max_tokens, overlap)
        counted = ((piece, count_tokens(tokenizer, piece)) for piece in pieces)
        kept = [(piece, count) for piece, count in counted if count > tokenizer.special_tokens]
        for index, (piece, count) in enumerate(kept):
            chunks.append(
                Chunk(
                    chunk_id=stable_id(block.block_id, str(index), chunk_set),
                    block_id=block.block_id,
                    doc_id=block.doc_id,
                    ordinal=len(chunks),
                    text=piece,
                    content_hash=content_hash(piece),
                    token_count=count,
                )
            )
    return chunks


def _pieces(block_type: str, text: str, tokenizer: Tokenizer, max_tokens: int, overlap: int) -> list[str]:
    """The block text as one piece when it fits, else its split (tables by rows first)."""
    if count_tokens(tokenizer, text) <= max_tokens:
        return [text]
    if block_type == "table":
        return pack_rows(text.split(ROW_SEPARATOR), tokenizer, max_tokens, overlap)
    return split_by_tokens(text, tokenizer, max_tokens, overlap)


def pack_rows(rows: Sequence[str], tokenizer: Tokenizer, max_tokens: int, overlap: int = DEFAULT_OVERLAP) -> list[str]:
    """Greedily pack whole rows (joined by blank lines) into pieces within ``max_tokens``.

    A row too long on its own is split by tokens. Packed pieces are verified by a fresh count, and split by
    tokens in the unlikely case the joined text tokenizes longer than the sum of its rows.
    """
    budget = _budget(tokenizer, max_tokens)
    pieces: list[str] = []
    group: list[str] = []
    used = 0

    def flush() -> None:
        if group:
            joined = ROW_SEPARATOR.join(group)
            fits = count_tokens(tokenizer, joined) <= max_tokens
            pieces.extend([joined] if fits else split_by_tokens(joined, tokenizer, max_tokens, overlap))
            group.clear()

    for row in (row.strip() for row in rows):
        if not row:
            continue
        size = len(tokenizer.offsets(row))
        if size > budget:
            flush()
            used = 0
            pieces.extend(split_by_tokens(row, tokenizer, max_tokens, overlap))
            continue
        if used + size > budget:
            flush()
            used = 0
        group.append(row)
        used += size
    flush()
    return pieces


def split_by_tokens(text: str, tokenizer: Tokenizer, max_tokens: int, overlap: int = DEFAULT_OVERLAP) -> list[str]:
    """Split ``text`` into overlapping pieces of at most ``max_tokens`` tokens (special tokens included).

    Each piece is an exact, stripped substring of ``text``; see ``split_spans`` for how windows are chosen.
    """
    return [text[start:end] for start, end in split_spans(text, tokenizer, max_tokens, overlap)]


def split_spans(
    text: str, tokenizer: Tokenizer, max_tokens: int, overlap: int = DEFAULT_OVERLAP
) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the pieces ``split_by_tokens`` cuts ``text`` into, in order.

    The text is tokenized once and cut between tokens. A window holds at most ``budget = max_tokens -
    special_tokens`` tokens and prefers to end at a sentence/line end, else at whitespace, found in its last
    quarter. Neighbours share about ``overlap`` tokens, the next window starting at a word start when one
    is within a few tokens (``overlap >= budget`` is clamped to ``budget // 4``, and the overlap never exceeds
    half of the window just emitted, so every step advances and the number of windows is O(n)). Each piece is
    re-tokenized and its window shrunk until it fits, since a slice may tokenize differently from the whole.
    Every token of ``text`` lies in at least one span; spans are stripped of surrounding whitespace.
    """
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    budget = _budget(tokenizer, max_tokens)
    if overlap >= budget:
        overlap = budget // 4
    spans = tokenizer.offsets(text)
    if len(spans) <= budget:
        whole = _strip_span(text, 0, len(text))
        if count_tokens(tokenizer, text[whole[0] : whole[1]]) <= max_tokens:
            return [whole] if whole[0] < whole[1] else []
    pieces: list[tuple[int, int]] = []
    start = 0
    while start < len(spans):
        end = _window_end(text, spans, start, budget)
        end, fitted = _fit_window(text, spans, start, end, tokenizer, max_tokens)
        pieces.extend(span for span in fitted if span[0] < span[1])
        if end >= len(spans):
            break
        start = _next_start(text, spans, start, end, min(overlap, (end - start) // 2))
    return pieces


def _budget(tokenizer: Tokenizer, max_tokens: int) -> int:
    """Tokens available for content once the model's special tokens are counted."""
    budget = max_tokens - tokenizer.special_tokens
    if budget < 1:
        raise ValueError(
            f"max_tokens={max_tokens} leaves no room for content ({tokenizer.special_tokens} special tokens)"
        )
    return budget


def _window_end(text: str, spans: Sequence[tuple[int, int]], start: int, budget: int) -> int:
    """Exclusive end token index of the window from ``start``, at the best boundary in its last quarter."""
    end = min(start + budget, len(spans))
    if end == len(spans):
        return end
    best, best_score = end, 0
    for cut in range(end, max(start + 1, end - budget // 4) - 1, -1):
        score = _boundary_score(text, spans, cut)
        if score > best_score:
            best, best_score = cut, score
            if score == 2:
                break
    return best


def _boundary_score(text: str, spans: Sequence[tuple[int, int]], cut: int) -> int:
    """How good it is to end a window before token ``cut``: 2 sentence/line end, 1 whitespace, 0 mid-word."""
    previous_start, previous_end = spans[cut - 1]
    gap = text[previous_end : spans[cut][0]]
    if "\n" in gap or text[previous_start:previous_end].endswith(_SENTENCE_END):
        return 2
    return 1 if gap and gap.isspace() else 0


def _fit_window(
    text: str, spans: Sequence[tuple[int, int]], start: int, end: int, tokenizer: Tokenizer, max_tokens: int
) -> tuple[int, list[tuple[int, int]]]:
    """Shrink the token window ``[start, end)`` until its stripped slice re-tokenizes within ``max_tokens``.

    Returns the final exclusive end token and the piece span (several spans only in the degenerate case of a
    single token that re-tokenizes beyond a tiny budget, which is then cut by characters).
    """
    while True:
        piece_start, piece_end = _strip_span(text, spans[start][0], spans[end - 1][1])
        excess = count_tokens(tokenizer, text[piece_start:piece_end]) - max_tokens
        if excess <= 0:
            return end, [(piece_start, piece_end)]
        if end - start == 1:
            return end, _split_characters(text, piece_start, piece_end, tokenizer, max_tokens)
        end = max(start + 1, end - excess)


def _split_characters(text: str, start: int, end: int, tokenizer: Tokenizer, max_tokens: int) -> list[tuple[int, int]]:
    """Cover ``text[start:end]`` (one token's characters) with the longest fitting consecutive slices.

    Only reachable with budgets of a few tokens; a slice of one character is emitted even if, after
    normalisation, it still counts more (no shorter substring exists).
    """
    pieces: list[tuple[int, int]] = []
    position = start
    while position < end:
        cut = end
        while cut > position + 1 and count_tokens(tokenizer, text[position:cut]) > max_tokens:
            cut -= 1
        pieces.append(_strip_span(text, position, cut))
        position = cut
    return pieces


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    """``(start, end)`` narrowed so that ``text[start:end]`` has no surrounding whitespace."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _next_start(text: str, spans: Sequence[tuple[int, int]], start: int, end: int, overlap: int) -> int:
    """Next window start: ``overlap`` tokens before ``end``, moved back to a word start if one is near."""
    candidate = max(start + 1, end - overlap)
    if overlap == 0:
        return candidate
    for index in range(candidate, max(start + 1, candidate - _START_LOOKBACK) - 1, -1):
        if text[spans[index - 1][1] : spans[index][0]]:
            return index
    return candidate


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
