"""Standing queries on tracked objects to alerts: one alert per query, camera and track.

A query with a `track` condition (`pipeline.live.queries.TrackCondition`) watches the track events of a camera
(`pipeline.tracking.TrackEvents`): "a person stays in zone A" is `{"event": "dwell", "where": "A", "classes":
["person"]}` with `events.dwell_seconds` the stay; "a red car crosses line L from left to right" is `{"event":
"cross", "where": "L", "classes": ["red car"], "direction": "left_to_right"}` (as seen facing along the line). The
class names are the detector's: the motion detector has one, "moving object"; OWL's are its phrases, which take in
the queries' classes (`pipeline.live.tracker`).

`TrackAlerts.process` takes one frame's track events and tracks and returns an `Alert` for each event a query
accepts, unless the query already alerted on that track: however often a track re-enters a zone or crosses a
line, it makes one alert per query. The event is an instant, so its alert comes once, "closed": start is the
event's pts (for a dwell or a leave, the visit's enter), end the event's pts, the peak score the track's last
detection score, the keyframe the track's thumbnail (the caller's: its best crop so far). Its id is
`Alert.make_id(query, camera, start, track)`: a replay makes the same one.

Memory: per query and camera, the ids of the last `REMEMBERED_TRACKS` tracks alerted (ids only grow, so a track
alerted that many tracks ago has long ended). The state (`state_dict`) holds the queries and those ids, JSON.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

from pipeline.live.queries import StandingQuery
from pipeline.records import Alert, ModelIds, Track, TrackAction, TrackEvent

REMEMBERED_TRACKS = 1000


def class_label(class_id: int, class_names: Sequence[str] = ()) -> str:
    """A class id's name, or "class N" where the detector gave none."""
    return class_names[class_id] if 0 <= class_id < len(class_names) else f"class {class_id}"


class TrackAlerts:
    """The track queries of a set of cameras and the tracks each has alerted on."""

    def __init__(self, models: ModelIds):
        self.models = models
        self._queries: dict[str, StandingQuery] = {}
        self._alerted: dict[tuple[str, str], deque[int]] = {}  # (query id, camera) -> track ids

    def sync(self, queries: Sequence[StandingQuery]) -> None:
        """Hold exactly these track queries; a query dropped or changed forgets the tracks it alerted on."""
        wanted = {query.id: query for query in queries if query.track is not None}
        for key in [key for key in self._alerted if wanted.get(key[0]) != self._queries.get(key[0])]:
            del self._alerted[key]
        self._queries = wanted

    def list(self) -> list[StandingQuery]:
        return list(self._queries.values())

    def process(
        self,
        camera: str,
        events: Sequence[TrackEvent],
        tracks: Sequence[Track],
        *,
        thumbnails: Callable[[int], str] | None = None,
    ) -> list[Alert]:
        """The alerts of one frame of `camera`: its track events (named: `class_name`) and its reported tracks
        (for their boxes and scores). `thumbnails` gives a track's thumbnail key, the alert's keyframe (the caller
        stores it); without it (an external detector's detections, no picture) the keyframe key is empty."""
        if not events or not self._queries:
            return []
        reported = {track.track_id: track for track in tracks}
        alerts = []
        for event in events:
            class_name = event.class_name or class_label(event.class_id)
            for query in self._queries.values():
                condition = query.track
                if not query.watches(camera) or not condition.accepts(
                    event.kind, event.name, event.direction, class_name
                ):
                    continue
                alerted = self._alerted.setdefault((query.id, camera), deque(maxlen=REMEMBERED_TRACKS))
                if event.track_id in alerted:
                    continue
                alerted.append(event.track_id)
                keyframe = thumbnails(event.track_id) if thumbnails is not None else ""
                alerts.append(self._alert(query, camera, event, class_name, reported.get(event.track_id), keyframe))
        return alerts

    def _alert(
        self,
        query: StandingQuery,
        camera: str,
        event: TrackEvent,
        class_name: str,
        track: Track | None,
        keyframe: str,
    ) -> Alert:
        start = event.pts - (event.duration or 0.0)
        action = TrackAction(
            event.track_id,
            class_name,
            event.kind,
            event.name,
            event.direction,
            event.duration,
            None if track is None else tuple(round(float(v), 2) for v in track.box),  # as its JSON has it
        )
        return Alert(
            id=Alert.make_id(query.id, camera, start, event.track_id),
            query_id=query.id,
            camera=camera,
            start=start,
            end=event.pts,
            peak_score=0.0 if track is None else float(track.score),
            peak_pts=event.pts,
            keyframe_key=keyframe,
            models=self.models,
            status="closed",
            track=action,
        )

    def state_dict(self) -> dict:
        return {
            "queries": [query.to_json() for query in self._queries.values()],
            "alerted": [
                {"query": query_id, "camera": camera, "tracks": list(tracks)}
                for (query_id, camera), tracks in self._alerted.items()
            ],
        }

    def load_state_dict(self, state: dict) -> None:
        self._queries = {}
        self.sync([StandingQuery.from_json(query) for query in state.get("queries", [])])
        self._alerted = {
            (entry["query"], entry["camera"]): deque((int(t) for t in entry["tracks"]), maxlen=REMEMBERED_TRACKS)
            for entry in state.get("alerted", [])
            if entry["query"] in self._queries
        }
