"""The summarizer on generated footage with planted scenes, tiny untrained models (plumbing, never accuracy)."""

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from PIL import Image

from pipeline.config import load_config
from pipeline.media import decode as decode_module
from pipeline.media.decode import VideoDecodeError
from pipeline.media.synthetic import Scene, write_corrupt_video, write_scene_video
from pipeline.models import Captioner, CaptionerUnavailableError, TransformersCaptioner
from pipeline.records import ClipEmbedding, ModelIds, TrackEvent
from pipeline.storage.clips import read_clip, write_clip
from pipeline.storage.layout import camera_source_id, live_track_events_key, source_id, summary_frames_key
from pipeline.storage.store import LocalStore
from pipeline.summaries import (
    FeatureTrack,
    RollingSummaries,
    SummarizeError,
    SummaryOptions,
    TimelineEvent,
    VocabularyError,
    builtin_concepts,
    choose_keyframes,
    detect_shots,
    joint_embedding,
    load_vocabulary,
    parse_vocabulary,
    read_clip_track,
    read_events,
    summarize_file,
    summarize_stored,
    validate_summary,
)

# Five visually distinct scenes with lengths that do not fall on the 1 s sampling grid.
LENGTHS = (4.6, 3.2, 6.4, 3.8, 5.0)
EVENTS = [
    {"t_start": 5.1, "t_end": 6.0, "label": "person at the gate"},
    {"t_start": 6.5, "t_end": 7.0, "label": "person at the gate"},
    {"start": 15.0, "end": 16.5, "query": "a red car", "peak_score": 0.31, "id": "a1"},
]  # Alert-shaped
VIGIL = str(Path(sys.executable).parent / "vigil")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    path = tmp_path_factory.mktemp("summarize-media") / "planted.mp4"
    scenes = [Scene(f"s{i}", d) for i, d in enumerate(LENGTHS)]
    bounds = write_scene_video(path, scenes, fps=25, size=(320, 240), gop=25)
    return path.resolve(), bounds


@pytest.fixture(scope="module")
def config(vigil_cache):
    return load_config(None, {"models": "tiny", "precision": "fp32", "device": "cpu", "batch_size": 8})


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, planted, config, tiny_encoders):
    path, _ = planted
    store = LocalStore(tmp_path_factory.mktemp("summarize-store"))
    result = summarize_file(
        path, config, store, encoders=tiny_encoders, events=EVENTS, queries=["a red car", "一辆红色的汽车"]
    )
    return store, result


class _NoDecoding:
    """Makes any decoding (frames, probing, seeking, model loading) fail loudly, and counts attempts."""

    def __init__(self, monkeypatch, allow_seek: bool = False):
        self.calls = 0

        def refuse(*args, **kwargs):
            self.calls += 1
            raise AssertionError("decoding was attempted")

        import av

        import pipeline.models

        targets = [(decode_module, "decode_frames"), (decode_module, "probe"), (pipeline.models, "load_encoders")]
        for target, name in targets + ([] if allow_seek else [(av, "open")]):
            monkeypatch.setattr(target, name, refuse)


def _bytes(store, result):
    return {name: store.get(key) for name, key in result.keys.items()}


# ------------------------------------------------------------------------------------------ the planted video


def test_shot_boundaries_fall_within_one_sampling_interval(first_run, planted):
    _, result = first_run
    _, bounds = planted
    summary = result.summary
    assert summary["features"] == {"kind": "frames", "interval": 1.0, "count": 23}
    truth = [start for _, start, _ in bounds[1:]]
    found = [shot["start"] for shot in summary["shots"][1:]]
    assert len(found) == len(truth), (found, truth)
    for cut, boundary in zip(truth, found):
        assert abs(boundary - cut) <= summary["features"]["interval"] + 1e-6, (found, truth)
    shots = summary["shots"]
    assert shots[0]["start"] == 0 and shots[-1]["end"] == pytest.approx(sum(LENGTHS), abs=0.05)
    assert all(a["end"] == b["start"] for a, b in zip(shots, shots[1:]))


