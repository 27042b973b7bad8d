"""Matching tracks to detections: IoU and appearance costs, gated, then one optimal assignment."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

# The cost of a pair a gate forbids: above every allowed cost (those are at most 2), so an assignment takes such
# a pair only where nothing else is left, and `assign` drops it.
FORBIDDEN = 1e6


def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of `boxes_a` (A, 4) with every box of `boxes_b` (B, 4), x1, y1, x2,
    y2: (A, B) in [0, 1]."""
    a = np.asarray(boxes_a, dtype=np.float64)
    b = np.asarray(boxes_b, dtype=np.float64)
    ax1, ay1, ax2, ay2 = (a[:, i : i + 1] for i in range(4))  # columns (A, 1) against rows (B,)
    bx1, by1, bx2, by2 = b.T
    width = np.maximum(np.minimum(ax2, bx2) - np.maximum(ax1, bx1), 0)
    height = np.maximum(np.minimum(ay2, by2) - np.maximum(ay1, by1), 0)
    intersection = width * height
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def cosine_distance(vectors_a: np.ndarray, vectors_b: np.ndarray) -> np.ndarray:
    """1 - cosine similarity of unit vectors (A, D) and (B, D): (A, B) in [0, 2]."""
    return 1.0 - vectors_a @ vectors_b.T


def fused_cost(
    iou: np.ndarray,
    appearance_distance: np.ndarray | None,
    has_appearance: np.ndarray | None,
    *,
    iou_gate: float,
    appearance_weight: float,
    appearance_gate: float,
) -> np.ndarray:
    """The cost of each (track, detection) pair: 1 - IoU, blended with the cosine distance where the pair's
    track has an appearance (`has_appearance`, per track row; None: none has). A pair below `iou_gate`, or with
    an appearance distance above `appearance_gate`, is FORBIDDEN."""
    cost = 1.0 - iou
    allowed = iou >= iou_gate
    if appearance_distance is not None and has_appearance is not None and has_appearance.any():
        known = has_appearance[:, None]
        blended = (1.0 - appearance_weight) * cost + appearance_weight * appearance_distance
        cost = np.where(known, blended, cost)
        allowed &= ~known | (appearance_distance <= appearance_gate)
    return np.where(allowed, cost, FORBIDDEN)


def assign(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The least-cost one-to-one matching of rows to columns, without FORBIDDEN pairs: (row indices, column
    indices), aligned."""
    if cost.size == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    rows, columns = linear_sum_assignment(cost)
    kept = cost[rows, columns] < FORBIDDEN
    return rows[kept], columns[kept]
