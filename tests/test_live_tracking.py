"""Live tracking (`track.live`): generated footage (a block crossing a still scene twice) through a `StreamTracker`,
its motion detector, tracker and zone and line events; track ids across a checkpoint; its sections of a shard's
state beside the analyzer's; the sink's per-batch event objects; standing queries on tracks."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.config import DetectConfig, EventsConfig, TrackConfig, load_config
from pipeline.detection import Detector
from pipeline.live.analyzer import StreamAnalyzer, cameras_state, merge_states, shard_batches
from pipeline.live.queries import StandingQuery
from pipeline.live.sink import Sink
from pipeline.live.tracker import StreamTracker
from pipeline.media.decode import decode_frames
from pipeline.media.sampling import sampled_frames
from pipeline.media.synthetic import write_static_camera_video
from pipeline.records import Alert, Detections, Frame, FrameBatch, TrackEvent
from pipeline.search.embed import extract_features
from pipeline.search.index import ClipIndex
from pipeline.storage.layout import (
    alert_key,
    camera_source_id,
    live_track_events_key,
    live_track_thumb_key,
    tracks_prefix,
)
from pipeline.storage.store import LocalStore
from tests.test_match import MODELS, basis, matcher, raw_vector

CAMERA, SECONDS, WRITTEN_FPS, RATE = "gate", 40, 10, 5.0
SIZE = (240, 320)  # portrait: the block moves about half its width a sampled frame (see tests/test_track_video.py)
WARMUP = 10  # frames (2 s) the detector learns the background from, at the start and again after a restore
BATCH = 5

EVENTS = EventsConfig.model_validate(
    {
        "zones": [{"name": "left_half", "polygon": [[0, 0], [120, 0], [120, 320], [0, 320]]}],
        "lines": [{"name": "middle", "points": [[120, 0], [120, 320]], "direction": "both"}],
    }
)


@pytest.fixture(scope="module")
def footage(tmp_path_factory) -> tuple[list[Frame], list[tuple[float, float]]]:
    path = tmp_path_factory.mktemp("live-tracking") / "gate.mp4"
    crossings = write_static_camera_video(path, SECONDS, size=SIZE, fps=WRITTEN_FPS, seed=0)
    assert len(crossings) == 2 and crossings[0][0] > WARMUP / RATE
    frames = list(decode_frames(path, fps=RATE, short_side=None, camera=CAMERA))
    assert len(frames) == SECONDS * RATE and not any(frame.still for frame in frames)
    return frames, crossings


def analyzer(tracked: bool = False) -> StreamAnalyzer:
    return StreamAnalyzer(matcher(), window=2.0, models=MODELS, tracked=tracked)


def live_tracker() -> StreamTracker:
    # a lost track is dropped after 2 s: the next crossing's block is a new object
    return StreamTracker(MODELS, TrackConfig(live=True, reid_frames=10), DetectConfig(warmup=WARMUP), EVENTS)


def batch_of(frames: list[Frame]) -> FrameBatch:
    count = len(frames)
    return FrameBatch(frames, np.stack([raw_vector(0.1)] * count), np.stack([basis(0, 4)] * count))


def run(stream: StreamTracker, frames: list[Frame]) -> list[TrackEvent]:
    events = []
    for start in range(0, len(frames), BATCH):
        events += stream.process(batch_of(frames[start : start + BATCH])).track_events
    return events


def seen(events: list[TrackEvent]) -> list[tuple[int, str, str]]:
    return [(event.track_id, event.kind, event.name) for event in events]


def alive(state: dict) -> list[int]:
    return [track["id"] for track in state["tracking"][CAMERA]["tracker"]["tracks"]]


def test_each_crossing_is_one_track_with_zone_and_line_events(footage):
    frames, crossings = footage
    events = run(live_tracker(), frames)
    for track_id, (start, end) in zip((1, 2), crossings):
        # the block walks left to right: into the left half, out of it, across the middle line
        mine = [event for event in events if event.track_id == track_id]
        assert seen(mine) == [
            (track_id, "enter", "left_half"),
            (track_id, "leave", "left_half"),
            (track_id, "cross", "middle"),
        ]
        assert all(start <= event.pts <= end and event.camera == CAMERA for event in mine)
    assert {event.track_id for event in events} == {1, 2}


def test_a_checkpoint_between_crossings_continues_the_track_ids(footage):
    frames, crossings = footage
    uninterrupted = run(live_tracker(), frames)
    cut = int(crossings[0][1] * RATE) + 15  # 3 s after the first crossing: its track is dropped
    before = live_tracker()
    events = run(before, frames[:cut])
    state = json.loads(json.dumps(before.state_dict()))  # as a checkpoint stores it
    assert alive(state) == [] and state["tracking"][CAMERA]["tracker"]["next_id"] == 2
    restored = live_tracker()
    restored.load_state_dict(state)
    assert restored.state_dict()["tracking"] == state["tracking"]
    # the detector warms up again (2 s) well before the second crossing: the same ids and events
    assert events + run(restored, frames[cut:]) == uninterrupted


def test_a_checkpoint_mid_crossing_keeps_the_ids_of_the_tracks_alive(footage):
    frames, crossings = footage
    cut = int(crossings[0][0] * RATE) + 5  # 1 s into the first crossing: its track is confirmed
    before = live_tracker()
    run(before, frames[:cut])
    state = json.loads(json.dumps(before.state_dict()))
    assert alive(state) == [1]
    restored = live_tracker()
    restored.load_state_dict(state)
    after = run(restored, frames[cut : cut + WARMUP])
    # While the detector warms up the block goes unseen: track 1 is lost, then no longer reported (it leaves its
    # zone), but kept for re-identification; no new track takes its id.
    assert seen(after) == [(1, "leave", "left_half")]
    assert alive(restored.state_dict()) == [1]
    later = run(restored, frames[cut + WARMUP :])
    assert later and all(event.track_id > 1 for event in later)


def shard_state(stream: StreamTracker) -> dict:
    """A shard's checkpoint state: its analyzer's (here one that saw no frame) and its tracker's sections."""
    return {**analyzer(tracked=True).state_dict(), **stream.state_dict()}