def test_keyframes_cover_every_planted_scene(first_run, planted):
    store, result = first_run
    _, bounds = planted
    keyframes = result.summary["keyframes"]
    for name, start, end in bounds:
        assert any(start <= k["t"] < end for k in keyframes), (name, [k["t"] for k in keyframes])
    assert len(keyframes) <= 9  # the automatic budget for 23 s of video
    for keyframe in keyframes:
        assert store.get(keyframe["image"])[:3] == b"\xff\xd8\xff"  # a JPEG in the store
    assert len({shot["scene"] for shot in result.summary["shots"]}) == len(bounds)  # no two scenes merged


def test_summary_json_follows_its_schema_and_says_untrained(first_run):
    store, result = first_run
    summary = json.loads(store.get(result.keys["summary"]))
    validate_summary(summary)
    assert summary["schema_version"] == 1 and summary["untrained"] is True and summary["models"]["untrained"]
    assert all({"start", "end", "tags"} <= set(shot) and len(shot["tags"]) == 5 for shot in summary["shots"])
    assert all({"t", "image"} <= set(k) for k in summary["keyframes"])
    assert summary["text"].startswith("UNTRAINED")
    assert re.search(r"00:0[45]-00:0\d \S.*: .*; 2 alerts 'person at the gate'", summary["text"]), summary["text"]
    assert "1 alert 'a red car'" in summary["text"]
    assert [e["label"] for e in summary["events"]] == ["person at the gate", "person at the gate", "a red car"]
    assert summary["events"][2] == {
        "t_start": 15.0,
        "t_end": 16.5,
        "label": "a red car",
        "kind": "alert",
        "score": 0.31,
        "id": "a1",
    }
    assert [q["text"] for q in summary["queries"]] == ["a red car", "一辆红色的汽车"]
    assert len(summary["queries"][0]["scores"]) == 23
    assert summary["vocabulary"]["size"] == len(builtin_concepts()) >= 300
    broken = dict(summary, shots=[{"start": 0, "end": 1}])
    with pytest.raises(jsonschema.ValidationError):
        validate_summary(broken)


def test_pictures_and_a_self_contained_report(first_run):
    store, result = first_run
    for name in ("contact_sheet", "timeline"):
        data = store.get(result.keys[name])
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
        Image.open(io.BytesIO(data)).verify()
        with Image.open(io.BytesIO(data)) as image:
            assert image.width >= 400 and image.height >= 100
    report = store.get(result.keys["report"]).decode()
    sources = re.findall(r'src="([^"]*)"', report)
    assert len(sources) >= 2 + len(result.summary["keyframes"])
    assert all(src.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for src in sources)
    assert "UNTRAINED" in report and "person at the gate" in report and "一辆红色的汽车" in report
    assert "<link" not in report and "<script" not in report


def test_a_second_run_reuses_the_stored_features_and_decodes_nothing(
    first_run, planted, config, tiny_encoders, monkeypatch
):
    store, first = first_run
    path, _ = planted
    assert store.exists(summary_frames_key(source_id(str(path)))) and not first.reused
    before = _bytes(store, first)
    guard = _NoDecoding(monkeypatch)
    again = summarize_file(
        path, config, store, encoders=tiny_encoders, events=EVENTS, queries=["a red car", "一辆红色的汽车"]
    )
    assert guard.calls == 0 and again.reused
    assert _bytes(store, again) == before  # deterministic: the same bytes, nothing rewritten differently
    # without encoders, nothing is loaded either: the vocabulary's text embeddings are cached in the store
    bare = summarize_file(path, config, store, start=0.0, end=first.summary["range"]["end"])
    assert bare.reused and guard.calls == 0
    assert bare.summary["shots"] == first.summary["shots"]


