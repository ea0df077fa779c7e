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

from .blocks import Block
from .hashing import content_hash, stable_id
from .split import DEFAULT_OVERLAP, content_budget, pack_rows, split_by_tokens, split_spans
from .tables import ROW_SEPARATOR, flatten_table
from .tokens import Tokenizer, count_tokens, count_tokens_many

__all__ = ["CHUNKER_VERSION", "Chunk", "chunk_blocks", "chunk_text", "flatten_table", "split_by_tokens", "split_spans"]

CHUNKER_VERSION = "blocks-v1"  # bump when chunk texts would change

HEADING_SEPARATOR = " > "


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
    content_budget(tokenizer, max_tokens)  # fail early on an impossible limit
    if overflow not in OVERFLOW_POLICIES:
        raise ValueError(f"overflow must be one of {OVERFLOW_POLICIES}, not {overflow!r}")
    chunks: list[Chunk] = []
    texts = [(block, chunk_text(block.block_type, block.text, title, block.heading_path)) for block in blocks]
    embedded = [(block, text) for block, text in texts if text is not None]
    # the one tokenization of a block that fits (nearly all do), for the whole document at once
    counts = count_tokens_many(tokenizer, [text for _, text in embedded])
    for (block, text), whole in zip(embedded, counts, strict=True):
        if overflow == "truncate" or whole <= max_tokens:
            counted = [(text, whole)]
        else:
            counted = [(piece, count_tokens(tokenizer, piece)) for piece in _split(block.block_type, text, tokenizer,
                                                                                  max_tokens, overlap)]  # fmt: skip
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


def _split(block_type: str, text: str, tokenizer: Tokenizer, max_tokens: int, overlap: int) -> list[str]:
    """A block text longer than ``max_tokens`` split into pieces that fit (tables by rows first)."""
    if block_type == "table":
        return pack_rows(text.split(ROW_SEPARATOR), tokenizer, max_tokens, overlap)
    return split_by_tokens(text, tokenizer, max_tokens, overlap)
