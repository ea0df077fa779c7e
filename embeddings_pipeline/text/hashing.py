"""Content hashes and stable identifiers.

Both are pure functions of their input strings, so they are stable across processes, machines and releases:
a changed content hash is what tells the pipeline that a text must be re-embedded.
"""

from __future__ import annotations

import hashlib

ID_SEPARATOR = "\x1f"  # ASCII unit separator: cannot be confused with ordinary text joins
STABLE_ID_LENGTH = 24


def content_hash(text: str) -> str:
    """SHA-256 hex digest of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stable_id(*parts: str) -> str:
    """Deterministic id: the first 24 hex chars of the SHA-256 of ``parts`` joined with ``\\x1f``."""
    return hashlib.sha256(ID_SEPARATOR.join(parts).encode("utf-8")).hexdigest()[:STABLE_ID_LENGTH]