def test_a_time_range_reads_the_stored_features(first_run, planted, config, tiny_encoders, monkeypatch):
    store, _ = first_run
    path, bounds = planted
    guard = _NoDecoding(monkeypatch, allow_seek=True)  # features: stored; new keyframe pictures: may be sought
    result = summarize_file(
        path, config, store, encoders=tiny_encoders, start=5.0, end=18.0, options=SummaryOptions(keyframes=2)
    )
    summary = result.summary
    assert summary["range"]["start"] == 5.0 and summary["range"]["end"] == 18.0
    assert "/range-000000005000-000000018000/" in result.keys["summary"]
    assert summary["shots"][0]["start"] == 5.0 and summary["shots"][-1]["end"] == 18.0
    assert len(summary["keyframes"]) == 2 and all(5.0 <= k["t"] < 18.0 for k in summary["keyframes"])
    assert all(store.exists(k["image"]) for k in summary["keyframes"]) and guard.calls == 0
    validate_summary(summary)


# ------------------------------------------------------------------------------------------ from stored clips


def test_indexed_sources_and_cameras_are_summarized_from_their_clips(
    tmp_path, planted, config, tiny_encoders, monkeypatch
):
    from jobs.archive import index_paths

    path, bounds = planted
    video = tmp_path / "indexed.mp4"
    shutil.copy(path, video)
    store = LocalStore(tmp_path / "store")
    index_paths([video], config, store, progress=False, encoders=tiny_encoders)
    guard = _NoDecoding(monkeypatch)
    result = summarize_file(video, config, store, encoders=tiny_encoders)
    assert guard.calls == 0 and result.reused and result.summary["features"]["kind"] == "clips"
    window = result.summary["features"]["interval"]
    found = [shot["start"] for shot in result.summary["shots"][1:]]
    assert len(found) == len(bounds) - 1
    for (_, cut, _), boundary in zip(bounds[1:], found):
        assert abs(boundary - cut) <= window + 1e-6
    assert all(k["image"].startswith("keyframes/") for k in result.summary["keyframes"])  # the archive's pictures

    # A camera's clips (as the live monitor will store them): the plain function its actor will call.
    sid = source_id(str(video.resolve()))
    for key in store.list(f"clips/{sid}/"):
        clip = read_clip(store, key)
        camera_sid = camera_source_id("gate-1")
        clip.source, clip.source_id = "gate-1", camera_sid
        old_key = clip.keyframe_key
        clip.keyframe_key = old_key.replace(sid, camera_sid)
        store.put(clip.keyframe_key, store.get(old_key))
        write_clip(store, clip)
    stored_alert = {
        "id": "f00d",
        "status": "closed",
        "query_id": "q1",
        "query_text": "a van at the gate",
        "query_image": None,
        "camera": "gate-1",
        "start": 9.0,
        "end": 11.5,
        "peak_score": 0.4,
        "peak_pts": 10.0,
        "keyframe_key": "keyframes/x/000000010000.jpg",
        "untrained": True,
    }
    store.put_json(
        f"alerts/{camera_source_id('gate-1')}/f00d.json", stored_alert
    )  # as the live monitor's sink writes it
    # the live trackers' events, as the sink writes them: one batch inside the range, one after it
    crossing = TrackEvent("gate-1", 3, 0, "cross", "door", 7.5, direction="left_to_right", class_name="person")
    later = TrackEvent("gate-1", 4, 0, "enter", "yard", 30.0, class_name="person")
    for event in (crossing, later):
        store.put_json(live_track_events_key(camera_source_id("gate-1"), event.pts, event.pts), [event.to_json()])
    rolling = summarize_stored(
        store, "gate-1", start=4.0, end=16.0, events=[EVENTS[0]], text_encoder=tiny_encoders.siglip
    )
    summary = rolling.summary
    assert summary["source"] == {"source": "gate-1", "source_id": camera_source_id("gate-1"), "kind": "camera"}
    assert summary["range"]["start"] == 4.0 and summary["range"]["end"] == 16.0
    assert "1 alert 'person at the gate'" in summary["text"] and guard.calls == 0
    assert "1 alert 'a van at the gate'" in summary["text"]
    assert {
        "t_start": 9.0,
        "t_end": 11.5,
        "label": "a van at the gate",
        "kind": "alert",
        "score": 0.4,
        "id": "f00d",
    } in summary["events"]
    tracked = [event for event in summary["events"] if event["kind"] == "track"]
    assert [(e["t_start"], e["label"], e["track"]["id"]) for e in tracked] == [
        (7.5, "person crossed door left to right", 3)
    ]
    validate_summary(summary)
    with pytest.raises(SummarizeError, match="nothing stored for gate-2"):
        summarize_stored(store, "gate-2")