def test_camera_parts_of_a_state_carry_their_tracking(footage):
    frames, _ = footage
    stream = live_tracker()
    run(stream, frames[:20])
    state = shard_state(stream)
    mine, others = cameras_state(state, lambda camera: camera == CAMERA), cameras_state(state, lambda camera: False)
    assert mine["tracking"] == state["tracking"] and others["tracking"] == {}
    assert merge_states([others, mine]) == state


def test_a_trackers_state_alone_is_shared_out_by_camera_too(footage):
    """`vigil track --kafka` checkpoints a tracker's sections without an analyzer's: they part and merge alike."""
    frames, _ = footage
    stream = querying_tracker()
    outputs(stream, frames)
    state = stream.state_dict()
    mine, others = cameras_state(state, lambda camera: camera == CAMERA), cameras_state(state, lambda camera: False)
    assert mine == state and others["tracking"] == {} and others["track_alerts"]["alerted"] == []
    assert set(others) == set(state) and merge_states([others, mine]) == state


def test_camera_parts_of_a_state_carry_their_track_alerts(footage):
    frames, _ = footage
    stream = querying_tracker()
    outputs(stream, frames)
    state = shard_state(stream)
    mine, others = cameras_state(state, lambda camera: camera == CAMERA), cameras_state(state, lambda camera: False)
    assert mine["track_alerts"] == state["track_alerts"] and others["track_alerts"]["alerted"] == []
    assert others["track_alerts"]["queries"] == state["track_alerts"]["queries"]  # the query book stays whole
    assert merge_states([others, mine]) == state


def store_and_sink(folder) -> tuple[LocalStore, Sink]:
    store = LocalStore(folder / "store")
    return store, Sink(store, ClipIndex.load(store))


