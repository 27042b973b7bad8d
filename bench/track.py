"""Benchmark of the multi-object tracker: `python -m bench.track`.

Runs by hand (never from the test suite). Generates MOTChallenge-style sequences (1920x1080, 30 fps, ground-truth
ids) at three difficulty levels, turns them into noisy detections with noisy appearance vectors, and runs vigil's
tracker (`pipeline.tracking.Tracker`) and the baselines on the same detections in the same run:

- boxmot's BoT-SORT, fed the same appearance vectors as precomputed embeddings (its ReID stage on, no ReID model,
  no camera-motion compensation: the camera is still and no frames are given);
- boxmot's ByteTrack and Roboflow `trackers`' ByteTrack (boxes and scores only: they take no appearance).

Every tracker keeps its package's default settings. Metrics come from TrackEval (the HOTA authors' code; the
`trackeval` package on PyPI is its numpy-2 fork): HOTA, IDF1, MOTA, id switches, on in-memory data with TrackEval's
own IoU. The ground truth holds every object at least `GT_MIN_VISIBILITY` visible (its box clipped to the frame):
a wholly hidden object is not scored, and keeping its id across the gap is what IDF1 and HOTA's AssA reward.

Speed: each tracker's `update` alone is timed (input conversion and output reading are not), with torch and the
BLAS pools at one thread, on a separate sequence of 50 objects; and the motion detector's cost per 720p frame, on
generated CCTV-like footage (`--motion-seconds` of it). Results go to stdout (or JSON with --json) and the
`bench.track` section of bench/RESULTS.md. The baselines are installed by `make bench-track-deps` (not by
`make test`).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.metadata
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench import results
from bench.results import busy_seconds, facts_section, markdown_table, plain_table, write_section

BENCH_DIR = Path(__file__).resolve().parent
WIDTH, HEIGHT, FPS = 1920, 1080, 30
APPEARANCE_DIM = 384  # DINOv2-small's embedding size
# Share of an object's box that must be visible (in the frame, not behind an occluder or a nearer object) for
# the object to be in the ground truth of a frame.
GT_MIN_VISIBILITY = 0.2
# Cosine between two different people's vectors: real embeddings of one class are far from orthogonal.
SAME_CLASS_COSINE = 0.3
GRID = 6  # visibility is sampled on a GRID x GRID lattice of points per box
SPEED_OBJECTS = 50  # detections per frame the speed target is set for
OCCLUSION_MARGIN = 3.0  # points of IDF1 and HOTA vigil must lead the best baseline by on occlusion-heavy
SPEED_TARGET = 1000.0  # vigil's update, frames per second with SPEED_OBJECTS objects on one core


@dataclass(frozen=True)
class Level:
    """How a sequence is generated."""

    objects: int  # objects kept in the scene (new ones enter as others leave)
    occluders: int  # static occluders (pillars, signs), each hiding what passes behind it
    occluder_width: tuple[int, int]
    band: tuple[float, float]  # the share of the frame's height the paths keep to (narrow: paths cross)
    turning: float  # share of objects on curved paths (a turn rate and a swaying speed)
    return_chance: float  # chance an object leaving the frame comes back later with its id
    return_gap: tuple[int, int]  # frames it stays away
    recall: float  # chance a fully visible object is detected
    false_positives: float  # mean false detections per frame
    jitter: float  # box noise, sd as a share of the box's size (more when occluded)
    appearance_noise: float  # noise norm added to an id's vector (more when occluded)


LEVELS = {
    "easy": Level(10, 0, (0, 0), (0.15, 0.95), 0.2, 0.0, (0, 0), 0.95, 1.0, 0.02, 0.35),
    "crossing": Level(30, 1, (120, 200), (0.45, 0.75), 0.4, 0.1, (30, 90), 0.92, 2.0, 0.03, 0.45),
    "occlusion-heavy": Level(50, 6, (80, 180), (0.3, 0.9), 0.5, 0.5, (30, 240), 0.9, 3.0, 0.04, 0.55),
}
# Speed only: objects spread over the frame, little occlusion: about SPEED_OBJECTS detections a frame.
SPEED_LEVEL = Level(64, 0, (0, 0), (0.05, 1.0), 0.3, 0.0, (0, 0), 0.95, 2.0, 0.03, 0.45)


# ------------------------------------------------------------------------------------------ sequences


@dataclass
class FrameData:
    """One frame: its ground truth and its detections (`det_gt_ids` -1 for a false positive)."""

    gt_ids: np.ndarray  # (G,) int
    gt_boxes: np.ndarray  # (G, 4) float32 x1, y1, x2, y2, clipped to the frame
    gt_visibility: np.ndarray  # (G,) float
    boxes: np.ndarray  # (N, 4) float32
    scores: np.ndarray  # (N,) float32
    class_ids: np.ndarray  # (N,) int32
    appearance: np.ndarray  # (N, APPEARANCE_DIM) float32 unit rows
    det_gt_ids: np.ndarray  # (N,) int


@dataclass
class Sequence:
    name: str
    frames: list[FrameData]
    occluders: np.ndarray  # (K, 4)

    def stats(self) -> dict[str, float]:
        true = np.concatenate([f.det_gt_ids >= 0 for f in self.frames])
        scores = np.concatenate([f.scores for f in self.frames])
        return {
            "frames": len(self.frames),
            "ids": len({int(i) for f in self.frames for i in f.gt_ids}),
            "gt_per_frame": float(np.mean([len(f.gt_ids) for f in self.frames])),
            "detections_per_frame": float(np.mean([len(f.scores) for f in self.frames])),
            "false_positives_per_frame": float((~true).sum() / len(self.frames)),
            "low_score_true_share": float((scores[true] < 0.5).mean()) if true.any() else 0.0,
            "occluders": len(self.occluders),
        }


@dataclass
class _Walker:
    """One object's motion state; (x, y) is the bottom centre of its box (feet on the ground)."""

    gt_id: int
    x: float
    y: float
    vx: float
    vy: float
    size: float  # height at the bottom of the frame, shrinking with distance
    turn: float  # radians per frame
    sway: float  # relative speed swing
    phase: float
    away_until: int = -1  # frame it comes back on, while away

    def box(self) -> np.ndarray:
        height = self.size * (0.45 + 0.55 * self.y / HEIGHT)  # perspective: farther (higher) is smaller
        width = 0.4 * height
        return np.array([self.x - width / 2, self.y - height, self.x + width / 2, self.y], dtype=np.float64)

    def step(self, frame: int) -> None:
        if self.turn:
            cos, sin = math.cos(self.turn), math.sin(self.turn)
            self.vx, self.vy = cos * self.vx - sin * self.vy, sin * self.vx + cos * self.vy
        speed = 1.0 + self.sway * math.sin(frame / 25.0 + self.phase)
        self.x += self.vx * speed
        self.y += self.vy * speed


