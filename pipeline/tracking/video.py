"""Tracking a video source whole: sampled frames -> detector -> appearance -> tracker -> events, a batch of
frames at a time, into one `TrackedObject` per track and the source's `TrackEvent`s.

Memory is bounded by the batch and the number of tracks, never by the source's length: frames are dropped once
their batch is tracked, and each track keeps only the crop of its best detection so far and the sum of its
detections' appearance vectors.

The tracker reports tracks, not which detection each took: a track that took one this frame (state other than
"lost") is paired back with it by IoU, among the detections of its class and score (the tracker copies the
score it took). A track's detections before its confirmation (`track.confirm_hits` - 1 at most: the tracker
does not report tentative tracks) count in its frames seen but not in its crop or appearance.
"""

from __future__ import annotations

import base64
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice

import numpy as np

from pipeline.config import EventsConfig, TrackConfig
from pipeline.detection import Detector, crop_appearance, crop_boxes
from pipeline.models import Dinov2Encoder
from pipeline.records import Detections, Frame, Track, TrackEvent
from pipeline.tracking.association import FORBIDDEN, assign, iou_matrix
from pipeline.tracking.events import TrackEvents
from pipeline.tracking.tracker import Tracker

MOTION_CLASS_NAME = "moving object"  # the motion detector's one class
THUMBNAIL_MARGIN = 0.1  # of a box's width and height around its thumbnail, as the appearance crops have


@dataclass
class TrackedObject:
    """One track over the whole source: when it was seen, its best detection (box, score, pts and crop) and
    its appearance, the unit mean of its detections' DINOv2 vectors."""

    track_id: int
    class_id: int
    first_pts: float  # its first detection (before confirmation too)
    last_pts: float  # its last detection (reports while lost do not count)
    frames: int  # detections it took
    best_score: float
    best_pts: float
    best_box: tuple[float, float, float, float]
    best_crop: np.ndarray  # RGB uint8, the best detection's box grown by THUMBNAIL_MARGIN
    appearance_sum: np.ndarray = field(repr=False)

    @property
    def appearance(self) -> np.ndarray:
        return (self.appearance_sum / np.linalg.norm(self.appearance_sum)).astype(np.float32)

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
            "appearance": base64.b64encode(self.appearance.astype("<f4").tobytes()).decode("ascii"),
            "appearance_dim": int(self.appearance_sum.shape[0]),
            "untrained": untrained,
        }


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
    # pts of the last frames: a track is first reported `confirm_hits` frames after its birth at most
    recent_pts: deque[float] = deque(maxlen=tracker.config.confirm_hits)
    objects: dict[int, TrackedObject] = {}
    found: list[TrackEvent] = []
    count = 0
    for batch in _batches(frames, batch_frames):
        detections = crop_appearance(batch, detector.detect(batch), encoder, margin=THUMBNAIL_MARGIN)
        for frame, detected in zip(batch, detections):
            recent_pts.append(frame.pts)
            tracks = tracker.update(detected)
            _add_sightings(objects, frame, detected, tracks, recent_pts)
            found += events.update(tracks, frame.pts)
            count += 1
    return TrackedSource(count, [objects[key] for key in sorted(objects)], found, events.counts())


def _batches(frames: Iterable[Frame], size: int) -> Iterator[list[Frame]]:
    iterator = iter(frames)
    while batch := list(islice(iterator, size)):
        yield batch


def _add_sightings(
    objects: dict[int, TrackedObject],
    frame: Frame,
    detections: Detections,
    tracks: Sequence[Track],
    recent_pts: deque[float],
) -> None:
    """Fold one frame's tracks that took a detection into their objects."""
    seen = [track for track in tracks if track.state != "lost"]
    if not seen:
        return
    boxes = np.array([track.box for track in seen])
    cost = 1.0 - iou_matrix(boxes, detections.boxes)
    classes = np.array([track.class_id for track in seen])
    scores = np.array([track.score for track in seen])
    other = (classes[:, None] != detections.class_ids[None, :]) | (
        scores[:, None] != detections.scores.astype(np.float64)[None, :]
    )
    cost[other] = FORBIDDEN
    rows, columns = assign(cost)
    height, width = frame.image.shape[:2]
    bounds = crop_boxes(detections.boxes[columns], height, width, THUMBNAIL_MARGIN)
    for row, column, (x1, y1, x2, y2) in zip(rows, columns, bounds):
        track, score = seen[row], float(detections.scores[column])
        box = tuple(float(value) for value in detections.boxes[column])
        vector = detections.appearance[column]
        known = objects.get(track.track_id)
        if known is None:
            # born `age` frames ago: the tracker reports a track first once confirmed, a few frames on
            born = recent_pts[-min(track.age, len(recent_pts))]
            crop = frame.image[y1:y2, x1:x2].copy()  # a copy: the frame is let go with its batch
            objects[track.track_id] = TrackedObject(
                track.track_id, track.class_id, born, frame.pts, track.hits, score, frame.pts, box, crop, vector.copy()
            )
            continue
        known.last_pts, known.frames = frame.pts, track.hits
        known.appearance_sum = known.appearance_sum + vector
        if score > known.best_score:
            known.best_score, known.best_pts, known.best_box = score, frame.pts, box
            known.best_crop = frame.image[y1:y2, x1:x2].copy()
