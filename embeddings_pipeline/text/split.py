"""Splitting a text that is longer than the model reads into overlapping token windows, each verified to fit.

Windows end at the best boundary in reach (paragraph, sentence, word) and start at a word boundary; every piece
is an exact substring of the text and is re-tokenized, because WordPiece may tokenize a slice differently from
the whole text.
"""

from __future__ import annotations

from collections.abc import Sequence

from .tables import ROW_SEPARATOR
from .tokens import Tokenizer, count_tokens

DEFAULT_OVERLAP = 32
_SENTENCE_END = (".", "!", "?", ";", "。", "！", "？", "；")
_START_LOOKBACK = 8  # tokens a window start may move back to begin at a word boundary


def pack_rows(rows: Sequence[str], tokenizer: Tokenizer, max_tokens: int, overlap: int = DEFAULT_OVERLAP) -> list[str]:
    """Greedily pack whole rows (joined by blank lines) into pieces within ``max_tokens``.

    A row too long on its own is split by tokens. Packed pieces are verified by a fresh count, and split by
    tokens in the unlikely case the joined text tokenizes longer than the sum of its rows.
    """
    budget = content_budget(tokenizer, max_tokens)
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
    budget = content_budget(tokenizer, max_tokens)
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


def content_budget(tokenizer: Tokenizer, max_tokens: int) -> int:
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
