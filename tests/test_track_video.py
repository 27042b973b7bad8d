"""`vigil track VIDEO`: generated CCTV-like footage (a block crossing a still scene) through the motion detector, the
tiny random DINOv2, the tracker and zone and line events, into the store under tracks/{source_id}/."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.cli import main
from pipeline.detection import Detector, crop_boxes
from pipeline.media.synthetic import write_static_camera_video
from pipeline.records import UNTRAINED_NOTE, Detections, Frame
from pipeline.storage.codecs import decode_image
from pipeline.storage.layout import (
    camera_source_id,
    file_source_id,
    track_thumbs_prefix,
    tracks_key,
    tracks_prefix,
)
from pipeline.storage.store import LocalStore
from pipeline.tracking import decode_appearance, track_frames
from pipeline.tracking.video import THUMBNAIL_MARGIN

SECONDS, WRITTEN_FPS, RATE = 40, 10, 5.0
FRAME = 1 / RATE + 1e-6  # a sampled frame's time, and rounding
# portrait: the block (an eighth of the height wide) moves about half its width a sampled frame, as a walker
# seen at 5 fps does; on a landscape picture it moves four fifths, too far for IoU to follow it from a standstill
SIZE = (240, 320)

CONFIG = """
decode:
  short_side: 0              # zones and lines in the footage's own pixels
detect:
  rate: 5.0
  warmup: 10                 # 2 s: the background is learnt before the first crossing
track:
  # 2 s: the next crossing's block, alike to the random DINOv2, is not re-identified as the last one's object
  reid_frames: 10
events:
  zones:
    - {name: left_half, polygon: [[0, 0], [120, 0], [120, 320], [0, 320]]}
  lines:
    - {name: middle, points: [[120, 0], [120, 320]], direction: both}
"""


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    folder = tmp_path_factory.mktemp("track-video")
    path = folder / "gate.mp4"
    crossings = write_static_camera_video(path, SECONDS, size=SIZE, fps=WRITTEN_FPS, seed=0)
    assert len(crossings) == 2 and crossings[0][0] > 2.5
    config = folder / "config.yaml"
    config.write_text(CONFIG)
    return path, crossings, config


def events_of(store, sid: str) -> dict:
    """The events object the source's tracks.json names."""
    return store.get_json(store.get_json(tracks_key(sid))["events"])


def track(video, store, config, *extra) -> int:
    args = ["track", str(video), "--store", str(store), "--models", "tiny", "--precision", "fp32"]
    return main([*args, "--config", str(config), *extra])


