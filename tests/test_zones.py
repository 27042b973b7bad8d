"""Zone and line events of tracks (pipeline/tracking/events.py, zones.py) on generated scenes whose events are
known to the frame: walks through a zone, stays shorter and longer than the dwell time, crossings both ways,
jitter on a line, lost and dropped tracks, counts per class, the state through JSON, and the real tracker."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.config import ConfigError, EventsConfig, load_config
from pipeline.tracking import (
    Detections,
    Line,
    PolygonZone,
    Track,
    Tracker,
    TrackEvent,
    TrackEvents,
    anchor_points,
)

STEP = 0.25  # seconds between frames: exact in binary, so pts differences are exact too
SQUARE = [[100, 100], [300, 100], [300, 300], [100, 300]]
# from (0, 200) to (400, 200): facing along it (to the right on the picture), below (larger y) is its right side
ACROSS = [[0, 200], [400, 200]]


def pts(frame: int) -> float:
    return frame * STEP


def feet_box(x: float, y: float) -> tuple[float, float, float, float]:
    """A person's box (20 x 60 px) standing with its feet, the bottom centre, at (x, y)."""
    return (x - 10.0, y - 60.0, x + 10.0, y)


def config(**settings) -> EventsConfig:
    zones = settings.pop("zones", [{"name": "square", "polygon": SQUARE}])
    lines = settings.pop("lines", [{"name": "across", "points": ACROSS}])
    return EventsConfig.model_validate({"zones": zones, "lines": lines, **settings})


def run(events: TrackEvents, paths: dict[int, dict[int, tuple[float, float]]], frames: range, classes=None):
    """Feed `events` the tracks of `paths` (track id -> {frame: feet x, y}, present only in its frames); return
    every event."""
    out = []
    for frame in frames:
        tracks = [
            Track(track_id, feet_box(*path[frame]), 0.9, (classes or {}).get(track_id, 0), frame, frame, frame)
            for track_id, path in paths.items()
            if frame in path
        ]
        out += events.update(tracks, pts(frame))
    return out


def of(events: list[TrackEvent], track_id: int, kind: str | None = None) -> list[TrackEvent]:
    return [event for event in events if event.track_id == track_id and kind in (None, event.kind)]


def test_walks_through_a_zone_enter_and_leave_on_the_first_frames_inside_and_outside():
    # Feet at x = start + speed * frame along a row; inside the square is 100 < x < 300 and 100 < y < 300.
    walks = {1: (3.0, 7.0, 150.0), 2: (401.0, -4.0, 250.0), 3: (-20.0, 6.5, 120.0), 4: (1.0, 5.0, 350.0)}
    paths = {
        track_id: {frame: (start + speed * frame, y) for frame in range(1, 121)}
        for track_id, (start, speed, y) in walks.items()
    }
    out = run(TrackEvents("gate", config()), paths, range(1, 121))
    for track_id, (start, speed, y) in walks.items():
        inside = [frame for frame in range(1, 121) if 100 < start + speed * frame < 300 and 100 < y < 300]
        if not inside:  # track 4 walks below the square
            assert of(out, track_id) == []
            continue
        enter, leave = pts(inside[0]), pts(inside[-1] + 1)
        assert of(out, track_id) == [
            TrackEvent("gate", track_id, 0, "enter", "square", enter),
            TrackEvent("gate", track_id, 0, "leave", "square", leave, duration=leave - enter),
        ]


def test_the_feet_place_an_object_not_its_box_centre():
    # The box reaches into the square from below, its feet stay outside; with the centre anchor it is inside.
    paths = {1: {frame: (200.0, 320.0) for frame in range(1, 5)}}
    assert run(TrackEvents("gate", config()), paths, range(1, 5)) == []
    centred = run(TrackEvents("gate", config(anchor="center")), paths, range(1, 5))
    assert [(event.kind, event.pts) for event in centred] == [("enter", pts(1))]
    assert anchor_points(np.array([[0, 0, 20, 60]])).tolist() == [[10, 60]]


def test_a_concave_zone_contains_exactly_the_points_of_its_two_rectangles():
    # An L: the rectangle [0, 100] x [0, 40] and [0, 40] x [0, 100]; points on no edge, drawn at random.
    zone = PolygonZone("l", [[0, 0], [100, 0], [100, 40], [40, 40], [40, 100], [0, 100]])
    points = np.random.default_rng(1).uniform(-20, 120, (5000, 2)) + 0.123
    x, y = points.T
    truth = ((0 < x) & (x < 100) & (0 < y) & (y < 40)) | ((0 < x) & (x < 40) & (0 < y) & (y < 100))
    assert np.array_equal(zone.contains(points), truth)
    assert zone.contains(np.zeros((0, 2))).shape == (0,)


