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
    # True when sampled for a live tracker alone: its detector's rate (detect.rate) is above the models'
    # (decode.fps), so the frames between the models' go to the tracker only.
    tracker_only: bool = False

    @property
    def runs_models(self) -> bool:
        """Whether the models run on it: a still frame reuses its source's previous features, and a tracker's
        frame gets none."""
        return not (self.still or self.tracker_only)


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
        return [frame for frame in self.frames if frame.runs_models]

    def for_models(self) -> FrameBatch:
        """The batch without the frames sampled for a tracker alone: those the clip windows and matcher see."""
        if not any(frame.tracker_only for frame in self.frames):
            return self
        return FrameBatch([frame for frame in self.frames if not frame.tracker_only], self.siglip, self.dinov2)

    def features(self) -> list[FrameFeatures | None]:
        """Each frame's own features, in frame order; None for a frame the models skipped."""
        if self.siglip is None or self.dinov2 is None:
            raise ValueError("the batch's features have not been extracted")
        rows = iter(zip(self.siglip, self.dinov2, strict=True))
        return [
            FrameFeatures(frame.source, frame.pts, *next(rows)) if frame.runs_models else None for frame in self.frames
        ]


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


@dataclass(frozen=True)
class TrackAction:
    """What a tracked object did, behind a timeline event or a track query's alert: entered or left a zone,
    stayed in one (`duration`: seconds since it entered), or crossed a line (`direction`, as `TrackEvent` has
    them). `box`: where it was then (x1, y1, x2, y2 pixels), when known."""

    track_id: int
    class_name: str
    kind: str  # enter, leave, dwell, cross
    name: str  # the zone's or the line's
    direction: str | None = None
    duration: float | None = None
    box: tuple[float, float, float, float] | None = None

    def label(self) -> str:
        """What a class of object did where, alike for every track and visit ("person entered zone A")."""
        if self.kind == "cross":
            return f"{self.class_name} crossed {self.name} {(self.direction or '').replace('_', ' ')}".rstrip()
        verb = {"enter": "entered", "leave": "left", "dwell": "stayed in"}.get(self.kind, self.kind)
        return f"{self.class_name} {verb} {self.name}"

    def sentence(self) -> str:
        """The label of this one track and visit ("person #3 stayed 35 s in zone A")."""
        who = f"{self.class_name} #{self.track_id}"
        seconds = f"{self.duration:.0f} s" if self.duration is not None else ""
        if self.kind == "dwell" and seconds:
            return f"{who} stayed {seconds} in {self.name}"
        if self.kind == "leave" and seconds:
            return f"{who} left {self.name} after {seconds}"
        return who + self.label()[len(self.class_name) :]

    def to_json(self) -> dict:
        action = {
            "id": self.track_id,
            "class_name": self.class_name,
            "kind": self.kind,
            "name": self.name,
            "direction": self.direction,
            "duration": None if self.duration is None else round(self.duration, 3),
        }
        return action if self.box is None else {**action, "box": [round(float(v), 2) for v in self.box]}

    @classmethod
    def from_json(cls, data: dict) -> "TrackAction":
        return cls(
            int(data["id"]),
            str(data["class_name"]),
            str(data["kind"]),
            str(data["name"]),
            data.get("direction"),
            data.get("duration"),
            None if data.get("box") is None else tuple(float(v) for v in data["box"]),
        )


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
    track: TrackAction | None = None  # a track query's alert: the object, what it did, its box

    def __post_init__(self) -> None:
        if self.status not in ALERT_STATUSES:
            raise ValueError(f"alert status must be one of {ALERT_STATUSES}, got {self.status!r}")
        if not self.end >= self.start:
            raise ValueError(f"alert end {self.end} is before its start {self.start}")

    @property
    def untrained(self) -> bool:
        return self.models.untrained

    @staticmethod
    def make_id(query_id: str, camera: str, start: float, track_id: int | None = None) -> str:
        """Deterministic: the same query, camera and event start (to the millisecond), and for a track query's
        alert the same track, give the same id."""
        text = f"{query_id}\x00{camera}\x00{int(round(start * 1000))}"
        if track_id is not None:
            text += f"\x00track {int(track_id)}"
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
            "track": None if self.track is None else self.track.to_json(),
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
            track=TrackAction.from_json(data["track"]) if data.get("track") is not None else None,
        )


@dataclass
class Detections:
    """One frame's detections as arrays (`pipeline.tracking`): `boxes` (N, 4) x1, y1, x2, y2 in pixels,
    `scores` (N,), `class_ids` (N,) (zeros when not given), `appearance` (N, D) unit vectors or None."""

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray | None = None
    appearance: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32)
        self.scores = np.asarray(self.scores, dtype=np.float32)
        if self.boxes.ndim != 2 or self.boxes.shape[1] != 4:
            raise ValueError(f"detection boxes must have shape (N, 4), got {self.boxes.shape}")
        count = len(self.boxes)
        if self.scores.shape != (count,):
            raise ValueError(f"detection scores must have shape ({count},) like the boxes, got {self.scores.shape}")
        if self.class_ids is None:
            self.class_ids = np.zeros(count, dtype=np.int32)
        else:
            self.class_ids = np.asarray(self.class_ids, dtype=np.int32)
            if self.class_ids.shape != (count,):
                raise ValueError(
                    f"detection class_ids must have shape ({count},) like the boxes, got {self.class_ids.shape}"
                )
        # NaN or infinite coordinates would poison the Kalman states of the tracks they match
        if not np.isfinite(self.boxes.sum() + self.scores.sum()):
            raise ValueError("detection boxes and scores must be finite numbers")
        if self.appearance is not None:
            self.appearance = np.asarray(self.appearance, dtype=np.float32)
            if self.appearance.ndim != 2 or len(self.appearance) != count:
                raise ValueError(
                    f"detection appearance must have shape ({count}, D) like the boxes, got {self.appearance.shape}"
                )
            # cosine distances are dot products, which only unit vectors make true
            norms = np.einsum("ij,ij->i", self.appearance, self.appearance)
            if count and not np.abs(norms - 1.0).max() <= 2e-3:
                raise ValueError("detection appearance rows must be unit vectors (L2 norm 1)")

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls, appearance_dim: int | None = None) -> Detections:
        """A frame without detections (with an empty (0, D) appearance when `appearance_dim` is given)."""
        appearance = None if appearance_dim is None else np.zeros((0, appearance_dim), dtype=np.float32)
        return cls(np.zeros((0, 4), dtype=np.float32), np.zeros(0, dtype=np.float32), appearance=appearance)