def test_rolling_summaries_wait_for_stored_windows_and_never_repeat(tmp_path, tiny_encoders):
    store = LocalStore(tmp_path)
    sid = camera_source_id("gate")
    siglip, dinov2 = tiny_encoders.embed_images(np.zeros((1, 64, 64, 3), np.uint8))
    rng = np.random.default_rng(0)
    for start in (0, 2, 4, 12, 14):  # 2 s windows as the monitor stores them; the camera was off 6-12 s
        write_clip(
            store,
            ClipEmbedding(
                "gate",
                sid,
                float(start),
                start + 2.0,
                rng.normal(size=siglip.shape[1]).astype(np.float32),
                rng.normal(size=dinov2.shape[1]).astype(np.float32),
                start + 1.0,
                f"keyframes/{sid}/x.jpg",
                tiny_encoders.ids,
                frame_count=4,
            ),
        )

    def ranges(results):
        return [(r.summary["range"]["start"], r.summary["range"]["end"]) for r in results]

    def rolling():  # a fresh one: what a restarted summarizer knows comes from the store
        return RollingSummaries(store, every=6, window=2, text_encoder=tiny_encoders.siglip)

    first = rolling()
    assert first.advance({"gate": 5.5}) == []  # the window [4, 6) is still open
    assert ranges(first.advance({"gate": 6.0})) == [(0.0, 6.0)]
    assert ranges(first.advance({"gate": 13.0})) == []  # 6-12 s: no footage, nothing to summarize
    assert ranges(rolling().advance({"gate": 15.5})) == []  # after a restart: 6-12 s is tried again, still empty
    assert ranges(rolling().advance({"gate": 15.5}, ended=True)) == [(12.0, 16.0)]  # the partial last period
    assert store.exists(f"{first.period_prefix('gate', 2)}/summary.json")  # under the period's key: 12-18 s
    assert rolling().advance({"gate": 15.5}, ended=True) == []
    assert {key.split("/")[2] for key in store.list(f"summaries/{sid}/range-")} == {
        first.period_prefix("gate", period).split("/")[2] for period in (0, 2)
    }
    # a period reads only its own windows and the one reaching into it, not the camera's whole history
    assert read_clip_track(store, sid, 12.0, 18.0).times.tolist() == [12.0, 14.0]
    assert read_clip_track(store, sid, 13.0, 18.0).times.tolist() == [12.0, 14.0]
    assert read_clip_track(store, sid, 0.0, 4.0).times.tolist() == [0.0, 2.0]
    assert read_clip_track(store, sid, 20.0, 30.0).times.tolist() == [14.0]
    assert read_clip_track(store, sid).times.tolist() == [0.0, 2.0, 4.0, 12.0, 14.0]


# ------------------------------------------------------------------------------------------ bad input