class _Scene:
    def __init__(self, level: Level, rng: np.random.Generator):
        self.level, self.rng = level, rng
        self.next_id = 1
        top, bottom = level.band
        self.band = (top * HEIGHT, bottom * HEIGHT)

    def new_walker(self, inside: bool) -> _Walker:
        walker = _Walker(self.next_id, 0, 0, 0, 0, 0, 0, 0, 0)
        self.next_id += 1
        walker.size = float(self.rng.uniform(200, 360))
        self.place(walker, inside)
        return walker

    def place(self, walker: _Walker, inside: bool) -> None:
        """A position (inside the frame, or just outside a side edge) and a velocity pointing across it."""
        rng, level = self.rng, self.level
        low, high = self.band
        walker.y = float(rng.uniform(low, high))
        from_left = bool(rng.random() < 0.5)
        if inside:
            walker.x = float(rng.uniform(0.05, 0.95) * WIDTH)
        else:
            walker.x = -80.0 if from_left else WIDTH + 80.0
        speed = float(rng.uniform(1.5, 7.0))
        angle = float(rng.uniform(-0.35, 0.35))
        direction = 1.0 if from_left else -1.0
        walker.vx, walker.vy = direction * speed * math.cos(angle), speed * math.sin(angle) * 0.5
        curved = rng.random() < level.turning
        walker.turn = float(rng.uniform(-0.006, 0.006)) if curved else 0.0
        walker.sway = float(rng.uniform(0.1, 0.4)) if curved else 0.0
        walker.phase = float(rng.uniform(0, 2 * math.pi))

    def outside(self, walker: _Walker) -> bool:
        x1, y1, x2, y2 = walker.box()
        low, high = self.band
        headed_out = (x2 < 0 and walker.vx < 0) or (x1 > WIDTH and walker.vx > 0)
        # paths drift out of the band too: leaving it through the top or bottom edge of the frame
        return bool(headed_out or x2 < -200 or x1 > WIDTH + 200 or y1 > HEIGHT or y2 < low * 0.5 or y2 > high * 1.3)


