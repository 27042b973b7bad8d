"""Multi-object tracking: detections per frame in, tracks with ids stable per camera out.

- `tracker` (`Tracker`): one per camera, one verb, `update(Detections) -> list[Track]`; ByteTrack's two-stage
  association with BoT-SORT's appearance cost and re-identification of lost tracks; `state()` and
  `Tracker.from_state` save and restore it as plain JSON types.
- `kalman`: a constant-velocity Kalman filter over all tracks' boxes at once.
- `association`: IoU and cosine-distance matrices, the gated fused cost, the optimal assignment.
- `mot`: MOTChallenge text files: detections in (`read_detections`), tracks out (`write_tracks`).
- `events` (`TrackEvents`): one per camera, fed each frame's tracks and pts: objects entering, leaving and
  dwelling in zones and crossing lines, as `TrackEvent` records, with counts per zone, line and class.
- `zones`: the geometry: `PolygonZone`, `Line` and the anchor point placing a box (`anchor_points`).
- `video` (`track_frames`): a source's frames through detector, appearance, tracker and events, into one
  `TrackedObject` per track (its times, best detection and crop, mean appearance) and the `TrackEvent`s;
  `add_sightings` folds a frame's tracks into their objects (the live tracker's too, whose let-go tracks are
  `EndedTrack`s).
- `similar` (`TrackIndex`): the stored tracks of a store's sources (`vigil track` results and the live
  tracker's ended tracks), of one appearance model, searched exactly
  by cosine for the same object across cameras and time (`TrackHit`s).

The records, `Detections`, `Track` and `TrackEvent` (defined in `pipeline.records`), and the settings,
`TrackConfig` and `EventsConfig` (the `track` and `events` sections of `pipeline.config`), are exported here too.
"""

from __future__ import annotations

from pipeline.config import EventsConfig, TrackConfig
from pipeline.records import Detections, Track, TrackEvent
from pipeline.tracking.association import assign, cosine_distance, fused_cost
from pipeline.tracking.events import TrackEvents
from pipeline.tracking.mot import MOTInputError, read_detections, write_tracks
from pipeline.tracking.similar import (
    StoredSource,
    StoredTrack,
    TrackHit,
    TrackIndex,
    TrackSearchError,
    live_source_id,
    read_source,
    similar_tracks,
    stored_sources,
    write_ended_tracks,
)
from pipeline.tracking.tracker import Tracker
from pipeline.tracking.video import (
    EndedTrack,
    TrackedObject,
    TrackedSource,
    add_sightings,
    decode_appearance,
    encode_vector,
    thumbnail,
    track_frames,
)
from pipeline.tracking.zones import Line, PolygonZone, anchor_points

__all__ = [
    "Detections",
    "EndedTrack",
    "EventsConfig",
    "Line",
    "MOTInputError",
    "PolygonZone",
    "StoredSource",
    "StoredTrack",
    "Track",
    "TrackConfig",
    "TrackEvent",
    "TrackEvents",
    "TrackHit",
    "TrackIndex",
    "TrackSearchError",
    "TrackedObject",
    "TrackedSource",
    "Tracker",
    "anchor_points",
    "add_sightings",
    "assign",
    "cosine_distance",
    "decode_appearance",
    "encode_vector",
    "fused_cost",
    "live_source_id",
    "read_detections",
    "read_source",
    "similar_tracks",
    "stored_sources",
    "thumbnail",
    "track_frames",
    "write_ended_tracks",
    "write_tracks",
]