TRACK_STATES = ("tentative", "confirmed", "lost")


@dataclass(slots=True)  # not frozen: a tracker makes one per object per frame, and frozen ones cost 5x as much
class Track:
    """One tracked object as the tracker last saw it (`pipeline.tracking.Tracker`).

    `track_id` is stable within one tracker (one camera) and counts 1, 2, 3, ... in order of birth. `box` is the
    Kalman-filtered x1, y1, x2, y2 after the frame's detection (for a lost track, its prediction); `score` is
    its last detection's score and `frame` the frame number reported (the tracker's count of updates,
    1-based). `hits` counts matched detections, `age` the frames since the track's birth (1 in its first). A
    track is "tentative" until `track.confirm_hits` hits, then "confirmed"; unmatched, it is "lost" for up to
    `track.reid_frames` frames, and reported as such for its first `track.report_lost_frames`. `detection` is
    the row of the frame's `Detections` the track took, None for a lost track (reported at its prediction).
    """

    track_id: int
    box: tuple[float, float, float, float]
    score: float
    class_id: int
    frame: int
    hits: int
    age: int
    state: str = "confirmed"
    detection: int | None = None

    def __post_init__(self) -> None:
        if self.state not in TRACK_STATES:
            raise ValueError(f"track state must be one of {TRACK_STATES}, got {self.state!r}")


TRACK_EVENT_KINDS = ("enter", "leave", "dwell", "cross")
CROSSING_DIRECTIONS = ("left_to_right", "right_to_left")


@dataclass(frozen=True)
class TrackEvent:
    """One event of a tracked object (`pipeline.tracking.TrackEvents`): it entered or left a zone, stayed in one
    for the configured dwell time, or crossed a line. `name` is the zone's (enter, leave, dwell) or the line's
    (cross); `pts` is when, in the camera's media seconds. A crossing has a `direction`, "left_to_right" or
    "right_to_left" (as seen facing along the line from its first point to its second); a dwell or a leave has a
    `duration`, the seconds since the visit's enter. `class_name` names the class id where the detector's names
    are known to the one recording the event (the live tracker), else None."""

    camera: str
    track_id: int
    class_id: int
    kind: str
    name: str
    pts: float
    direction: str | None = None
    duration: float | None = None
    class_name: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in TRACK_EVENT_KINDS:
            raise ValueError(f"track event kind must be one of {TRACK_EVENT_KINDS}, got {self.kind!r}")
        crossing, timed = self.kind == "cross", self.kind in ("dwell", "leave")
        if (self.direction is not None) != crossing:
            raise ValueError(f"{self.kind} events {'need a' if crossing else 'take no'} direction")
        if crossing and self.direction not in CROSSING_DIRECTIONS:
            raise ValueError(f"crossing direction must be one of {CROSSING_DIRECTIONS}, got {self.direction!r}")
        if (self.duration is not None) != timed:
            raise ValueError(f"{self.kind} events {'need a' if timed else 'take no'} duration")

    def to_json(self) -> dict:
        event = {
            "camera": self.camera,
            "track_id": self.track_id,
            "class_id": self.class_id,
            "kind": self.kind,
            "name": self.name,
            "pts": float(self.pts),
            "direction": self.direction,
            "duration": None if self.duration is None else float(self.duration),
        }
        return event if self.class_name is None else {**event, "class_name": self.class_name}

    @classmethod
    def from_json(cls, data: "dict | str | bytes") -> "TrackEvent":
        if isinstance(data, (str, bytes)):
            data = json.loads(data)
        duration = data.get("duration")
        return cls(
            camera=str(data["camera"]),
            track_id=int(data["track_id"]),
            class_id=int(data["class_id"]),
            kind=str(data["kind"]),
            name=str(data["name"]),
            pts=float(data["pts"]),
            direction=data.get("direction"),
            duration=None if duration is None else float(duration),
            class_name=data.get("class_name"),
        )


@dataclass(frozen=True)
class DetectionFrame:
    """One camera frame's detections as an external detector sent them on `vigil.detections`
    (`pipeline.media.detection_messages`, docs/DETECTIONS.md). `pts` is the camera's media time in seconds,
    `index` the frame's index, `width` x `height` the picture the boxes are in (pixels), `wallclock` when the
    camera took the frame (Unix seconds) or None; `classes` names the class ids (class id i is `classes[i]`),
    empty when the detector sent ids alone."""

    camera: str
    pts: float
    index: int
    width: int
    height: int
    detections: Detections
    classes: tuple[str, ...] = ()
    wallclock: float | None = None
