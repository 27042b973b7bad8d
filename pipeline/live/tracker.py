"""Live tracking of camera streams (`track.live`): frames in; track events, alerts of queries on tracks and their
thumbnails out.

One `StreamTracker` holds, per camera, the motion detector's background model, a `Tracker` and a `TrackEvents`
(the zones and lines of `events`), plus the standing queries on tracks (`TrackAlerts`). It is given every frame
of its cameras, still ones too (they have pictures): the monitor's sampling rate is the tracker's. The monitor
runs one per analyzer shard, fed the same frames as the shard's analyzer, beside it.

Its state (`state_dict`) is two sections of the shard's checkpoint state: "tracking" (each camera's tracker and
events states) and "track_alerts" (the queries and the tracks they alerted on); `load_state_dict` reads them from
a whole shard state, so `pipeline.live.analyzer.cameras_state` and `merge_states` share them out by camera like
the analyzer's. A restored tracker keeps its tracks with their ids and numbers new ones after them, and skips
frames at or before a camera's last one, so a replay changes nothing. The detector's background model is not in
it (OpenCV's MOG2 cannot be saved): after a restore each camera's detector warms up again (`detect.warmup`
frames), missing every object meanwhile, and with no appearance to re-identify it, an object that has moved off
its lost track's predicted box by then starts a new track.
"""

from __future__ import annotations

import logging

import numpy as np

from pipeline.config import DetectConfig, EventsConfig, TrackConfig
from pipeline.detection.motion import MotionDetector
from pipeline.live.analyzer import StreamOutput, camera_of
from pipeline.live.queries import StandingQuery
from pipeline.live.track_alerts import TrackAlerts
from pipeline.records import FrameBatch, ModelIds
from pipeline.storage.layout import camera_source_id, keyframe_key
from pipeline.tracking.events import TrackEvents
from pipeline.tracking.tracker import Tracker

log = logging.getLogger(__name__)


class StreamTracker:
    def __init__(self, models: ModelIds, track: TrackConfig, detect: DetectConfig, events: EventsConfig):
        self.track, self.detect, self.events = track, detect, events
        self.detector = MotionDetector(detect)  # one background model per camera inside
        self.trackers: dict[str, Tracker] = {}
        self.camera_events: dict[str, TrackEvents] = {}
        self.track_alerts = TrackAlerts(models)

    def process(self, batch: FrameBatch) -> StreamOutput:
        """A batch of frames of any cameras (pts order within each camera)."""
        out = StreamOutput()
        for frame in batch.frames:
            camera = camera_of(frame)
            if camera not in self.trackers:
                self.trackers[camera] = Tracker(self.track)
                self.camera_events[camera] = TrackEvents(camera, self.events)
            events = self.camera_events[camera]
            if events.pts is not None and frame.pts <= events.pts:
                continue  # a replay of a frame already tracked
            (detections,) = self.detector.detect([frame])
            tracks = self.trackers[camera].update(detections)
            happened = events.update(tracks, frame.pts)
            out.track_events += happened
            alerts = self.track_alerts.process(camera, happened, tracks, self.detector.class_names)
            if alerts:
                out.alerts += alerts
                out.thumbnails.append((keyframe_key(camera_source_id(camera), frame.pts), frame.image))
        return out

    def sync_queries(self, stored: list[tuple[StandingQuery, np.ndarray | None]]) -> StreamOutput:
        """Follow the stored standing queries: hold those on tracks (a track query alerts at an event, so none
        has an event open to close). A new one that can never alert says why, once."""
        queries = [query for query, _ in stored if query.kind == "track"]
        held = {query.id for query in self.track_alerts.list()}
        places = {zone.name for zone in self.events.zones} | {line.name for line in self.events.lines}
        for query in queries:
            if query.id not in held and query.track.where not in places:
                log.warning(
                    "standing query %r watches %r, which no zone or line of the events config section is called: "
                    "it cannot alert (they are: %s)",
                    query.id,
                    query.track.where,
                    ", ".join(sorted(places)) or "none",
                )
        self.track_alerts.sync(queries)
        return StreamOutput()

    def state_dict(self) -> dict:
        """The two sections of a shard's checkpoint state this tracker holds."""
        return {
            "tracking": {
                camera: {"tracker": tracker.state(), "events": self.camera_events[camera].state()}
                for camera, tracker in self.trackers.items()
            },
            "track_alerts": self.track_alerts.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Go on from a shard's checkpoint state (its other sections are the analyzer's; a state from before
        tracking was switched on has none of these: every camera's tracks start afresh). The detector starts
        afresh and warms up again."""
        tracking = state.get("tracking", {})
        self.detector = MotionDetector(self.detect)
        self.trackers = {camera: Tracker.from_state(self.track, saved["tracker"]) for camera, saved in tracking.items()}
        self.camera_events = {
            camera: TrackEvents.from_state(self.events, saved["events"]) for camera, saved in tracking.items()
        }
        self.track_alerts.load_state_dict(state.get("track_alerts", {}))

    def forget_cameras(self) -> None:
        """Start every camera afresh (the streams are read again from their start); the queries stay."""
        queries = self.track_alerts.list()
        self.load_state_dict({})
        self.track_alerts.sync(queries)
