"""The track job: one video file (or a camera's live URL, for a bounded time) through detection, appearance,
tracking and events (`pipeline.tracking.track_frames`), its result into the store under `tracks/{source_id}/`.

A run replaces the previous result whole: the new thumbnails and events first (their keys name their content,
so nothing the current tracks.json names is overwritten), then tracks.json, the commit point, then the previous
result's thumbnails and events are deleted. Equal input and settings write equal bytes: a re-run changes
nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import VigilConfig
from pipeline.detection import Detector, OwlDetector, build_detector
from pipeline.media.sampling import first_seconds, sampled_frames
from pipeline.media.streams import is_live
from pipeline.models import Dinov2Encoder, resolve_models
from pipeline.storage.codecs import encode_jpeg
from pipeline.storage.layout import (
    camera_source_id,
    file_source_id,
    live_track_events_prefix,
    track_events_key,
    track_thumb_key,
    tracks_key,
    tracks_prefix,
)
from pipeline.storage.store import ObjectStore
from pipeline.tracking import TrackedSource, track_frames

THUMBNAIL_QUALITY = 88  # as keyframes


@dataclass
class TrackReport:
    source: str
    source_id: str
    frames: int
    tracks: int
    events: int
    tracks_key: str
    untrained: bool
    elapsed: float


def track_source(
    url: str,
    config: VigilConfig,
    store: ObjectStore,
    *,
    camera: str | None = None,
    seconds: float | None = None,
    detector: Detector | None = None,
    encoder: Dinov2Encoder | None = None,
) -> TrackReport:
    """Track a file (as `camera`, if given) or a camera's live URL (`camera` needed) into the store, frames
    sampled at `detect.rate`; only the first `seconds` of media time when given (a live URL needs them)."""
    started = time.perf_counter()
    if is_live(url):
        if camera is None or seconds is None:
            raise ValueError(
                f"a live URL is tracked as a camera for a bounded time: give a camera id and seconds: {url}"
            )
    elif not Path(url).is_file():
        raise FileNotFoundError(f"no such video file: {url}")
    source = camera if camera is not None else str(Path(url).expanduser().resolve())
    sid = camera_source_id(camera) if camera is not None else file_source_id(url)
    detector = detector or build_detector(config.detect, device=config.device, batch_size=config.batch_size)
    encoder = encoder or Dinov2Encoder.from_pretrained(
        resolve_models(config.models).dinov2,
        device=config.device,
        precision=config.precision,
        batch_size=config.batch_size,
    )
    decode = config.decode.model_copy(update={"fps": config.detect.rate})
    frames = sampled_frames(url, decode, camera=camera, source=source)
    if seconds is not None:
        frames = first_seconds(frames, seconds)
    tracked = track_frames(
        frames,
        detector,
        encoder,
        camera=source,
        track_config=config.track,
        events_config=config.events,
        batch_frames=config.batch_size,
    )
    untrained = bool(encoder.untrained or getattr(detector, "untrained", False))
    document = {
        "source": source,
        "source_id": sid,
        "kind": "camera" if camera is not None else "file",
        "detector": config.detect.kind,
        "detector_model": config.detect.model if isinstance(detector, OwlDetector) else None,
        "appearance_model": encoder.model_id,
        "rate": config.detect.rate,
        "seconds": seconds,
        "frames": tracked.frames,
        "untrained": untrained,
    }
    write_tracked(store, sid, tracked, document, detector.class_names, untrained)
    return TrackReport(
        source,
        sid,
        tracked.frames,
        len(tracked.objects),
        len(tracked.events),
        tracks_key(sid),
        untrained,
        time.perf_counter() - started,
    )


def write_tracked(
    store: ObjectStore, sid: str, tracked: TrackedSource, document: dict, class_names: list[str], untrained: bool
) -> None:
    """Replace a source's stored tracking result with `tracked` (`document`: the fields of tracks.json besides
    its tracks). See the module's description for the order."""
    thumbnails = {}
    for tracked_object in tracked.objects:
        jpeg = encode_jpeg(tracked_object.best_crop, THUMBNAIL_QUALITY)
        key = track_thumb_key(sid, tracked_object.track_id, hashlib.sha256(jpeg).hexdigest()[:12])
        store.put(key, jpeg)
        thumbnails[tracked_object.track_id] = key
    events = {
        "source": document["source"],
        "source_id": sid,
        "events": [event.to_json() for event in tracked.events],
        "counts": tracked.counts,
    }
    events_key = track_events_key(sid, hashlib.sha256(json.dumps(events, sort_keys=True).encode()).hexdigest()[:12])
    store.put_json(events_key, events)
    tracks = [
        tracked_object.to_json(class_names[tracked_object.class_id], thumbnails[tracked_object.track_id], untrained)
        for tracked_object in tracked.objects
    ]
    store.put_json(tracks_key(sid), {**document, "events": events_key, "tracks": tracks})
    current = {tracks_key(sid), events_key, *thumbnails.values()}
    live = live_track_events_prefix(sid)  # a monitor's live tracks of the camera are not this result's
    for stale in set(store.list(tracks_prefix(sid))) - current:
        if not stale.startswith(live):
            store.delete(stale)
