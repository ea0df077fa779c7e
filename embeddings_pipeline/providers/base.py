"""The provider protocol and the model identity every vector's lineage points at."""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote

if TYPE_CHECKING:
    import numpy as np

    from ..text.tokens import Tokenizer
    from .resilience import CallStats, CircuitBreaker

_PROVIDER_ABBREV = {"sentence-transformers": "st", "ollama": "ol", "openai": "oa"}


class ProviderError(RuntimeError):
    """An embedding call failed; the message never carries credentials."""


def spec_for(provider: str, name: str, options: dict[str, str | int | None]) -> str:
    """The model spec naming a provider built directly (not from a spec): ``provider:name`` plus the options that
    are set, sorted and quoted, spelled as ``registry.canonical_spec`` spells them."""
    shown = "&".join(f"{k}={quote(str(v))}" for k, v in sorted(options.items()) if v is not None and v != "")
    return f"{provider}:{name}" + (f"?{shown}" if shown else "")


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
    """What the pipeline needs of a model. The members are read-only here, so an implementation may back them
    with a plain attribute or a property (a remote provider resolves its identity on first use)."""

    @property
    def identity(self) -> ModelIdentity: ...

    @property
    def spec(self) -> str:
        """The model spec the provider was loaded from (``provider:name?options``), recorded with the identity so
        the model can be loaded again later."""
        ...

    @property
    def stats(self) -> CallStats:
        """Counters of the calls made (a local model may count only ``calls``)."""
        ...

    @property
    def breaker(self) -> CircuitBreaker | None:
        """The endpoint's circuit breaker; None for a local model."""
        ...

    @property
    def tokenizer(self) -> Tokenizer: ...

    def counters(self) -> dict[str, int]:
        """``stats`` as metadata, plus ``circuit_opened`` (the breaker's opened count) when there is a breaker."""
        ...

    def load(self) -> None: ...

    def embed_documents(self, texts: list[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...
