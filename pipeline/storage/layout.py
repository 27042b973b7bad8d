"""The store layout: every key and prefix any store holds, built here and nowhere else.

Keys are relative to the store root (an S3 store uses the same keys under its prefix):

    sources/{source_id}.json                          a file's record (size, mtime, settings, clips) or a camera's
    clips/{source_id}/{start_ms:012d}.npz             one ClipEmbedding: SigLIP2 and DINOv2 vectors, metadata
    keyframes/{source_id}/{pts_ms:012d}.jpg           the representative frame of a clip window (or an alert's)
    index/generations/{generation:012d}.json          write-once index manifests: the newest names the live
                                                      segments and the removed sources
    index/segments/{segment_id}/                      rows.parquet, vectors.npz, sealed: {tower}.faiss
    index/MANIFEST.json, index/{version}/             the single-version index of earlier releases (read once)
    summaries/{source_id}/                            summary.json, contact sheet, timeline, report.html
    summaries/{source_id}/frames.npz                  per-frame features kept by the first summary of a file
    summaries/{source_id}/keyframes/{pts_ms:012d}.jpg pictures a summary picked that no clip keyframe covers
    summaries/{source_id}/range-{from_ms:012d}-{to}/  the summary of a time range (`to`: ms or "end")
    summaries/_vocabulary/{digest}.npz                concept text embeddings per text model
    alerts/{camera_source_id}/{alert_id}.json         one alert, rewritten as its event opens and closes
    queries/{query_id}.json, queries/{query_id}.jpg   standing queries and their example images
    monitor/{name_source_id}/checkpoint.json          a monitor's analyzer state and the offsets it covers
                                                      (analyzer shard k of m > 1: shard-{k:03d}-of-{m:03d}.json)
    monitor-status/{name_source_id}.json              a running monitor's status (`vigil status`), replaced as it runs
    tracks/{source_id}/tracks.json                    `vigil track VIDEO`: the source's tracks (written last)
    tracks/{source_id}/events-{digest}.json           its tracks' zone and line events, and the counts
    tracks/{source_id}/thumbs/{track_id}-{digest}.jpg a track's best crop (`digest`: of the JPEG bytes)
    tracks/{camera_source_id}/live/{first_ms:012d}-{last_ms:012d}.json   the live tracker's events of a batch
    tracks/{camera_source_id}/live/thumbs/{track_id}-{ms:012d}.jpg       a live track's best crop at `ms`
    tracks/{camera_source_id}/live/index/{last_ms:012d}-{digest}.json    ended live tracks: the track index's

`source_id` is a path-safe slug plus a hash of the source, so user input never becomes a raw key. Files and
live cameras are separate namespaces: a file's id hashes its absolute path (`file_source_id`), a camera's
hashes "camera:" and its id (`camera_source_id`), so a camera named like a file never shares its objects.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

SOURCES = "sources/"
INDEX = "index/"
MANIFEST_KEY = f"{INDEX}MANIFEST.json"
ALERTS = "alerts/"
QUERIES = "queries/"


def source_id(source: str) -> str:
    """A stable, path-safe id: a slug of the name plus a hash of the full source (path or camera id)."""
    name = Path(source).stem if "://" not in source else source.rsplit("/", 1)[-1]
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()[:40] or "source"
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    return f"{slug}-{digest}"


_SOURCE_ID = re.compile(r"^[a-z0-9-]+-[0-9a-f]{12}$")


def looks_like_source_id(text: str) -> bool:
    """Whether `text` has the shape `source_id` gives (a slug, then 12 hex digits of a hash)."""
    return bool(_SOURCE_ID.match(text))


def file_source_id(path: str) -> str:
    """A file's id, from its absolute path."""
    return source_id(str(Path(path).expanduser().resolve()))


def camera_source_id(camera: str) -> str:
    """A live camera's id: never equal to a file's (an absolute path never starts with "camera:")."""
    return source_id(f"camera:{camera}")


def ms(seconds: float) -> int:
    """Media time in whole milliseconds, as keys spell it."""
    return int(round(seconds * 1000))


def source_key(sid: str) -> str:
    return f"{SOURCES}{sid}.json"


def clips_prefix(sid: str) -> str:
    return f"clips/{sid}/"


def clip_key(sid: str, start: float) -> str:
    return f"{clips_prefix(sid)}{ms(start):012d}.npz"


def clip_start_ms(key: str) -> int:
    """The start (ms) a clip key names."""
    return int(key.rsplit("/", 1)[-1].split(".", 1)[0])


def keyframes_prefix(sid: str) -> str:
    return f"keyframes/{sid}/"


def keyframe_key(sid: str, pts: float) -> str:
    return f"{keyframes_prefix(sid)}{ms(pts):012d}.jpg"


def index_version_prefix(version: str) -> str:
    """A single-version index of earlier releases (named by MANIFEST_KEY)."""
    return f"{INDEX}{version}"


INDEX_GENERATIONS = f"{INDEX}generations/"


def index_generation_key(generation: int) -> str:
    return f"{INDEX_GENERATIONS}{generation:012d}.json"


def index_generation_of(key: str) -> int:
    """The generation an index manifest key names."""
    return int(key.rsplit("/", 1)[-1].split(".", 1)[0])


INDEX_SEGMENTS = f"{INDEX}segments/"


def index_segment_prefix(segment_id: str) -> str:
    return f"{INDEX_SEGMENTS}{segment_id}/"


def summaries_prefix(sid: str) -> str:
    return f"summaries/{sid}/"


def summary_prefix(sid: str, start: float | None = None, end: float | None = None) -> str:
    """Where a summary's files go: the whole source's, or a time range's (`end` None: to the end)."""
    if start is None and end is None:
        return f"summaries/{sid}"
    to = "end" if end is None else f"{ms(end):012d}"
    return f"{summary_ranges_prefix(sid)}{ms(start or 0.0):012d}-{to}"