def test_empty_one_frame_and_corrupt_inputs_get_clear_errors(tmp_path, config, tiny_encoders):
    store = LocalStore(tmp_path / "store")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(SummarizeError, match=r"empty\.mp4 is empty \(0 bytes\)"):
        summarize_file(empty, config, store, encoders=tiny_encoders)
    one = tmp_path / "one.mp4"
    write_scene_video(one, [Scene("only", 0.04)], fps=25, size=(64, 48))
    with pytest.raises(SummarizeError, match=r"one\.mp4: only 1 frame could be sampled .* needs at least 2"):
        summarize_file(one, config, store, encoders=tiny_encoders)
    corrupt = tmp_path / "corrupt.mp4"
    write_corrupt_video(corrupt)
    with pytest.raises(VideoDecodeError, match=r"cannot decode .*corrupt\.mp4"):
        summarize_file(corrupt, config, store, encoders=tiny_encoders)
    with pytest.raises(SummarizeError, match="no such file"):
        summarize_file(tmp_path / "missing.mp4", config, store, encoders=tiny_encoders)
    assert not list(store.list("summaries/"))  # nothing half-written


def test_a_range_outside_the_video_is_an_error(first_run, planted, config, tiny_encoders):
    store, _ = first_run
    path, _ = planted
    with pytest.raises(SummarizeError, match="empty time range"):
        summarize_file(path, config, store, encoders=tiny_encoders, start=40, end=50)
    with pytest.raises(SummarizeError, match="needs at least 2"):
        summarize_file(path, config, store, encoders=tiny_encoders, start=3.2, end=3.9)


# ------------------------------------------------------------------------------------------ parts


def _track(vectors: np.ndarray, interval: float = 1.0) -> FeatureTrack:
    n = len(vectors)
    times = np.arange(n) * interval
    return FeatureTrack(
        "x.mp4",
        "x-000000000000",
        "frames",
        times,
        vectors,
        vectors,
        interval,
        n * interval,
        ModelIds("s", "d", True),
        times.copy(),
    )


def test_adaptive_cuts_ignore_steady_motion_and_find_every_cut():
    rng = np.random.default_rng(3)
    lengths = [30, 7, 12, 3, 25, 9]
    scenes = rng.normal(size=(len(lengths), 64))
    rows = []
    for scene, n in zip(scenes, lengths):
        drift = np.cumsum(rng.normal(scale=0.08, size=(n, 64)), axis=0)  # a panning camera: steady change
        rows.append(scene + drift)
    vectors = np.concatenate(rows)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    track = _track(vectors.astype(np.float32), interval=0.5)
    shots = detect_shots(track, 0.0, track.duration, SummaryOptions())
    assert [s.first for s in shots] == list(np.cumsum([0, *lengths[:-1]]))
    rows, labels, _ = choose_keyframes(joint_embedding(track), shots, budget=9)
    assert len({int(np.searchsorted(np.cumsum(lengths), r, side="right")) for r in rows}) == len(lengths)
    exact, _, _ = choose_keyframes(joint_embedding(track), shots, budget=9, exact=3)
    assert len(exact) == 3


def test_events_accept_alert_records_and_json_lines(tmp_path):
    alert = TimelineEvent.from_mapping({"start": 3, "end": 4.5, "query": "fence", "peak_score": 0.4, "id": "x"})
    assert (alert.t_start, alert.t_end, alert.label, alert.kind, alert.score, alert.id) == (
        3,
        4.5,
        "fence",
        "alert",
        0.4,
        "x",
    )
    lines = tmp_path / "events.jsonl"
    lines.write_text('{"t_start": 1, "t_end": 2, "label": "door", "kind": "track"}\n{"t_start": 5, "label": "gate"}\n')
    assert [(e.label, e.kind, e.t_end) for e in read_events(lines)] == [("door", "track", 2.0), ("gate", "alert", 5.0)]
    with pytest.raises(SummarizeError, match="needs a label"):
        TimelineEvent.from_mapping({"t_start": 1, "t_end": 2})
    with pytest.raises(SummarizeError, match="t_start <= t_end"):
        TimelineEvent.from_mapping({"t_start": 3, "t_end": 2, "label": "x"})


