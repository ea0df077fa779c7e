"""What each step did, as plain values; the Dagster assets publish them as materialization metadata."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .model_change import GateResult


class EmbeddingIncomplete(RuntimeError):
    """Chunks were left without a vector; the progress made is kept and the next run resumes."""

    def __init__(self, message: str, report: EmbeddingsReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class BlocksReport:
    documents_parsed: int = 0
    documents_removed: int = 0
    blocks_written: int = 0
    blocks_removed: int = 0

    def as_metadata(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class ChunksReport:
    documents_chunked: int = 0
    chunks_written: int = 0
    chunks_removed: int = 0
    chunker_version: str = ""  # the chunk set built (metadata keeps the column's name)
    # during a model change: the chunk set the active model still searches, kept up to date beside the new one
    serving_chunker_version: str = ""
    serving_chunks_written: int = 0

    def as_metadata(self) -> dict[str, object]:
        """The serving chunk set's figures only while there is one (a model change): otherwise they are an empty
        name and a zero, a flat line in every plot of `chunks`."""
        figures = asdict(self)
        if not self.serving_chunker_version:
            del figures["serving_chunker_version"], figures["serving_chunks_written"]
        return figures


@dataclass
class EmbeddingsReport:
    model_key: str
    chunk_set: str = ""
    chunks: int = 0
    embedded: int = 0
    reused: int = 0
    copied_by_hash: int = 0
    deleted: int = 0
    failed: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    provider: dict[str, int] = field(default_factory=dict)  # retries, rate limits, ... during this run
    gate: GateResult | None = None  # the quality gate, when the model was ready to take over from another

    @property
    def coverage_pct(self) -> float:
        return 100.0 if self.chunks == 0 else round(100.0 * (self.chunks - self.failed) / self.chunks, 3)

    @property
    def texts_per_second(self) -> float:
        """Model throughput inside this run (model load excluded)."""
        return round(self.embedded / self.embed_seconds, 2) if self.embed_seconds > 0 else 0.0

    def as_metadata(self) -> dict[str, object]:
        return {
            "model_key": self.model_key,
            "chunker_version": self.chunk_set,
            "chunks": self.chunks,
            "embedded": self.embedded,
            "reused": self.reused,
            "copied_by_hash": self.copied_by_hash,
            "deleted": self.deleted,
            "failed": self.failed,
            "coverage_pct": self.coverage_pct,
            "seconds": round(self.seconds, 3),
            "texts_per_second": self.texts_per_second,
            **{f"provider_{k}": v for k, v in self.provider.items()},
            **(self.gate.as_metadata() if self.gate else {}),
        }
