"""pipeline.detection: the open-vocabulary (OWLv2) detector on a tiny random checkpoint, per-class NMS, the
detect section's owl settings, and appearance per detection crop. Random weights: plumbing, never accuracy."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from pipeline.config import ConfigError, DetectConfig, load_config
from pipeline.detection import (
    Detector,
    MotionDetector,
    OwlDetector,
    build_detector,
    crop_appearance,
    crop_boxes,
    iou_matrix,
    nms,
)
from pipeline.detection import owl as owl_module
from pipeline.models import ModelUnavailableError
from pipeline.records import Detections, Frame

PHRASES = ["person", "car", "a red bicycle"]


def frames_of(sizes: list[tuple[int, int]], seed: int = 0) -> list[Frame]:
    """Random-noise frames of the given (height, width), one camera, 5 fps."""
    rng = np.random.default_rng(seed)
    return [
        Frame("cam.mp4", i / 5, i, rng.integers(0, 256, (height, width, 3), dtype=np.uint8), camera="gate")
        for i, (height, width) in enumerate(sizes)
    ]


def owl_config(folder: str, **settings) -> DetectConfig:
    # threshold 0: random weights score anything, and every box must go through clipping and NMS
    return DetectConfig(**{"kind": "owl", "model": folder, "phrases": PHRASES, "score_threshold": 0.0, **settings})


# -- the detector ---------------------------------------------------------------------------------------------


def test_owl_detector_runs_end_to_end_on_a_tiny_random_checkpoint(tiny_owl):
    config = owl_config(tiny_owl, max_detections=10)
    detector = build_detector(config, device="cpu", batch_size=2)
    assert isinstance(detector, OwlDetector) and isinstance(detector, Detector)
    assert detector.untrained and "untrained" in repr(detector)
    # landscape, portrait and square frames, 5 frames in batches of 2: OWLv2 pads each to its own square
    frames = frames_of([(240, 320), (240, 320), (360, 200), (128, 128), (240, 320)])
    found = detector.detect(frames)
    assert len(found) == len(frames) and sum(len(d) for d in found) > 0
    for frame, detections in zip(frames, found):
        height, width = frame.image.shape[:2]
        boxes = detections.boxes
        assert len(detections) <= config.max_detections
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
        assert (boxes[:, 2] - boxes[:, 0] >= 1).all() and (boxes[:, 3] - boxes[:, 1] >= 1).all()
        assert ((detections.scores >= 0) & (detections.scores <= 1)).all()
        assert np.all(np.diff(detections.scores) <= 0)  # best first
        assert set(detections.class_ids.tolist()) <= set(range(len(PHRASES)))
        assert detections.appearance is None
        for i in range(len(detections)):  # NMS held: no two boxes of one phrase overlap beyond nms_iou
            same = detections.class_ids[i + 1 :] == detections.class_ids[i]
            assert (iou_matrix(boxes[i][None], boxes[i + 1 :][same])[0] <= config.nms_iou + 1e-6).all()
    # batching changes nothing: each frame alone gives its detections of the batched call
    alone = [detector.detect([frame])[0] for frame in frames]
    for batched, single in zip(found, alone):
        np.testing.assert_allclose(batched.boxes, single.boxes, atol=1e-3)
        np.testing.assert_array_equal(batched.class_ids, single.class_ids)
    assert detector.detect([]) == []


def test_owl_detector_score_threshold_and_phrases_given_apart(tiny_owl):
    frames = frames_of([(240, 320)] * 3)
    everything = OwlDetector.from_pretrained(owl_config(tiny_owl, max_detections=10000), device="cpu")
    nothing = OwlDetector.from_pretrained(owl_config(tiny_owl, score_threshold=1.0), device="cpu")
    assert sum(len(d) for d in everything.detect(frames)) > sum(len(d) for d in nothing.detect(frames))
    # the phrases of standing queries, given apart from the config, replace its phrases and keep their rules
    one_phrase = OwlDetector.from_pretrained(owl_config(tiny_owl), phrases=["a dog on a leash"], device="cpu")
    assert one_phrase.phrases == ["a dog on a leash"]
    assert all((d.class_ids == 0).all() for d in one_phrase.detect(frames))
    with pytest.raises(ValidationError, match="distinct"):
        OwlDetector.from_pretrained(owl_config(tiny_owl), phrases=["car", "car"], device="cpu")


def test_phrases_added_later_take_the_next_class_ids_up_to_the_most(tiny_owl, monkeypatch, caplog):
    detector = OwlDetector.from_pretrained(owl_config(tiny_owl, score_threshold=0.0), device="cpu")
    before = detector.phrases[:]
    detector.add_phrases(["red car", before[0], "red car"])
    assert detector.class_names == [*before, "red car"]  # the others keep their ids
    found = detector.detect(frames_of([(240, 320), (360, 200), (128, 128)]))
    class_ids = np.concatenate([d.class_ids for d in found])
    assert len(class_ids) and set(class_ids.tolist()) <= set(range(len(before) + 1))  # each box's best of them all
    monkeypatch.setattr(owl_module, "MAX_PHRASES", len(before) + 2)
    detector.add_phrases(["a dog", "a bicycle"])
    assert detector.class_names == [*before, "red car", "a dog"]
    assert "the owl detector finds at most" in caplog.text and "a bicycle left out" in caplog.text


def test_an_unavailable_or_wrong_owl_model_says_how_to_provide_it(tiny_owl, tmp_path, vigil_cache):
    with pytest.raises(ModelUnavailableError, match="How to provide the weights"):
        OwlDetector.from_pretrained(owl_config(str(tmp_path / "missing")), device="cpu")
    # the conftest sets HF_HUB_OFFLINE: an id that is not cached cannot be had
    with pytest.raises(ModelUnavailableError, match="HF_HUB_OFFLINE"):
        OwlDetector.from_pretrained(owl_config("google/owlvit-base-patch32-not-cached"), device="cpu")
    from pipeline.models import tiny_checkpoints

    with pytest.raises(ModelUnavailableError):  # a DINOv2 folder has no detection head
        OwlDetector.from_pretrained(owl_config(tiny_checkpoints().dinov2), device="cpu")


# -- NMS ------------------------------------------------------------------------------------------------------


def test_nms_suppresses_overlaps_within_a_class_only():
    boxes = np.array(
        [
            [0, 0, 10, 10],  # 0: best of class 0
            [1, 1, 11, 11],  # 1: overlaps 0 (IoU 0.68), same class: suppressed
            [50, 50, 60, 60],  # 2: apart: kept
            [0, 0, 10, 10],  # 3: same place as 0 but class 1: kept
            [0, 0, 10, 20],  # 4: IoU 0.5 with 0, class 0: kept at threshold 0.5, suppressed at 0.4
        ],
        dtype=np.float32,
    )
    scores = np.array([0.9, 0.8, 0.3, 0.5, 0.7], dtype=np.float32)
    class_ids = np.array([0, 0, 0, 1, 0])
    assert nms(boxes, scores, class_ids, 0.5).tolist() == [0, 4, 3, 2]
    assert nms(boxes, scores, class_ids, 0.4).tolist() == [0, 3, 2]
    assert nms(boxes, scores, class_ids, 0.5, max_kept=2).tolist() == [0, 4]
    assert nms(boxes, scores, np.zeros(5, dtype=np.int32), 0.5).tolist() == [0, 4, 2]  # one class: 3 goes too
    assert nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0), 0.5).tolist() == []


def test_iou_of_one_box_with_others():
    box = np.array([0, 0, 10, 10], dtype=np.float32)
    others = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [3, 3, 3, 3]], dtype=np.float32)
    np.testing.assert_allclose(iou_matrix(box[None], others)[0], [1.0, 1 / 3, 0.0, 0.0], atol=1e-6)
    degenerate = np.array([4, 4, 4, 4], dtype=np.float32)
    assert iou_matrix(degenerate[None], degenerate[None])[0].tolist() == [0.0]  # an empty union is no overlap


# -- the detect section ---------------------------------------------------------------------------------------


def test_detect_config_owl_settings():
    config = load_config().detect
    assert config.kind == "motion"  # the default needs no weights
    assert config.model == "google/owlv2-base-patch16-ensemble" and config.phrases == ["person", "car"]
    owl = load_config(overrides={"detect.kind": "owl", "detect.model": "google/owlvit-base-patch32"}).detect
    assert owl.kind == "owl" and owl.model == "google/owlvit-base-patch32"
    assert isinstance(build_detector(DetectConfig()), MotionDetector)
    for bad, match in [
        ({"kind": "yolo"}, "kind"),
        ({"phrases": []}, "phrases"),
        ({"phrases": ["car", " "]}, "blank"),
        ({"phrases": ["car", "person", "car"]}, "distinct"),
        ({"phrases": "car"}, "phrases"),
        ({"model": ""}, "model"),
        ({"score_threshold": 1.5}, "score_threshold"),
        ({"nms_iou": 0}, "nms_iou"),
        ({"max_detections": 0}, "max_detections"),
    ]:
        with pytest.raises(ConfigError, match=match):
            load_config(overrides={f"detect.{key}": value for key, value in bad.items()})


# -- appearance per crop --------------------------------------------------------------------------------------


class CountingEncoder:
    """The DINOv2 encoder, counting its calls and the images of each."""

    def __init__(self, encoder) -> None:
        self.encoder = encoder
        self.calls: list[int] = []

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def embed_images(self, images):
        self.calls.append(len(images))
        return self.encoder.embed_images(images)


def test_crop_boxes_grow_by_the_margin_and_clip_to_the_frame():
    boxes = np.array([[10, 10, 20, 30], [-5, -5, 10, 10], [300, 200, 400, 300], [50, 50, 50, 60]], dtype=np.float32)
    bounds = crop_boxes(boxes, height=240, width=320, margin=0.1)
    assert bounds.tolist() == [
        [9, 8, 21, 32],  # 1 pixel wider and 2 taller each side
        [0, 0, 12, 12],  # at the top left border: clipped
        [290, 190, 320, 240],  # past the bottom right: clipped
        [50, 49, 50, 61],  # no width: no pixel
    ]


def test_crop_appearance_embeds_every_crop_of_a_batch_in_one_call(tiny_encoders):
    encoder = CountingEncoder(tiny_encoders.dinov2)
    frames = frames_of([(240, 320), (240, 320), (360, 200)], seed=3)
    detections = [
        Detections(
            [[10, 20, 110, 200], [-30, -10, 40, 60], [250, 150, 330, 250]],  # inside, over the top left, bottom right
            [0.9, 0.8, 0.7],
            [0, 1, 0],
        ),
        Detections.empty(),  # a frame without detections
        Detections(
            [[20, 30, 60, 90], [500, 500, 600, 600], [70, 70, 70, 90]],  # inside; outside the frame; no width
            [0.6, 0.5, 0.4],
            [1, 1, 0],
        ),
    ]
    out = crop_appearance(frames, detections, encoder)
    assert encoder.calls == [4]  # one call for the batch's four crops with pixels
    assert [len(d) for d in out] == [3, 0, 1]
    for found in out:
        assert found.appearance.shape == (len(found), encoder.dim)
        np.testing.assert_allclose(np.linalg.norm(found.appearance, axis=1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(out[0].boxes, detections[0].boxes)
    assert out[0].class_ids.tolist() == [0, 1, 0] and out[2].class_ids.tolist() == [1]
    np.testing.assert_allclose(out[2].scores, [0.6])
    # a row is its own crop's embedding: the box grown by the margin, clipped to the frame
    x1, y1, x2, y2 = crop_boxes(detections[0].boxes[1:2], 240, 320, 0.1)[0]
    alone = tiny_encoders.dinov2.embed_images([frames[0].image[y1:y2, x1:x2]])[0]
    np.testing.assert_allclose(out[0].appearance[1], alone, atol=1e-4)

    nothing = crop_appearance(frames[:2], [Detections.empty(), Detections.empty()], encoder)
    assert encoder.calls == [4]  # no crops: the encoder is not called
    assert [d.appearance.shape for d in nothing] == [(0, encoder.dim)] * 2
    with pytest.raises(ValueError, match="one Detections per frame"):
        crop_appearance(frames, detections[:2], encoder)


def test_owl_detections_take_their_appearance(tiny_owl, tiny_encoders):
    frames = frames_of([(240, 320)] * 4, seed=5)
    detector = OwlDetector.from_pretrained(owl_config(tiny_owl, max_detections=5), device="cpu", batch_size=4)
    encoder = CountingEncoder(tiny_encoders.dinov2)
    out = crop_appearance(frames, detector.detect(frames), encoder)
    assert len(encoder.calls) == 1 and encoder.calls[0] == sum(len(d) for d in out) > 0
    assert all(d.appearance.shape == (len(d), encoder.dim) for d in out)
