"""Multi-object tracking: detections per frame in, tracks with ids stable per camera out.

- `tracker` (`Tracker`): one per camera, one verb, `update(Detections) -> list[Track]`; ByteTrack's two-stage
  association with BoT-SORT's appearance cost and re-identification of lost tracks; `state()` and
  `Tracker.from_state` save and restore it as plain JSON types.
- `kalman`: a constant-velocity Kalman filter over all tracks' boxes at once.
- `association`: IoU and cosine-distance matrices, the gated fused cost, the optimal assignment.
- `mot`: MOTChallenge text files: detections in (`read_detections`), tracks out (`write_tracks`).

The records, `Detections` and `Track` (defined in `pipeline.records`), and the settings, `TrackConfig` (the
`track` section of `pipeline.config`), are exported here too.
"""

from __future__ import annotations

from pipeline.config import TrackConfig
from pipeline.records import Detections, Track
from pipeline.tracking.association import assign, cosine_distance, fused_cost, iou_matrix
from pipeline.tracking.mot import MOTInputError, read_detections, write_tracks
from pipeline.tracking.tracker import Tracker

__all__ = [
    "Detections",
    "MOTInputError",
    "Track",
    "TrackConfig",
    "Tracker",
    "assign",
    "cosine_distance",
    "fused_cost",
    "iou_matrix",
    "read_detections",
    "write_tracks",
]
