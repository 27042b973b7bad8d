"""Appearance per detection: each box's crop embedded by the DINOv2 encoder, for the tracker's re-identification.

All the crops of a batch of frames go to the encoder in one `embed_images` call (it resizes each crop itself and
runs the model in batches of its own size), never one call per object.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from pipeline.records import Detections, Frame


class CropEncoder(Protocol):
    """What embeds crops: a `pipeline.models.Dinov2Encoder`, or a tracker actor's way to an extractor's."""

    model_id: str
    untrained: bool  # random weights

    @property
    def dim(self) -> int: ...

    def embed_images(self, images: Sequence[np.ndarray]) -> np.ndarray: ...


def crop_boxes(boxes: np.ndarray, height: int, width: int, margin: float) -> np.ndarray:
    """Integer crop bounds x1, y1, x2, y2 (N, 4) of boxes grown by `margin` of their width and height on each
    side (a little context around the object) and clipped to a `height` x `width` frame; a box with no pixel
    inside the frame has x2 <= x1 or y2 <= y1."""
    boxes = boxes.astype(np.float64)
    grow = np.concatenate([boxes[:, 2:] - boxes[:, :2]] * 2, axis=1) * margin * np.array([-1, -1, 1, 1])
    grown = boxes + grow
    # outward to whole pixels: a box's partly covered border pixels are part of its crop
    bounds = np.concatenate([np.floor(grown[:, :2]), np.ceil(grown[:, 2:])], axis=1)
    return np.clip(bounds, 0, [width, height, width, height]).astype(np.int64)


def crop_appearance(
    frames: Sequence[Frame],
    detections: Sequence[Detections],
    encoder: CropEncoder,
    *,
    margin: float = 0.1,
) -> list[Detections]:
    """Each frame's detections with `appearance` filled: the unit DINOv2 vector of each box's crop (grown by
    `margin`, clipped to the frame). A box left without pixels inside its frame (outside it, or of no area) is
    dropped from its frame's detections: there is nothing of it to see."""
    if len(frames) != len(detections):
        raise ValueError(f"{len(frames)} frames but {len(detections)} detections: one Detections per frame")
    crops: list[np.ndarray] = []
    kept_per_frame: list[np.ndarray] = []
    for frame, found in zip(frames, detections):
        height, width = frame.image.shape[:2]
        bounds = crop_boxes(found.boxes, height, width, margin)
        kept = np.flatnonzero((bounds[:, 2] > bounds[:, 0]) & (bounds[:, 3] > bounds[:, 1]))
        crops += [frame.image[y1:y2, x1:x2] for x1, y1, x2, y2 in bounds[kept]]
        kept_per_frame.append(kept)
    vectors = encoder.embed_images(crops) if crops else np.zeros((0, encoder.dim), dtype=np.float32)
    out, start = [], 0
    for found, kept in zip(detections, kept_per_frame):
        rows = vectors[start : start + len(kept)]
        start += len(kept)
        out.append(Detections(found.boxes[kept], found.scores[kept], found.class_ids[kept], appearance=rows))
    return out
