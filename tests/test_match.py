"""Standing queries to alerts: hysteresis, cooldown, verification, calibration, checkpoints, replays."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

from pipeline.config import MatchConfig
from pipeline.live.match import NEUTRAL_PROMPTS, Matcher, Verifier, neutral_margin, robust_z
from pipeline.live.queries import EncodedQuery, StandingQuery
from pipeline.records import Alert, FrameBatch, FrameFeatures, ModelIds

DIM = 16
MODELS = ModelIds("fake-siglip", "fake-dinov2", untrained=True)


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return (v / np.linalg.norm(v)).astype(np.float32)


def basis(i: int, dim: int = DIM) -> np.ndarray:
    e = np.zeros(dim, np.float32)
    e[i] = 1
    return e


def raw_vector(score: float) -> np.ndarray:
    """A frame vector whose cosine with basis(0) is `score` (the rest goes to an unused axis)."""
    return unit(score * basis(0) + math.sqrt(max(0.0, 1 - score * score)) * basis(DIM - 1))


def frame(camera: str, pts: float, siglip: np.ndarray, dinov2: np.ndarray | None = None) -> FrameFeatures:
    return FrameFeatures(camera, float(pts), siglip, basis(0, 4) if dinov2 is None else dinov2)


class FakeText:
    def __init__(self, table: dict[str, np.ndarray]):
        self.table = table

    def embed_texts(self, texts):
        out = []
        for text in texts:
            if text in self.table:
                out.append(self.table[text])
            else:  # unknown phrases: a fixed pseudo-random unit vector on the axes no test uses
                seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
                v = np.random.default_rng(seed).normal(size=DIM)
                v[: DIM // 2] = 0
                out.append(unit(v))
        return np.stack(out).astype(np.float32)


class FakeEncoders:
    """The `Encoders` surface the matcher uses; texts map to chosen vectors."""

    def __init__(self, table: dict[str, np.ndarray] | None = None):
        self.siglip = FakeText(table or {})
        self.ids = MODELS

    def embed_images(self, images):
        raise AssertionError("no image encoding in these tests")


# The neutral prompts of the fake encoder: all near one "background" direction e1, each tilted its own way.
NEUTRAL = {p: unit(basis(1) + 0.6 * basis(2 + i % 4)) for i, p in enumerate(NEUTRAL_PROMPTS)}


def matcher(table=None, **kwargs) -> Matcher:
    return Matcher.from_encoders(FakeEncoders({**NEUTRAL, "thing": basis(0), **(table or {})}), **kwargs)


RULES = dict(
    calibration="raw", threshold=0.5, hysteresis=0.2, min_duration=2.0, release=2.0, cooldown=5.0, max_gap=10.0
)


def run_scores(m: Matcher, scores, camera="cam", start=0.0, step=1.0, **kwargs):
    """Feed one frame per score (pts = start + i*step); returns [(pts at emission, alert)]."""
    emitted = []
    for i, s in enumerate(scores):
        pts = start + i * step
        for alert in m.process(frame(camera, pts, raw_vector(s)), **kwargs):
            emitted.append((pts, alert))
    return emitted


def events(emitted) -> list[tuple[float, float, float]]:
    return [(a.start, a.end, round(a.peak_score, 4)) for _, a in emitted if a.status == "closed"]


# ------------------------------------------------------------------------------------------ hysteresis, cooldown

_ = 0.1  # background
CASES = {
    # name: (scores at pts 0, 1, 2, ..., expected closed events (start, end, peak))
    "blip shorter than min_duration": ([_, 0.9, 0.9, _, _, _, 0.8, _, _], []),
    "exactly min_duration opens": ([_, 0.6, 0.6, 0.6, _, _, _, _], [(1, 3, 0.6)]),
    "hysteresis keeps it open, release closes it": (
        [_, 0.6, 0.7, 0.8, 0.6, 0.4, 0.35, 0.2, 0.2, 0.2, _, _],
        [(1, 6, 0.8)],
    ),
    "a dip shorter than release does not split": ([0.6, 0.6, 0.6, _, 0.6, 0.9, _, _, _, _, _], [(0, 5, 0.9)]),
    "a second run inside the cooldown is suppressed":  # 6..8 would be an event, but it may start at 7 only
    ([0.6, 0.6, 0.6, _, _, _, 0.7, 0.7, 0.7, _, _, _, _, _], [(0, 2, 0.6)]),
    "after the cooldown a new event opens": (
        [0.6, 0.6, 0.6, _, _, _, _, 0.7, 0.7, 0.7, _, _, _, _],
        [(0, 2, 0.6), (7, 9, 0.7)],
    ),
    "a run straddling the cooldown's end starts at its end": (
        [0.6, 0.6, 0.6, _, _, _, 0.7, 0.7, 0.7, 0.8, 0.7, _, _, _],
        [(0, 2, 0.6), (7, 10, 0.8)],
    ),
    "between low and threshold stays open, below low counts for release": (
        [0.6, 0.6, 0.6, 0.31, 0.29, 0.29, 0.29, _],
        [(0, 3, 0.6)],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_events_follow_hysteresis_and_cooldown(name):
    scores, expected = CASES[name]
    m = matcher()
    m.add(StandingQuery(id="q", text="thing", **RULES))
    emitted = run_scores(m, scores) + [(None, a) for a in m.flush()]
    assert events(emitted) == [(s, e, pytest.approx(p, abs=1e-4)) for s, e, p in expected]
    opened = [(pts, a) for pts, a in emitted if a.status == "open"]
    assert len(opened) == len(expected)  # one alert per event, emitted once as open ...
    closed = {a.id: a for _, a in emitted if a.status == "closed"}
    for pts, alert in opened:  # ... as soon as min_duration has passed, then closed under the same id
        assert pts == alert.start + RULES["min_duration"] and alert.end == pts
        assert alert.id in closed and closed[alert.id].start == alert.start
        assert alert.id == Alert.make_id("q", "cam", alert.start)


def test_close_happens_after_release_and_carries_the_peak_keyframe():
    m = matcher()
    m.add(StandingQuery(id="q", text="thing", **RULES))
    emitted = run_scores(m, [_, 0.6, 0.9, 0.7, 0.6, _, _, _, _])
    (open_pts, opened), (close_pts, closed) = emitted
    assert (open_pts, close_pts) == (3, 7)  # below from pts 5, release 2 s
    assert opened.peak_pts == 2 and opened.end == 3 and opened.status == "open"
    assert closed.end == 4 and closed.peak_pts == 2 and closed.keyframe_key.endswith("/000000002000.jpg")
    assert closed.untrained and closed.models == MODELS and closed.query_text == "thing"


def test_a_silent_camera_closes_the_event_at_its_last_frame():
    m = matcher()
    m.add(StandingQuery(id="q", text="thing", **RULES))
    emitted = run_scores(m, [0.6] * 5)
    assert [a.status for _, a in emitted] == ["open"]
    later = m.process(frame("cam", 30.0, raw_vector(0.6)))  # 26 s of silence > max_gap
    assert [(a.status, a.start, a.end) for a in later] == [("closed", 0, 4)]


def test_min_duration_zero_alerts_on_the_first_frame():
    m = matcher()
    m.add(StandingQuery(id="q", text="thing", **{**RULES, "min_duration": 0.0}))
    emitted = run_scores(m, [_, 0.6, _])
    assert [(pts, a.status) for pts, a in emitted] == [(1, "open")]


# ------------------------------------------------------------------------------------------ verification


class ScriptedVerifier:
    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = []

    def confirm(self, alert, keyframe_image):
        self.calls.append((alert, keyframe_image))
        return self.answers.pop(0)


def test_a_rejected_event_is_silent_until_it_ends_then_the_next_is_verified():
    verifier = ScriptedVerifier([False, True])
    assert isinstance(verifier, Verifier)
    m = matcher(verifier=verifier)
    m.add(StandingQuery(id="q", text="thing", **{**RULES, "cooldown": 2.0}))
    scores = [0.6, 0.8, 0.6, 0.6, 0.35, 0.6, 0.6, 0.6, _, _, _, _, _, 0.7, 0.7, 0.7, _, _, _]
    emitted = []
    for i, s in enumerate(scores):
        image = np.full((2, 2, 3), i, np.uint8)
        emitted += [(i, a) for a in m.process(frame("cam", i, raw_vector(s)), image=image)]
    assert len(verifier.calls) == 2  # once per event, never again while the rejected one runs
    first, second = verifier.calls
    assert first[0].start == 0 and first[0].status == "open" and first[1][0, 0, 0] == 1  # the peak frame's image
    assert second[0].start == 13
    assert [(a.status, a.start, a.end, a.verified) for _, a in emitted] == [
        ("open", 13, 15, True),
        ("closed", 13, 15, True),
    ]


def test_a_failing_verifier_fails_open_and_images_come_from_the_loader():
    class Broken:
        def confirm(self, alert, keyframe_image):
            raise RuntimeError("model server down")

    loaded = []
    m = matcher(verifier=Broken(), image_loader=lambda key: loaded.append(key))
    m.add(StandingQuery(id="q", text="thing", **RULES))
    emitted = run_scores(m, [0.6, 0.7, 0.6])
    assert [(a.status, a.verified) for _, a in emitted] == [("open", None)]
    assert loaded == [emitted[0][1].keyframe_key]


# ------------------------------------------------------------------------------------------ query book


def test_queries_are_added_and_removed_while_running():
    m = matcher({"other": basis(3)})
    m.add(StandingQuery(id="a", text="thing", **RULES))
    first = run_scores(m, [_, 0.6, 0.6, 0.6, 0.6])
    assert [a.status for _, a in first] == ["open"]
    m.add(StandingQuery(id="b", text="thing", **{**RULES, "min_duration": 1.0}))  # joins mid-stream
    assert [q.id for q in m.list()] == ["a", "b"] and "b" in m and len(m) == 2
    second = run_scores(m, [0.7, 0.7], start=5)
    assert [(a.query_id, a.status, a.start) for _, a in second] == [("b", "open", 5)]
    closed = m.remove("a")  # closes a's open event cleanly, at its last frame
    assert [(a.query_id, a.status, a.start, a.end, a.peak_score > 0.69) for a in closed] == [
        ("a", "closed", 1, 6, True)
    ]
    third = run_scores(m, [0.7, _, _, _, _], start=7)
    assert {a.query_id for _, a in third} == {"b"} and [q.id for q in m.list()] == ["b"]
    with pytest.raises(KeyError):
        m.remove("a")
    # the same definition again is a no-op; another one under the same id is refused
    assert m.add(StandingQuery(id="b", text="thing", **{**RULES, "min_duration": 1.0})) is m.get("b")
    with pytest.raises(ValueError, match="remove it first"):
        m.add(StandingQuery(id="b", text="other", **RULES))
    assert m.remove("b") == []  # its event already ended


def test_the_stream_follows_stored_queries_without_encoding_them_again():
    from pipeline.live.analyzer import StreamAnalyzer

    m = matcher({"other": basis(3)})
    analyzer = StreamAnalyzer(m, window=2.0, models=MODELS)
    a, b = StandingQuery(id="a", text="thing", **RULES), StandingQuery(id="b", text="other", **RULES)
    assert analyzer.sync_queries([(a, None), (b, None)]).alerts == []
    held = m.get("a")
    run_scores(m, [_, 0.6, 0.6, 0.6])  # query a's event is open
    assert analyzer.sync_queries([(a, None), (b, None)]).alerts == [] and m.get("a") is held  # nothing changed
    changed = StandingQuery(id="a", text="thing", **{**RULES, "threshold": 0.55})
    closed = analyzer.sync_queries([(changed, None)]).alerts  # a changed, b deleted: a's event closes
    assert [(x.query_id, x.status) for x in closed] == [("a", "closed")]
    assert m.list() == [changed] and m.get("a") is not held


def test_queries_watch_only_their_cameras():
    m = matcher()
    m.add(StandingQuery(id="q", text="thing", cameras=["cam-a"], **RULES))
    m.add({"id": "all", "text": "thing", "cameras": "all", **RULES})
    for pts in range(4):
        for cam in ("cam-a", "cam-b"):
            m.process(frame(cam, pts, raw_vector(0.6)))
    assert set(m.score(frame("cam-b", 10, raw_vector(0.6)))) == {"all"}
    alerts = m.flush()
    assert sorted((a.query_id, a.camera) for a in alerts) == [("all", "cam-a"), ("all", "cam-b"), ("q", "cam-a")]
    assert [a.id for a in m.flush()] == []  # nothing left open
    m.process(frame("cam-b", 5, raw_vector(0.6)))
    assert m.drop_camera("cam-b") == [] and "cam-b" not in m.state_dict()["cameras"]
    assert {p["camera"] for p in m.state_dict()["pairs"]} == {"cam-a"}


# ------------------------------------------------------------------------------------------ calibration


def noisy(level: float, i: int, spread: float = 0.01) -> float:
    return level + spread * math.sin(1.7 * i) * math.cos(0.3 * i)


def test_the_same_cosine_scores_differently_on_cameras_with_different_backgrounds():
    settings = MatchConfig(warmup=20, history=200)
    for mode in ("calibrated", "camera"):
        m = matcher(settings=settings)
        m.add(StandingQuery(id="q", text="thing", calibration=mode))
        for i in range(40):
            m.process(frame("quiet", i, raw_vector(noisy(0.10, i))))
            m.process(frame("busy", i, raw_vector(noisy(0.30, i))))
        probe = raw_vector(0.30)
        quiet = m.score(frame("quiet", 50, probe))["q"]
        busy = m.score(frame("busy", 50, probe))["q"]
        assert quiet > 10 and abs(busy) < 2, (mode, quiet, busy)
    raw = matcher()
    raw.add(StandingQuery(id="q", text="thing", calibration="raw", threshold=0.2))
    assert raw.score(frame("quiet", 0, probe))["q"] == raw.score(frame("busy", 0, probe))["q"]


def test_calibrated_queries_warm_up_before_they_can_alert():
    m = matcher(settings=MatchConfig(warmup=10))
    m.add(StandingQuery(id="q", text="thing", min_duration=0.0))
    assert m.score(frame("cam", 0, raw_vector(0.9)))["q"] is None
    emitted = run_scores(m, [0.9] * 10 + [noisy(0.1, i) for i in range(20)] + [0.9])
    assert [(pts, a.status) for pts, a in emitted] == [(30, "open")]  # the warm-up's high scores never alerted


def test_neutral_prompts_penalise_a_query_that_matches_everything():
    # frames: the background direction, sometimes with a "thing" (axis 0) in view; noise on axes 2..5
    generic = NEUTRAL["a photo"]  # a query that describes every frame as well as the neutral prompts do
    table = {"generic": generic, "specific": unit(basis(0) + 0.3 * basis(1))}
    frames = []
    for i in range(30):
        present = 10 <= i < 15
        v = basis(1) + (0.9 * basis(0) if present else 0) + 0.05 * np.sin(i * np.arange(2, 6) + 1).sum() * basis(2)
        frames.append(frame("cam", i, unit(v)))
    m = matcher(table)
    neutral = m.neutral
    generic_raw = [float(generic @ f.siglip) for f in frames]
    specific_raw = [float(table["specific"] @ f.siglip) for f in frames]
    assert min(generic_raw) > max(specific_raw[:10])  # raw cosine: the generic query "wins" off-event
    margin = lambda q, f: neutral_margin(float(q @ f.siglip), neutral @ f.siglip, 0.01)  # noqa: E731
    assert all(margin(generic, f) <= 0 for f in frames)
    assert all((margin(table["specific"], f) > 0) == (10 <= f.pts < 15) for f in frames)
    # as standing queries: raw alerts on the generic phrase all along, the prompt margin only on the thing
    for mode, threshold in (("raw", 0.5), ("prompts", 0.0)):
        m = matcher(table)
        m.add(StandingQuery(id="generic", text="generic", calibration=mode, threshold=threshold, min_duration=1))
        m.add(StandingQuery(id="specific", text="specific", calibration=mode, threshold=threshold, min_duration=1))
        alerts = [a for a in m.process_many(frames) + m.flush() if a.status == "closed"]
        found = sorted((a.query_id, a.start, a.end) for a in alerts)
        if mode == "raw":
            assert ("generic", 0, 29) in found
        else:
            assert found == [("specific", 10, 14)]


def test_score_formulas():
    assert neutral_margin(0.3, np.array([0.1, 0.1]), 0.01) == pytest.approx(0.2 - 0.01 * math.log(2))
    assert neutral_margin(0.1, np.array([0.1]), 0.5) == pytest.approx(0.0)
    assert robust_z(3.0, [1.0, 2.0, 2.0, 3.0, 100.0], 0.01) == pytest.approx(1 / 1.4826)
    assert robust_z(2.5, [2.0] * 9, 0.5) == pytest.approx(1.0)  # a still camera: the spread floor


# ------------------------------------------------------------------------------------------ checkpoints, replays


def _stream():
    """Two cameras, 120 s at 1 fps, with a few events on each."""
    out = []
    for i in range(120):
        for cam, phase in (("cam-1", 0.0), ("cam-2", 2.0)):
            level = noisy(0.1, i + int(phase * 7))
            if 30 <= i < 42 or 70 <= i < 75 or (cam == "cam-2" and 90 <= i < 110):
                level = 0.45 + 0.05 * math.sin(i + phase)
            out.append(frame(cam, i, raw_vector(level)))
    return out


def _checkpoint_matcher():
    m = matcher(settings=MatchConfig(warmup=15, history=40))
    m.add(StandingQuery(id="z", text="thing", threshold=3.0, min_duration=2, release=2, cooldown=10))
    m.add(
        StandingQuery(
            id="r",
            text="thing",
            calibration="raw",
            threshold=0.4,
            hysteresis=0.05,
            min_duration=3,
            release=1,
            cooldown=20,
            cameras=["cam-2"],
        )
    )
    return m


def test_state_round_trip_mid_stream_gives_the_same_alerts_and_replays_add_nothing():
    frames = _stream()
    full = _checkpoint_matcher()
    expected = full.process_many(frames) + full.flush()
    assert len([a for a in expected if a.status == "closed"]) >= 4

    for cut in (66, 2 * 33 + 1, 2 * 36, 2 * 100):  # inside events (pending and open) and between them
        first = _checkpoint_matcher()
        got = first.process_many(frames[:cut])
        state = json.loads(json.dumps(first.state_dict()))  # JSON-compatible
        resumed = Matcher.from_encoders(
            FakeEncoders({**NEUTRAL, "thing": basis(0)}), settings=MatchConfig(warmup=15, history=40)
        )
        resumed.load_state_dict(state)
        assert [q.id for q in resumed.list()] == ["z", "r"]
        # the consumer restarts from an older offset: frames already seen come again, then new ones
        got += resumed.process_many(frames[max(0, cut - 10) :]) + resumed.flush()
        assert resumed.ignored == min(10, cut)
        assert [a.to_json() for a in got] == [a.to_json() for a in expected], cut


def test_processing_the_same_frames_twice_emits_nothing_new():
    frames = _stream()[:100]
    m = _checkpoint_matcher()
    first = m.process_many(frames)
    before = json.dumps(m.state_dict(), sort_keys=True)
    assert m.process_many(frames) == [] and m.ignored == len(frames)
    assert json.dumps(m.state_dict(), sort_keys=True) == before
    assert first and len({(a.id, a.status) for a in first}) == len(first)


def test_state_from_other_models_is_refused():
    m = _checkpoint_matcher()
    state = m.state_dict()
    other = Matcher(ModelIds("x", "y"), neutral=m.neutral)
    with pytest.raises(ValueError, match="made with"):
        other.load_state_dict(state)


# ------------------------------------------------------------------------------------------ records, validation


def test_definitions_and_alerts_round_trip_through_json():
    q = StandingQuery(id="fence-1", text="有人翻越围栏", cameras=["gate"], min_duration=3)
    data = q.to_json()
    assert data["threshold"] == 4.0 and data["hysteresis"] == 1.5 and data["cameras"] == ["gate"]
    assert StandingQuery.from_json(json.dumps(data)) == q
    image_q = StandingQuery(id="van", image="queries/van/example.jpg", calibration="camera", threshold=5)
    encoded = EncodedQuery(image_q, unit(np.arange(1, 9)), unit(np.arange(4, 0, -1)), MODELS)
    back = EncodedQuery.from_json(json.dumps(encoded.to_json()))
    assert back.query == image_q and np.array_equal(back.siglip, encoded.siglip)
    assert np.array_equal(back.dinov2, encoded.dinov2) and back.models == MODELS
    alert = Alert(
        Alert.make_id("q", "cam", 12.5),
        "q",
        "cam",
        12.5,
        20.0,
        6.25,
        14.0,
        "keyframes/c/1.jpg",
        MODELS,
        status="closed",
        query_text="x",
        verified=True,
    )
    assert Alert.from_json(json.dumps(alert.to_json())) == alert
    assert alert.to_json()["untrained"] is True
    assert Alert.make_id("q", "cam", 12.5) == Alert.make_id("q", "cam", 12.5000001) != Alert.make_id("q", "cam", 12.6)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"id": "q"}, "exactly one of"),
        ({"id": "q", "text": "a", "image": "b.jpg"}, "exactly one of"),
        ({"id": "q", "text": "  "}, "'text'"),
        ({"id": "../q", "text": "a"}, "'id'"),
        ({"id": "q", "text": "a", "calibration": "raw"}, "explicit threshold"),
        ({"id": "q", "text": "a", "calibration": "raw", "threshold": 3}, r"within \[-1, 1\]"),
        ({"id": "q", "image": "a.jpg", "calibration": "prompts", "threshold": 0.1}, "text queries only"),
        ({"id": "q", "text": "a", "cameras": []}, "'cameras'"),
        ({"id": "q", "text": "a", "cameras": ["x", "x"]}, "twice"),
        ({"id": "q", "text": "a", "cooldown": -1}, "'cooldown'"),
        ({"id": "q", "text": "a", "treshold": 1}, "unknown key 'treshold'"),
    ],
)
def test_bad_definitions_are_refused_with_the_field_named(bad, message):
    with pytest.raises(ValueError, match=message):
        StandingQuery.from_json(bad)


def test_encoded_queries_must_match_the_matcher_models():
    m = matcher()
    q = StandingQuery(id="q", text="thing", **RULES)
    with pytest.raises(ValueError, match="encode it again"):
        m.add(EncodedQuery(q, basis(0), None, ModelIds("a", "b")))
    with pytest.raises(ValueError, match="neutral"):
        Matcher(MODELS).add(EncodedQuery(StandingQuery(id="c", text="thing"), basis(0), None, MODELS))


# ------------------------------------------------------------------------------------------ real (tiny) encoders


def test_an_example_image_query_alerts_during_its_scene(tiny_encoders, scene_video):
    from pipeline.media.decode import decode_frames
    from pipeline.search.embed import extract_features

    path, bounds = scene_video
    name, scene_start, scene_end = bounds[3]  # "lobby", [12, 16)
    example = next(f for f in decode_frames(path, fps=25, short_side=None, keyframes_only=False) if f.pts >= 13.9)
    frames = [f for f in decode_frames(path, fps=2, short_side=None, source="cam-7")]
    interval = 0.5
    features = extract_features(FrameBatch(frames), tiny_encoders).features()

    m = Matcher.from_encoders(tiny_encoders, settings=MatchConfig(warmup=8))
    m.add(
        StandingQuery(
            id="lobby", image="examples/lobby.jpg", threshold=3.0, min_duration=1.0, release=1.0, cooldown=30.0
        ),
        image=example.image,
    )
    opened_at = []
    alerts = []
    for f in features:
        new = m.process(f)
        opened_at += [f.pts for a in new if a.status == "open"]
        alerts += new
    alerts += m.flush()
    closed = [a for a in alerts if a.status == "closed"]
    assert len(closed) == 1 and len(opened_at) == 1, alerts
    event = closed[0]
    assert abs(event.start - scene_start) <= interval and abs(event.end - scene_end) <= interval, (event, name)
    assert opened_at[0] - event.start <= 1.0 + interval  # emitted within seconds of the start
    assert scene_start <= event.peak_pts < scene_end and event.untrained and event.query_image

    # a frame identical to the example scores at the top
    (s,), (d,) = tiny_encoders.embed_images(example.image[None])
    same = m.score(FrameFeatures("cam-7", 100.0, s, d))["lobby"]
    others = [m.score(FrameFeatures("cam-7", 100.0, f.siglip, f.dinov2))["lobby"] for f in features]
    assert same >= max(others)
    raw = Matcher(tiny_encoders.ids)
    encoded = m.get("lobby")
    raw.add(
        EncodedQuery(
            StandingQuery(id="r", image="x.jpg", calibration="raw", threshold=0.9),
            encoded.siglip,
            encoded.dinov2,
            tiny_encoders.ids,
        )
    )
    assert raw.score(FrameFeatures("cam-7", 0.0, s, d))["r"] == pytest.approx(1.0, abs=1e-5)
