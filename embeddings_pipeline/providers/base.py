"""The provider protocol and the model identity every vector's lineage points at."""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np

    from ..text.tokens import Tokenizer

_PROVIDER_ABBREV = {"sentence-transformers": "st", "ollama": "ol", "openai": "oa"}


class ProviderError(RuntimeError):
    """An embedding call failed; the message never carries credentials."""


@dataclass(frozen=True)
class ModelIdentity:
    provider: str
    name: str
    revision: str  # weights digest (or the provider's model digest)
    dims: int
    normalized: bool
    max_tokens: int
    query_prefix: str = ""
    passage_prefix: str = ""

    @property
    def model_key(self) -> str:
        """Short, stable slug of everything that changes the vectors: the lineage anchor and table suffix."""
        digest = hashlib.sha256(
            "\x1f".join(
                [
                    self.provider,
                    self.name,
                    self.revision,
                    str(self.dims),
                    self.query_prefix,
                    self.passage_prefix,
                ]
            ).encode()
        ).hexdigest()[:8]
        slug = re.sub(r"[^a-z0-9]+", "_", self.name.lower().rsplit("/", 1)[-1]).strip("_")[:28] or "model"
        return f"{_PROVIDER_ABBREV.get(self.provider, 'x')}_{slug}_{self.dims}_{digest}"

    @property
    def vector_table(self) -> str:
        return f"vectors_{self.model_key}"

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "model_key": self.model_key}


class EmbeddingProvider(Protocol):
    identity: ModelIdentity

    @property
    def tokenizer(self) -> Tokenizer: ...

    def load(self) -> None: ...

    def embed_documents(self, texts: list[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...