def _occluders(level: Level, rng: np.random.Generator) -> np.ndarray:
    boxes = []
    for index in range(level.occluders):
        # spread over the width, so every path meets some
        centre = (index + rng.uniform(0.25, 0.75)) * WIDTH / max(level.occluders, 1)
        width = rng.uniform(*level.occluder_width)
        top = rng.uniform(0.0, 0.35) * HEIGHT
        boxes.append([centre - width / 2, top, centre + width / 2, HEIGHT])
    return np.array(boxes, dtype=np.float64).reshape(-1, 4)


def _grid_points(boxes: np.ndarray) -> np.ndarray:
    """(N, GRID * GRID, 2) points spread evenly inside each box."""
    steps = (np.arange(GRID) + 0.5) / GRID
    u, v = np.meshgrid(steps, steps)
    u, v = u.ravel(), v.ravel()
    xs = boxes[:, None, 0] + u[None] * (boxes[:, None, 2] - boxes[:, None, 0])
    ys = boxes[:, None, 1] + v[None] * (boxes[:, None, 3] - boxes[:, None, 1])
    return np.stack([xs, ys], axis=-1)


def _inside(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N, P, M): whether each of the (N, P) points lies in each of the M boxes."""
    x, y = points[..., 0][..., None], points[..., 1][..., None]
    return (x >= boxes[:, 0]) & (x <= boxes[:, 2]) & (y >= boxes[:, 1]) & (y <= boxes[:, 3])


def _visibility(boxes: np.ndarray, occluders: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per box: the visible share, the share hidden by nearer objects, and the nearer object hiding most of it
    (-1: none). Nearer means lower in the frame (a larger bottom edge)."""
    count = len(boxes)
    points = _grid_points(boxes)
    in_frame = (points[..., 0] >= 0) & (points[..., 0] < WIDTH) & (points[..., 1] >= 0) & (points[..., 1] < HEIGHT)
    behind_occluder = _inside(points, occluders).any(-1) if len(occluders) else np.zeros_like(in_frame)
    by_object = _inside(points, boxes)  # (N, P, N)
    nearer = boxes[None, :, 3] > boxes[:, None, 3]  # [i, j]: j is nearer than i
    by_object &= nearer[:, None, :]
    hidden_by_object = by_object.any(-1)
    visible = in_frame & ~behind_occluder & ~hidden_by_object
    counts = by_object.sum(1)  # (N, N) points of i that j hides
    front = np.where(counts.max(1, initial=0) > 0, counts.argmax(1) if count else 0, -1)
    return visible.mean(1), hidden_by_object.mean(1), front


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def generate(level: Level, frames: int, seed: int, name: str = "") -> Sequence:
    """A sequence of `frames` frames; the same (level, frames, seed) always gives the same sequence."""
    rng = np.random.default_rng(seed)
    scene = _Scene(level, rng)
    occluders = _occluders(level, rng)
    # each id's vector shares a common direction with the others (one class of object)
    common = _unit(rng.normal(size=APPEARANCE_DIM))
    id_vectors: dict[int, np.ndarray] = {}
    mix = math.sqrt(SAME_CLASS_COSINE / (1 - SAME_CLASS_COSINE))

    def vector(gt_id: int) -> np.ndarray:
        if gt_id not in id_vectors:
            own = rng.normal(size=APPEARANCE_DIM) / math.sqrt(APPEARANCE_DIM)
            id_vectors[gt_id] = _unit(mix * common + own)
        return id_vectors[gt_id]

    walkers = [scene.new_walker(inside=True) for _ in range(level.objects)]
    away: list[_Walker] = []
    out: list[FrameData] = []
    for frame in range(frames):
        for walker in [w for w in away if w.away_until <= frame]:
            away.remove(walker)
            scene.place(walker, inside=False)
            walkers.append(walker)
        for walker in walkers:
            walker.step(frame)
        for walker in [w for w in walkers if scene.outside(w)]:
            walkers.remove(walker)
            if rng.random() < level.return_chance:
                walker.away_until = frame + int(rng.integers(*level.return_gap, endpoint=True))
                away.append(walker)
        # newcomers keep the count up, a few at a time so entries spread out
        missing = level.objects - len(walkers) - sum(w.away_until <= frame + 30 for w in away)
        for _ in range(int(rng.binomial(max(missing, 0), 0.1))):
            walkers.append(scene.new_walker(inside=False))
        out.append(_observe(walkers, occluders, level, rng, vector))
    return Sequence(name, out, occluders)


