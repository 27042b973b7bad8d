"""pipeline.detection: the motion detector on generated CCTV-like footage (decoded H.264), and its config."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import ConfigError, DetectConfig, load_config
from pipeline.detection import Detector, MotionDetector, camera_of
from pipeline.media.decode import decode_frames
from pipeline.media.synthetic import write_static_camera_video
from pipeline.records import Frame

SECONDS, WRITTEN_FPS, SAMPLED_FPS = 40, 10, 5
SIZE = (320, 240)
WARMUP = 10  # frames: 2 s at the sampled rate, before any crossing of the cameras below
BLOCK_AREA = (SIZE[1] // 8) * (SIZE[1] // 3)  # the generator's person-sized block, whole
DIFFERENCE = 60  # summed RGB difference to the background that marks a block pixel (H.264 noise is far below)


@pytest.fixture(scope="module")
def cameras(tmp_path_factory) -> dict[str, tuple[list[Frame], list[tuple[float, float]]]]:
    """Two cameras (other backgrounds, other crossing times): each one's sampled frames and crossings."""
    folder = tmp_path_factory.mktemp("cctv")
    out = {}
    for seed, camera in enumerate(["gate", "yard"]):
        path = folder / f"{camera}.mp4"
        crossings = write_static_camera_video(path, SECONDS, size=SIZE, fps=WRITTEN_FPS, seed=seed)
        frames = list(decode_frames(path, fps=SAMPLED_FPS, short_side=None, source=str(path), camera=camera))
        assert crossings[0][0] > WARMUP / SAMPLED_FPS and len(crossings) == 2
        out[camera] = (frames, crossings)
    return out


def block_box(frame: Frame, background: Frame) -> np.ndarray | None:
    """The true box of the crossing block: the pixels that differ from the still background; None when fewer
    than a quarter of the block is in the picture (it enters and leaves at the borders)."""
    differs = np.abs(frame.image.astype(np.int32) - background.image.astype(np.int32)).sum(axis=2) > DIFFERENCE
    if differs.sum() < BLOCK_AREA / 4:
        return None
    ys, xs = np.nonzero(differs)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def truths(frames: list[Frame]) -> list[np.ndarray | None]:
    return [block_box(frame, frames[0]) for frame in frames]  # the first frame is before any crossing


@pytest.mark.parametrize("width", [320, 160])  # 160: boxes found at half size come back in frame pixels
def test_motion_detector_boxes_the_crossing_block_and_nothing_on_still_stretches(cameras, width):
    frames, crossings = cameras["gate"]
    detector = MotionDetector(DetectConfig(warmup=WARMUP, width=width))
    assert isinstance(detector, Detector)
    found = detector.detect(frames)
    assert len(found) == len(frames)
    assert all(len(detections) == 0 for detections in found[:WARMUP])
    crossing_frames = 0
    for frame, truth, detections in zip(frames[WARMUP:], truths(frames)[WARMUP:], found[WARMUP:]):
        if truth is None:
            assert len(detections) == 0, f"a detection at {frame.pts:.1f} s on a still stretch"
            continue
        # the block is where the generator says it crosses, and the detector boxes it alone
        assert any(start <= frame.pts < end for start, end in crossings)
        assert len(detections) == 1, f"{len(detections)} detections at {frame.pts:.1f} s"
        assert iou(detections.boxes[0], truth) > 0.8, (frame.pts, detections.boxes[0], truth)
        assert detections.scores[0] > 0.9  # a solid block fills its box
        crossing_frames += 1
    assert crossing_frames >= 2 * 3 * SAMPLED_FPS - 4  # both 3 s crossings, less frames at the borders


def test_interleaved_cameras_keep_separate_backgrounds(cameras):
    (gate, _), (yard, _) = cameras["gate"], cameras["yard"]
    config = DetectConfig(warmup=WARMUP)
    alone = {name: MotionDetector(config).detect(frames) for name, frames in (("gate", gate), ("yard", yard))}
    # the yard comes online once the gate's model has learnt its background, then the two alternate: a model
    # shared by both would take the yard's background for motion (alternating from the start, MOG2's mixture
    # would learn both backgrounds as two modes of each pixel and hide the mistake)
    late = 3 * WARMUP
    interleaved = gate[:late] + [frame for pair in zip(gate[late:], yard) for frame in pair] + yard[len(gate) - late :]
    together = MotionDetector(config)
    found = []
    for start in range(0, len(interleaved), 7):  # batches of 7: the cameras alternate within and across calls
        found += together.detect(interleaved[start : start + 7])
    for name, expected in alone.items():
        mine = [detections for frame, detections in zip(interleaved, found) if frame.camera == name]
        assert sum(len(detections) for detections in mine) > 0
        for a, b in zip(mine, expected, strict=True):
            np.testing.assert_array_equal(a.boxes, b.boxes)
            np.testing.assert_array_equal(a.scores, b.scores)


def test_frames_of_a_file_are_keyed_by_their_source():
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    assert camera_of(Frame("lobby.mp4", 0.0, 0, image)) == "lobby.mp4"
    assert camera_of(Frame("rtsp://10.0.0.5/main", 0.0, 0, image, camera="lobby")) == "lobby"


def test_gate_is_false_on_still_frames_and_true_while_the_block_moves(cameras):
    frames, _ = cameras["yard"]
    gate = MotionDetector(DetectConfig(warmup=WARMUP)).moving(frames)
    assert gate[:WARMUP] == [True] * WARMUP  # cannot tell yet: a heavier detector must not be skipped
    expected = [truth is not None for truth in truths(frames)[WARMUP:]]
    assert gate[WARMUP:] == expected
    assert 20 <= sum(expected) < len(expected) / 4  # mostly still: the gate saves most of the work


def test_a_camera_whose_picture_size_changes_warms_up_again(cameras):
    frames, _ = cameras["gate"]
    detector = MotionDetector(DetectConfig(warmup=WARMUP))
    crossing = next(k for k, truth in enumerate(truths(frames)) if truth is not None)
    detector.detect(frames[:crossing])
    halved = [Frame(f.source, f.pts, f.index, f.image[::2, ::2].copy(), camera=f.camera) for f in frames[crossing:]]
    found = detector.detect(halved)
    assert all(len(detections) == 0 for detections in found[:WARMUP])  # a new model: nothing while it learns
    assert any(len(detections) for detections in found[WARMUP:])
    assert all(np.all(detections.boxes[:, 2:] <= [SIZE[0] / 2, SIZE[1] / 2]) for detections in found)


def test_detect_config_defaults_and_bad_values_are_named():
    assert load_config().detect == DetectConfig()
    assert load_config(None, {"detect.var_threshold": 25.0}).detect.var_threshold == 25.0
    with pytest.raises(ConfigError, match=r"'detect.var_threshold'.*greater than 0"):
        load_config(None, {"detect.var_threshold": -1.0})
    with pytest.raises(ConfigError, match=r"'detect.kind'"):
        load_config(None, {"detect.kind": "yolo"})
    with pytest.raises(ConfigError, match=r"'detect.warmup'.*valid integer"):
        load_config(None, {"detect.warmup": 2.5})
    with pytest.raises(ConfigError, match=r"'detect.max_area'.*at least detect.min_area"):
        load_config(None, {"detect.min_area": 0.1, "detect.max_area": 0.05})
    with pytest.raises(ConfigError, match=r"unknown key 'detect.threshold'"):
        load_config(None, {"detect.threshold": 16})
