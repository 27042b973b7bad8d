"""Live tracking of camera streams (`track.live`): frames in; track events, alerts of queries on tracks and their
thumbnails, and the tracks it let go (`EndedTrack`s, for the track index) out.

One `StreamTracker` holds, per camera, the motion detector's background model, a `Tracker` and a `TrackEvents` (the
zones and lines of `events`), plus the standing queries on tracks (`TrackAlerts`). It is given every frame of its
cameras, still ones too (they have pictures), and tracks at most `detect.rate` of them per second of each camera's
media time. A monitor's embedded sources are sampled at `detect.rate` when it is above `decode.fps`, the frames
between the models' marked `tracker_only`; Kafka frames come at the producer's rate, the most it can get. The
monitor runs one per analyzer shard, fed the same frames as the shard's analyzer, beside it. An external detector's
frames are each tracked.

The motion detector's boxes are the detections, unless a heavier `detector` is given (`detect.kind: owl`): then
motion gates it, as in an NVR: it looks only at frames in which something moves or a camera still holds tracks
(an object standing still in a zone stays tracked), all of a batch's in one call. Given a DINOv2 `encoder`
(`track.appearance`, either detector), each detection gets the appearance of its crop, all of a batch's crops in
one call, and lost tracks are re-identified by it (a restart's warm-up too).

Each track held has a `TrackedObject`: its first and last detection, its best crop (the thumbnail of its alerts)
and the sum of its appearance vectors. When the tracker lets the track go (lost past `track.reid_frames`: its id
never comes back), the object leaves as an `EndedTrack` if it has appearance, and is forgotten: memory stays with
the tracks held.

Its state (`state_dict`) is three sections of the shard's checkpoint state: "tracking" (each camera's tracker and
events states and its objects but their crops: a restored track's next detection is its best), "track_alerts" (the
queries and the tracks they alerted on) and "track_classes" (the detector's class names, whose ids the tracks carry:
an owl detector is prompted with the queries' classes too, after its configured phrases); `load_state_dict` reads
them from a whole shard state, so `pipeline.live.analyzer. cameras_state` and `merge_states` share them out by
camera like the analyzer's. A restored tracker keeps its tracks with their ids and numbers new ones after them, and
skips frames at or before a camera's last one, so a replay changes nothing. The motion detector's background model
is not in it (OpenCV's MOG2 cannot be saved): after a restore each camera's motion detector warms up again
(`detect.warmup` frames), missing every object meanwhile (the gate lets every frame through to a heavier detector
meanwhile); an object that has moved off its lost track's predicted box by then takes its id back only by
appearance, and else starts a new track.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from pipeline.config import DetectConfig, EventsConfig, TrackConfig, VigilConfig
from pipeline.detection import CropEncoder, Detector, MotionDetector, build_detector, crop_appearance
from pipeline.live.analyzer import StreamOutput, camera_of
from pipeline.live.queries import StandingQuery
from pipeline.live.track_alerts import TrackAlerts, class_label
from pipeline.media.decode import SamplingGrid
from pipeline.models import Dinov2Encoder, resolve_models
from pipeline.records import DetectionFrame, Detections, Frame, FrameBatch, ModelIds, Track, TrackEvent
from pipeline.storage.layout import camera_source_id, live_track_thumb_key
from pipeline.tracking import EndedTrack, TrackedObject, Tracker, TrackEvents, add_sightings

log = logging.getLogger(__name__)


class StreamTracker:
    def __init__(
        self,
        models: ModelIds,
        track: TrackConfig,
        detect: DetectConfig,
        events: EventsConfig,
        *,
        detector: Detector | None = None,
        encoder: CropEncoder | None = None,
    ):
        """`detector`: a heavier detector than motion, which motion gates; `encoder`: appearance per detection."""
        self.track, self.detect, self.events = track, detect, events
        self.motion = MotionDetector(detect)  # one background model per camera inside
        self.detector, self.encoder = detector, encoder
        self.trackers: dict[str, Tracker] = {}
        self.camera_events: dict[str, TrackEvents] = {}
        self.track_alerts = TrackAlerts(models)
        # camera: track id: what each confirmed track so far showed (its times, best crop, appearance sum)
        self.objects: dict[str, dict[int, TrackedObject]] = {}
        self._tentative: dict[str, dict[int, TrackedObject]] = {}  # the same of the tentative tracks
        self._grids: dict[str, SamplingGrid] = {}  # camera: the detector's rate over its frames

    @classmethod
    def from_config(cls, config: VigilConfig, models: ModelIds, *, encoder: CropEncoder | None = None) -> StreamTracker:
        """The tracker `config` describes: with `detect.kind: owl` the OWL detector, gated by motion, else the
        motion detector's boxes; with `track.appearance` each detection's appearance by `encoder`, by default the
        DINOv2 of `config.models` loaded here."""
        owl = config.detect.kind == "owl"
        if config.track.appearance and encoder is None:
            encoder = Dinov2Encoder.from_pretrained(
                resolve_models(config.models).dinov2,
                device=config.device,
                precision=config.precision,
                batch_size=config.batch_size,
            )
        return cls(
            models,
            config.track,
            config.detect,
            config.events,
            detector=build_detector(config.detect, device=config.device, batch_size=config.batch_size) if owl else None,
            encoder=encoder if config.track.appearance else None,
        )

    @property
    def class_names(self) -> list[str]:
        return (self.detector or self.motion).class_names

    def process(self, batch: FrameBatch) -> StreamOutput:
        """A batch of frames of any cameras (pts order within each camera)."""
        frames = [frame for frame in batch.frames if self._is_new(camera_of(frame), frame.pts) and self._due(frame)]
        out = StreamOutput()
        for frame, detections in zip(frames, self._detections(frames)):
            camera = camera_of(frame)
            # tentative tracks too, so that a track's every detection counts in its crop and appearance
            reported = self.trackers[camera].update(detections, include_tentative=True)
            objects = self.objects[camera]
            self._tentative[camera] = add_sightings(
                objects, self._tentative.get(camera, {}), frame, detections, reported
            )
            tracks = [track for track in reported if track.state != "tentative"]
            happened = self._events(out, camera, frame.pts, tracks, self.class_names)
            sid = camera_source_id(camera)

            def thumbnail_key(track_id: int, objects=objects, sid=sid) -> str:
                seen = objects.get(track_id)
                return (
                    "" if seen is None or seen.best_crop is None else live_track_thumb_key(sid, track_id, seen.best_pts)
                )

            alerts = self.track_alerts.process(camera, happened, tracks, thumbnails=thumbnail_key)
            out.alerts += alerts
            out.thumbnails += [(a.keyframe_key, objects[a.track.track_id].best_crop) for a in alerts if a.keyframe_key]
            out.ended_tracks += self._let_go(camera)
        return out

    def process_detections(self, frames: Sequence[DetectionFrame]) -> StreamOutput:
        """Frames of an external detector's detections (`vigil.detections`), of any cameras (pts order within
        each camera). They carry no picture: their alerts have no thumbnail (an empty keyframe key), and their
        tracks go to no track index."""
        out = StreamOutput()
        for frame in frames:
            if self._is_new(frame.camera, frame.pts):
                tracks = self.trackers[frame.camera].update(frame.detections)
                happened = self._events(out, frame.camera, frame.pts, tracks, frame.classes)
                out.alerts += self.track_alerts.process(frame.camera, happened, tracks)
        return out

    def _events(
        self, out: StreamOutput, camera: str, pts: float, tracks: list[Track], class_names: Sequence[str]
    ) -> list[TrackEvent]:
        """One frame's tracks through its camera's events, named by `class_names` (also in `out`: stored, they
        keep what each object was)."""
        happened = [
            replace(event, class_name=class_label(event.class_id, class_names))
            for event in self.camera_events[camera].update(tracks, pts)
        ]
        out.track_events += happened
        return happened

    def _let_go(self, camera: str) -> list[EndedTrack]:
        """The objects of the tracks `camera`'s tracker let go, forgotten here: memory stays with the tracks it
        holds. Those with appearance are the track index's."""
        objects = self.objects[camera]
        ended = [objects.pop(track_id) for track_id in sorted(objects.keys() - self.trackers[camera].held_ids())]
        if self.encoder is None:
            return []
        return [
            EndedTrack(
                camera,
                tracked,
                class_label(tracked.class_id, self.class_names),
                self.encoder.model_id,
                self.encoder.untrained,
            )
            for tracked in ended
            if tracked.appearance_sum is not None
        ]

    def _due(self, frame: Frame) -> bool:
        """Whether the detector's rate (`detect.rate` frames per second of each camera's media time) takes it."""
        return self._grids.setdefault(camera_of(frame), SamplingGrid(self.detect.rate)).take(frame.pts)

    def _is_new(self, camera: str, pts: float) -> bool:
        """Whether a frame of `camera` at `pts` comes after its last tracked one (not a replay); a new camera is
        set up."""
        if camera not in self.trackers:
            self.trackers[camera] = Tracker(self.track)
            self.camera_events[camera] = TrackEvents(camera, self.events)
            self.objects[camera] = {}
        last = self.camera_events[camera].pts
        return last is None or pts > last

    def _detections(self, frames: list[Frame]) -> list[Detections]:
        """Each frame's detections: the motion detector's, or the heavier detector's on the frames motion lets
        through (the others have none), with appearance when there is an encoder."""
        if self.detector is None:
            found = self.motion.detect(frames)
        else:
            moving = self.motion.moving(frames)
            # a camera holding tracks (as the batch starts) is looked at whatever moves: its objects may stand still
            looked = [i for i, frame in enumerate(frames) if moving[i] or len(self.trackers[camera_of(frame)])]
            seen = dict(zip(looked, self.detector.detect([frames[i] for i in looked]))) if looked else {}
            nothing = Detections(np.zeros((0, 4)), np.zeros(0))
            found = [seen[i] if i in seen else nothing for i in range(len(frames))]
        return crop_appearance(frames, found, self.encoder) if self.encoder is not None and frames else found

    def sync_queries(self, stored: list[tuple[StandingQuery, np.ndarray | None]]) -> StreamOutput:
        """Follow the stored standing queries: hold those on tracks (a track query alerts at an event, so none
        has an event open to close). A new one that can never alert (its zone or line, or its classes, are not
        there) says why, once."""
        queries = [query for query, _ in stored if query.kind == "track"]
        detector = self.detector or self.motion
        # an open-vocabulary detector is prompted with the queries' classes too
        detector.add_phrases([name for query in queries for name in query.track.classes or ()])
        held = {query.id for query in self.track_alerts.list()}
        places = {zone.name for zone in self.events.zones} | {line.name for line in self.events.lines}
        for query in (query for query in queries if query.id not in held):
            if query.track.where not in places:
                log.warning(
                    "standing query %r watches %r, which no zone or line of the events config section is called: "
                    "it cannot alert (they are: %s)",
                    query.id,
                    query.track.where,
                    ", ".join(sorted(places)) or "none",
                )
            elif query.track.classes and not set(query.track.classes) & set(self.class_names):
                log.warning(
                    "standing query %r watches %s, which the detector does not find: it cannot alert (it finds: %s; "
                    "the owl detector, detect.kind owl, finds any)",
                    query.id,
                    ", ".join(query.track.classes),
                    ", ".join(self.class_names),
                )
        self.track_alerts.sync(queries)
        return StreamOutput()

    def state_dict(self) -> dict:
        """The sections of a shard's checkpoint state this tracker holds."""
        return {
            "tracking": {
                camera: {
                    "tracker": tracker.state(),
                    "events": self.camera_events[camera].state(),
                    "objects": [tracked.state() for tracked in self.objects[camera].values()],
                    **self._grid(camera),
                }
                for camera, tracker in self.trackers.items()
            },
            "track_alerts": self.track_alerts.state_dict(),
            "track_classes": self.class_names,  # the class ids of the tracks' states
        }

    def load_state_dict(self, state: dict) -> None:
        """Go on from a shard's checkpoint state (its other sections are the analyzer's; a state from before
        tracking was switched on has none of these: every camera's tracks start afresh). The detector starts
        afresh and warms up again."""
        tracking = state.get("tracking", {})
        # the classes queries added before the restore keep their ids (a fixed detector has its own)
        (self.detector or self.motion).add_phrases(state.get("track_classes", []))
        self.motion = MotionDetector(self.detect)
        self.trackers = {camera: Tracker.from_state(self.track, saved["tracker"]) for camera, saved in tracking.items()}
        self.camera_events = {
            camera: TrackEvents.from_state(self.events, saved["events"]) for camera, saved in tracking.items()
        }
        self.track_alerts.load_state_dict(state.get("track_alerts", {}))
        # crops are not kept: a restored track's next detection is its best
        self.objects = {
            camera: {tracked.track_id: tracked for tracked in map(TrackedObject.from_state, saved.get("objects", []))}
            for camera, saved in tracking.items()
        }
        self._tentative = {}
        self._grids = {}
        for camera, saved in tracking.items():
            if "grid" in saved:  # the detector's rate goes on from the frame it took last
                grid = self._grids[camera] = SamplingGrid(self.detect.rate)
                grid.t0, grid.k = saved["grid"]["t0"], int(saved["grid"]["k"])

    def _grid(self, camera: str) -> dict:
        grid = self._grids.get(camera)
        return {} if grid is None or grid.t0 is None else {"grid": {"t0": grid.t0, "k": grid.k}}

    def forget_cameras(self) -> None:
        """Start every camera afresh (the streams are read again from their start); the queries stay."""
        queries = self.track_alerts.list()
        self.load_state_dict({})
        self.track_alerts.sync(queries)