SUMMARY_FILES = {
    "summary": "summary.json",
    "contact_sheet": "contact_sheet.png",
    "timeline": "timeline.png",
    "report": "report.html",
}


def summary_file_keys(sid: str, start: float | None = None, end: float | None = None) -> dict[str, str]:
    """The key of each file of a summary (summary, contact_sheet, timeline, report)."""
    prefix = summary_prefix(sid, start, end)
    return {name: f"{prefix}/{file}" for name, file in SUMMARY_FILES.items()}


def summary_ranges_prefix(sid: str) -> str:
    """The prefix every time-range summary of a source starts with."""
    return f"summaries/{sid}/range-"


def summary_range_start_ms(prefix: str) -> int:
    """The start (ms) a time-range summary's prefix names."""
    return int(prefix.rsplit("/range-", 1)[1].split("-", 1)[0])


def summary_frames_key(sid: str) -> str:
    return f"{summaries_prefix(sid)}frames.npz"


def summary_keyframes_prefix(sid: str) -> str:
    return f"{summaries_prefix(sid)}keyframes/"


def summary_keyframe_key(sid: str, pts: float) -> str:
    return f"{summary_keyframes_prefix(sid)}{ms(pts):012d}.jpg"


def vocabulary_key(digest: str) -> str:
    return f"summaries/_vocabulary/{digest}.npz"


def camera_record(camera: str) -> dict:
    """What `sources/{camera_source_id}.json` holds: the camera's clips are rebuilt from its clips/ folder."""
    return {"source": camera, "source_id": camera_source_id(camera), "kind": "camera"}


def alerts_prefix(sid: str) -> str:
    """A camera's alerts (`sid`: the camera's source_id)."""
    return f"{ALERTS}{sid}/"


def alert_key(sid: str, alert_id: str) -> str:
    return f"{alerts_prefix(sid)}{alert_id}.json"


def query_key(query_id: str) -> str:
    return f"{QUERIES}{query_id}.json"


def query_image_key(query_id: str) -> str:
    return f"{QUERIES}{query_id}.jpg"


def monitor_checkpoint_key(name: str) -> str:
    return f"{monitor_checkpoints_prefix(name)}checkpoint.json"


def monitor_checkpoints_prefix(name: str) -> str:
    """Where a monitor's checkpoints are, of every shard count it ran with."""
    return f"monitor/{source_id(name)}/"


def monitor_shard_checkpoint_key(name: str, shard: int, shards: int) -> str:
    """The checkpoint of analyzer shard `shard` of `shards`; a monitor of one shard keeps the one checkpoint."""
    if shards == 1:
        return monitor_checkpoint_key(name)
    return f"{monitor_checkpoints_prefix(name)}shard-{shard:03d}-of-{shards:03d}.json"


def monitor_status_key(name: str) -> str:
    """A monitor's status document: outside monitor/{name}/, whose every .json object is a checkpoint."""
    return f"monitor-status/{source_id(name)}.json"


def tracks_prefix(sid: str) -> str:
    return f"tracks/{sid}/"


def tracks_key(sid: str) -> str:
    return f"{tracks_prefix(sid)}tracks.json"


def track_events_key(sid: str, digest: str) -> str:
    """A tracking result's events, named by their content like the thumbnails (see `track_thumb_key`)."""
    return f"{tracks_prefix(sid)}events-{digest}.json"


def live_track_events_prefix(sid: str) -> str:
    return f"{tracks_prefix(sid)}live/"


def live_track_events_key(sid: str, first_pts: float, last_pts: float) -> str:
    """A live tracker batch's track events of one camera, named by their first and last pts."""
    return f"{live_track_events_prefix(sid)}{ms(first_pts):012d}-{ms(last_pts):012d}.json"


_LIVE_TRACK_EVENTS = re.compile(r"/live/(\d{12})-(\d{12})\.json$")


def live_track_events_span(key: str) -> tuple[float, float] | None:
    """The first and last pts a live track events key names (None: not such a key)."""
    found = _LIVE_TRACK_EVENTS.search(key)
    return None if found is None else (int(found[1]) / 1000.0, int(found[2]) / 1000.0)


def live_track_thumb_key(sid: str, track_id: int, pts: float) -> str:
    """A live track's best crop so far (the thumbnail of its alerts), named by the track and the crop's pts."""
    return f"{live_track_events_prefix(sid)}thumbs/{track_id}-{ms(pts):012d}.jpg"


def live_tracks_prefix(sid: str) -> str:
    return f"{live_track_events_prefix(sid)}index/"


def live_tracks_key(sid: str, last_pts: float, digest: str) -> str:
    """A sink write's ended live tracks of one camera (the track index's part of them), named by the last pts
    they hold and their content: a replay writes the same object again."""
    return f"{live_tracks_prefix(sid)}{ms(last_pts):012d}-{digest}.json"


def track_thumbs_prefix(sid: str) -> str:
    return f"{tracks_prefix(sid)}thumbs/"


def track_thumb_key(sid: str, track_id: int, digest: str) -> str:
    """A track's thumbnail, named by its content too: a new run's never overwrites the one the current
    tracks.json names, so tracks.json alone switches a source's result."""
    return f"{track_thumbs_prefix(sid)}{track_id}-{digest}.jpg"


def source_prefixes(sid: str) -> tuple[str, ...]:
    """Every prefix holding a source's derived objects (its record aside): what removing it deletes. A
    camera's alerts go with it (their thumbnails are among its keyframes)."""
    return alerts_prefix(sid), clips_prefix(sid), keyframes_prefix(sid), summaries_prefix(sid), tracks_prefix(sid)