def test_one_dwell_event_per_visit_at_the_dwell_time_and_none_for_a_shorter_stay():
    # Track 1 stands in the square from frame 10 to 69 (15 s), track 2 from 10 to 29 (5 s); dwell: 10 s.
    still = {frame: (200.0, 200.0) for frame in range(10, 70)}
    short = {frame: (150.0, 150.0) for frame in range(10, 30)}
    short.update({frame: (50.0, 150.0) for frame in range(30, 70)})  # then steps out
    out = run(TrackEvents("gate", config(dwell_seconds=10)), {1: still, 2: short}, range(1, 75))
    assert of(out, 1) == [
        TrackEvent("gate", 1, 0, "enter", "square", pts(10)),
        TrackEvent("gate", 1, 0, "dwell", "square", pts(10) + 10, duration=10.0),
        # dropped after frame 69: it left at the first frame without it
        TrackEvent("gate", 1, 0, "leave", "square", pts(70), duration=pts(70) - pts(10)),
    ]
    assert [event.kind for event in of(out, 2)] == ["enter", "leave"]
    assert of(out, 2, "leave")[0].pts == pts(30)


def test_crossings_both_ways_are_counted_per_direction_and_only_the_configured_ones_emitted():
    # Track 1 walks down across the line (left to right: below is its right), track 2 up, track 3 down then back
    # up; track 4 walks down beyond the line's end (x 450): no crossing.
    def vertical(x, y0, speed, turn=None):
        return {f: (x, y0 + speed * (f if turn is None or f <= turn else 2 * turn - f)) for f in range(1, 81)}

    paths = {
        1: vertical(50, 100, 3),
        2: vertical(150, 320, -3),
        3: vertical(250, 110, 3, turn=40),
        4: vertical(450, 100, 3),
    }
    lines = [{"name": "across", "points": ACROSS}, {"name": "down", "points": ACROSS, "direction": "left_to_right"}]
    events = TrackEvents("gate", config(zones=[], lines=lines, line_margin=8))
    out = run(events, paths, range(1, 81))

    def first(track_id, test):
        y = {f: paths[track_id][f][1] for f in range(1, 81)}
        return pts(next(f for f in range(2, 81) if test(y[f])))

    expected_both = [
        (1, "left_to_right", first(1, lambda y: y >= 208)),
        (2, "right_to_left", first(2, lambda y: y <= 192)),
        (3, "left_to_right", first(3, lambda y: y >= 208)),
        (3, "right_to_left", pts(next(f for f in range(41, 81) if paths[3][f][1] <= 192))),
    ]
    crossings = [(event.track_id, event.direction, event.pts) for event in out if event.name == "across"]
    assert sorted(crossings) == sorted(expected_both)
    assert sorted((event.track_id, event.direction) for event in out if event.name == "down") == [
        (1, "left_to_right"),
        (3, "left_to_right"),
    ]
    assert events.crossed("across", "left_to_right") == 2 and events.crossed("across", "right_to_left") == 2
    assert events.crossed("across") == 4 and events.crossed("down") == 2
    assert events.counts()["lines"] == {
        "across": {"left_to_right": {0: 2}, "right_to_left": {0: 2}},
        "down": {"left_to_right": {0: 2}},
    }


def test_jitter_on_a_line_is_one_crossing_not_many():
    # Walks down to the line, stands on it for 100 frames jittering 6 px either side, walks on down.
    rng = np.random.default_rng(3)
    ys = [150.0 + 2 * f for f in range(25)]  # 150 .. 198
    ys += list(200 + rng.uniform(-6, 6, 100))
    ys += [200.0 + 2 * f for f in range(1, 30)]  # 202 .. 258
    path = {frame: (200.0, y) for frame, y in enumerate(ys, 1)}
    events = TrackEvents("gate", config(zones=[], line_margin=8))
    out = run(events, {7: path}, range(1, len(ys) + 1))
    settled = next(frame for frame, (_, y) in path.items() if frame > 125 and y >= 208)
    assert out == [TrackEvent("gate", 7, 0, "cross", "across", pts(settled), direction="left_to_right")]
    # without the margin the same walk crosses again and again
    naive = run(TrackEvents("gate", config(zones=[], line_margin=0)), {7: path}, range(1, len(ys) + 1))
    assert len(naive) > 10


def test_counts_per_class_and_zone_are_the_objects_inside_now():
    # Tracks 1-3 (class 0) and 4-5 (class 2) stand in the square, track 6 (class 0) outside; 1 and 4 leave later.
    spots = {1: (150, 150), 2: (160, 160), 3: (170, 170), 4: (180, 180), 5: (190, 190), 6: (50, 50)}
    classes = {1: 0, 2: 0, 3: 0, 4: 2, 5: 2, 6: 0}
    paths = {track_id: {frame: spot for frame in range(1, 11)} for track_id, spot in spots.items()}
    for track_id in (1, 4):
        paths[track_id].update({frame: (400.0, 400.0) for frame in range(6, 11)})
    events = TrackEvents("gate", config())
    run(events, paths, range(1, 6), classes)
    assert (events.inside("square"), events.inside("square", 0), events.inside("square", 2)) == (5, 3, 2)
    run(events, paths, range(6, 11), classes)
    assert events.counts()["zones"] == {"square": {0: 2, 2: 1}}
    assert events.inside("square", 1) == 0
    with pytest.raises(ValueError, match="no zone 'nowhere' on camera 'gate'"):
        events.inside("nowhere")


