"""Non-maximum suppression per class, in numpy (torchvision, whose `batched_nms` this matches, is no dependency)."""

from __future__ import annotations

import numpy as np


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one x1, y1, x2, y2 box with each of `boxes` (N, 4); 0 where the union is empty."""
    width = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    height = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = width * height
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(
    boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float, max_kept: int | None = None
) -> np.ndarray:
    """Indices of the boxes kept, best score first: a box whose IoU with a better-scoring kept box of its class
    exceeds `iou_threshold` is dropped; at most `max_kept`. Boxes x1, y1, x2, y2 (N, 4)."""
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    # one vectorised IoU per kept box: at most `max_kept` rounds, however many candidates. (torchvision's trick of
    # shifting each class apart would lose a thin box's width to float rounding: the class is compared instead.)
    while order.size and (max_kept is None or len(kept) < max_kept):
        best, rest = order[0], order[1:]
        kept.append(int(best))
        other_class = class_ids[rest] != class_ids[best]
        order = rest[other_class | (box_iou(boxes[best], boxes[rest]) <= iou_threshold)]
    return np.asarray(kept, dtype=np.int64)
