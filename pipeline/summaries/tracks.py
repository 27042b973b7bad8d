"""A source's tracking result (`tracks/{source_id}/`, written by `vigil track`) as a summary uses it: its tracks
and their zone and line events, read into typed records, and those events as timeline events; and a camera's live
track events (the monitor's trackers') as timeline events."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from pipeline.records import TrackAction, TrackEvent
from pipeline.storage.layout import live_track_events_prefix, live_track_events_span, tracks_key
from pipeline.storage.store import ObjectStore
from pipeline.summaries.events import TimelineEvent
from pipeline.tracking import StoredTrack


@dataclass(frozen=True)
class StoredTracking:
    """One source's tracking result: its tracks (in id order) and their events (in pts order)."""

    key: str  # its tracks.json
    untrained: bool
    tracks: list[StoredTrack]
    events: list[TrackEvent]

    def within(self, start: float, end: float) -> StoredTracking:
        """The tracks seen and the events that happened in [start, end]."""
        return StoredTracking(
            self.key,
            self.untrained,
            [t for t in self.tracks if t.last_pts >= start and t.first_pts <= end],
            [e for e in self.events if start <= e.pts <= end],
        )

    def timeline_events(self) -> list[TimelineEvent]:
        """Each event at its pts (see `timeline_event`), named by its track's class."""
        class_names = {t.track_id: t.class_name for t in self.tracks}
        return [timeline_event(event, class_names.get(event.track_id)) for event in self.events]

    def to_json(self) -> dict:
        return {
            "key": self.key,
            "untrained": self.untrained,
            "classes": dict(sorted(Counter(t.class_name for t in self.tracks).items())),
            "tracks": [
                {
                    "id": t.track_id,
                    "class_name": t.class_name,
                    "first_pts": round(t.first_pts, 3),
                    "last_pts": round(t.last_pts, 3),
                    "thumbnail": t.thumbnail,
                }
                for t in self.tracks
            ],
        }


def timeline_event(event: TrackEvent, class_name: str | None = None) -> TimelineEvent:
    """A track event at its pts, labelled by what a class of object did where (the label groups alike events on
    the timeline and in the text); the track it was stays in `track`."""
    name = class_name or event.class_name or f"class {event.class_id}"
    action = TrackAction(event.track_id, name, event.kind, event.name, event.direction, event.duration)
    return TimelineEvent(event.pts, event.pts, action.label(), kind="track", track=action)


def live_track_events(store: ObjectStore, source_id: str, start: float, end: float) -> list[TimelineEvent]:
    """A camera's live track events (the monitor's trackers', `tracks/{source_id}/live/`) in [start, end]; the
    batches named by a span outside it are not read."""
    events = []
    for key in store.list(live_track_events_prefix(source_id)):
        span = live_track_events_span(key)
        if span is not None and span[1] >= start and span[0] <= end:
            events += [TrackEvent.from_json(item) for item in store.get_json(key)]
    return [timeline_event(event) for event in events if start <= event.pts <= end]


def read_tracking(store: ObjectStore, source_id: str) -> StoredTracking | None:
    """The source's stored tracking result; None when it has not been tracked."""
    key = tracks_key(source_id)
    if not store.exists(key):
        return None
    document = store.get_json(key)
    tracks = [StoredTrack.from_entry(document, entry, source_id) for entry in document["tracks"]]
    events = [TrackEvent.from_json(item) for item in store.get_json(document["events"])["events"]]
    return StoredTracking(
        key,
        bool(document["untrained"]),
        sorted(tracks, key=lambda t: t.track_id),
        sorted(events, key=lambda e: (e.pts, e.track_id)),
    )
