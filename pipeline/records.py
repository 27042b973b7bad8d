"""The records that flow between stages. Times are media time in seconds (pts), never frame counts alone."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ModelIds:
    """Which checkpoints produced an embedding; `untrained` marks random-weight checkpoints."""

    siglip: str
    dinov2: str
    untrained: bool = False


@dataclass
class Frame:
    """One decoded, sampled frame: RGB uint8 (H, W, 3), already resized for the models."""

    source: str
    pts: float
    index: int
    image: np.ndarray
    camera: str | None = None
    # True when the frame is a near-duplicate of the previous sampled frame (a still camera):
    # extraction can reuse the previous features instead of running the models again.
    still: bool = False


@dataclass
class FrameFeatures:
    """Per-frame embeddings: unit-norm float32 vectors."""

    source: str
    pts: float
    siglip: np.ndarray
    dinov2: np.ndarray


@dataclass
class Keyframe:
    """The representative frame of a clip window, kept as pixels until the sink writes it."""

    source: str
    pts: float
    image: np.ndarray


@dataclass
class ClipEmbedding:
    """Mean-pooled, L2-normalised embeddings of one clip window [start, end)."""

    source: str
    source_id: str
    start: float
    end: float
    siglip: np.ndarray
    dinov2: np.ndarray
    keyframe_pts: float
    keyframe_key: str
    models: ModelIds
    frame_count: int = 0


@dataclass(frozen=True)
class SearchHit:
    """One clip window matching a query."""

    source: str
    source_id: str
    start: float
    end: float
    score: float
    keyframe_key: str


@dataclass(frozen=True)
class Event:
    """Adjacent hits of one source merged into one moment, ranked by peak score."""

    source: str
    source_id: str
    start: float
    end: float
    score: float
    peak_time: float
    keyframe_key: str
    untrained: bool = False
    hits: tuple[SearchHit, ...] = field(default=(), repr=False)

    def to_json(self) -> dict:
        return {
            "source": self.source,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "score": round(self.score, 6),
            "keyframe": self.keyframe_key,
            "untrained": self.untrained,
        }
