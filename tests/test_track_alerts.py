"""Standing queries on tracks: their definition, `TrackAlerts` on given track events (one alert per query, camera
and track), and `vigil query add --track`. The analyzer running them on generated footage: tests/test_live_tracking.py.
"""

from __future__ import annotations

import json

import pytest

from jobs.cli import main
from pipeline.live import track_alerts as track_alerts_module
from pipeline.live.queries import StandingQuery, load_queries
from pipeline.live.track_alerts import TrackAlerts
from pipeline.records import Alert, ModelIds, Track, TrackEvent
from pipeline.storage.store import LocalStore
from tests.test_hardening_store import one_line_error

MODELS = ModelIds("siglip-test", "dinov2-test", untrained=True)
CLASSES = ["person", "car"]


def query(query_id: str, cameras=None, **track) -> StandingQuery:
    return StandingQuery.from_json({"id": query_id, "cameras": cameras, "track": track})


def track(track_id: int, class_id: int = 0, score: float = 0.8) -> Track:
    x = 10.0 * track_id
    return Track(track_id, (x, 20.0, x + 30.0, 90.0), score, class_id, frame=1, hits=3, age=3)


def crossing(track_id: int, pts: float, class_id: int = 0, direction: str = "left_to_right") -> TrackEvent:
    return TrackEvent(
        "gate", track_id, class_id, "cross", "door", pts, direction=direction, class_name=CLASSES[class_id]
    )


def test_a_track_query_is_validated_and_round_trips():
    made = query("red-car", event="cross", where="L", classes=["car"], direction="left_to_right")
    assert made.kind == "track" and made.track.classes == ("car",)
    assert StandingQuery.from_json(json.loads(json.dumps(made.to_json()))) == made
    text = StandingQuery.from_json({"id": "fence", "text": "a person at the fence"})
    assert text.track is None and StandingQuery.from_json(text.to_json()) == text


@pytest.mark.parametrize(
    "definition, problem",
    [
        ({"text": "a car", "track": {"event": "enter", "where": "A"}}, "exactly one of 'text', 'image' or 'track'"),
        ({"track": {"event": "enter", "where": "A", "direction": "left_to_right"}}, "'cross' events only"),
        ({"track": {"event": "stay", "where": "A"}}, "'track.event'"),
        ({"track": {"event": "enter"}}, "'track.where': Field required"),
        ({"track": {"event": "enter", "where": "A", "classes": "person"}}, "list of class names"),
        ({"track": {"event": "enter", "where": "A", "colour": "red"}}, "unknown key 'track.colour'"),
    ],
)
def test_a_bad_track_query_says_what_is_wrong(definition, problem):
    with pytest.raises(ValueError, match="invalid standing query") as caught:
        StandingQuery.from_json({"id": "q", **definition})
    assert problem in str(caught.value) and "\n" not in str(caught.value)


def test_each_query_alerts_once_per_track_whatever_it_does_again():
    alerts = TrackAlerts(MODELS)
    alerts.sync(
        [query("door", event="cross", where="door"), query("cars", event="cross", where="door", classes=["car"])]
    )
    # two people cross in one frame: two alerts, with ids of their own; the car only alerts the car query too
    first = alerts.process("gate", [crossing(1, 5.0), crossing(2, 5.0)], [track(1), track(2)])
    assert [(a.query_id, a.track.track_id) for a in first] == [("door", 1), ("door", 2)]
    assert len({a.id for a in first}) == 2
    assert first[0].id == Alert.make_id("door", "gate", 5.0, 1)
    back = alerts.process("gate", [crossing(1, 9.0, direction="right_to_left")], [track(1)])
    assert back == []  # track 1 again: no second alert
    car = alerts.process("gate", [crossing(3, 12.0, class_id=1)], [track(3, class_id=1, score=0.6)])
    assert [(a.query_id, a.track.class_name, a.peak_score) for a in car] == [("door", "car", 0.6), ("cars", "car", 0.6)]
    (alert,) = first[:1]
    assert (alert.status, alert.start, alert.end, alert.peak_pts) == ("closed", 5.0, 5.0, 5.0)
    assert alert.track.box == (10.0, 20.0, 40.0, 90.0) and alert.models == MODELS
    assert Alert.from_json(json.loads(json.dumps(alert.to_json()))) == alert


def test_direction_camera_and_dwell():
    alerts = TrackAlerts(MODELS)
    alerts.sync(
        [
            query("inbound", event="cross", where="door", direction="right_to_left"),
            query("yard-only", cameras=["yard"], event="cross", where="door"),
            query("loiter", event="dwell", where="door"),
        ]
    )
    assert alerts.process("gate", [crossing(1, 5.0)], [track(1)]) == []  # left to right, on the gate
    (inbound,) = alerts.process("gate", [crossing(2, 6.0, direction="right_to_left")], [track(2)])
    assert inbound.query_id == "inbound"
    dwell = TrackEvent("gate", 4, 0, "dwell", "door", 70.0, duration=31.5)  # unnamed: its class id stands in
    (loiter,) = alerts.process("gate", [dwell], [])  # no longer reported: no box
    assert (loiter.start, loiter.end, loiter.track.duration, loiter.track.box) == (38.5, 70.0, 31.5, None)
    assert loiter.track.sentence() == "class 0 #4 stayed 32 s in door"


def test_the_state_round_trips_and_stays_bounded(monkeypatch):
    monkeypatch.setattr(track_alerts_module, "REMEMBERED_TRACKS", 3)
    alerts = TrackAlerts(MODELS)
    alerts.sync([query("door", event="cross", where="door")])
    for track_id in range(1, 6):
        assert len(alerts.process("gate", [crossing(track_id, float(track_id))], [track(track_id)])) == 1
    state = json.loads(json.dumps(alerts.state_dict()))
    assert state["alerted"] == [{"query": "door", "camera": "gate", "tracks": [3, 4, 5]}]
    restored = TrackAlerts(MODELS)
    restored.load_state_dict(state)
    assert restored.list() == alerts.list() and restored.state_dict() == state
    assert restored.process("gate", [crossing(5, 9.0)], [track(5)]) == []


def test_vigil_query_add_track(tmp_path, capsys):
    store = tmp_path / "store"
    argv = ["query", "add", "red-car", "--track", "cross", "--where", "L", "--class", "car", "--store", store]
    assert main([*map(str, argv), "--direction", "left_to_right", "--camera", "gate"]) == 0
    ((saved, image),) = load_queries(LocalStore(store))
    assert image is None and saved == query(
        "red-car", cameras=["gate"], event="cross", where="L", classes=["car"], direction="left_to_right"
    )
    capsys.readouterr()
    for bad, problem in [
        (["q", "--track", "enter"], "--track needs --where"),
        (["q", "a car", "--track", "enter", "--where", "A"], "one of them"),
        (["q", "a car", "--where", "A"], "go with --track"),
        (["q", "--track", "enter", "--where", "A", "--direction", "left_to_right"], "'cross' events only"),
    ]:
        assert main(["query", "add", *bad, "--store", str(store)]) == 2
        one_line_error(capsys.readouterr().err, problem)
    assert len(load_queries(LocalStore(store))) == 1  # nothing refused was written