def _observe(
    walkers: list[_Walker], occluders: np.ndarray, level: Level, rng: np.random.Generator, vector
) -> FrameData:
    """The frame's ground truth and a detector's noisy view of it."""
    ids = np.array([w.gt_id for w in walkers], dtype=np.int64)
    full = np.array([w.box() for w in walkers], dtype=np.float64).reshape(-1, 4)
    visible, hidden_by_object, front = _visibility(full, occluders)
    clipped = np.clip(full, [0, 0, 0, 0], [WIDTH, HEIGHT, WIDTH, HEIGHT])
    in_gt = visible >= GT_MIN_VISIBILITY

    # detection: likely when well visible, less and less as the object hides, never below 15 % visible
    p_detect = level.recall * np.clip((visible - 0.15) / 0.5, 0.0, 1.0) ** 0.7
    detected = in_gt & (rng.random(len(ids)) < p_detect)
    index = np.flatnonzero(detected)
    sizes = np.stack([clipped[index, 2] - clipped[index, 0], clipped[index, 3] - clipped[index, 1]], axis=1)
    spread = level.jitter * (1.0 + 1.5 * (1.0 - visible[index]))[:, None]
    noise = rng.normal(size=(len(index), 4)) * spread[:, [0, 0, 0, 0]] * np.tile(sizes, 2)
    true_boxes = clipped[index] + noise
    # a partly hidden object scores lower: these are what a second, low-score association stage recovers
    true_scores = np.clip(rng.normal(0.35 + 0.5 * visible[index], 0.15), 0.05, 0.99)
    appearance_noise = level.appearance_noise * (1.0 + 1.5 * (1.0 - visible[index]))
    true_vectors = np.stack([vector(int(i)) for i in ids[index]]) if len(index) else np.zeros((0, APPEARANCE_DIM))
    # what hides an object bleeds into its embedding
    bleed = np.zeros_like(true_vectors)
    hiders = front[index]
    has_hider = hiders >= 0
    if has_hider.any():
        bleed[has_hider] = np.stack([vector(int(ids[h])) for h in hiders[has_hider]])
        bleed[has_hider] *= hidden_by_object[index][has_hider, None]
    true_appearance = _unit(
        true_vectors
        + bleed
        + rng.normal(size=true_vectors.shape) / math.sqrt(APPEARANCE_DIM) * appearance_noise[:, None]
    )

    fp_count = int(rng.poisson(level.false_positives))
    height = rng.uniform(80, 320, fp_count)
    cx, bottom = rng.uniform(0, WIDTH, fp_count), rng.uniform(height, HEIGHT)
    fp_boxes = np.stack([cx - 0.2 * height, bottom - height, cx + 0.2 * height, bottom], axis=1)
    fp_scores = rng.beta(2.0, 5.0, fp_count)  # mostly low, a few above any birth threshold
    fp_appearance = _unit(rng.normal(size=(fp_count, APPEARANCE_DIM)))

    boxes = np.clip(np.concatenate([true_boxes, fp_boxes]), [0, 0, 0, 0], [WIDTH, HEIGHT, WIDTH, HEIGHT])
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 2.0)  # keep every box at least 2 px wide and high
    order = rng.permutation(len(boxes))  # detectors give no order the trackers could lean on
    return FrameData(
        gt_ids=ids[in_gt],
        gt_boxes=clipped[in_gt].astype(np.float32),
        gt_visibility=visible[in_gt],
        boxes=boxes[order].astype(np.float32),
        scores=np.concatenate([true_scores, fp_scores])[order].astype(np.float32),
        class_ids=np.zeros(len(boxes), dtype=np.int32),
        appearance=np.concatenate([true_appearance, fp_appearance])[order].astype(np.float32),
        det_gt_ids=np.concatenate([ids[index], -np.ones(fp_count, dtype=np.int64)])[order],
    )


# ------------------------------------------------------------------------------------------ evaluation

# A tracker's output on one frame: track ids (M,) and boxes (M, 4).
FrameOutput = tuple[np.ndarray, np.ndarray]


