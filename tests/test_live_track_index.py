"""The live tracker's ended tracks in the track index: each track the tracker lets go, with its mean DINOv2
appearance and best crop, written by the sink as one content-named object per write and camera; found by
`vigil tracks --similar CAMERA#ID --live` beside `vigil track` results; carried across a checkpoint. The footage
and settings of test_live_tracking (a block crossing a still scene twice), the tiny random DINOv2."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from jobs.cli import main
from pipeline.config import DetectConfig, TrackConfig, load_config
from pipeline.live.analyzer import StreamOutput
from pipeline.live.sink import Sink
from pipeline.live.tracker import StreamTracker
from pipeline.media.synthetic import write_static_camera_video
from pipeline.search.index import ClipIndex
from pipeline.storage.codecs import decode_image
from pipeline.storage.layout import camera_source_id, live_tracks_prefix, tracks_key, tracks_prefix
from pipeline.storage.store import LocalStore
from pipeline.tracking import EndedTrack, live_source_id, stored_sources
from tests.test_live_tracking import BATCH, CAMERA, EVENTS, RATE, WARMUP, batch_of, footage  # noqa: F401
from tests.test_match import MODELS
from tests.test_track_video import CONFIG, SIZE, WRITTEN_FPS
from tests.test_track_video import track as track_video


def appearance_tracker(encoder) -> StreamTracker:
    # a lost track is let go after 2 s: each crossing's block ends before the next one starts
    config = TrackConfig(live=True, reid_frames=10)
    return StreamTracker(MODELS, config, DetectConfig(warmup=WARMUP), EVENTS, encoder=encoder)


def track_into(stream: StreamTracker, frames, sink: Sink | None = None) -> list[EndedTrack]:
    ended = []
    for start in range(0, len(frames), BATCH):
        out = stream.process(batch_of(frames[start : start + BATCH]))
        if sink is not None:
            sink.write(out)
        ended += out.ended_tracks
    return ended


@pytest.fixture(scope="module")
def live_store(footage, tiny_encoders, tmp_path_factory):  # noqa: F811
    """A store a live tracker's sink wrote the whole footage to; the tracks it ended."""
    frames, _ = footage
    store = LocalStore(tmp_path_factory.mktemp("live-track-index") / "store")
    ended = track_into(appearance_tracker(tiny_encoders.dinov2), frames, Sink(store, ClipIndex.load(store)))
    return store, ended


def test_each_crossing_ends_as_one_track_with_its_appearance_and_times(footage, live_store, tiny_encoders):  # noqa: F811
    _, crossings = footage
    _, ended = live_store
    assert [track.tracked.track_id for track in ended] == [1, 2]
    for track, (start, end) in zip(ended, crossings):
        tracked = track.tracked
        assert track.camera == CAMERA and track.class_name == "moving object"
        assert (track.appearance_model, track.untrained) == (tiny_encoders.dinov2.model_id, True)
        assert start <= tracked.first_pts < tracked.last_pts <= end
        assert tracked.frames >= 2 and tracked.best_crop is not None and tracked.best_crop.size
        assert np.linalg.norm(tracked.appearance) == pytest.approx(1.0, abs=1e-5)


def test_the_sink_writes_them_as_one_source_of_the_index(live_store):
    store, ended = live_store
    sid = camera_source_id(CAMERA)
    assert list(store.list(live_tracks_prefix(sid)))  # the index objects are where the layout says
    (source,) = [source for source in stored_sources(store) if source.source_id == live_source_id(sid)]
    assert (source.source, source.appearance_model) == (CAMERA, ended[0].appearance_model)
    assert [track.track_id for track in source.tracks] == [1, 2]
    np.testing.assert_allclose(source.vectors, np.stack([track.tracked.appearance for track in ended]), atol=1e-6)
    for stored, track in zip(source.tracks, ended):
        assert (stored.first_pts, stored.last_pts) == (track.tracked.first_pts, track.tracked.last_pts)
        assert decode_image(store.get(stored.thumbnail)).shape[2] == 3  # its best crop, as a JPEG


def test_a_replayed_write_stores_nothing_new_and_reads_once(live_store, tmp_path):
    store, ended = live_store
    copy = LocalStore(tmp_path / "store")
    sink = Sink(copy, ClipIndex.load(copy))
    for _ in range(2):  # a replay after a crash writes the same output again
        sink.write(StreamOutput(ended_tracks=ended[:1]))
        sink.write(StreamOutput(ended_tracks=ended))
    keys = list(copy.list(live_tracks_prefix(camera_source_id(CAMERA))))
    assert len(keys) == 2  # one object per distinct write, named by its content
    (source,) = stored_sources(copy)
    assert [track.track_id for track in source.tracks] == [1, 2]