def test_a_lost_track_stays_in_its_zone_until_dropped_and_leaves_when_it_went_unseen():
    # Seen inside at frames 1-5, reported lost (at predictions drifting out) at 6-8, absent from 9: it leaves at 6.
    events = TrackEvents("gate", config())
    seen = [events.update([Track(1, feet_box(150, 150), 0.9, 0, f, f, f)], pts(f)) for f in range(1, 6)]
    assert [event.kind for frame in seen for event in frame] == ["enter"]
    for frame in range(6, 9):
        assert (
            events.update([Track(1, feet_box(350 + 50 * frame, 150), 0.9, 0, frame, 5, frame, "lost")], pts(frame))
            == []
        )
        assert events.inside("square") == 1
    assert events.update([], pts(9)) == [TrackEvent("gate", 1, 0, "leave", "square", pts(6), duration=pts(6) - pts(1))]
    assert events.inside("square") == 0
    # lost, then seen again inside: one visit throughout
    events.update([Track(2, feet_box(150, 150), 0.9, 0, 10, 1, 1)], pts(10))
    events.update([Track(2, feet_box(500, 150), 0.9, 0, 11, 1, 2, "lost")], pts(11))
    assert events.update([Track(2, feet_box(152, 150), 0.9, 0, 12, 2, 3)], pts(12)) == []


def test_the_state_round_trips_through_json_and_continues_identically():
    rng = np.random.default_rng(11)
    paths = {
        track_id: {
            frame: (x0 + vx * frame + rng.normal(0, 2), y0 + vy * frame + rng.normal(0, 2))
            for frame in range(first, last)
        }
        for track_id, (x0, y0, vx, vy, first, last) in enumerate(
            [
                (0, 150, 4, 0.5, 1, 90),
                (300, 50, -1, 3, 5, 120),
                (200, 200, 0.1, 0.1, 1, 120),
                (50, 350, 2, -3, 20, 110),
            ],
            1,
        )
    }
    classes = {1: 0, 2: 1, 3: 0, 4: 1}
    settings = config(
        dwell_seconds=5,
        lines=[{"name": "across", "points": ACROSS}, {"name": "post", "points": [[200, 0], [200, 400]]}],
    )
    whole = TrackEvents("gate", settings)
    expected = run(whole, paths, range(1, 120), classes)
    first = TrackEvents("gate", settings)
    got = run(first, paths, range(1, 60), classes)
    restored = TrackEvents.from_state(settings, json.loads(json.dumps(first.state())))
    assert restored.state() == first.state()
    got += run(restored, paths, range(60, 120), classes)
    assert got == expected and len({event.kind for event in expected}) == 4
    assert restored.counts() == whole.counts()
    with pytest.raises(ValueError, match="version"):
        TrackEvents.from_state(settings, {"version": 99})
    with pytest.raises(ValueError, match="not a track events state"):
        TrackEvents.from_state(settings, {"version": 1, "camera": "gate", "pts": 1.0})


def test_a_restored_state_drops_zones_and_lines_no_longer_configured():
    events = TrackEvents("gate", config())
    run(events, {1: {f: (150.0, 150 + 10.0 * f) for f in range(1, 10)}}, range(1, 10))
    assert events.inside("square") == 1 and events.crossed("across") == 1
    restored = TrackEvents.from_state(config(zones=[], lines=[]), json.loads(json.dumps(events.state())))
    assert restored.counts() == {"zones": {}, "lines": {}}
    assert restored.update([], pts(10)) == []


def test_frames_must_come_in_pts_order():
    events = TrackEvents("gate", config())
    events.update([], 1.0)
    with pytest.raises(ValueError, match="not after the previous frame's"):
        events.update([], 1.0)


def test_zones_and_lines_of_another_camera_are_not_there():
    settings = config(
        zones=[{"name": "a", "polygon": SQUARE, "camera": "shop"}, {"name": "b", "polygon": SQUARE}],
        lines=[{"name": "a", "points": ACROSS, "camera": "gate"}],
    )
    assert [zone.name for zone in TrackEvents("shop", settings).zones] == ["a", "b"]
    assert [zone.name for zone in TrackEvents("gate", settings).zones] == ["b"]
    assert [line.name for line in TrackEvents("gate", settings).lines] == ["a"]
    assert TrackEvents("shop", settings).lines == []