def test_the_sink_writes_a_batch_of_track_events_per_camera(footage, tmp_path):
    frames, crossings = footage
    store, sink = store_and_sink(tmp_path)
    stream = live_tracker()
    written = []
    for start in range(0, len(frames), BATCH):
        out = stream.process(batch_of(frames[start : start + BATCH]))
        sink.write(out)
        written += out.track_events
    sid = camera_source_id(CAMERA)
    keys = sorted(key for key in store.list(tracks_prefix(sid)) if key.endswith(".json"))
    assert keys and all(key.startswith(f"{tracks_prefix(sid)}live/") for key in keys)
    stored = [TrackEvent.from_json(item) for key in keys for item in store.get_json(key)]
    assert stored == written
    first = store.get_json(keys[0])
    assert keys[0] == live_track_events_key(sid, first[0]["pts"], first[-1]["pts"])


def test_the_analyzer_takes_its_sections_of_a_shard_state_and_leaves_the_trackers(footage):
    frames, _ = footage
    stream = live_tracker()
    run(stream, frames[:20])
    state = json.loads(json.dumps(shard_state(stream)))
    restored = analyzer(tracked=True)
    restored.load_state_dict(state)
    assert set(restored.state_dict()) == {"version", "last_pts", "windows", "matcher"}
    tracker = live_tracker()
    tracker.load_state_dict(state)
    assert tracker.state_dict() == stream.state_dict()


# ---------------------------------------------------------------------------------------------
# Standing queries on tracks

CROSSING = StandingQuery.from_json(
    {
        "id": "crossing",
        "track": {"event": "cross", "where": "middle", "classes": ["moving object"], "direction": "right_to_left"},
    }
)
WRONG_WAY = StandingQuery.from_json(
    {"id": "wrong-way", "track": {"event": "cross", "where": "middle", "direction": "left_to_right"}}
)
PEOPLE = StandingQuery.from_json(
    {"id": "people", "track": {"event": "enter", "where": "left_half", "classes": ["person"]}}
)
ENTERING = StandingQuery.from_json({"id": "entering", "track": {"event": "enter", "where": "left_half"}})


def querying_tracker() -> StreamTracker:
    stream = live_tracker()
    stream.sync_queries([(query, None) for query in (CROSSING, WRONG_WAY, PEOPLE, ENTERING)])
    return stream


def outputs(stream: StreamTracker, frames: list[Frame]) -> list:
    return [stream.process(batch_of(frames[start : start + BATCH])) for start in range(0, len(frames), BATCH)]


def test_track_queries_alert_once_per_track_with_its_event_and_thumbnail(footage):
    frames, crossings = footage
    outs = outputs(querying_tracker(), frames)
    alerts = [alert for out in outs for alert in out.alerts]
    events = [event for out in outs for event in out.track_events]
    # each block enters the left half once and crosses the middle line once, right to left as seen facing along
    # it (it walks towards +x, the line points down); nothing is a person
    assert sorted((a.query_id, a.track.track_id) for a in alerts) == [
        ("crossing", 1),
        ("crossing", 2),
        ("entering", 1),
        ("entering", 2),
    ]
    for alert in alerts:
        (event,) = [e for e in events if e.track_id == alert.track.track_id and e.kind == alert.track.kind == e.kind]
        assert (alert.start, alert.end, alert.peak_pts, alert.status) == (event.pts, event.pts, event.pts, "closed")
        assert alert.track.class_name == "moving object" and alert.track.name == event.name
        assert alert.track.box is not None and alert.peak_score > 0
        # the thumbnail: the track's best crop so far, stored by the sink with the alert
        (out,) = [out for out in outs if alert in out.alerts]
        ((key, crop),) = [(key, image) for key, image in out.thumbnails if key == alert.keyframe_key]
        seen_at = [frame.pts for frame in frames if frame.pts <= event.pts]
        assert key in [live_track_thumb_key(camera_source_id(CAMERA), alert.track.track_id, pts) for pts in seen_at]
        assert 0 < crop.shape[0] * crop.shape[1] < frames[0].image.shape[0] * frames[0].image.shape[1] / 4
        assert alert.track.sentence().startswith(f"moving object #{alert.track.track_id} ")
    assert len({alert.id for alert in alerts}) == 4
    assert all(crossings[a.track.track_id - 1][0] <= a.start <= crossings[a.track.track_id - 1][1] for a in alerts)


