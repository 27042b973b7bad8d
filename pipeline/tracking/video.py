"""Tracking a video source whole: sampled frames -> detector -> appearance -> tracker -> events, a batch of
frames at a time, into one `TrackedObject` per track and the source's `TrackEvent`s.

Memory is bounded by the batch and the number of tracks, never by the source's length: frames are dropped once
their batch is tracked, and each track keeps only the crop of its best detection so far and the sum of its
detections' appearance vectors.

Each track reported names the detection it took (`Track.detection`). The tracker is asked for its tentative
tracks too, so that a track's every detection, from its first, counts in its crop and appearance; a tentative
track becomes an object only once confirmed (one dropped before is a false detection), and the events see
confirmed and lost tracks alone.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice

import numpy as np

from pipeline.config import EventsConfig, TrackConfig
from pipeline.detection import Detector, crop_appearance, crop_boxes
from pipeline.models import Dinov2Encoder
from pipeline.records import Detections, Frame, Track, TrackEvent
from pipeline.tracking.events import TrackEvents
from pipeline.tracking.tracker import Tracker

THUMBNAIL_MARGIN = 0.1  # of a box's width and height around its thumbnail, as the appearance crops have


@dataclass
class TrackedObject:
    """One track over the whole source: when it was seen, its best detection (box, score, pts and crop) and
    its appearance, the unit mean of its detections' DINOv2 vectors."""

    track_id: int
    class_id: int
    first_pts: float  # its first detection (before confirmation too)
    last_pts: float  # its last detection (reports while lost do not count)
    frames: int  # detections it took, each one counted in `appearance_sum`
    best_score: float
    best_pts: float
    best_box: tuple[float, float, float, float]
    # RGB uint8, the best detection's box grown by THUMBNAIL_MARGIN; None for a live track restored from a
    # checkpoint (crops are not kept in it) that has taken no detection since
    best_crop: np.ndarray | None
    appearance_sum: np.ndarray | None = field(repr=False)  # None: its detections had no appearance

    @property
    def appearance(self) -> np.ndarray:
        return (self.appearance_sum / np.linalg.norm(self.appearance_sum)).astype(np.float32)

    def state(self) -> dict:
        """Plain JSON types for a live tracker's checkpoint, all but the crop."""
        return {
            "track_id": self.track_id,
            "class_id": self.class_id,
            "first_pts": self.first_pts,
            "last_pts": self.last_pts,
            "frames": self.frames,
            "best_score": self.best_score,
            "best_pts": self.best_pts,
            "best_box": list(self.best_box),
            "appearance_sum": None if self.appearance_sum is None else encode_vector(self.appearance_sum),
        }

    @classmethod
    def from_state(cls, state: dict) -> TrackedObject:
        """A checkpointed object, without its crop: its next detection is its best (a crop comes with it)."""
        saved = state["appearance_sum"]
        return cls(
            state["track_id"],
            state["class_id"],
            state["first_pts"],
            state["last_pts"],
            state["frames"],
            state["best_score"],
            state["best_pts"],
            tuple(state["best_box"]),
            None,
            None if saved is None else decode_appearance(saved),
        )

    def to_json(self, class_name: str, thumbnail_key: str, untrained: bool) -> dict:
        """The track as `tracks.json` holds it: the appearance as base64 of little-endian float32."""
        return {
            "id": self.track_id,
            "class_id": self.class_id,
            "class_name": class_name,
            "first_pts": self.first_pts,
            "last_pts": self.last_pts,
            "frames": self.frames,
            "best_score": self.best_score,
            "best_pts": self.best_pts,
            "best_box": [round(value, 2) for value in self.best_box],
            "thumbnail": thumbnail_key,
            "appearance": encode_vector(self.appearance),
            "appearance_dim": int(self.appearance_sum.shape[0]),
            "untrained": untrained,
        }


@dataclass
class EndedTrack:
    """A live camera's track its tracker let go (lost past `track.reid_frames`): what the track index keeps of
    it (`pipeline.tracking.similar`), and its best crop, the thumbnail."""

    camera: str
    tracked: TrackedObject  # with appearance
    class_name: str
    appearance_model: str
    untrained: bool


