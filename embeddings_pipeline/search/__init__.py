"""Tenant-scoped retrieval over the vectors, and retrieval-quality evaluation."""

from .dense import SearchHit, search, search_vector

__all__ = ["SearchHit", "search", "search_vector"]