def test_a_restored_analyzer_alerts_no_track_twice(footage):
    frames, crossings = footage
    uninterrupted = [alert for out in outputs(querying_tracker(), frames) for alert in out.alerts]
    cut = int(crossings[0][1] * RATE)  # the first block has crossed; the second has not come yet
    before = querying_tracker()
    alerts = [alert for out in outputs(before, frames[:cut]) for alert in out.alerts]
    assert {(a.query_id, a.track.track_id) for a in alerts} == {("crossing", 1), ("entering", 1)}
    state = json.loads(json.dumps(before.state_dict()))
    restored = live_tracker()  # its queries come from the checkpoint, before any sync
    restored.load_state_dict(state)
    assert restored.state_dict()["track_alerts"] == state["track_alerts"]
    # the stream is read again from a little before the cut: replayed frames change nothing
    alerts += [alert for out in outputs(restored, frames[cut - 20 :]) for alert in out.alerts]
    assert alerts == uninterrupted


def test_the_sink_stores_track_alerts_and_their_thumbnails(footage, tmp_path):
    frames, _ = footage
    store, sink = store_and_sink(tmp_path)
    stream = querying_tracker()
    alerts = []
    for out in outputs(stream, frames):
        sink.write(out)
        alerts += out.alerts
    sid = camera_source_id(CAMERA)
    for alert in alerts:
        assert Alert.from_json(store.get_json(alert_key(sid, alert.id))) == alert
        assert store.exists(alert.keyframe_key)


def test_a_changed_track_query_forgets_the_tracks_it_alerted_on(footage):
    frames, _ = footage
    stream = querying_tracker()
    outputs(stream, frames)
    assert {entry["query"] for entry in stream.state_dict()["track_alerts"]["alerted"]} == {"crossing", "entering"}
    either_way = StandingQuery.from_json({"id": "crossing", "track": {"event": "cross", "where": "middle"}})
    stream.sync_queries([(either_way, None), (ENTERING, None)])
    state = stream.state_dict()["track_alerts"]
    assert [q["id"] for q in state["queries"]] == ["crossing", "entering"]
    assert {entry["query"] for entry in state["alerted"]} == {"entering"}


def test_track_queries_that_cannot_alert_say_why_once(footage, caplog):
    nowhere = StandingQuery.from_json({"id": "nowhere", "track": {"event": "enter", "where": "car park"}})
    stream = live_tracker()
    for _ in range(2):
        stream.sync_queries([(nowhere, None)])
    said = [r.getMessage() for r in caplog.records if "cannot alert" in r.getMessage()]
    assert said == [
        "standing query 'nowhere' watches 'car park', which no zone or line of the events config section is "
        "called: it cannot alert (they are: left_half, middle)"
    ]
    caplog.clear()
    untracked, tracked = analyzer(), analyzer(tracked=True)
    for stream in (untracked, tracked):
        stream.sync_queries([(nowhere, None)])
        stream.sync_queries([(nowhere, None)])
        assert stream.matcher.list() == []  # a track query is the tracker's, not a query on frames
    assert [r.getMessage() for r in caplog.records if "cannot alert" in r.getMessage()] == [
        "standing query 'nowhere' watches tracks, but track.live is off: it cannot alert"
    ]


# ---------------------------------------------------------------------------------------------
# A heavier detector, gated by motion, with appearance


class BlockFinder(Detector):
    """Stands in for OWL: finds the crossing block wherever it is (its known path), records what it was shown."""

    class_names = ["person", "car"]

    def __init__(self, crossings: list[tuple[float, float]]):
        self.crossings = crossings
        self.calls: list[list[float]] = []  # the pts of the frames of each call

    def detect(self, frames):
        self.calls.append([frame.pts for frame in frames])
        return [self._at(frame.pts) for frame in frames]

    def _at(self, pts: float) -> Detections:
        for start, end in self.crossings:
            if start <= pts <= end:
                x = 240 * (pts - start) / (end - start) - 30  # left to right across the 240-pixel-wide frame
                return Detections(np.array([[x, 150.0, x + 60, 270.0]]), np.array([0.9]), np.array([0]))
        return Detections(np.zeros((0, 4)), np.zeros(0))


