"""Frames to clip embeddings: batched feature extraction and fixed-length clip windows.

A window [k*w, (k+1)*w) mean-pools the unit SigLIP2 and DINOv2 vectors of its frames and re-normalises
them; its keyframe is the frame whose SigLIP2 vector is nearest the pooled one (the most typical frame).
Frames marked `still` (near-duplicates of the previous sampled frame) skip the models and reuse the last
computed features: on a still camera most of the work disappears while the windows stay complete.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from pipeline.config import VigilConfig
from pipeline.media.decode import decode_frames, mark_still_frames
from pipeline.records import ClipEmbedding, Frame, FrameFeatures, Keyframe, ModelIds
from pipeline.storage.store import keyframe_key


class ImageEncoders(Protocol):
    """What extraction needs from `pipeline.models.encoders.Encoders`."""

    def embed_images(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


Batches = Iterator[list[Frame]]


# A batch of a still camera holds at most this many frames per model slot: memory stays bounded.
STILL_FRAMES_PER_SLOT = 4


def model_batches(frames: Iterable[Frame], size: int) -> Iterator[list[Frame]]:
    """Frames in order, in batches holding `size` frames that need the models; still frames ride along
    (they skip the models), up to `STILL_FRAMES_PER_SLOT * size` frames in all. On a still camera most
    frames are still: batching by all frames would give the models batches of two or three, which run
    at half the throughput of full ones on a CPU."""
    batch: list[Frame] = []
    moving = 0
    for frame in frames:
        batch.append(frame)
        moving += not frame.still
        if moving >= size or len(batch) >= STILL_FRAMES_PER_SLOT * size:
            yield batch
            batch, moving = [], 0
    if batch:
        yield batch


def sampled_batches(path: str | Path, config: VigilConfig) -> Batches:
    """Decoded, still-marked frames of one file in model batches (runs in-process or in a decoder actor)."""
    d = config.decode
    frames = decode_frames(
        path,
        fps=d.fps,
        short_side=d.short_side,
        keyframes_only=None if d.keyframes_only == "auto" else d.keyframes_only,
        threads=d.threads,
        backend=d.backend,
        source=str(path),
    )
    if d.still_threshold > 0:
        frames = mark_still_frames(frames, d.still_threshold)
    return model_batches(frames, config.batch_size)


def extract_features(frames: Sequence[Frame], encoders: ImageEncoders) -> list[FrameFeatures | None]:
    """Embed the frames that are not still; still frames get None (the windowing reuses earlier features)."""
    moving = [frame for frame in frames if not frame.still]
    if not moving:
        return [None] * len(frames)
    siglip, dinov2 = encoders.embed_images(np.stack([frame.image for frame in moving]))
    computed = iter(
        FrameFeatures(frame.source, frame.pts, s, d) for frame, s, d in zip(moving, siglip, dinov2, strict=True)
    )
    return [None if frame.still else next(computed) for frame in frames]


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

    def pool(self, source_id: str, models: ModelIds) -> tuple[ClipEmbedding, Keyframe]:
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
        )
        return clip, Keyframe(frame.source, frame.pts, frame.image)


class ClipWindower:
    """Windows one source's time-ordered frames: `push` returns the windows a frame closes.

    Frames without features (still frames) reuse the last computed features of the source.
    """

    def __init__(self, *, window: float, source_id: str, models: ModelIds):
        self.window = window
        self.source_id = source_id
        self.models = models
        self.current: ClipWindow | None = None
        self._last: FrameFeatures | None = None

    def push(self, frame: Frame, features: FrameFeatures | None) -> list[tuple[ClipEmbedding, Keyframe]]:
        if features is None:
            if self._last is None:
                raise ValueError(f"{frame.source}: frame at {frame.pts:.3f}s is marked still but no earlier features exist")
            features = FrameFeatures(frame.source, frame.pts, self._last.siglip, self._last.dinov2)
        self._last = features
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
        return [closed.pool(self.source_id, self.models)]


def clip_embeddings(
    frames_and_features: Iterable[tuple[Frame, FrameFeatures | None]],
    *,
    window: float,
    source_id: str,
    models: ModelIds,
) -> Iterator[tuple[ClipEmbedding, Keyframe]]:
    """Group time-ordered frames into windows of `window` seconds and pool each; yields as windows close."""
    windower = ClipWindower(window=window, source_id=source_id, models=models)
    for frame, features in frames_and_features:
        yield from windower.push(frame, features)
    yield from windower.flush()
