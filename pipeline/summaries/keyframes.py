"""Keyframes: rows clustered on their joint SigLIP2+DINOv2 embedding, and their pictures.

k comes from the content (farthest-point seeding goes on while some row is farther than an adaptive radius,
derived from how much views vary within shots, from every seed) under a budget that grows with the square
root of the duration; k-means refines the seeds and the row nearest each centre is the keyframe; every shot
still farther than the radius from all keyframes gets its own, so each distinct scene is shown. Pictures
come from the store (archive `keyframes/`, then `summaries/{source_id}/keyframes/`), and only when absent
from a seek into the file for those few frames, after which they are stored too: only the chosen keyframe
images are ever loaded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.storage.codecs import decode_image, encode_jpeg
from pipeline.storage.layout import keyframe_key, keyframes_prefix, summary_keyframe_key, summary_keyframes_prefix
from pipeline.storage.store import ObjectStore
from pipeline.summaries.features import FeatureTrack, read_frames_at, unit_rows
from pipeline.summaries.shots import Shot, shot_means


def joint_embedding(track: FeatureTrack) -> np.ndarray:
    """SigLIP2 and DINOv2 side by side, equally weighted, unit length."""
    return unit_rows(np.concatenate([track.siglip, track.dinov2], axis=1))


def keyframe_budget(seconds: float, ceiling: int) -> int:
    """The most keyframes the automatic choice may show: 4 + 8 * sqrt(minutes), at most `ceiling`
    (20 s: 9; 10 min: 29; 30 min: 48; longer: `ceiling`)."""
    return max(1, min(int(ceiling), 4 + int(round(8 * math.sqrt(max(seconds, 0.0) / 60.0)))))


def scene_radius(x: np.ndarray, shots: Sequence[Shot], floor: float = 0.05) -> float:
    """How far apart (cosine distance) two rows must be to show different scenes: how much a view varies
    within a shot (motion, panning, noise), measured twice - three times the 90th percentile of the rows'
    distance to their own shot's mean, and four times the 25th percentile of the changes between
    consecutive rows (independent of the shots, so missed cuts cannot inflate it, and of cuts as long as
    they are under three quarters of the changes) - the smaller of the two, at least `floor`. A cut back
    to an earlier view lands within it; a new place lands beyond it. Erring low costs keyframes (bounded
    by the budget); erring high would hide scenes."""
    means = shot_means(x, shots)
    owner = np.repeat(np.arange(len(shots)), [s.last - s.first + 1 for s in shots])
    spread = 1.0 - np.einsum("ij,ij->i", x, means[owner])
    steps = 1.0 - np.einsum("ij,ij->i", x[1:], x[:-1])
    return max(min(3.0 * float(np.percentile(spread, 90)), 4.0 * float(np.percentile(steps, 25))), floor)


def choose_keyframes(
    x: np.ndarray,
    shots: Sequence[Shot],
    *,
    budget: int,
    exact: int | None = None,
    iterations: int = 15,
    stored: np.ndarray | None = None,
) -> tuple[list[int], np.ndarray, float]:
    """(keyframe rows in time order, scene label of every row, scene radius).

    Seeds by farthest-point traversal from the row nearest the overall mean, while the farthest row is
    more than the scene radius from every seed (or until `exact` seeds); k-means (cosine) from those seeds;
    the row nearest each centre. Then every shot whose mean is still farther than the radius from all
    keyframes gets its most typical row, budget permitting, so no distinct scene goes unseen.

    `stored` (bool per row) marks rows whose picture the store already holds: such a row is taken instead
    of the nearest one when it is nearly as near (within a quarter of the radius), which spares decoding."""
    n = len(x)
    radius = scene_radius(x, shots)
    tolerance = radius / 4

    def representative(members: np.ndarray, target: np.ndarray) -> int:
        similarity = x[members] @ target
        best = int(np.argmax(similarity))
        if stored is not None and not stored[members[best]]:
            ok = np.flatnonzero(stored[members] & (similarity >= similarity[best] - tolerance))
            if len(ok):
                best = int(ok[np.argmax(similarity[ok])])
        return int(members[best])

    k_max = min(n, exact if exact is not None else budget)
    centre = unit_rows(x.mean(axis=0, keepdims=True))[0]
    seeds = [int(np.argmax(x @ centre))]
    nearest = 1.0 - x @ x[seeds[0]]
    while len(seeds) < k_max:
        far = int(np.argmax(nearest))
        if exact is None and nearest[far] <= radius:
            break
        if nearest[far] <= 1e-6:  # only duplicates left
            break
        seeds.append(far)
        nearest = np.minimum(nearest, 1.0 - x @ x[far])
    centres = x[seeds].copy()
    labels = np.zeros(n, dtype=np.int64)
    for _ in range(iterations):
        labels = np.argmax(x @ centres.T, axis=1)
        moved = centres.copy()
        for j in range(len(centres)):
            members = labels == j
            if members.any():
                moved[j] = unit_rows(x[members].sum(axis=0, keepdims=True))[0]
        if np.allclose(moved, centres, atol=1e-6):
            break
        centres = moved
    labels = np.argmax(x @ centres.T, axis=1)
    chosen = []
    for j in range(len(centres)):
        members = np.flatnonzero(labels == j)
        if len(members):
            chosen.append(representative(members, centres[j]))
    if exact is None:
        means = shot_means(x, shots)
        for s, shot in enumerate(shots):
            if len(chosen) >= k_max:
                break
            if float(np.max(x[chosen] @ means[s])) < 1.0 - radius:
                chosen.append(representative(np.arange(shot.first, shot.last + 1), means[s]))
    chosen = sorted(set(chosen))
    labels = np.argmax(x @ x[chosen].T, axis=1)  # scene = the keyframe a row is most like
    return chosen, labels, radius


def stored_pictures(store: ObjectStore, track: FeatureTrack) -> np.ndarray:
    """Per row: does the store already hold its picture (a clip keyframe, or one an earlier summary kept)?"""
    if track.image_keys is not None:
        return np.array([key is not None for key in track.image_keys], dtype=bool)
    sid = track.source_id
    held = {key for prefix in (keyframes_prefix(sid), summary_keyframes_prefix(sid)) for key in store.list(prefix)}
    return np.array(
        [keyframe_key(sid, t) in held or summary_keyframe_key(sid, t) in held for t in track.image_times], dtype=bool
    )


def fetch_keyframe_images(
    store: ObjectStore, track: FeatureTrack, rows: Sequence[int], *, video: Path | None, short_side: int | None
) -> dict[int, tuple[str, np.ndarray]]:
    """(store key, RGB image) per keyframe row: from the store when it holds the picture (the archive's
    clip keyframes, or one stored by an earlier summary), else decoded from the file by seeking and stored
    under `summaries/{source_id}/keyframes/`. Rows with no picture to be had are left out."""
    out: dict[int, tuple[str, np.ndarray]] = {}
    missing: dict[int, float] = {}
    for row in rows:
        pts = float(track.image_times[row])
        candidates = [track.image_keys[row]] if track.image_keys and track.image_keys[row] else []
        candidates += [keyframe_key(track.source_id, pts), summary_keyframe_key(track.source_id, pts)]
        key = next((k for k in candidates if store.exists(k)), None)
        if key is not None:
            out[row] = (key, decode_image(store.get(key)))
        else:
            missing[row] = pts
    if missing and video is not None and video.is_file():
        frames = read_frames_at(video, list(missing.values()), short_side)
        for row, pts in missing.items():
            if pts in frames:
                key = summary_keyframe_key(track.source_id, pts)
                data = encode_jpeg(frames[pts], quality=88)
                store.put(key, data)
                out[row] = (key, decode_image(data))  # the stored pixels: a later run renders the same bytes
    return out