class PromptedFinder(BlockFinder):
    """An open-vocabulary BlockFinder: prompted with more phrases, it finds them too."""

    def __init__(self, crossings: list[tuple[float, float]]):
        super().__init__(crossings)
        self.class_names = ["person", "car"]

    def add_phrases(self, phrases):
        self.class_names += [phrase for phrase in dict.fromkeys(phrases) if phrase not in self.class_names]


def gated_tracker(finder: BlockFinder, encoder=None) -> StreamTracker:
    track = TrackConfig(live=True, reid_frames=10)
    return StreamTracker(MODELS, track, DetectConfig(warmup=WARMUP), EVENTS, detector=finder, encoder=encoder)


def test_motion_gates_the_heavier_detector_to_frames_that_move_or_hold_tracks(footage):
    frames, crossings = footage
    finder = BlockFinder(crossings)
    events = run(gated_tracker(finder), frames)
    shown = [pts for call in finder.calls for pts in call]
    assert all(len(call) <= BATCH for call in finder.calls) and len(shown) == len(set(shown))  # one call a batch
    # warming up, the gate lets every frame through; then only those of the crossings (and the 2 s a lost track
    # is kept after each): the still stretches between them are never shown
    assert all(pts < WARMUP / RATE for pts in shown if not any(s <= pts <= e + 3 for s, e in crossings))
    assert not any(crossings[0][1] + 3 < pts < crossings[1][0] for pts in shown)
    assert any(crossings[0][0] <= pts <= crossings[0][1] for pts in shown)
    # the detector's boxes and classes are tracked: one person per crossing, across the middle line
    assert [(e.track_id, e.kind, e.name) for e in events if e.kind == "cross"] == [
        (1, "cross", "middle"),
        (2, "cross", "middle"),
    ]
    assert {e.class_id for e in events} == {0}


def test_appearance_comes_with_each_detection_in_one_encoder_call_per_batch(footage, tiny_encoders):
    frames, crossings = footage
    calls = []
    embed = tiny_encoders.dinov2.embed_images

    def counted(images):
        calls.append(len(images))
        return embed(images)

    encoder = SimpleNamespace(embed_images=counted, dim=tiny_encoders.dinov2.dim)
    stream = gated_tracker(BlockFinder(crossings), encoder)
    start = int(crossings[0][0] * RATE) - BATCH
    run(stream, frames[: start + 2 * BATCH])
    assert calls and max(calls) <= BATCH  # at most one crop a frame here, all of a batch's in one call
    (track,) = stream.state_dict()["tracking"][CAMERA]["tracker"]["tracks"]
    assert len(track["appearance"]) == tiny_encoders.dinov2.dim


def test_the_owl_detector_and_dinov2_come_from_the_config(tiny_owl, vigil_cache, footage):
    frames, _ = footage
    config = load_config(
        None,
        {
            "models": "tiny",
            "device": "cpu",
            "precision": "fp32",
            "detect.kind": "owl",
            "detect.model": tiny_owl,
            "detect.phrases": ["person", "red car"],
            "track.live": True,
        },
    )
    stream = StreamTracker.from_config(config, MODELS)
    assert stream.class_names == ["person", "red car"] and stream.encoder is not None
    run(stream, frames[:BATCH])  # end to end on untrained weights: whatever it finds, it tracks without error
    assert CAMERA in stream.state_dict()["tracking"]


