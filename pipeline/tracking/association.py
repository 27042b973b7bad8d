"""Matching tracks to detections: IoU (`pipeline.detection.iou_matrix`) and appearance costs, gated, then one optimal
assignment."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

# The cost of a pair a gate forbids: above every allowed cost (those are at most 2), so an assignment takes such
# a pair only where nothing else is left, and `assign` drops it.
FORBIDDEN = 1e6


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
