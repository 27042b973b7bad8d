"""Frames to clip embeddings: batched feature extraction and fixed-length clip windows.

A window [k*w, (k+1)*w) mean-pools the unit SigLIP2 and DINOv2 vectors of its frames and re-normalises
them; its keyframe is the frame whose SigLIP2 vector is nearest the pooled one (the most typical frame), and
its recording time (`ClipEmbedding.recorded_at`) is the wall clock of its start: from a camera's frames
(`Frame.wallclock`), else from the source's recording start plus the window's media time.
Frames marked `still` (near-duplicates of the previous sampled frame) skip the models and reuse the last
computed features: on a still camera most of the work disappears while the windows stay complete.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from pipeline.config import VigilConfig
from pipeline.media.sampling import sampled_frames
from pipeline.records import (
    ClipEmbedding,
    Frame,
    FrameBatch,
    FrameFeatures,
    Keyframe,
    ModelIds,
)
from pipeline.storage.layout import keyframe_key


class ImageEncoders(Protocol):
    """What extraction needs from `pipeline.models.Encoders`."""

    def embed_images(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


Batches = Iterator[FrameBatch]


# A batch of a still camera holds at most this many frames per model slot: memory stays bounded.
STILL_FRAMES_PER_SLOT = 4


def model_batches(frames: Iterable[Frame], size: int) -> Batches:
    """Frames in order, in batches holding `size` frames that need the models; still frames ride along
    (they skip the models), up to `STILL_FRAMES_PER_SLOT * size` frames in all. On a still camera most
    frames are still: batching by all frames would give the models batches of two or three, which run
    at half the throughput of full ones on a CPU."""
    batch: list[Frame] = []
    moving = 0
    for frame in frames:
        batch.append(frame)
        moving += frame.runs_models
        if moving >= size or len(batch) >= STILL_FRAMES_PER_SLOT * size:
            yield FrameBatch(batch)
            batch, moving = [], 0
    if batch:
        yield FrameBatch(batch)


def sampled_batches(path: str | Path, config: VigilConfig) -> Batches:
    """Decoded, still-marked frames of one file in model batches (runs in-process or in a decoder actor)."""
    return model_batches(sampled_frames(path, config.decode, source=str(path)), config.batch_size)


def extract_features(batch: FrameBatch, encoders: ImageEncoders) -> FrameBatch:
    """The batch with the features of its moving frames (still frames skip the models)."""
    moving = batch.moving()
    if not moving:
        empty = np.zeros((0, 0), dtype=np.float32)
        return FrameBatch(batch.frames, empty, empty)
    siglip, dinov2 = encoders.embed_images(np.stack([frame.image for frame in moving]))
    return FrameBatch(batch.frames, siglip, dinov2)


class FeatureCarry:
    """Gives every frame features: its own, or for a still frame its source's previous ones. Holds one
    vector pair per source across batches."""

    def __init__(self):
        self._last: dict[str, FrameFeatures] = {}

    def per_frame(self, batch: FrameBatch) -> Iterator[tuple[Frame, FrameFeatures]]:
        for frame, features in zip(batch.frames, batch.features(), strict=True):
            if features is None:
                last = self._last.get(frame.source)
                if last is None:
                    raise ValueError(
                        f"{frame.source}: frame at {frame.pts:.3f}s is marked still but no earlier features exist"
                    )
                features = FrameFeatures(frame.source, frame.pts, last.siglip, last.dinov2)
            self._last[frame.source] = features
            yield frame, features


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return (vector / norm).astype(np.float32) if norm > 0 else vector.astype(np.float32)


@dataclass
class ClipWindow:
    """The frames and features gathered for one window, pooled when the window closes."""

    start: float
    end: float
    frames: list[Frame] = field(default_factory=list)
    features: list[FrameFeatures] = field(default_factory=list)

    def add(self, frame: Frame, features: FrameFeatures) -> None:
        self.frames.append(frame)
        self.features.append(features)

    def recorded_at(self, recording_start: float | None = None) -> float | None:
        """The wall-clock time of the window's start: a camera frame's clock less its distance from the
        start, else `recording_start` (the source's, for files) plus the start; None when neither is known."""
        timed = next((frame for frame in self.frames if frame.wallclock is not None), None)
        if timed is not None:
            return timed.wallclock - (timed.pts - self.start)
        return None if recording_start is None else recording_start + self.start

    def pool(
        self, source_id: str, models: ModelIds, recording_start: float | None = None
    ) -> tuple[ClipEmbedding, Keyframe]:
        siglip = _unit(np.mean([f.siglip for f in self.features], axis=0))
        dinov2 = _unit(np.mean([f.dinov2 for f in self.features], axis=0))
        best = int(np.argmax([float(f.siglip @ siglip) for f in self.features]))
        frame = self.frames[best]
        clip = ClipEmbedding(
            source=frame.source,
            source_id=source_id,
            start=self.start,
            end=self.end,
            siglip=siglip,
            dinov2=dinov2,
            keyframe_pts=frame.pts,
            keyframe_key=keyframe_key(source_id, frame.pts),
            models=models,
            frame_count=len(self.frames),
            recorded_at=self.recorded_at(recording_start),
        )
        return clip, Keyframe(frame.source, frame.pts, frame.image)


class ClipWindower:
    """Windows one source's time-ordered frames: `push` returns the windows a frame closes.
    `recording_start`: the wall-clock time of the source's media time 0 (a file's), when known."""

    def __init__(self, *, window: float, source_id: str, models: ModelIds, recording_start: float | None = None):
        self.window = window
        self.source_id = source_id
        self.models = models
        self.recording_start = recording_start
        self.current: ClipWindow | None = None

    def push(self, frame: Frame, features: FrameFeatures) -> list[tuple[ClipEmbedding, Keyframe]]:
        start = math.floor(frame.pts / self.window + 1e-9) * self.window
        closed = []
        if self.current is None or start >= self.current.end - 1e-9:
            closed = self.flush()
            self.current = ClipWindow(start=start, end=start + self.window)
        self.current.add(frame, features)
        return closed

    def flush(self) -> list[tuple[ClipEmbedding, Keyframe]]:
        """Close the open window, if any."""
        if self.current is None:
            return []
        closed, self.current = self.current, None
        return [closed.pool(self.source_id, self.models, self.recording_start)]


def clip_embeddings(
    batches: Iterable[FrameBatch],
    *,
    window: float,
    source_id: str,
    models: ModelIds,
    recording_start: float | None = None,
) -> Iterator[tuple[ClipEmbedding, Keyframe]]:
    """Group one source's time-ordered, extracted frames into windows of `window` seconds and pool each;
    yields as windows close. `recording_start` (a file's, Unix seconds) dates the clips of frames without
    a wall clock of their own."""
    windower = ClipWindower(window=window, source_id=source_id, models=models, recording_start=recording_start)
    carry = FeatureCarry()
    for batch in batches:
        for frame, features in carry.per_frame(batch):
            yield from windower.push(frame, features)
    yield from windower.flush()