def test_an_open_vocabulary_detector_is_prompted_with_the_queries_classes_whose_ids_survive_a_restore(footage):
    frames, crossings = footage
    stream = gated_tracker(PromptedFinder(crossings))
    red = StandingQuery.from_json(
        {"id": "red", "track": {"event": "enter", "where": "left_half", "classes": ["red car", "person"]}}
    )
    stream.sync_queries([(red, None)])
    assert stream.class_names == ["person", "car", "red car"]
    run(stream, frames[:20])
    state = json.loads(json.dumps(stream.state_dict()))
    assert state["track_classes"] == ["person", "car", "red car"]
    restored = gated_tracker(PromptedFinder(crossings))
    restored.load_state_dict(state)  # before any query is synced again
    assert restored.class_names == ["person", "car", "red car"]
    fixed = live_tracker()  # the motion detector finds what it finds: it is not prompted
    fixed.sync_queries([(red, None)])
    assert fixed.class_names == ["moving object"]


def test_every_kind_of_track_alert_has_its_tracks_thumbnail(footage):
    frames, _ = footage
    stream = live_tracker()
    leaving = StandingQuery.from_json({"id": "leaving", "track": {"event": "leave", "where": "left_half"}})
    stream.sync_queries([(query, None) for query in (leaving, ENTERING, CROSSING)])
    outs = outputs(stream, frames)
    alerts = [alert for out in outs for alert in out.alerts]
    assert sorted((a.query_id, a.track.track_id) for a in alerts) == [
        (query, track) for query in ("crossing", "entering", "leaving") for track in (1, 2)
    ]
    stored = {key for out in outs for key, _ in out.thumbnails}
    assert all(alert.keyframe_key in stored for alert in alerts)


def test_the_tracker_takes_frames_at_the_detectors_rate_and_goes_on_so_after_a_restore(footage):
    frames, crossings = footage

    def slower() -> StreamTracker:  # half the footage's rate
        detect = DetectConfig(warmup=WARMUP, rate=RATE / 2)
        return StreamTracker(MODELS, TrackConfig(live=True, reid_frames=10), detect, EVENTS)

    uninterrupted = slower()
    events = run(uninterrupted, frames)
    assert uninterrupted.state_dict()["tracking"][CAMERA]["tracker"]["frame"] == len(frames) // 2
    cut = int(crossings[0][1] * RATE) + 15  # between the crossings, on a frame the rate skips or takes
    for at in (cut, cut + 1):
        before = slower()
        part = run(before, frames[:at])
        restored = slower()
        restored.load_state_dict(json.loads(json.dumps(before.state_dict())))
        assert part + run(restored, frames[at:]) == events


def test_a_detector_rate_above_the_models_samples_frames_for_the_tracker_alone(footage, tiny_encoders):
    frames, _ = footage
    decode = load_config(None, {"decode.fps": 1.0, "decode.short_side": 0}).decode
    models_only = list(sampled_frames(frames[0].source, decode, camera=CAMERA))
    both = list(sampled_frames(frames[0].source, decode, camera=CAMERA, tracker_rate=RATE))
    assert [frame.pts for frame in both] == [frame.pts for frame in frames]  # the detector's rate
    # the models' frames are those of their own rate, with the same still marks
    assert [(f.pts, f.still) for f in both if not f.tracker_only] == [(f.pts, f.still) for f in models_only]
    assert len(models_only) == SECONDS and any(frame.still for frame in models_only)

    extracted = extract_features(FrameBatch(both[:20]), tiny_encoders)
    assert len(extracted.siglip) == sum(frame.runs_models for frame in both[:20])  # the models skip the others

    def analyzed(sampled: list[Frame]) -> list[tuple[float, float, int]]:
        rows = sum(frame.runs_models for frame in sampled)
        batch = FrameBatch(sampled, np.stack([raw_vector(0.1)] * rows), np.stack([basis(0, 4)] * rows))
        stream = analyzer(tracked=True)
        (shard,) = shard_batches(batch, 1)
        out = stream.process(shard)
        out.extend(stream.flush())
        return [(clip.start, clip.end, clip.frame_count) for clip, _ in out.clips]

    # the analyzer's clip windows hold the models' frames alone, as if the tracker's were never sampled
    assert analyzed(both) == analyzed(models_only) != []
