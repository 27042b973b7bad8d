"""Shots: the DINOv2 cosine distance between consecutive rows, cut where it is a local maximum above an
adaptive threshold (median + `sensitivity` robust deviations of the changes within `context` seconds around
it, and at least `min_change`), at least `min_shot` seconds apart."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.summaries.features import FeatureTrack, unit_rows
from pipeline.summaries.options import SummaryOptions


@dataclass
class Shot:
    first: int  # first row
    last: int  # last row (inclusive)
    start: float
    end: float
    change: float | None  # DINOv2 distance across the opening cut


def frame_changes(vectors: np.ndarray, *, bridge_blends: bool = False) -> np.ndarray:
    """d[i] = 1 - cos(v[i-1], v[i]) for unit rows (d[0] = 0).

    With `bridge_blends` (clip windows): a window straddling a cut pools frames of both sides, so the cut
    shows as two half-size steps. Where row i lies on the way from row i-1 to row i+1 (the two steps, as
    chord lengths, add up to about the direct one, and neither is tiny) the change at i is the direct
    change from i-1 to i+1: the blended window opens the new shot."""
    d = np.zeros(len(vectors), dtype=np.float32)
    if len(vectors) > 1:
        d[1:] = 1.0 - np.einsum("ij,ij->i", vectors[1:], vectors[:-1])
    d = np.clip(d, 0.0, 2.0)
    if bridge_blends and len(vectors) > 2:
        direct = np.clip(1.0 - np.einsum("ij,ij->i", vectors[2:], vectors[:-2]), 0.0, 2.0)  # rows 1..n-2
        a, b, c = np.sqrt(d[1:-1]), np.sqrt(d[2:]), np.sqrt(direct)
        blend = (a + b <= 1.25 * c) & (np.minimum(a, b) >= 0.15 * c) & (direct > np.maximum(d[1:-1], d[2:]))
        d[1:-1] = np.where(blend, direct, d[1:-1])
    return d


def adaptive_threshold(
    changes: np.ndarray, half_window: int, sensitivity: float, min_change: float, ratio: float = 8.0, chunk: int = 4096
) -> np.ndarray:
    """Per row i >= 1, from the changes within +-half_window rows of it (mirrored at the ends): the lower of
    median + sensitivity * 1.4826 * MAD (robust while cuts are under half the changes) and `ratio` times
    the 25th percentile (still right when cuts crowd the window: short shots, coarse clip windows); never
    below min_change. Row 0 (no predecessor) gets +inf. Worked in chunks of rows: bounded memory."""
    n = len(changes)
    out = np.full(n, np.inf, dtype=np.float64)
    if n < 2:
        return out
    c = changes[1:].astype(np.float64)
    w = max(1, int(half_window))
    padded = np.pad(c, (w, w), mode="reflect" if len(c) > 1 else "edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * w + 1)
    for a in range(0, len(c), chunk):
        block = windows[a : a + chunk]
        median = np.median(block, axis=1)
        mad = np.median(np.abs(block - median[:, None]), axis=1)
        low = np.percentile(block, 25, axis=1)
        level = np.minimum(median + sensitivity * 1.4826 * mad, ratio * low)
        out[1 + a : 1 + a + len(block)] = np.maximum(level, min_change)
    return out


def detect_shots(track: FeatureTrack, start: float, end: float, options: SummaryOptions) -> list[Shot]:
    """Cuts where the DINOv2 change is a local maximum over the adaptive threshold, `min_shot` apart."""
    n = len(track)
    changes = frame_changes(track.dinov2, bridge_blends=track.kind == "clips")
    half_window = min(max(1, round(options.context / track.interval)), 600)
    threshold = adaptive_threshold(changes, half_window, options.sensitivity, options.min_change)
    before = np.concatenate([[np.inf], changes[:-1]])
    after = np.concatenate([changes[1:], [-np.inf]])
    peaks = (changes >= threshold) & (changes >= before) & (changes > after)
    peaks[0] = False
    accepted: list[int] = []
    taken: list[float] = []  # sorted times of the accepted cuts
    gap = options.min_shot - 1e-9
    for i in sorted(np.flatnonzero(peaks).tolist(), key=lambda i: -changes[i]):  # strongest first
        t = float(track.times[i])
        if t - start < gap or end - t < gap:
            continue
        k = bisect.bisect_left(taken, t)
        if (k == 0 or t - taken[k - 1] >= gap) and (k == len(taken) or taken[k] - t >= gap):
            taken.insert(k, t)
            accepted.append(i)
    accepted.sort()
    bounds = [0, *accepted, n]
    shots = []
    for k, (a, b) in enumerate(zip(bounds, bounds[1:])):
        shots.append(
            Shot(
                a,
                b - 1,
                float(track.times[a]) if k else start,
                float(track.times[b]) if b < n else end,
                float(changes[a]) if k else None,
            )
        )
    return shots


def shot_means(x: np.ndarray, shots: Sequence[Shot]) -> np.ndarray:
    """The unit mean of each shot's rows of `x`."""
    starts = np.array([s.first for s in shots])
    sums = np.add.reduceat(x, starts, axis=0)
    return unit_rows(sums)
