"""Events of tracked objects in zones and across lines, per object rather than per frame: one `TrackEvents` per
camera, given each frame's tracks (`Tracker.update`) with the frame's pts.

- A zone visit starts with "enter" on the first frame a track's anchor is seen inside, and ends with "leave" on
  the first frame it is seen outside. Once per visit, the first frame seen inside at least `dwell_seconds` after
  the enter gives "dwell".
- A crossing is a change of the side of a line the anchor is settled on: a side counts only once the anchor is
  at least `line_margin` pixels from the line, within the segment's span, so an object jittering on the line
  crosses once or not at all. Leaving the span forgets the side (walking round the line's end is no crossing).
- A lost track (state "lost", reported at a predicted box) is not seen: it keeps its visits and sides as they
  were, and a dwell waits until it is seen again. A track the tracker stops reporting (dropped, or lost longer
  than `track.report_lost_frames`) has left its zones, at the first frame it went unseen; if the tracker
  re-identifies it later, its visits start anew.
- Counts: objects inside each zone now, by class (lost ones included); crossings of each line per direction,
  by class, since the first frame (the state keeps them across restarts).

Events of one frame come in order of track id: first the leaves of tracks no longer reported, then, per seen
track, each zone's event in configuration order, then each line's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from pipeline.config import EventsConfig
from pipeline.records import CROSSING_DIRECTIONS, Track, TrackEvent
from pipeline.tracking.zones import Line, PolygonZone, anchor_points

STATE_VERSION = 1

LEFT, RIGHT = -1, 1  # the side of a line an anchor is settled on


@dataclass
class _Visit:
    entered: float  # pts of the enter
    dwelled: bool = False  # the visit's dwell event is out


@dataclass
class _Whereabouts:
    """What is known of where one reported track is: its zone visits and its settled side of each line."""

    class_id: int
    visits: dict[str, _Visit] = field(default_factory=dict)  # by zone name
    sides: dict[str, int] = field(default_factory=dict)  # by line name: LEFT or RIGHT; absent until settled
    unseen_since: float | None = None  # pts of the first frame it was reported lost, while it is


class TrackEvents:
    """The zone and line events of one camera's tracks (see the module's description)."""

    def __init__(self, camera: str, config: EventsConfig | None = None) -> None:
        self.camera = camera
        self.config = config or EventsConfig()
        self.zones = [PolygonZone.from_config(zone) for zone in self.config.zones if zone.camera in (None, camera)]
        self.lines = [Line.from_config(line) for line in self.config.lines if line.camera in (None, camera)]
        self.pts: float | None = None  # the last frame's
        self._whereabouts: dict[int, _Whereabouts] = {}
        # crossings so far by (line name, direction, class id)
        self._crossings: Counter[tuple[str, str, int]] = Counter()

    def update(self, tracks: Iterable[Track], pts: float) -> list[TrackEvent]:
        """Take one frame's reported tracks and its pts (later than the previous frame's); return its events."""
        pts = float(pts)
        if self.pts is not None and not pts > self.pts:
            raise ValueError(f"frame pts {pts} is not after the previous frame's, {self.pts}")
        self.pts = pts
        reported = {track.track_id: track for track in tracks}
        events = []
        for track_id in sorted(self._whereabouts.keys() - reported.keys()):
            known = self._whereabouts.pop(track_id)
            gone = pts if known.unseen_since is None else known.unseen_since
            for zone, visit in known.visits.items():
                events.append(self._event(track_id, known, "leave", zone, gone, duration=gone - visit.entered))
        for track in reported.values():
            known = self._whereabouts.get(track.track_id)
            if track.state == "lost" and known is not None and known.unseen_since is None:
                known.unseen_since = pts
        seen = sorted((track for track in reported.values() if track.state != "lost"), key=lambda t: t.track_id)
        anchors = anchor_points(np.array([track.box for track in seen]), self.config.anchor)
        inside_masks = [zone.contains(anchors) for zone in self.zones]
        measures = [line.measure(anchors) for line in self.lines]
        for row, track in enumerate(seen):
            known = self._whereabouts.setdefault(track.track_id, _Whereabouts(track.class_id))
            known.unseen_since = None
            for zone, zone_inside in zip(self.zones, inside_masks):
                events.extend(self._zone_events(track.track_id, known, zone.name, bool(zone_inside[row]), pts))
            for line, (distances, positions) in zip(self.lines, measures):
                event = self._crossing(track.track_id, known, line, float(distances[row]), float(positions[row]), pts)
                if event is not None:
                    events.append(event)
        return events

    def inside(self, zone: str, class_id: int | None = None) -> int:
        """Tracked objects in `zone` now (of `class_id` only, if given)."""
        if zone not in {place.name for place in self.zones}:
            raise ValueError(f"no zone {zone!r} on camera {self.camera!r}")
        return sum(zone in known.visits and class_id in (None, known.class_id) for known in self._whereabouts.values())

    def crossed(self, line: str, direction: str | None = None, class_id: int | None = None) -> int:
        """Crossings of `line` so far (in `direction` only, of `class_id` only, if given)."""
        if line not in {place.name for place in self.lines}:
            raise ValueError(f"no line {line!r} on camera {self.camera!r}")
        if direction not in (None, *CROSSING_DIRECTIONS):
            raise ValueError(f"crossing direction must be one of {CROSSING_DIRECTIONS}, got {direction!r}")
        return sum(
            count
            for (name, way, kind), count in self._crossings.items()
            if name == line and direction in (None, way) and class_id in (None, kind)
        )

    def counts(self) -> dict:
        """Every count at once: {"zones": {zone: {class id: inside now}}, "lines": {line: {direction: {class id:
        crossings so far}}}}; every zone and line is there, classes only once counted."""
        zones: dict[str, Counter[int]] = {zone.name: Counter() for zone in self.zones}
        for known in self._whereabouts.values():
            for zone in known.visits:
                zones[zone][known.class_id] += 1
        lines: dict[str, dict[str, dict[int, int]]] = {
            line.name: {way: {} for way in CROSSING_DIRECTIONS if line.counts(way)} for line in self.lines
        }
        for (line, way, class_id), count in sorted(self._crossings.items()):
            lines[line][way][class_id] = count
        return {"zones": {name: dict(sorted(by_class.items())) for name, by_class in zones.items()}, "lines": lines}

    def state(self) -> dict:
        """Everything held, as plain JSON types, for `from_state` (with the tracker's state of the same frame: the
        track ids are its)."""
        return {
            "version": STATE_VERSION,
            "camera": self.camera,
            "pts": self.pts,
            "tracks": [
                {
                    "id": track_id,
                    "class_id": known.class_id,
                    "visits": [
                        {"zone": zone, "entered": visit.entered, "dwelled": visit.dwelled}
                        for zone, visit in known.visits.items()
                    ],
                    "sides": dict(known.sides),
                    "unseen_since": known.unseen_since,
                }
                for track_id, known in self._whereabouts.items()
            ],
            "crossings": [
                {"line": line, "direction": way, "class_id": class_id, "count": count}
                for (line, way, class_id), count in self._crossings.items()
            ],
        }

    @classmethod
    def from_state(cls, config: EventsConfig | None, state: dict) -> TrackEvents:
        """TrackEvents continuing from `state()`. Visits, sides and counts of zones and lines `config` no longer
        has on the camera are dropped; a zone redrawn under the same name keeps its visits, which the next frame
        tests against the new polygon. A state that is not one raises ValueError naming the problem."""
        try:
            return cls._restored(config, state)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a track events state: {type(exc).__name__}: {exc}") from None

    @classmethod
    def _restored(cls, config: EventsConfig | None, state: dict) -> TrackEvents:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"track events state version {state.get('version')!r} is not {STATE_VERSION}")
        events = cls(str(state["camera"]), config)
        events.pts = None if state["pts"] is None else float(state["pts"])
        zones = {zone.name for zone in events.zones}
        lines = {line.name for line in events.lines}
        for track in state["tracks"]:
            unseen_since = track["unseen_since"]
            events._whereabouts[int(track["id"])] = _Whereabouts(
                int(track["class_id"]),
                {
                    visit["zone"]: _Visit(float(visit["entered"]), bool(visit["dwelled"]))
                    for visit in track["visits"]
                    if visit["zone"] in zones
                },
                {line: int(side) for line, side in track["sides"].items() if line in lines},
                None if unseen_since is None else float(unseen_since),
            )
        for crossing in state["crossings"]:
            if crossing["line"] in lines:
                key = (crossing["line"], crossing["direction"], int(crossing["class_id"]))
                events._crossings[key] = int(crossing["count"])
        return events

    def _zone_events(self, track_id: int, known: _Whereabouts, zone: str, inside: bool, pts: float) -> list[TrackEvent]:
        """The event, if any, of a seen track inside or outside `zone`."""
        visit = known.visits.get(zone)
        if inside and visit is None:
            known.visits[zone] = _Visit(pts)
            return [self._event(track_id, known, "enter", zone, pts)]
        if inside and not visit.dwelled and pts - visit.entered >= self.config.dwell_seconds:
            visit.dwelled = True
            return [self._event(track_id, known, "dwell", zone, pts, duration=pts - visit.entered)]
        if not inside and visit is not None:
            del known.visits[zone]
            return [self._event(track_id, known, "leave", zone, pts, duration=pts - visit.entered)]
        return []

    def _crossing(
        self, track_id: int, known: _Whereabouts, line: Line, distance: float, position: float, pts: float
    ) -> TrackEvent | None:
        """The crossing, if any, of a seen track `distance` pixels from `line` at `position` along it."""
        if not 0 <= position <= 1:
            known.sides.pop(line.name, None)
            return None
        if distance == 0 or abs(distance) < self.config.line_margin:
            return None  # on the line, or too near it to say: the side stays what it was
        side = RIGHT if distance > 0 else LEFT
        before = known.sides.get(line.name)
        known.sides[line.name] = side
        if before is None or before == side:
            return None
        direction = "left_to_right" if side == RIGHT else "right_to_left"
        if not line.counts(direction):
            return None
        self._crossings[(line.name, direction, known.class_id)] += 1
        return self._event(track_id, known, "cross", line.name, pts, direction=direction)

    def _event(self, track_id: int, known: _Whereabouts, kind: str, name: str, pts: float, **details) -> TrackEvent:
        return TrackEvent(self.camera, track_id, known.class_id, kind, name, pts, **details)
