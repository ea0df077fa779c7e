"""Tenant-scoped retrieval over the vectors and the chunk texts, and retrieval-quality evaluation."""

from .dense import SearchHit, search_vector
from .hybrid import MODES, rrf, search, search_mode
from .text import search_text

__all__ = ["MODES", "SearchHit", "rrf", "search", "search_mode", "search_text", "search_vector"]
