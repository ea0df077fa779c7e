"""Embedding providers behind one small protocol (see base.py); `load_provider` turns a spec into one."""

from .base import EmbeddingProvider, ModelIdentity, ProviderError
from .registry import ModelSpec, load_provider, parse_model_spec

__all__ = ["EmbeddingProvider", "ModelIdentity", "ModelSpec", "ProviderError", "load_provider", "parse_model_spec"]