def test_the_vocabulary_is_large_extensible_and_multilingual(tmp_path):
    concepts = builtin_concepts()
    assert len(concepts) >= 300 and {"place", "object", "activity", "person"} <= {c.category for c in concepts}
    assert any(not c.label.isascii() for c in concepts)
    extra = tmp_path / "site.txt"
    extra.write_text(
        "# our site\nplace: loading bay 3\nforklift = a photo of a yellow forklift\nplace: 停车场\n", encoding="utf-8"
    )
    merged = load_vocabulary([extra])
    by_label = {c.label: c for c in merged}
    assert by_label["loading bay 3"].text == "a photo of loading bay 3"
    assert by_label["forklift"].text == "a photo of a yellow forklift" and by_label["forklift"].category == "custom"
    assert by_label["停车场"].text == "停车场"  # re-prompted as written (replaces the built-in entry)
    assert [c.label for c in load_vocabulary([extra], builtin=False)] == ["loading bay 3", "forklift", "停车场"]
    with pytest.raises(VocabularyError, match="not found"):
        load_vocabulary([tmp_path / "nope.txt"])
    with pytest.raises(VocabularyError, match="line 1"):
        parse_vocabulary("place:  = x", "f")


class FakeCaptioner:
    model_id = "fake/captioner"

    def __init__(self):
        self.seen = []

    def caption(self, images):
        self.seen += [image.shape for image in images]
        return [f"a fake sentence about picture {i}" for i in range(len(images))]


def test_captions_from_a_captioner_reach_the_summary_and_report(first_run, planted, config, tiny_encoders):
    store, _ = first_run
    path, _ = planted
    fake = FakeCaptioner()
    assert isinstance(fake, Captioner) and isinstance(TransformersCaptioner("x"), Captioner)
    result = summarize_file(path, config, store, encoders=tiny_encoders, captioner=fake, start=0, end=23)
    keyframes = result.summary["keyframes"]
    assert len(fake.seen) == len(keyframes) and all(len(shape) == 3 for shape in fake.seen)
    assert [k["caption"] for k in keyframes] == [f"a fake sentence about picture {i}" for i in range(len(keyframes))]
    assert result.summary["captioner"] == "fake/captioner"
    assert "a fake sentence about picture 0" in store.get(result.keys["report"]).decode()
    with pytest.raises(CaptionerUnavailableError, match="cannot load the captioning model"):
        TransformersCaptioner(str(path.parent / "no-such-model")).caption([np.zeros((8, 8, 3), np.uint8)])


# ------------------------------------------------------------------------------------------ the command


def test_the_command_end_to_end(first_run, planted, tmp_path, vigil_cache):
    path, _ = planted
    store_dir = tmp_path / "store"
    # share the vocabulary's cached text embeddings, as one store would: the subprocess skips the text tower
    seeded, _ = first_run
    for key in seeded.list("summaries/_vocabulary/"):
        LocalStore(store_dir).put(key, seeded.get(key))
    events = tmp_path / "alerts.json"
    events.write_text(json.dumps({"events": EVENTS[:2]}))
    out = tmp_path / "for-people"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [
            VIGIL,
            "summarize",
            str(path),
            "--store",
            str(store_dir),
            "--models",
            "tiny",
            "--out",
            str(out),
            "--events",
            str(events),
            "--query",
            "a red car",
            "--from",
            "0:00",
            "--to",
            "0:23",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("UNTRAINED") and "2 alerts 'person at the gate'" in run.stdout
    assert "decoded once and stored" in run.stdout and "realtime" in run.stdout
    assert "video s" in run.stderr  # the progress bar
    assert {p.name for p in out.iterdir()} == {
        "summary.json",
        "contact_sheet.png",
        "timeline.png",
        "report.html",
        "keyframes",
    }
    summary = json.loads((out / "summary.json").read_text())
    validate_summary(summary)
    assert len(list((out / "keyframes").glob("*.jpg"))) == len(summary["keyframes"])
    camera = subprocess.run(
        [VIGIL, "summarize", "--camera", "gate-7", "--store", str(store_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert camera.returncode == 2 and "not available until live monitoring lands" in camera.stderr
    assert "Traceback" not in camera.stderr
