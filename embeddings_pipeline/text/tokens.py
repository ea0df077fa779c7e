"""Tokenizers used to measure and split texts against a model's token limit.

Only character offsets are needed by the chunker: a tokenizer reports the ``(start, end)`` character span of
every token of a text, without the special tokens the model adds around each input
(``special_tokens`` of them).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from tokenizers import Tokenizer as _HFTokenizer

_NON_SPACE = re.compile(r"\S+")


@runtime_checkable
class Tokenizer(Protocol):
    """What the chunker needs from a tokenizer."""

    special_tokens: int  # tokens the model adds around every text (2 for BERT: [CLS] ... [SEP])
    name: str  # identifies the vocabulary and rules: chunks split for one tokenizer fit any model sharing it

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Character spans of each token of ``text``, without special tokens."""
        ...


class HuggingFaceTokenizer:
    """A ``tokenizers`` tokenizer loaded from a ``tokenizer.json`` file.

    Truncation and padding configured in the file are switched off (the bundled all-MiniLM-L6-v2 file
    truncates to 128 tokens and pads), so counts and offsets cover the whole text. Special tokens are not
    encoded; they are accounted for by ``special_tokens``.
    """

    def __init__(self, tokenizer_json: str | Path, special_tokens: int = 2) -> None:
        if special_tokens < 0:
            raise ValueError(f"special_tokens must be >= 0, got {special_tokens}")
        tokenizer = _HFTokenizer.from_file(str(tokenizer_json))
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        self.special_tokens = special_tokens
        self.name = "hf-" + hashlib.sha256(Path(tokenizer_json).read_bytes()).hexdigest()[:12]

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Character spans of the tokens of ``text`` (no special tokens)."""
        return list(self._tokenizer.encode(text, add_special_tokens=False).offsets)

    def count(self, text: str) -> int:
        """Number of tokens the model sees for ``text``, special tokens included."""
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids) + self.special_tokens

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """``count`` for many texts at once (batched, parallel encoding in the Rust library)."""
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [len(encoding.ids) + self.special_tokens for encoding in encodings]


class WhitespaceTokenizer:
    """Approximate tokenizer: one token per run of non-whitespace characters, no special tokens.

    Used for remote embedding providers whose tokenizer is unknown. Subword tokenizers usually produce MORE
    tokens than this (about 1.3 per English word, far more for code, CJK or unusual words), so a budget
    measured with it is only an approximation: choose ``max_tokens`` with a comfortable
    margin below the real limit.
    """

    special_tokens: int = 0
    name: str = "whitespace"

    def offsets(self, text: str) -> list[tuple[int, int]]:
        """Spans of the ``\\S+`` runs of ``text``."""
        return [match.span() for match in _NON_SPACE.finditer(text)]

    def count(self, text: str) -> int:
        """Number of ``\\S+`` runs in ``text`` (plus ``special_tokens``)."""
        return sum(1 for _ in _NON_SPACE.finditer(text)) + self.special_tokens


def count_tokens(tokenizer: Tokenizer, text: str) -> int:
    """Tokens the model sees for ``text``: its tokens plus the special tokens added around it."""
    return len(tokenizer.offsets(text)) + tokenizer.special_tokens


def count_tokens_many(tokenizer: Tokenizer, texts: Sequence[str]) -> list[int]:
    """``count_tokens`` of each text; batched when the tokenizer can (``count_many``: one call into the Rust
    library for all of them, in parallel, instead of one call and one offsets list per text)."""
    many = getattr(tokenizer, "count_many", None)
    if many is not None and texts:
        return list(many(texts))
    return [count_tokens(tokenizer, text) for text in texts]