def encode_vector(vector: np.ndarray) -> str:
    """A vector as base64 of little-endian float32, as `tracks.json` holds appearance."""
    return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")


def decode_appearance(text: str) -> np.ndarray:
    """A track's appearance vector from its `tracks.json` form."""
    return np.frombuffer(base64.b64decode(text), dtype="<f4").astype(np.float32)


@dataclass
class TrackedSource:
    """What tracking one source gave: frames tracked, its tracks by id, its events and the final counts."""

    frames: int
    objects: list[TrackedObject]
    events: list[TrackEvent]
    counts: dict


def track_frames(
    frames: Iterable[Frame],
    detector: Detector,
    encoder: Dinov2Encoder,
    *,
    camera: str,
    track_config: TrackConfig | None = None,
    events_config: EventsConfig | None = None,
    batch_frames: int = 16,
) -> TrackedSource:
    """Track one source's frames (in pts order): detections of each batch of `batch_frames` frames, their crops
    embedded in one encoder call, one tracker step and one events step per frame. `camera` names the source
    in the events (and picks the zones and lines configured for it)."""
    tracker = Tracker(track_config)
    events = TrackEvents(camera, events_config)
    objects: dict[int, TrackedObject] = {}  # the confirmed tracks
    tentative: dict[int, TrackedObject] = {}  # the last frame's tentative tracks: those not dropped yet
    found: list[TrackEvent] = []
    count = 0
    for batch in _batches(frames, batch_frames):
        detections = crop_appearance(batch, detector.detect(batch), encoder, margin=THUMBNAIL_MARGIN)
        for frame, detected in zip(batch, detections):
            tracks = tracker.update(detected, include_tentative=True)
            tentative = add_sightings(objects, tentative, frame, detected, tracks)
            found += events.update([track for track in tracks if track.state != "tentative"], frame.pts)
            count += 1
    return TrackedSource(count, [objects[key] for key in sorted(objects)], found, events.counts())


def _batches(frames: Iterable[Frame], size: int) -> Iterator[list[Frame]]:
    iterator = iter(frames)
    while batch := list(islice(iterator, size)):
        yield batch


def add_sightings(
    objects: dict[int, TrackedObject],
    tentative: dict[int, TrackedObject],
    frame: Frame,
    detections: Detections,
    tracks: Sequence[Track],
) -> dict[int, TrackedObject]:
    """Fold one frame's tracks that took a detection into their objects: a confirmed track's into `objects`, a
    tentative one's kept aside until it is confirmed. Returns this frame's tentative objects (a tentative track
    that took no detection is dropped by the tracker, and so is its object here)."""
    still_tentative: dict[int, TrackedObject] = {}
    for track in tracks:
        row = track.detection
        if row is None:  # lost: reported at its prediction
            continue
        score = float(detections.scores[row])
        box = tuple(float(value) for value in detections.boxes[row])
        vector = None if detections.appearance is None else detections.appearance[row]
        known = objects.get(track.track_id) or tentative.get(track.track_id)
        if known is None:
            crop = thumbnail(frame, detections.boxes[row])
            known = TrackedObject(
                track.track_id,
                track.class_id,
                frame.pts,
                frame.pts,
                1,
                score,
                frame.pts,
                box,
                crop,
                None if vector is None else vector.copy(),
            )
        else:
            known.last_pts, known.frames = frame.pts, known.frames + 1
            if vector is not None:
                known.appearance_sum = vector.copy() if known.appearance_sum is None else known.appearance_sum + vector
            if known.best_crop is None or score > known.best_score:
                known.best_score, known.best_pts, known.best_box = score, frame.pts, box
                known.best_crop = thumbnail(frame, detections.boxes[row])
        (still_tentative if track.state == "tentative" else objects)[track.track_id] = known
    return still_tentative


def thumbnail(frame: Frame, box: np.ndarray) -> np.ndarray:
    """The frame's pixels of `box` grown by THUMBNAIL_MARGIN, copied: the frame is let go with its batch."""
    height, width = frame.image.shape[:2]
    ((x1, y1, x2, y2),) = crop_boxes(box[None], height, width, THUMBNAIL_MARGIN)
    return frame.image[y1:y2, x1:x2].copy()