def evaluate(sequence: Sequence, outputs: list[FrameOutput]) -> dict[str, float]:
    """HOTA, IDF1, MOTA, id switches (and HOTA's parts) from TrackEval's metrics on one sequence."""
    from trackeval.datasets._base_dataset import _BaseDataset
    from trackeval.metrics import CLEAR, HOTA, Identity

    if len(outputs) != len(sequence.frames):
        raise ValueError(f"{len(outputs)} frames of output for a sequence of {len(sequence.frames)}")
    gt_index: dict[int, int] = {}
    tracker_index: dict[int, int] = {}
    data: dict[str, Any] = {"gt_ids": [], "tracker_ids": [], "similarity_scores": []}
    for frame, (track_ids, track_boxes) in zip(sequence.frames, outputs):
        track_ids = np.asarray(track_ids, dtype=np.int64)
        if len(set(track_ids.tolist())) != len(track_ids):
            raise ValueError("a tracker output the same id twice in one frame")
        # TrackEval wants ids numbered 0..n-1 over the sequence
        data["gt_ids"].append(np.array([gt_index.setdefault(int(i), len(gt_index)) for i in frame.gt_ids], int))
        data["tracker_ids"].append(
            np.array([tracker_index.setdefault(int(i), len(tracker_index)) for i in track_ids], int)
        )
        boxes = np.asarray(track_boxes, dtype=np.float64).reshape(-1, 4)
        data["similarity_scores"].append(
            _BaseDataset._calculate_box_ious(frame.gt_boxes.astype(np.float64), boxes, box_format="x0y0x1y1")
        )
    data.update(
        num_timesteps=len(sequence.frames),
        num_gt_ids=len(gt_index),
        num_tracker_ids=len(tracker_index),
        num_gt_dets=sum(len(ids) for ids in data["gt_ids"]),
        num_tracker_dets=sum(len(ids) for ids in data["tracker_ids"]),
    )
    hota = HOTA({"PRINT_CONFIG": False}).eval_sequence(data)
    clear = CLEAR({"PRINT_CONFIG": False}).eval_sequence(data)
    identity = Identity({"PRINT_CONFIG": False}).eval_sequence(data)
    return {
        "HOTA": float(np.mean(hota["HOTA"])),
        "DetA": float(np.mean(hota["DetA"])),
        "AssA": float(np.mean(hota["AssA"])),
        "IDF1": float(identity["IDF1"]),
        "MOTA": float(clear["MOTA"]),
        "IDSW": int(clear["IDSW"]),
        "tracks": len(tracker_index),
    }


def ground_truth_outputs(sequence: Sequence) -> list[FrameOutput]:
    """What a perfect tracker would output: the ground truth itself."""
    return [(frame.gt_ids, frame.gt_boxes) for frame in sequence.frames]


# ------------------------------------------------------------------------------------------ trackers


@dataclass
class TrackerUnderTest:
    """One tracker, fed the benchmark's detections through its own input type. Only `update` is timed."""

    name: str
    make: Callable[[], Any]  # a fresh tracker, one per sequence
    convert: Callable[[FrameData, int], Any]  # (frame, frame number) -> the tracker's input
    update: Callable[[Any, Any], Any]  # (tracker, input) -> its raw output
    read: Callable[[Any], FrameOutput]  # raw output -> ids and boxes, read before the next update
    uses_appearance: bool


def vigil_tracker() -> TrackerUnderTest:
    from pipeline.config import load_config
    from pipeline.records import Detections
    from pipeline.tracking import Tracker

    config = load_config().track

    def read(tracks) -> FrameOutput:
        ids = np.array([t.track_id for t in tracks], dtype=np.int64)
        return ids, np.array([t.box for t in tracks], dtype=np.float32).reshape(-1, 4)

    return TrackerUnderTest(
        "vigil",
        lambda: Tracker(config),
        lambda f, _: Detections(boxes=f.boxes, scores=f.scores, class_ids=f.class_ids, appearance=f.appearance),
        lambda tracker, detections: tracker.update(detections),
        read,
        uses_appearance=True,
    )


def boxmot_tracker(name: str, label: str) -> TrackerUnderTest:
    """boxmot's tracker `name` with its package defaults (its configs/trackers yaml), through its structured input:
    with precomputed embeddings it runs its ReID association on them and builds no ReID model."""
    import torch
    from boxmot.structures import Boxes, Detections
    from boxmot.trackers.factory import create_tracker
    from boxmot.trackers.specs import TrackerSpec

    # no frames are given and the camera is still: camera-motion compensation has nothing to do
    options = (("use_cmc", False),) if name == "botsort" else ()
    uses_appearance = name == "botsort"

    def convert(frame: FrameData, number: int):
        return Detections(
            geometry=Boxes(torch.from_numpy(frame.boxes)),
            scores=torch.from_numpy(frame.scores),
            class_ids=torch.from_numpy(frame.class_ids.astype(np.int64)),
            sample_id=f"frame-{number}",
            embeddings=torch.from_numpy(frame.appearance) if uses_appearance else None,
        )

    def read(tracks) -> FrameOutput:
        return tracks.track_ids.numpy().copy(), tracks.geometry.values.numpy().copy()

    return TrackerUnderTest(
        label,
        lambda: create_tracker(TrackerSpec(name=name, options=options)),
        convert,
        lambda tracker, detections: tracker.update(detections),
        read,
        uses_appearance,
    )