def test_each_crossing_is_one_track_with_thumbnail_appearance_and_events(
    footage, tmp_path, vigil_cache, tiny_encoders, capsys
):
    video, crossings, config = footage
    assert track(video, tmp_path / "store", config) == 0
    store = LocalStore(tmp_path / "store")
    sid = file_source_id(str(video))
    summary, note = capsys.readouterr().out.splitlines()
    assert summary.startswith(f"tracked {int(SECONDS * RATE)} frames of {video.resolve()} in ")
    assert summary.endswith(f": 2 tracks, 6 events, written to {store.locate(tracks_key(sid))}")
    assert note == UNTRAINED_NOTE

    document = store.get_json(tracks_key(sid))
    assert (document["source"], document["kind"], document["detector"]) == (str(video.resolve()), "file", "motion")
    assert (document["frames"], document["untrained"]) == (200, True)
    assert document["events"].startswith(tracks_prefix(sid) + "events-")  # named by content, like the thumbnails
    tracks = document["tracks"]
    assert [t["id"] for t in tracks] == [1, 2]
    dim = tiny_encoders.dinov2.dim
    for tracked, (start, end) in zip(tracks, crossings):
        assert (tracked["class_id"], tracked["class_name"], tracked["untrained"]) == (0, "moving object", True)
        # the block is off the picture in the crossing's first and last written frames
        assert tracked["first_pts"] == pytest.approx(start, abs=2 * FRAME)
        assert tracked["last_pts"] == pytest.approx(end, abs=2 * FRAME)
        assert tracked["frames"] >= (end - start) * RATE - 3
        assert start <= tracked["best_pts"] <= end and tracked["best_score"] > 0.9
        x1, y1, x2, y2 = tracked["best_box"]
        thumbnail = decode_image(store.get(tracked["thumbnail"]))
        assert thumbnail.shape[2] == 3
        # the box grown by a tenth on each side, within the picture
        assert x2 - x1 <= thumbnail.shape[1] <= 1.2 * (x2 - x1) + 2
        assert y2 - y1 <= thumbnail.shape[0] <= 1.2 * (y2 - y1) + 2
        appearance = decode_appearance(tracked["appearance"])
        assert appearance.shape == (dim,) == (tracked["appearance_dim"],)
        assert np.linalg.norm(appearance) == pytest.approx(1.0, abs=1e-5)
    assert sorted(store.list(track_thumbs_prefix(sid))) == sorted(t["thumbnail"] for t in tracks)

    events = events_of(store, sid)
    seen = [(e["track_id"], e["kind"], e["name"]) for e in events["events"]]
    for track_id in (1, 2):
        # the block walks left to right: into the left half, out of it, across the middle line
        assert [event for event in seen if event[0] == track_id] == [
            (track_id, "enter", "left_half"),
            (track_id, "leave", "left_half"),
            (track_id, "cross", "middle"),
        ]
    # facing along the line, from its first point to its second, is facing down the picture (y grows
    # downwards), where +x is on the left hand: the block, walking towards +x, crosses from right to left
    assert {e["direction"] for e in events["events"] if e["kind"] == "cross"} == {"right_to_left"}
    assert all(e["camera"] == str(video.resolve()) for e in events["events"])
    assert events["counts"]["lines"]["middle"] == {"left_to_right": {}, "right_to_left": {"0": 2}}


def test_a_rerun_replaces_the_result_whole_and_an_equal_one_changes_nothing(footage, tmp_path, vigil_cache):
    video, crossings, config = footage
    store = LocalStore(tmp_path / "store")
    sid = file_source_id(str(video))

    def stored() -> dict[str, bytes]:
        return {key: store.get(key) for key in store.list()}

    assert track(video, tmp_path / "store", config) == 0
    first = stored()
    assert track(video, tmp_path / "store", config) == 0
    assert stored() == first  # the same input and settings: the same bytes under the same keys

    # only the first crossing this time: the second track and its thumbnail are gone
    assert track(video, tmp_path / "store", config, "--seconds", f"{crossings[0][1] + 2:g}") == 0
    document = store.get_json(tracks_key(sid))
    assert [t["id"] for t in document["tracks"]] == [1] and document["seconds"] == crossings[0][1] + 2
    assert list(store.list(track_thumbs_prefix(sid))) == [document["tracks"][0]["thumbnail"]]
    assert len(events_of(store, sid)["events"]) == 3
    # nothing of the previous result is left: its thumbnails and events are deleted after the commit
    assert set(store.list(tracks_prefix(sid))) == {
        tracks_key(sid),
        document["events"],
        document["tracks"][0]["thumbnail"],
    }


def test_a_file_tracked_as_a_camera_is_stored_and_named_as_the_camera(footage, tmp_path, vigil_cache):
    video, crossings, config = footage
    seconds = f"{crossings[0][1] + 2:g}"
    assert track(video, tmp_path / "store", config, "--camera", "gate-1", "--seconds", seconds) == 0
    store = LocalStore(tmp_path / "store")
    sid = camera_source_id("gate-1")
    document = store.get_json(tracks_key(sid))
    assert (document["source"], document["kind"], len(document["tracks"])) == ("gate-1", "camera", 1)
    assert {e["camera"] for e in events_of(store, sid)["events"]} == {"gate-1"}
    assert not any(True for _ in store.list(f"tracks/{file_source_id(str(video))}/"))


class ListedDetector(Detector):
    """Detections given per frame index."""

    class_names = ["person"]

    def __init__(self, per_frame: dict[int, Detections]) -> None:
        self.per_frame = per_frame

    def detect(self, frames):
        return [self.per_frame[frame.index] for frame in frames]