def test_similar_finds_a_live_track_by_camera_and_id(live_store, capsys):
    store, ended = live_store
    status = main(["tracks", "--similar", f"{CAMERA}#1", "--live", "--store", str(store.root), "--json"])
    out = capsys.readouterr().out
    hits = [json.loads(line) for line in out.splitlines()]
    assert status == 0 and [(hit["source_id"], hit["track_id"]) for hit in hits] == [
        (live_source_id(camera_source_id(CAMERA)), 2)
    ]
    expected = float(ended[0].tracked.appearance @ ended[1].tracked.appearance)
    assert hits[0]["score"] == pytest.approx(expected, abs=1e-5)
    assert hits[0]["thumbnail"] == store.locate(
        next(track for track in next(stored_sources(store)).tracks if track.track_id == 2).thumbnail
    )
    # the camera's `vigil track` results are another source: without --live, the live tracks are not its
    status = main(["tracks", "--similar", f"{CAMERA}#1", "--camera", "--store", str(store.root)])
    assert status != 0 and "--live" in capsys.readouterr().err


def test_an_image_search_over_tracks_takes_the_live_ones(live_store, capsys, tmp_path):
    store, ended = live_store
    crop = tmp_path / "crop.png"
    Image.fromarray(ended[1].tracked.best_crop).save(crop)
    argv = ["search", "--image", str(crop), "--tracks", "--store", str(store.root), "--precision", "fp32", "--json"]
    assert main(argv) == 0
    hits = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(hit["track_id"] for hit in hits) == [1, 2]
    assert all(hit["source"] == CAMERA for hit in hits)


def test_a_restored_tracker_ends_a_track_with_what_it_showed_before_the_checkpoint(footage, tiny_encoders, tmp_path):  # noqa: F811
    frames, crossings = footage
    uninterrupted = {
        t.tracked.track_id: t.tracked for t in track_into(appearance_tracker(tiny_encoders.dinov2), frames)
    }
    cut = int(crossings[0][0] * RATE) + 5  # 1 s into the first crossing: track 1 is confirmed
    before = appearance_tracker(tiny_encoders.dinov2)
    assert track_into(before, frames[:cut]) == []
    state = json.loads(json.dumps(before.state_dict()))  # as a checkpoint stores it
    (saved,) = state["tracking"][CAMERA]["objects"]
    assert saved["track_id"] == 1 and saved["first_pts"] == uninterrupted[1].first_pts
    restored = appearance_tracker(tiny_encoders.dinov2)
    restored.load_state_dict(state)
    store = LocalStore(tmp_path / "store")
    after = track_into(restored, frames[cut:], Sink(store, ClipIndex.load(store)))
    ended = {track.tracked.track_id: track.tracked for track in after}
    # track 1 keeps its start and the detections it took before the cut; its crop is not in the checkpoint, so
    # its thumbnail is the best crop taken since, none when it took none (the detector warms up meanwhile)
    assert ended[1].first_pts == uninterrupted[1].first_pts and ended[1].frames >= saved["frames"]
    (source,) = stored_sources(store)
    (stored,) = [track for track in source.tracks if track.track_id == 1]
    assert (stored.thumbnail == "") == (ended[1].best_crop is None)


def test_the_tracker_takes_dinov2_from_the_config_unless_appearance_is_off(vigil_cache):
    settings = {"models": "tiny", "device": "cpu", "precision": "fp32", "track.live": True}
    stream = StreamTracker.from_config(load_config(None, settings), MODELS)
    assert stream.detector is None and stream.encoder is not None  # the motion detector's boxes, with appearance
    off = StreamTracker.from_config(load_config(None, {**settings, "track.appearance": False}), MODELS)
    assert off.encoder is None


def test_vigil_track_of_a_camera_keeps_its_live_tracks(live_store, tmp_path, vigil_cache):
    store, _ = live_store
    copy = tmp_path / "store"
    shutil.copytree(store.root, copy)
    live = set(LocalStore(copy).list(tracks_prefix(camera_source_id(CAMERA))))
    video, config = tmp_path / "gate.mp4", tmp_path / "config.yaml"
    write_static_camera_video(video, 20, size=SIZE, fps=WRITTEN_FPS, seed=0)
    config.write_text(CONFIG)
    # `vigil track --camera` replaces its own result under the camera's prefix, never the monitor's live tracks
    assert track_video(video, copy, config, "--camera", CAMERA) == 0
    kept = set(LocalStore(copy).list(tracks_prefix(camera_source_id(CAMERA))))
    assert live < kept and tracks_key(camera_source_id(CAMERA)) in kept
    sources = {source.source_id for source in stored_sources(LocalStore(copy))}
    assert sources == {camera_source_id(CAMERA), live_source_id(camera_source_id(CAMERA))}