def roboflow_bytetrack() -> TrackerUnderTest:
    import supervision as sv
    from trackers import ByteTrackTracker

    def read(detections) -> FrameOutput:
        tracked = detections.tracker_id >= 0  # -1: a detection no track took
        return detections.tracker_id[tracked].astype(np.int64), detections.xyxy[tracked]

    return TrackerUnderTest(
        "ByteTrack (Roboflow trackers)",
        lambda: ByteTrackTracker(frame_rate=FPS),
        lambda f, _: sv.Detections(xyxy=f.boxes.copy(), confidence=f.scores.copy(), class_id=f.class_ids.copy()),
        lambda tracker, detections: tracker.update(detections),
        read,
        uses_appearance=False,
    )


BASELINES: dict[str, Callable[[], TrackerUnderTest]] = {
    "BoT-SORT (boxmot)": lambda: boxmot_tracker("botsort", "BoT-SORT (boxmot)"),
    "ByteTrack (boxmot)": lambda: boxmot_tracker("bytetrack", "ByteTrack (boxmot)"),
    "ByteTrack (Roboflow trackers)": roboflow_bytetrack,
}


@dataclass
class Run:
    """One tracker on one sequence: its outputs and the seconds its `update` calls took."""

    outputs: list[FrameOutput]
    update_seconds: float
    other_cores: float

    @property
    def frames_per_second(self) -> float:
        return len(self.outputs) / self.update_seconds if self.update_seconds else float("inf")


def run_tracker(tracker: TrackerUnderTest, sequence: Sequence) -> Run:
    inputs = [tracker.convert(frame, number) for number, frame in enumerate(sequence.frames)]
    instance = tracker.make()
    outputs: list[FrameOutput] = []
    seconds = 0.0
    gc.collect()
    me = psutil.Process()
    system_before, mine_before = psutil.cpu_times(), me.cpu_times()
    started = time.perf_counter()
    for detections in inputs:
        start = time.perf_counter()
        raw = tracker.update(instance, detections)
        seconds += time.perf_counter() - start
        outputs.append(tracker.read(raw))
    wall = time.perf_counter() - started
    system_after, mine_after = psutil.cpu_times(), me.cpu_times()
    ours = (mine_after.user + mine_after.system) - (mine_before.user + mine_before.system)
    others = max(0.0, busy_seconds(system_after) - busy_seconds(system_before) - ours)
    return Run(outputs, seconds, others / wall)


MOTION_SIZE = (1280, 720)


def motion_cost(seconds: float, seed: int) -> dict[str, float]:
    """The motion detector (`detect.kind: motion`, its defaults) on generated 720p CCTV-like footage (a still
    scene a block crosses, pipeline.media.synthetic), frames decoded at `detect.rate` beforehand: milliseconds
    per frame of `detect` alone, one thread, the warm-up frames included (they cost the same)."""
    import tempfile

    from pipeline.config import DetectConfig
    from pipeline.detection import MotionDetector
    from pipeline.media.decode import decode_frames
    from pipeline.media.synthetic import write_static_camera_video

    config = DetectConfig()
    with tempfile.TemporaryDirectory() as folder:
        video = Path(folder) / "static-720p.mp4"
        write_static_camera_video(video, seconds, size=MOTION_SIZE, fps=FPS, seed=seed)
        frames = list(decode_frames(video, fps=config.rate, short_side=None, camera="bench"))
    detector = MotionDetector(config)
    gc.collect()
    found = 0
    started = time.perf_counter()
    for frame in frames:
        found += len(detector.detect([frame])[0].boxes) > 0
    elapsed = time.perf_counter() - started
    return {"frames": len(frames), "ms_per_frame": 1000 * elapsed / len(frames), "frames_with_boxes": found,
            "width": config.width, "rate": config.rate}  # fmt: skip


# ------------------------------------------------------------------------------------------ the benchmark


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def load_trackers() -> tuple[dict[str, TrackerUnderTest], dict[str, str]]:
    """The trackers that import here, and why each other one does not."""
    available, missing = {}, {}
    for name, build in {"vigil": vigil_tracker, **BASELINES}.items():
        try:
            available[name] = build()
        except ImportError as error:
            missing[name] = f"not available ({type(error).__name__}: {error})"
    return available, missing