def test_through_the_tracker_each_walker_enters_leaves_and_crosses_once():
    # Generated detections (1 px noise) of walkers through the square and across the line, tracked for real.
    rng = np.random.default_rng(5)
    walkers = [
        ((20.0, 150.0), (4.0, 0.0)),
        ((380.0, 260.0), (-4.0, 0.0)),
        ((240.0, 60.0), (0.0, 3.0)),
        ((30.0, 380.0), (0.5, -3.0)),
    ]
    tracker, events = Tracker(), TrackEvents("gate", config(line_margin=4))
    out = []
    for frame in range(1, 111):
        feet = [np.array(start) + np.array(velocity) * frame for start, velocity in walkers]
        boxes = np.array([feet_box(*point) for point in feet]) + rng.normal(0, 1, (len(walkers), 4))
        out += events.update(tracker.update(Detections(boxes, np.full(len(walkers), 0.9))), pts(frame))
    by_track = {track_id: [(e.kind, e.name, e.direction) for e in of(out, track_id)] for track_id in (1, 2, 3, 4)}
    assert by_track[1] == [("enter", "square", None), ("leave", "square", None)]
    assert by_track[2] == [("enter", "square", None), ("leave", "square", None)]
    assert by_track[3] == [("enter", "square", None), ("cross", "across", "left_to_right"), ("leave", "square", None)]
    assert by_track[4] == [("cross", "across", "right_to_left")]
    # within a frame of the truth: the Kalman-filtered box trails the detections a little
    assert abs(of(out, 1, "enter")[0].pts - pts(21)) <= STEP and abs(of(out, 1, "leave")[0].pts - pts(70)) <= STEP


def test_track_events_are_records_of_json():
    event = TrackEvent("gate", 3, 1, "dwell", "square", 12.5, duration=10.0)
    assert TrackEvent.from_json(json.dumps(event.to_json())) == event
    with pytest.raises(ValueError, match="cross events need a direction"):
        TrackEvent("gate", 3, 1, "cross", "across", 1.0)
    with pytest.raises(ValueError, match="enter events take no duration"):
        TrackEvent("gate", 3, 1, "enter", "square", 1.0, duration=2.0)
    with pytest.raises(ValueError, match="kind"):
        TrackEvent("gate", 3, 1, "loiter", "square", 1.0)


def test_the_events_section_is_empty_by_default_and_its_mistakes_are_named(tmp_path):
    assert load_config().events == EventsConfig()
    cases = [
        ("zones: [{name: z, polygon: [[0, 0], [1, 1]]}]", r"'events.zones.0.polygon'.*at least 3 points"),
        ("zones: [{name: z, polygon: [[0, 0], [1, 1], [2, 2]]}]", r"'events.zones.0.polygon'.*one line"),
        ("zones: [{name: z, polygon: [[0, 0], [1], [2, 2]]}]", r"'events.zones.0.polygon.1'"),
        ("lines: [{name: l, points: [[5, 5], [5, 5]]}]", r"'events.lines.0.points'.*2 distinct points"),
        ("lines: [{name: l, points: [[5, 5]]}]", r"'events.lines.0.points'"),
        ("lines: [{name: l, points: [[0, 0], [1, 1]], direction: up}]", r"'events.lines.0.direction'"),
        (
            "zones: [{name: z, polygon: [[0, 0], [9, 0], [0, 9]]}, {name: z, polygon: [[0, 0], [9, 0], [0, 9]]}]",
            r"'events.zones'.*'z' is given twice",
        ),
        ("dwell_seconds: 0", r"'events.dwell_seconds'"),
    ]
    for number, (section, message) in enumerate(cases):
        path = tmp_path / f"c{number}.yaml"
        path.write_text("events:\n  " + section + "\n")
        with pytest.raises(ConfigError, match=message):
            load_config(path)
    # one name on two different cameras is no clash
    triangle = "polygon: [[0, 0], [9, 0], [0, 9]]"
    two = f"zones: [{{name: z, {triangle}, camera: a}}, {{name: z, {triangle}, camera: b}}]"
    (tmp_path / "two.yaml").write_text("events:\n  " + two + "\n")
    assert len(load_config(tmp_path / "two.yaml").events.zones) == 2


def test_geometry_refuses_degenerate_shapes():
    with pytest.raises(ValueError, match="at least 3 points"):
        PolygonZone("z", [[0, 0], [1, 1]])
    with pytest.raises(ValueError, match="2 distinct points"):
        Line("l", (1, 1), (1, 1))
    distances, positions = Line("l", (0, 0), (10, 0)).measure(np.array([[5, 3], [5, -3], [20, 0]]))
    assert distances.tolist() == [3, -3, 0] and positions.tolist() == [0.5, 0.5, 2.0]
