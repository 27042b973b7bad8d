"""Box overlap (IoU), and non-maximum suppression per class, in numpy (torchvision, whose `batched_nms` this
matches, is no dependency)."""

from __future__ import annotations

import numpy as np


def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of `boxes_a` (A, 4) with every box of `boxes_b` (B, 4), x1, y1, x2,
    y2: (A, B) in [0, 1]; 0 where the union is empty."""
    a = np.asarray(boxes_a, dtype=np.float64)
    b = np.asarray(boxes_b, dtype=np.float64)
    ax1, ay1, ax2, ay2 = (a[:, i : i + 1] for i in range(4))  # columns (A, 1) against rows (B,)
    bx1, by1, bx2, by2 = b.T
    width = np.maximum(np.minimum(ax2, bx2) - np.maximum(ax1, bx1), 0)
    height = np.maximum(np.minimum(ay2, by2) - np.maximum(ay1, by1), 0)
    intersection = width * height
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


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
        order = rest[other_class | (iou_matrix(boxes[best][None], boxes[rest])[0] <= iou_threshold)]
    return np.asarray(kept, dtype=np.int64)