def benchmark(levels: list[str], frames: int, seed: int, trackers: dict[str, TrackerUnderTest]) -> dict[str, Any]:
    sequences = {name: generate(LEVELS[name], frames, seed, name) for name in levels}
    accuracy: dict[str, dict[str, Any]] = {name: {} for name in levels}
    for level, sequence in sequences.items():
        for name, tracker in trackers.items():
            run = run_tracker(tracker, sequence)
            scores = {**evaluate(sequence, run.outputs), "frames_per_second": run.frames_per_second}
            accuracy[level][name] = scores
            print(f"{level:16s} {name:30s} HOTA {scores['HOTA']:.3f} IDF1 {scores['IDF1']:.3f}")
    speed_sequence = generate(SPEED_LEVEL, frames, seed, f"{SPEED_OBJECTS} objects")
    speed = {}
    for name, tracker in trackers.items():
        run = run_tracker(tracker, speed_sequence)
        speed[name] = {"frames_per_second": run.frames_per_second, "ms_per_frame": 1000 * run.update_seconds / frames,
                       "other_cores_busy": run.other_cores}  # fmt: skip
        print(f"speed            {name:30s} {run.frames_per_second:.0f} frames/s")
    return {
        "sequences": {name: s.stats() for name, s in sequences.items()},
        "speed_sequence": speed_sequence.stats(),
        "accuracy": accuracy,
        "speed": speed,
    }


