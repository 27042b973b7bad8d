"""The records that flow between stages. Times are media time in seconds (pts), never frame counts alone."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

# Printed and rendered beside every result made with random-weight checkpoints (ModelIds.untrained).
UNTRAINED_NOTE = "UNTRAINED models (random weights): these results prove the plumbing, not accuracy."


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
    # Wall-clock time the camera took the frame (Unix seconds); None for files, whose clips take their
    # recording start plus media time instead.
    wallclock: float | None = None


@dataclass
class FrameFeatures:
    """Per-frame embeddings: unit-norm float32 vectors."""

    source: str
    pts: float
    siglip: np.ndarray
    dinov2: np.ndarray


@dataclass
class FrameBatch:
    """Sampled frames (of any cameras, pts order within each) on their way between stages, with their
    features once the extractor has run. A still frame (a near-duplicate of its source's previous frame)
    skips the models: `siglip` and `dinov2` hold one row per moving frame, in frame order, and consumers
    give a still frame its source's previous features (`pipeline.search.embed.FeatureCarry`)."""

    frames: list[Frame]
    siglip: np.ndarray | None = None  # (moving frames, D) unit-norm float32
    dinov2: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.frames)

    def moving(self) -> list[Frame]:
        """The frames the models run on."""
        return [frame for frame in self.frames if not frame.still]

    def features(self) -> list[FrameFeatures | None]:
        """Each frame's own features, in frame order; None for a still frame."""
        if self.siglip is None or self.dinov2 is None:
            raise ValueError("the batch's features have not been extracted")
        rows = iter(zip(self.siglip, self.dinov2, strict=True))
        return [None if frame.still else FrameFeatures(frame.source, frame.pts, *next(rows)) for frame in self.frames]


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
    recorded_at: float | None = None  # wall-clock time of `start` (Unix seconds); None when unknown


@dataclass(frozen=True)
class SearchHit:
    """One clip window matching a query."""

    source: str
    source_id: str
    start: float
    end: float
    score: float
    keyframe_key: str
    recorded_at: float | None = None  # wall-clock time of `start` (Unix seconds); None when unknown


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


ALERT_STATUSES = ("open", "closed")


@dataclass(frozen=True)
class Alert:
    """One event of a standing query on one camera (see `pipeline.live.match`). Times are media seconds (pts).

    Emitted twice under the same deterministic id: status "open" as soon as the event is confirmed (end and
    peak so far), then "closed" with the final end and peak; consumers overwrite by id. `end` is the pts of
    the event's last frame scoring at or above the low (hysteresis) threshold; `keyframe_key` is the
    peak frame's keyframe. `verified`: None when no verifier ran (or it failed), True when one confirmed.
    """

    id: str
    query_id: str
    camera: str
    start: float
    end: float
    peak_score: float
    peak_pts: float
    keyframe_key: str
    models: ModelIds
    status: str = "open"
    query_text: str | None = None
    query_image: str | None = None
    verified: bool | None = None

    def __post_init__(self) -> None:
        if self.status not in ALERT_STATUSES:
            raise ValueError(f"alert status must be one of {ALERT_STATUSES}, got {self.status!r}")
        if not self.end >= self.start:
            raise ValueError(f"alert end {self.end} is before its start {self.start}")

    @property
    def untrained(self) -> bool:
        return self.models.untrained

    @staticmethod
    def make_id(query_id: str, camera: str, start: float) -> str:
        """Deterministic: the same query, camera and event start (to the millisecond) give the same id."""
        text = f"{query_id}\x00{camera}\x00{int(round(start * 1000))}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "status": self.status,
            "query_id": self.query_id,
            "query_text": self.query_text,
            "query_image": self.query_image,
            "camera": self.camera,
            "start": float(self.start),
            "end": float(self.end),
            "peak_score": float(self.peak_score),
            "peak_pts": float(self.peak_pts),
            "keyframe_key": self.keyframe_key,
            "models": {"siglip": self.models.siglip, "dinov2": self.models.dinov2},
            "untrained": self.untrained,
            "verified": self.verified,
        }

    @classmethod
    def from_json(cls, data: "dict | str | bytes") -> "Alert":
        if isinstance(data, (str, bytes)):
            data = json.loads(data)
        models = data["models"]
        return cls(
            id=str(data["id"]),
            query_id=str(data["query_id"]),
            camera=str(data["camera"]),
            start=float(data["start"]),
            end=float(data["end"]),
            peak_score=float(data["peak_score"]),
            peak_pts=float(data["peak_pts"]),
            keyframe_key=str(data["keyframe_key"]),
            models=ModelIds(str(models["siglip"]), str(models["dinov2"]), bool(data.get("untrained", False))),
            status=str(data.get("status", "open")),
            query_text=data.get("query_text"),
            query_image=data.get("query_image"),
            verified=data.get("verified"),
        )