class NoisyEncoder:
    """One vector per crop, a common direction with noise (one object to the tracker), each one kept."""

    dim = 16

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)
        self.vectors: list[np.ndarray] = []

    def embed_images(self, crops):
        vectors = np.ones((len(crops), self.dim)) + self.rng.normal(0, 0.05, (len(crops), self.dim))
        vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
        self.vectors += list(vectors)
        return vectors


def test_a_tracks_best_crop_and_appearance_cover_its_every_detection_from_the_first():
    # one object walking right, at its best in its first frame (before its track is confirmed), missed in frame
    # 5, seen at a low score in frame 8; a one-frame false positive in frame 2 (a tentative track, dropped)
    rng = np.random.default_rng(1)
    frames = [
        Frame("walk.mp4", index / RATE, index, rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))
        for index in range(12)
    ]
    scores = {0: 0.95, 8: 0.3}
    per_frame, walker = {}, []  # walker: whether each detection, in the order they are embedded, is the object
    for index in range(12):
        boxes = [] if index == 5 else [(20 + 5 * index, 100, 60 + 5 * index, 180)]
        found = [scores.get(index, 0.8)] * len(boxes)
        walker += [True] * len(boxes)
        if index == 2:
            boxes.append((250, 10, 290, 50))
            found.append(0.9)
            walker.append(False)
        per_frame[index] = Detections(np.array(boxes).reshape(-1, 4), np.array(found))
    encoder = NoisyEncoder()
    tracked = track_frames(frames, ListedDetector(per_frame), encoder, camera="walk", batch_frames=4)

    (walked,) = tracked.objects
    assert (tracked.frames, walked.track_id, walked.first_pts, walked.last_pts) == (12, 1, 0.0, 11 / RATE)
    # the first detection is the best; its crop is taken although the track was tentative then
    assert (walked.best_pts, walked.best_score, walked.best_box) == (0.0, pytest.approx(0.95), (20, 100, 60, 180))
    ((x1, y1, x2, y2),) = crop_boxes(per_frame[0].boxes, 240, 320, THUMBNAIL_MARGIN)
    assert np.array_equal(walked.best_crop, frames[0].image[y1:y2, x1:x2])
    # the appearance is the mean of all 11 detections' vectors, the low-score one's too
    vectors = np.array([vector for vector, own in zip(encoder.vectors, walker, strict=True) if own])
    assert walked.frames == len(vectors) == 11
    np.testing.assert_allclose(walked.appearance, vectors.sum(0) / np.linalg.norm(vectors.sum(0)), atol=1e-6)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["{missing}"], "no such video file: {missing}"),
        (["{video}", "--det", "det.txt"], "give a VIDEO, --det FILE or --kafka (one of them)"),
        ([], "give a VIDEO, --det FILE or --kafka (one of them)"),
        (["{video}", "--out", "tracks.txt"], "--out and --appearance go with --det, not with a VIDEO"),
        (["rtsp://127.0.0.1:9/live", "--seconds", "5"], "a live URL needs --camera ID and --seconds N: rtsp://"),
        (["{video}", "--seconds", "0"], "--seconds must be more than 0, got 0"),
        (["--det", "det.txt"], "--det needs --out FILE, the track file to write"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(footage, tmp_path, capsys, extra, message):
    video, _, _ = footage
    missing = tmp_path / "nope.mp4"
    argv = [arg.format(video=video, missing=missing) for arg in extra]
    assert main(["track", *argv, "--store", str(tmp_path / "store")]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"vigil track: error: {message.format(missing=missing)}")
    assert captured.err.count("\n") == 1
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").iterdir())


def test_removing_a_tracked_source_removes_its_tracks(footage, tmp_path, vigil_cache):
    video, crossings, config = footage
    store = LocalStore(tmp_path / "store")
    sid = file_source_id(str(video))
    assert track(video, tmp_path / "store", config, "--seconds", f"{crossings[0][1] + 2:g}") == 0
    assert any(True for _ in store.list(tracks_prefix(sid)))
    assert main(["remove", str(video), "--store", str(tmp_path / "store")]) == 0  # tracked, never indexed
    assert list(store.list(tracks_prefix(sid))) == []