def target_lines(run: dict[str, Any]) -> list[str]:
    def met(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    if "vigil" not in run["speed"]:
        return ["- vigil's tracker " + run["missing"].get("vigil", "not available") + ": no target evaluated"]
    lines = []
    for level, rows in run["accuracy"].items():
        baselines = {name: row for name, row in rows.items() if name != "vigil"}
        if not baselines:
            lines.append(f"- {level}: no baseline ran, no comparison")
            continue
        margin = OCCLUSION_MARGIN if level == "occlusion-heavy" else 0.0
        for metric in ("IDF1", "HOTA"):
            best_name = max(baselines, key=lambda n: baselines[n][metric])
            best, ours = 100 * baselines[best_name][metric], 100 * rows["vigil"][metric]
            goal = f">= best baseline + {margin:g} points" if margin else ">= every baseline"
            lines.append(
                f"- {level}: {metric} {goal} (best: {best_name}, {best:.1f}): vigil {ours:.1f} "
                f"({ours - best:+.1f}), {met(ours >= best + margin)}"
            )
    fps = run["speed"]["vigil"]["frames_per_second"]
    lines.append(
        f"- vigil update >= {SPEED_TARGET:g} frames/s with {SPEED_OBJECTS} objects on one thread: {fps:.0f}, "
        f"{met(fps >= SPEED_TARGET)}"
    )
    return lines


ACCURACY_HEADER = ["level", "tracker", "HOTA", "IDF1", "MOTA", "ID switches", "DetA", "AssA", "tracks", "frames/s"]
SPEED_HEADER = ["tracker", "update frames/s", "ms per frame", "appearance used", "other cores busy"]


def accuracy_rows(run: dict[str, Any]) -> list[list[str]]:
    rows = []
    for level, by_tracker in run["accuracy"].items():
        for name, r in by_tracker.items():
            rows.append(
                [level, name, *(f"{100 * r[m]:.1f}" for m in ("HOTA", "IDF1", "MOTA")), str(r["IDSW"]),
                 f"{100 * r['DetA']:.1f}", f"{100 * r['AssA']:.1f}", str(r["tracks"]), f"{r['frames_per_second']:.0f}"]
            )  # fmt: skip
        rows.extend([[level, name, *["n/a"] * 8] for name, why in run["missing"].items()])
    return rows


def speed_rows(run: dict[str, Any]) -> list[list[str]]:
    rows = [
        [name, f"{s['frames_per_second']:.0f}", f"{s['ms_per_frame']:.3f}",
         "yes" if run["uses_appearance"][name] else "no", f"{s['other_cores_busy']:.2f}"]
        for name, s in run["speed"].items()
    ]  # fmt: skip
    return rows + [[name, why, "", "", ""] for name, why in run["missing"].items()]


SEQUENCE_HEADER = ["sequence", "frames", "ids", "objects scored per frame", "detections per frame",
                   "false positives per frame", "true detections scored < 0.5", "occluders"]  # fmt: skip


def sequence_rows(run: dict[str, Any]) -> list[list[str]]:
    named = {**run["sequences"], f"speed ({SPEED_OBJECTS} objects)": run["speed_sequence"]}
    return [
        [name, str(s["frames"]), str(s["ids"]), f"{s['gt_per_frame']:.1f}", f"{s['detections_per_frame']:.1f}",
         f"{s['false_positives_per_frame']:.2f}", f"{100 * s['low_score_true_share']:.0f} %", str(s["occluders"])]
        for name, s in named.items()
    ]  # fmt: skip


def motion_lines(motion: dict[str, float]) -> list[str]:
    return [
        f"- {motion['ms_per_frame']:.2f} ms per 720p frame (`detect` alone, one thread): background subtraction on "
        f"a grey picture {motion['width']} pixels wide, blobs to boxes; {motion['frames']} frames decoded at "
        f"detect.rate {motion['rate']:g} from generated footage, {motion['frames_with_boxes']} with boxes.",
        f"- At detect.rate {motion['rate']:g}, a camera costs {motion['ms_per_frame'] * motion['rate'] / 10:.2f}% "
        "of one core for it (decoding not included).",
    ]


def render_markdown(run: dict[str, Any]) -> str:
    lines = [
        "## Tracking (`python -m bench.track`)",
        "",
        f"Run {run['started']}, seed {run['seed']}, {run['frames']} frames per sequence "
        f"({WIDTH}x{HEIGHT}, {FPS} fps, generated). Same detections and {APPEARANCE_DIM}-d appearance vectors for "
        "every tracker; package defaults for every tracker. Metrics: TrackEval (HOTA, Identity, CLEAR), in percent. "
        f"Ground truth: objects at least {GT_MIN_VISIBILITY:.0%} visible. *frames/s*: `update` alone, one thread.",
        "",
        *facts_section("Machine", run["machine"]),
        "### Sequences",
        "",
        markdown_table(SEQUENCE_HEADER, sequence_rows(run)),
        "",
        "### Accuracy",
        "",
        markdown_table(ACCURACY_HEADER, accuracy_rows(run)),
        "",
        f"### Speed ({SPEED_OBJECTS} objects)",
        "",
        markdown_table(SPEED_HEADER, speed_rows(run)),
        "",
        "*other cores busy*: CPU other processes used during the timed run, in cores (the machine is shared).",
        "",
        f"### Motion detector ({MOTION_SIZE[0]}x{MOTION_SIZE[1]})",
        "",
        *motion_lines(run["motion"]),
        "",
        "### Targets (reported, not asserted)",
        "",
        *target_lines(run),
        "",
        "### How the baselines are fed",
        "",
        "- BoT-SORT (boxmot): `boxmot.structures.Detections` (torch tensors) with `embeddings=` the same appearance "
        "vectors, so its ReID stage runs on them and no ReID model is built; `use_cmc=False` (still camera, no "
        "frames given); the rest its `configs/trackers/botsort.yaml` defaults.",
        "- ByteTrack (boxmot): the same `Detections` without embeddings; its yaml defaults.",
        "- ByteTrack (Roboflow trackers): `supervision.Detections(xyxy, confidence, class_id)`; its defaults; "
        "detections left with `tracker_id == -1` are not output.",
    ]
    return "\n".join(lines)


def machine_facts() -> dict[str, str]:
    versions = ", ".join(
        f"{p} {_version(p)}" for p in ("numpy", "scipy", "trackeval", "boxmot", "trackers", "supervision", "lapx")
    )
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return results.machine_facts(
        **{
            "packages": versions,
            "threads": "torch and the BLAS pools (threadpoolctl) at 1 for every tracker",
            "load average at start (1, 5, 15 min)": load,
        }
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.track", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=600, help="frames per sequence")
    parser.add_argument("--levels", nargs="+", choices=list(LEVELS), default=list(LEVELS))
    parser.add_argument("--motion-seconds", type=float, default=40.0, help="of 720p footage for the motion detector")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "RESULTS.md", help="the markdown file to update")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import torch
    from threadpoolctl import threadpool_limits

    args = parse_args(argv)
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    machine = machine_facts()
    # with --json, stdout carries the JSON alone: what trackeval and boxmot print goes to stderr
    quiet = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    torch.set_num_threads(1)
    with quiet, threadpool_limits(limits=1):
        trackers, missing = load_trackers()
        run = benchmark(args.levels, args.frames, args.seed, trackers)
        run["motion"] = motion_cost(args.motion_seconds, args.seed)
    run.update(
        started=started,
        seed=args.seed,
        frames=args.frames,
        machine=machine,
        missing=missing,
        uses_appearance={name: t.uses_appearance for name, t in trackers.items()},
    )
    markdown = render_markdown(run)
    write_section(args.results, "bench.track", markdown)
    if args.json:
        print(json.dumps(run, indent=2, default=float))
    else:
        print(plain_table(ACCURACY_HEADER, accuracy_rows(run)))
        print()
        print(plain_table(SPEED_HEADER, speed_rows(run)))
        print()
        print("\n".join(motion_lines(run["motion"])))
        print()
        print("\n".join(target_lines(run)))
        print(f"\nwritten to {args.results} (section bench.track)")
    return run


if __name__ == "__main__":
    main()
