"""Summaries of archived footage: an hour of video in, one page out that says what happened when.

Stages, all on features (never on held frames):

1. **Features along time** (`FeatureTrack`): one SigLIP2 and one DINOv2 unit vector per row, a row being
   a sampled frame (`kind="frames"`) or a stored clip window (`kind="clips"`).
2. **Shots** (`detect_shots`): the DINOv2 cosine distance between consecutive rows, cut where it is a local
   maximum above an adaptive threshold (median + `sensitivity` robust deviations of the changes within
   `context` seconds around it, and at least `min_change`), at least `min_shot` seconds apart.
3. **Keyframes** (`choose_keyframes`): rows clustered on their joint SigLIP2+DINOv2 embedding. k comes from
   the content (farthest-point seeding goes on while some row is farther than an adaptive radius, derived
   from how much views vary within shots, from every seed) under a budget that grows with the square root of the duration; k-means refines the seeds and the
   row nearest each centre is the keyframe; every shot still farther than the radius from all keyframes
   gets its own, so each distinct scene is shown.
4. **Tags** (`tag_rows`): each shot's mean SigLIP2 image embedding scored zero-shot against the text
   embeddings of a concept vocabulary (`pipeline.summaries.concepts`: built-in, user-extendable, any language),
   cached in the store per text model and vocabulary.
5. **Timeline**: events (alerts, track events: `TimelineEvent`) and optional query scores over time.
6. **Text**: consecutive shots of one scene merged into segments, one line each
   ("00:00-01:12 parking lot: car, person; 3 alerts 'person at the gate'").

Where the per-frame features come from (the decision the store layout forces): the archive job keeps only
clip windows (`clips/{source_id}/*.npz`, 2 s by default), too coarse for boundaries within one sampling
interval. So summarizing a file decodes it once (streaming: batches of frames are embedded and dropped) and
stores the per-frame features as one compact object, `summaries/{source_id}/frames.npz` (float16, keyed by
the file's size and mtime, the decode settings and the models); any later summary of that file, of any
range, reads it and decodes nothing. When a source has no frames.npz but was indexed (or is a camera whose
clips are stored), shots come from the clip windows instead: no decode, boundaries at window edges (the
`features` block of summary.json says which, with its interval). Keyframe images come from the store
(archive `keyframes/`, then `summaries/{source_id}/keyframes/`), and only when absent from a seek into the
file for those few frames, after which they are stored too.

Memory: features grow with the sampled frames (~2.3 KB per frame with the default models, float16);
frames themselves are never held beyond one model batch, and only the chosen keyframe images are loaded.

Outputs under `summaries/{source_id}/` (a time range under `summaries/{source_id}/range-{from_ms}-{to_ms}/`):
`summary.json` (schema: `pipeline/summaries/summary_schema.json`), `contact_sheet.png`, `timeline.png`,
`report.html` (self-contained: every image inlined as a data URI).
"""

from __future__ import annotations

import bisect
import io
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image

from pipeline.media import decode as _decode
from pipeline.summaries.concepts import TEMPLATE, Concept, load_vocabulary, vocabulary_digest
from pipeline.search.embed import extract_features, model_batches
from pipeline.records import ModelIds
from pipeline.storage.store import (
    ObjectStore,
    StoreError,
    _npz_bytes,
    check_key,
    keyframe_key,
    read_clip,
    source_id,
    source_key,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("summary_schema.json")
MIN_ROWS = 2
UNTRAINED_TEXT = "UNTRAINED models (random weights): tags, shots and keyframe picks prove the plumbing, not accuracy."


class SummarizeError(ValueError):
    """The input cannot be summarized (empty, too short, unreadable, nothing stored); the message says why."""


class NotEnoughFootage(SummarizeError):
    """The time range holds too few feature rows for a summary (outside the footage, or too short)."""


# ----------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class SummaryOptions:
    keyframes: int | None = None  # exact number of keyframes; None = chosen from duration and content
    max_keyframes: int = 48  # ceiling of the automatic choice
    sensitivity: float = 4.0  # a cut stands this many robust deviations above the local median change
    min_change: float = 0.1  # and changes the DINOv2 embedding by at least this cosine distance
    min_shot: float = 1.0  # seconds between cuts
    context: float = 30.0  # seconds either side over which the adaptive threshold is measured
    tags_per_shot: int = 5
    max_lines: int = 24  # lines of the text summary (segments are merged down to this many)
    shots_from: str = "auto"  # auto | frames | clips
    thumb_width: int = 240

    def __post_init__(self):
        if self.keyframes is not None and self.keyframes < 1:
            raise SummarizeError(f"--keyframes must be at least 1, got {self.keyframes}")
        if self.shots_from not in ("auto", "frames", "clips"):
            raise SummarizeError(f"shots_from must be auto, frames or clips, got {self.shots_from!r}")
        if self.max_keyframes < 1 or self.tags_per_shot < 0 or self.max_lines < 1 or self.min_shot < 0:
            raise SummarizeError("max_keyframes and max_lines must be >= 1; tags_per_shot and min_shot >= 0")


def decode_settings(config) -> dict:
    """The decode settings that change which frames (and so which features) a summary sees."""
    d = config.decode
    return {"backend": d.backend, "fps": d.fps, "short_side": d.short_side,
            "keyframes_only": d.keyframes_only, "still_threshold": d.still_threshold}


# ----------------------------------------------------------------------------------------------- events


@dataclass(frozen=True)
class TimelineEvent:
    """Something that happened over [t_start, t_end] (media seconds): an alert, a track event, ...

    `from_mapping` also takes the Alert record of the live monitor as JSON (start, end, query text or id,
    peak score, id), so alerts plug in without another format."""

    t_start: float
    t_end: float
    label: str
    kind: str = "alert"
    score: float | None = None
    id: str | None = None

    @classmethod
    def from_mapping(cls, item: Mapping | Any) -> "TimelineEvent":
        if not isinstance(item, Mapping):  # a record object (dataclass / pydantic): read its attributes
            item = {name: getattr(item, name) for name in dir(item) if not name.startswith("_")}

        def first(*names, default=None):
            for name in names:
                if item.get(name) is not None:
                    return item[name]
            return default

        try:
            start = float(first("t_start", "start"))
            end = float(first("t_end", "end", default=start))
        except (TypeError, ValueError):
            raise SummarizeError(f"an event needs numeric t_start and t_end (seconds): {dict(item)!r}") from None
        label = first("label", "query", "query_text", "query_image", "name", "query_id")
        if label is None or not str(label).strip():
            raise SummarizeError(f"an event needs a label: {dict(item)!r}")
        if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end < start:
            raise SummarizeError(f"an event needs 0 <= t_start <= t_end, got {start} .. {end}")
        score = first("score", "peak_score")
        ident = first("id", "alert_id")
        return cls(start, end, str(label).strip(), str(first("kind", default="alert")),
                   None if score is None else float(score), None if ident is None else str(ident))

    def to_json(self) -> dict:
        return {"t_start": round(self.t_start, 3), "t_end": round(self.t_end, 3), "label": self.label,
                "kind": self.kind, "score": None if self.score is None else round(self.score, 4), "id": self.id}


def stored_alerts(store: ObjectStore, sid: str) -> list[TimelineEvent]:
    """The live monitor's alerts for a camera (`alerts/{source_id(camera)}/{alert_id}.json`, Alert.to_json)
    as timeline events; an unreadable one is skipped rather than failing the summary."""
    events = []
    for key in store.list(f"alerts/{sid}/"):
        if key.endswith(".json"):
            try:
                events.append(TimelineEvent.from_mapping(store.get_json(key)))
            except (SummarizeError, ValueError, StoreError):
                continue
    return events


def read_events(path: str | Path) -> list[TimelineEvent]:
    """Events from a JSON file: a list, {"events": [...]}, or JSON lines; each {t_start, t_end, label}."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SummarizeError(f"events file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SummarizeError(f"cannot read events file {path}: {exc}") from None
    try:
        data = json.loads(text) if text.strip() else []
    except json.JSONDecodeError:
        try:
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise SummarizeError(f"events file {path} is neither JSON nor JSON lines: {exc}") from None
    if isinstance(data, dict):
        data = data.get("events", [data] if "label" in data else [])
    if not isinstance(data, list):
        raise SummarizeError(f"events file {path}: expected a list of events")
    return [TimelineEvent.from_mapping(item) for item in data]


# ----------------------------------------------------------------------------------------------- features


def frames_key(sid: str) -> str:
    return f"summaries/{sid}/frames.npz"


def summary_prefix(sid: str, start: float | None = None, end: float | None = None) -> str:
    if start is None and end is None:
        return f"summaries/{sid}"
    a = int(round((start or 0.0) * 1000))
    b = "end" if end is None else f"{int(round(end * 1000)):012d}"
    return f"summaries/{sid}/range-{a:012d}-{b}"


def summary_image_key(sid: str, pts: float) -> str:
    return f"summaries/{sid}/keyframes/{int(round(pts * 1000)):012d}.jpg"


@dataclass
class FeatureTrack:
    """Unit SigLIP2 and DINOv2 vectors of one source along media time (the summarizer's input)."""

    source: str
    source_id: str
    kind: str  # "frames" (one row per sampled frame) or "clips" (one row per stored clip window)
    times: np.ndarray  # (N,) float64: the frame pts, or the window start
    siglip: np.ndarray  # (N, Ds)
    dinov2: np.ndarray  # (N, Dd)
    interval: float  # seconds between rows
    duration: float  # end of the source's media
    models: ModelIds
    image_times: np.ndarray  # (N,) pts of the picture that stands for each row
    image_keys: list[str | None] | None = None  # clips: stored keyframe key per row
    source_kind: str = "file"
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.times)

    def select(self, start: float, end: float) -> "FeatureTrack":
        """Rows inside [start, end): frames whose pts is inside, clip windows that overlap it."""
        lead = self.interval if self.kind == "clips" else 0.0
        keep = np.flatnonzero((self.times > start - lead + 1e-9 * bool(lead) - 1e-9 * (not lead))
                              & (self.times < end - 1e-9))
        if self.kind == "frames":
            keep = keep[self.times[keep] >= start - 1e-9]
        return replace(
            self, times=self.times[keep], siglip=self.siglip[keep], dinov2=self.dinov2[keep],
            image_times=self.image_times[keep],
            image_keys=None if self.image_keys is None else [self.image_keys[i] for i in keep],
        )


def _as_unit32(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _file_identity(path: Path) -> dict:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def write_frame_track(store: ObjectStore, track: FeatureTrack) -> str:
    meta = {**track.meta, "source": track.source, "source_id": track.source_id, "interval": track.interval,
            "duration": track.duration, "models": asdict(track.models)}
    key = frames_key(track.source_id)
    store.put(key, _npz_bytes({
        "times": track.times.astype(np.float64),
        "siglip": track.siglip.astype(np.float16),
        "dinov2": track.dinov2.astype(np.float16),
        "meta": np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8),
    }))
    return key


def read_frame_track(store: ObjectStore, sid: str) -> FeatureTrack | None:
    key = frames_key(sid)
    if not store.exists(key):
        return None
    with np.load(io.BytesIO(store.get(key)), allow_pickle=False) as data:
        meta = json.loads(data["meta"].tobytes())
        times = data["times"]
        return FeatureTrack(
            source=meta["source"], source_id=meta["source_id"], kind="frames", times=times,
            siglip=_as_unit32(data["siglip"]), dinov2=_as_unit32(data["dinov2"]),
            interval=float(meta["interval"]), duration=float(meta["duration"]),
            models=ModelIds(**meta["models"]), image_times=times.copy(), meta=meta,
        )


def read_clip_track(store: ObjectStore, sid: str, start: float | None = None,
                    end: float | None = None) -> FeatureTrack | None:
    """The stored clip windows of a source (indexed file or camera) as a coarse track. With `start`/`end`,
    only the windows starting in [start, end) and the one before (it may reach into the range) are read,
    so a camera's rolling summaries cost the same however long it has been recorded."""
    keys = sorted(store.list(f"clips/{sid}/"), key=_key_ms)
    if start is not None or end is not None:
        starts = [_key_ms(key) for key in keys]
        first = max(0, bisect.bisect_right(starts, round((start or 0.0) * 1000)) - 1)
        last = bisect.bisect_left(starts, round(end * 1000)) if end is not None else len(keys)
        keys = keys[first:max(last, first + 1)]
    if not keys:
        return None
    clips = sorted((read_clip(store, key) for key in keys), key=lambda c: c.start)
    record = store.get_json(source_key(sid)) if store.exists(source_key(sid)) else None
    duration = float(record["duration"]) if record and record.get("duration") else max(c.end for c in clips)
    models = {c.models for c in clips}
    if len(models) != 1:
        raise SummarizeError(f"the stored clips of {sid} were made with different models: re-index the source")
    return FeatureTrack(
        source=clips[0].source, source_id=sid, kind="clips",
        times=np.array([c.start for c in clips], dtype=np.float64),
        siglip=_as_unit32(np.stack([c.siglip for c in clips])),
        dinov2=_as_unit32(np.stack([c.dinov2 for c in clips])),
        interval=float(np.median([c.end - c.start for c in clips])), duration=duration,
        models=clips[0].models, image_times=np.array([c.keyframe_pts for c in clips], dtype=np.float64),
        image_keys=[c.keyframe_key for c in clips], source_kind="file" if record else "camera",
        meta={"record": record},
    )


def _key_ms(key: str) -> int:
    """The window start (ms) a clip key is named by (`clips/{source_id}/{start_ms:012d}.npz`)."""
    return int(key.rsplit("/", 1)[-1].split(".", 1)[0])


def extract_frame_track(
    path: Path,
    config,
    encoders,
    *,
    on_progress: Callable[[float], None] = lambda seconds: None,
) -> FeatureTrack:
    """Decode `path` at the configured sampling and embed every sampled frame, streaming: each model batch
    of frames is dropped once embedded; only the features stay (float16, ~2.3 KB per frame)."""
    info = _decode.probe(path)
    d = config.decode
    keyframes_only = _decode.plan_sampling(info, d.fps) if d.keyframes_only == "auto" else bool(d.keyframes_only)
    frames = _decode.decode_frames(path, fps=d.fps, short_side=d.short_side, keyframes_only=keyframes_only,
                                   threads=d.threads, backend=d.backend, source=str(path))
    if d.still_threshold > 0:
        frames = _decode.mark_still_frames(frames, d.still_threshold)
    times: list[float] = []
    siglip_parts: list[np.ndarray] = []
    dinov2_parts: list[np.ndarray] = []
    last: tuple[np.ndarray, np.ndarray] | None = None
    for batch in model_batches(frames, config.batch_size):
        features = extract_features(batch, encoders)
        s_rows, d_rows = [], []
        for frame, feature in zip(batch, features, strict=True):
            if feature is not None:
                last = (feature.siglip, feature.dinov2)
            s_rows.append(last[0])
            d_rows.append(last[1])
            times.append(frame.pts)
        siglip_parts.append(np.asarray(s_rows, dtype=np.float16))
        dinov2_parts.append(np.asarray(d_rows, dtype=np.float16))
        on_progress(batch[-1].pts)
        del batch
    if len(times) < MIN_ROWS:
        raise SummarizeError(
            f"{path}: only {len(times)} frame could be sampled ({info.duration:.2f} s of video at {d.fps:g} fps): "
            f"a summary needs at least {MIN_ROWS} (a longer video, or a higher --fps)"
        )
    stamp = np.asarray(times, dtype=np.float64)
    meta = {"file": _file_identity(path), "settings": decode_settings(config)}
    return FeatureTrack(
        source=str(path), source_id=source_id(str(path)), kind="frames", times=stamp,
        siglip=_as_unit32(np.concatenate(siglip_parts)), dinov2=_as_unit32(np.concatenate(dinov2_parts)),
        interval=1.0 / d.fps, duration=max(info.duration, float(stamp[-1])),
        models=encoders.ids, image_times=stamp.copy(), meta=meta,
    )


# ----------------------------------------------------------------------------------------------- shots


@dataclass
class Shot:
    first: int  # first row
    last: int  # last row (inclusive)
    start: float
    end: float
    change: float | None  # DINOv2 distance across the opening cut


def frame_changes(vectors: np.ndarray, *, bridge_blends: bool = False) -> np.ndarray:
    """d[i] = 1 - cos(v[i-1], v[i]) for unit rows (d[0] = 0).

    With `bridge_blends` (clip windows): a window straddling a cut pools frames of both sides, so the cut
    shows as two half-size steps. Where row i lies on the way from row i-1 to row i+1 (the two steps, as
    chord lengths, add up to about the direct one, and neither is tiny) the change at i is the direct
    change from i-1 to i+1: the blended window opens the new shot."""
    d = np.zeros(len(vectors), dtype=np.float32)
    if len(vectors) > 1:
        d[1:] = 1.0 - np.einsum("ij,ij->i", vectors[1:], vectors[:-1])
    d = np.clip(d, 0.0, 2.0)
    if bridge_blends and len(vectors) > 2:
        direct = np.clip(1.0 - np.einsum("ij,ij->i", vectors[2:], vectors[:-2]), 0.0, 2.0)  # rows 1..n-2
        a, b, c = np.sqrt(d[1:-1]), np.sqrt(d[2:]), np.sqrt(direct)
        blend = (a + b <= 1.25 * c) & (np.minimum(a, b) >= 0.15 * c) & (direct > np.maximum(d[1:-1], d[2:]))
        d[1:-1] = np.where(blend, direct, d[1:-1])
    return d


def adaptive_threshold(changes: np.ndarray, half_window: int, sensitivity: float, min_change: float,
                       ratio: float = 8.0, chunk: int = 4096) -> np.ndarray:
    """Per row i >= 1, from the changes within +-half_window rows of it (mirrored at the ends): the lower of
    median + sensitivity * 1.4826 * MAD (robust while cuts are under half the changes) and `ratio` times
    the 25th percentile (still right when cuts crowd the window: short shots, coarse clip windows); never
    below min_change. Row 0 (no predecessor) gets +inf. Worked in chunks of rows: bounded memory."""
    n = len(changes)
    out = np.full(n, np.inf, dtype=np.float64)
    if n < 2:
        return out
    c = changes[1:].astype(np.float64)
    w = max(1, int(half_window))
    padded = np.pad(c, (w, w), mode="reflect" if len(c) > 1 else "edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * w + 1)
    for a in range(0, len(c), chunk):
        block = windows[a:a + chunk]
        median = np.median(block, axis=1)
        mad = np.median(np.abs(block - median[:, None]), axis=1)
        low = np.percentile(block, 25, axis=1)
        level = np.minimum(median + sensitivity * 1.4826 * mad, ratio * low)
        out[1 + a:1 + a + len(block)] = np.maximum(level, min_change)
    return out


def detect_shots(track: FeatureTrack, start: float, end: float, options: SummaryOptions) -> list[Shot]:
    """Cuts where the DINOv2 change is a local maximum over the adaptive threshold, `min_shot` apart."""
    n = len(track)
    changes = frame_changes(track.dinov2, bridge_blends=track.kind == "clips")
    half_window = min(max(1, round(options.context / track.interval)), 600)
    threshold = adaptive_threshold(changes, half_window, options.sensitivity, options.min_change)
    before = np.concatenate([[np.inf], changes[:-1]])
    after = np.concatenate([changes[1:], [-np.inf]])
    peaks = (changes >= threshold) & (changes >= before) & (changes > after)
    peaks[0] = False
    accepted: list[int] = []
    taken: list[float] = []  # sorted times of the accepted cuts
    gap = options.min_shot - 1e-9
    for i in sorted(np.flatnonzero(peaks).tolist(), key=lambda i: -changes[i]):  # strongest first
        t = float(track.times[i])
        if t - start < gap or end - t < gap:
            continue
        k = bisect.bisect_left(taken, t)
        if (k == 0 or t - taken[k - 1] >= gap) and (k == len(taken) or taken[k] - t >= gap):
            taken.insert(k, t)
            accepted.append(i)
    accepted.sort()
    bounds = [0, *accepted, n]
    shots = []
    for k, (a, b) in enumerate(zip(bounds, bounds[1:])):
        shots.append(Shot(a, b - 1, float(track.times[a]) if k else start,
                          float(track.times[b]) if b < n else end, float(changes[a]) if k else None))
    return shots


# ----------------------------------------------------------------------------------------------- keyframes


def joint_embedding(track: FeatureTrack) -> np.ndarray:
    """SigLIP2 and DINOv2 side by side, equally weighted, unit length."""
    return _as_unit32(np.concatenate([track.siglip, track.dinov2], axis=1))


def keyframe_budget(seconds: float, ceiling: int) -> int:
    """The most keyframes the automatic choice may show: 4 + 8 * sqrt(minutes), at most `ceiling`
    (20 s: 9; 10 min: 29; 30 min: 48; longer: `ceiling`)."""
    return max(1, min(int(ceiling), 4 + int(round(8 * math.sqrt(max(seconds, 0.0) / 60.0)))))


def _segment_means(x: np.ndarray, shots: Sequence[Shot]) -> np.ndarray:
    starts = np.array([s.first for s in shots])
    sums = np.add.reduceat(x, starts, axis=0)
    return _as_unit32(sums)


def scene_radius(x: np.ndarray, shots: Sequence[Shot], floor: float = 0.05) -> float:
    """How far apart (cosine distance) two rows must be to show different scenes: how much a view varies
    within a shot (motion, panning, noise), measured twice - three times the 90th percentile of the rows'
    distance to their own shot's mean, and four times the 25th percentile of the changes between
    consecutive rows (independent of the shots, so missed cuts cannot inflate it, and of cuts as long as
    they are under three quarters of the changes) - the smaller of the two, at least `floor`. A cut back
    to an earlier view lands within it; a new place lands beyond it. Erring low costs keyframes (bounded
    by the budget); erring high would hide scenes."""
    means = _segment_means(x, shots)
    owner = np.repeat(np.arange(len(shots)), [s.last - s.first + 1 for s in shots])
    spread = 1.0 - np.einsum("ij,ij->i", x, means[owner])
    steps = 1.0 - np.einsum("ij,ij->i", x[1:], x[:-1])
    return max(min(3.0 * float(np.percentile(spread, 90)), 4.0 * float(np.percentile(steps, 25))), floor)


def choose_keyframes(x: np.ndarray, shots: Sequence[Shot], *, budget: int, exact: int | None = None,
                     iterations: int = 15, stored: np.ndarray | None = None) -> tuple[list[int], np.ndarray, float]:
    """(keyframe rows in time order, scene label of every row, scene radius).

    Seeds by farthest-point traversal from the row nearest the overall mean, while the farthest row is
    more than the scene radius from every seed (or until `exact` seeds); k-means (cosine) from those seeds;
    the row nearest each centre. Then every shot whose mean is still farther than the radius from all
    keyframes gets its most typical row, budget permitting, so no distinct scene goes unseen.

    `stored` (bool per row) marks rows whose picture the store already holds: such a row is taken instead
    of the nearest one when it is nearly as near (within a quarter of the radius), which spares decoding."""
    n = len(x)
    radius = scene_radius(x, shots)
    tolerance = radius / 4

    def representative(members: np.ndarray, target: np.ndarray) -> int:
        similarity = x[members] @ target
        best = int(np.argmax(similarity))
        if stored is not None and not stored[members[best]]:
            ok = np.flatnonzero(stored[members] & (similarity >= similarity[best] - tolerance))
            if len(ok):
                best = int(ok[np.argmax(similarity[ok])])
        return int(members[best])

    k_max = min(n, exact if exact is not None else budget)
    centre = _as_unit32(x.mean(axis=0, keepdims=True))[0]
    seeds = [int(np.argmax(x @ centre))]
    nearest = 1.0 - x @ x[seeds[0]]
    while len(seeds) < k_max:
        far = int(np.argmax(nearest))
        if exact is None and nearest[far] <= radius:
            break
        if nearest[far] <= 1e-6:  # only duplicates left
            break
        seeds.append(far)
        nearest = np.minimum(nearest, 1.0 - x @ x[far])
    centres = x[seeds].copy()
    labels = np.zeros(n, dtype=np.int64)
    for _ in range(iterations):
        labels = np.argmax(x @ centres.T, axis=1)
        moved = centres.copy()
        for j in range(len(centres)):
            members = labels == j
            if members.any():
                moved[j] = _as_unit32(x[members].sum(axis=0, keepdims=True))[0]
        if np.allclose(moved, centres, atol=1e-6):
            break
        centres = moved
    labels = np.argmax(x @ centres.T, axis=1)
    chosen = []
    for j in range(len(centres)):
        members = np.flatnonzero(labels == j)
        if len(members):
            chosen.append(representative(members, centres[j]))
    if exact is None:
        means = _segment_means(x, shots)
        for s, shot in enumerate(shots):
            if len(chosen) >= k_max:
                break
            if float(np.max(x[chosen] @ means[s])) < 1.0 - radius:
                chosen.append(representative(np.arange(shot.first, shot.last + 1), means[s]))
    chosen = sorted(set(chosen))
    labels = np.argmax(x @ x[chosen].T, axis=1)  # scene = the keyframe a row is most like
    return chosen, labels, radius


# ----------------------------------------------------------------------------------------------- tags


@dataclass
class ConceptBank:
    concepts: list[Concept]
    embeddings: np.ndarray  # (C, D) unit
    scale: float  # SigLIP logit scale (exp'd) and bias: p = sigmoid(scale * cos + bias)
    bias: float
    digest: str

    @property
    def categories(self) -> np.ndarray:
        return np.array([c.category for c in self.concepts])


def _logit_params(encoder) -> tuple[float, float]:
    model = getattr(encoder, "model", None)
    try:
        scale = float(model.logit_scale.exp().item())
        bias = float(model.logit_bias.item()) if getattr(model, "logit_bias", None) is not None else 0.0
        return scale, bias
    except AttributeError:
        return 1.0, 0.0


def _embed_many_texts(encoder, texts: list[str], batch: int = 128) -> np.ndarray:
    """Hundreds of short prompts: batches far larger than the image batch (per call overhead dominates the
    text tower on CPU: 522 prompts took 10.6 s in batches of 8 and 1.2 s in batches of 256 here)."""
    size = getattr(encoder, "batch_size", None)
    if isinstance(size, int) and size < batch:
        encoder.batch_size = batch
    try:
        return encoder.embed_texts(texts)
    finally:
        if isinstance(size, int):
            encoder.batch_size = size


_BANK_BYTES: dict[str, bytes] = {}  # the last few vocabularies' embeddings in this process (small: ~0.8 MB each)


def concept_bank(store: ObjectStore, concepts: Sequence[Concept], model_id: str,
                 text_encoder: Callable[[], Any]) -> ConceptBank:
    """Text embeddings of the vocabulary, cached in the store per text model and vocabulary
    (`summaries/_vocabulary/{digest}.npz`), so repeated summaries never run the text tower."""
    digest = vocabulary_digest(concepts, model_id)
    key = f"summaries/_vocabulary/{digest}.npz"
    data = store.get(key) if store.exists(key) else _BANK_BYTES.get(digest)
    if data is None:
        encoder = text_encoder()
        embeddings = _as_unit32(_embed_many_texts(encoder, [c.text for c in concepts]))
        scale, bias = _logit_params(encoder)
        data = _npz_bytes({"embeddings": embeddings.astype(np.float16),
                           "params": np.array([scale, bias], dtype=np.float64)})
    if not store.exists(key):
        store.put(key, data)
    if len(_BANK_BYTES) >= 4:
        _BANK_BYTES.pop(next(iter(_BANK_BYTES)))
    _BANK_BYTES[digest] = data
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        params = arrays["params"]
        return ConceptBank(list(concepts), _as_unit32(arrays["embeddings"]), float(params[0]), float(params[1]), digest)


def tag_rows(means: np.ndarray, bank: ConceptBank, top: int, *, exclude: Sequence[str] = (),
             only: Sequence[str] = ()) -> list[list[dict]]:
    """Top concepts per row of unit SigLIP2 image embeddings, optionally limited to some categories."""
    if top <= 0 or len(means) == 0:
        return [[] for _ in range(len(means))]
    scores = means @ bank.embeddings.T
    categories = bank.categories
    mask = np.ones(len(bank.concepts), dtype=bool)
    if exclude:
        mask &= ~np.isin(categories, list(exclude))
    if only:
        mask &= np.isin(categories, list(only))
    scores = np.where(mask[None, :], scores, -np.inf)
    top = min(top, int(mask.sum()))
    order = np.argsort(-scores, axis=1, kind="stable")[:, :top]
    tags = []
    for row, picks in zip(scores, order):
        tags.append([{
            "label": bank.concepts[j].label, "category": bank.concepts[j].category,
            "score": round(float(row[j]), 4),
            "p": round(float(1.0 / (1.0 + math.exp(-(bank.scale * float(row[j]) + bank.bias)))), 4),
        } for j in picks])
    return tags


# ----------------------------------------------------------------------------------------------- text


def format_time(seconds: float, hours: bool = False) -> str:
    total = int(math.floor(max(seconds, 0.0) + 1e-6))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if hours or h else f"{m:02d}:{s:02d}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def build_segments(shots: Sequence[dict], shot_means: np.ndarray, max_lines: int) -> list[dict]:
    """Consecutive shots of one scene merged; then the shortest segment joins its more similar neighbour
    until at most `max_lines` remain."""
    segments: list[dict] = []
    for i, shot in enumerate(shots):
        if segments and segments[-1]["scene"] == shot["scene"]:
            seg = segments[-1]
            seg["end"], seg["last"] = shot["end"], i
            seg["sum"] = seg["sum"] + shot_means[i] * (shot["end"] - shot["start"])
        else:
            segments.append({"start": shot["start"], "end": shot["end"], "first": i, "last": i,
                             "scene": shot["scene"], "sum": shot_means[i] * max(shot["end"] - shot["start"], 1e-3)})
    while len(segments) > max_lines:
        lengths = np.array([s["end"] - s["start"] for s in segments])
        i = int(np.argmin(lengths))
        neighbours = [j for j in (i - 1, i + 1) if 0 <= j < len(segments)]

        def closeness(j: int) -> float:
            a, b = segments[i]["sum"], segments[j]["sum"]
            return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))

        j = max(neighbours, key=closeness)
        a, b = sorted((i, j))
        segments[a] = {"start": segments[a]["start"], "end": segments[b]["end"], "first": segments[a]["first"],
                       "last": segments[b]["last"], "scene": segments[a]["scene"],
                       "sum": segments[a]["sum"] + segments[b]["sum"]}
        del segments[b]
    return segments


def summary_text(summary: dict) -> str:
    hours = summary["range"]["end"] >= 3600
    name = Path(summary["source"]["source"]).name if summary["source"]["kind"] == "file" else summary["source"]["source"]
    r = summary["range"]
    lines = []
    if summary["untrained"]:
        lines.append(UNTRAINED_TEXT)
    events = summary["events"]
    lines.append(
        f"{name} {format_time(r['start'], hours)}-{format_time(r['end'], hours)}: "
        f"{_plural(len(summary['shots']), 'shot')}, {_plural(len(summary['keyframes']), 'keyframe')}"
        + (f", {_plural(len(events), 'event')}" if events else "")
    )
    for seg in summary["segments"]:
        head = f"{format_time(seg['start'], hours)}-{format_time(seg['end'], hours)}"
        body = f" {seg['heading']}" if seg["heading"] else ""
        if seg["tags"]:
            body += (": " if body else " ") + ", ".join(seg["tags"])
        notes = [f"{_plural(e['count'], e['kind'])} '{e['label']}'" for e in seg["events"]]
        lines.append(head + body + ("; " + "; ".join(notes) if notes else ""))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- images


def read_frames_at(path: str | Path, times: Sequence[float], short_side: int | None) -> dict[float, np.ndarray]:
    """The decoded frames at the given media times (each: the first frame at or after it), by seeking to
    the keyframe before each and decoding forward: work proportional to the few frames asked for."""
    path = str(path)
    found: dict[float, np.ndarray] = {}
    try:
        container = av.open(path, metadata_errors="ignore")
    except av.FFmpegError as exc:
        raise _decode.VideoDecodeError(path, None, exc) from exc
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for t in sorted(set(times)):
            try:
                container.seek(max(int(t / stream.time_base), 0), stream=stream, backward=True, any_frame=False)
                for frame in container.decode(stream):
                    if frame.time is not None and frame.time + 1e-4 >= t:
                        w, h = _decode.output_size(frame.width, frame.height, short_side)
                        rgb = frame.reformat(width=w, height=h, format="rgb24").to_ndarray()
                        found[t] = np.ascontiguousarray(_decode.apply_rotation(rgb, getattr(frame, "rotation", 0)))
                        break
            except av.FFmpegError as exc:
                raise _decode.VideoDecodeError(path, t, exc) from exc
    return found


def _jpeg(image: np.ndarray, quality: int = 88) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _decode_jpeg(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def stored_pictures(store: ObjectStore, track: FeatureTrack) -> np.ndarray:
    """Per row: does the store already hold its picture (a clip keyframe, or one an earlier summary kept)?"""
    if track.image_keys is not None:
        return np.array([key is not None for key in track.image_keys], dtype=bool)
    held = set()
    for prefix in (f"keyframes/{track.source_id}/", f"summaries/{track.source_id}/keyframes/"):
        held.update(int(key.rsplit("/", 1)[-1].split(".")[0]) for key in store.list(prefix) if key.endswith(".jpg"))
    return np.array([int(round(t * 1000)) in held for t in track.image_times], dtype=bool)


def fetch_keyframe_images(store: ObjectStore, track: FeatureTrack, rows: Sequence[int], *,
                          video: Path | None, short_side: int | None) -> dict[int, tuple[str, np.ndarray]]:
    """(store key, RGB image) per keyframe row: from the store when it holds the picture (the archive's
    clip keyframes, or one stored by an earlier summary), else decoded from the file by seeking and stored
    under `summaries/{source_id}/keyframes/`. Rows with no picture to be had are left out."""
    out: dict[int, tuple[str, np.ndarray]] = {}
    missing: dict[int, float] = {}
    for row in rows:
        pts = float(track.image_times[row])
        candidates = [track.image_keys[row]] if track.image_keys and track.image_keys[row] else []
        candidates += [keyframe_key(track.source_id, pts), summary_image_key(track.source_id, pts)]
        key = next((k for k in candidates if store.exists(k)), None)
        if key is not None:
            out[row] = (key, _decode_jpeg(store.get(key)))
        else:
            missing[row] = pts
    if missing and video is not None and video.is_file():
        frames = read_frames_at(video, list(missing.values()), short_side)
        for row, pts in missing.items():
            if pts in frames:
                key = summary_image_key(track.source_id, pts)
                data = _jpeg(frames[pts])
                store.put(key, data)
                out[row] = (key, _decode_jpeg(data))  # the stored pixels: a later run renders the same bytes
    return out


# ----------------------------------------------------------------------------------------------- schema


@lru_cache(maxsize=1)
def summary_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def validate_summary(summary: dict) -> None:
    """Raise jsonschema.ValidationError when `summary` does not follow `summary_schema.json`."""
    import jsonschema

    jsonschema.Draft202012Validator(summary_schema()).validate(summary)


# ----------------------------------------------------------------------------------------------- assembly


@dataclass
class SummaryResult:
    summary: dict
    keys: dict[str, str]  # summary / contact_sheet / timeline / report -> store key
    reused: bool  # the features came from the store: nothing was decoded for them
    feature_kind: str
    video_seconds: float
    elapsed: float
    images: dict[str, str] = field(default_factory=dict)  # keyframe image keys fetched or written


class _Stages:
    """A tqdm bar over the summary's stages (disabled unless `progress`)."""

    NAMES = ("shots", "keyframes", "tags", "images", "render", "write")

    def __init__(self, progress: bool):
        from tqdm import tqdm

        self.bar = tqdm(total=len(self.NAMES), desc="summarize", unit="step", disable=not progress, leave=False)

    def step(self, name: str) -> None:
        self.bar.set_postfix_str(name, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def _downsample(times: np.ndarray, values: np.ndarray, points: int = 1000) -> tuple[list[float], list[float]]:
    """At most `points` samples: the maximum of each bucket, at the bucket's first time."""
    if len(times) > points:
        edges = np.linspace(0, len(times), points + 1).astype(int)
        times = times[edges[:-1]]
        values = np.maximum.reduceat(values, edges[:-1])
    return [round(float(t), 3) for t in times], [round(float(v), 4) for v in values]


def summarize_track(
    track: FeatureTrack,
    store: ObjectStore,
    *,
    start: float | None = None,
    end: float | None = None,
    options: SummaryOptions | None = None,
    events: Iterable[TimelineEvent | Mapping] = (),
    queries: Sequence[str] = (),
    concepts: Sequence[Concept] | None = None,
    text_encoder: Any = None,
    captioner=None,
    video: str | Path | None = None,
    short_side: int | None = 256,
    progress: bool = False,
    reused: bool = True,
) -> SummaryResult:
    """Summarize the rows of `track` inside [start, end) and write the outputs to the store.

    `text_encoder` is a SigLIP encoder or a zero-argument callable returning one; it is only called when
    the vocabulary's embeddings are not cached yet or `queries` are given. `events` are TimelineEvents or
    mappings {t_start, t_end, label, ...} (an Alert as JSON works). `video` lets missing keyframe pictures
    be decoded from the file."""
    began = time.perf_counter()
    options = options or SummaryOptions()
    concepts = list(concepts) if concepts is not None else load_vocabulary()
    lo = 0.0 if start is None else max(0.0, float(start))
    hi = track.duration if end is None else min(float(end), track.duration)
    if hi <= lo:
        raise NotEnoughFootage(f"empty time range {lo:.3f}-{hi:.3f} s ({track.source} lasts {track.duration:.3f} s)")
    sub = track.select(lo, hi) if (start is not None or end is not None) else track
    if len(sub) < MIN_ROWS:
        raise NotEnoughFootage(
            f"{track.source}: {len(sub)} feature row(s) between {lo:.3f} and {hi:.3f} s "
            f"(one per {track.interval:g} s); a summary needs at least {MIN_ROWS}"
        )
    encoder_cache: list[Any] = []

    def text_tower():
        if not encoder_cache:
            if text_encoder is None:
                raise SummarizeError("a text encoder is needed (vocabulary not cached, or queries given)")
            encoder_cache.append(text_encoder() if callable(text_encoder) and not hasattr(text_encoder, "embed_texts")
                                 else text_encoder)
        return encoder_cache[0]

    stages = _Stages(progress)
    try:
        shots = detect_shots(sub, lo, hi, options)
        stages.step("shots")

        x = joint_embedding(sub)
        budget = keyframe_budget(hi - lo, options.max_keyframes)
        rows, labels, _ = choose_keyframes(x, shots, budget=budget, exact=options.keyframes,
                                           stored=stored_pictures(store, sub))
        scene_of_row = {row: j for j, row in enumerate(rows)}
        stages.step("keyframes")

        bank = concept_bank(store, concepts, sub.models.siglip, text_tower)
        shot_means = _segment_means(sub.siglip, shots)
        shot_tags = tag_rows(shot_means, bank, options.tags_per_shot)
        shot_records = []
        for i, (shot, tags) in enumerate(zip(shots, shot_tags)):
            votes = np.bincount(labels[shot.first:shot.last + 1], minlength=len(rows))
            shot_records.append({
                "index": i, "start": round(shot.start, 3), "end": round(shot.end, 3), "scene": int(np.argmax(votes)),
                "change": None if shot.change is None else round(shot.change, 4),
                "tags": [t["label"] for t in tags], "tag_scores": tags,
            })
        timeline_events = sorted(
            (e if isinstance(e, TimelineEvent) else TimelineEvent.from_mapping(e) for e in events),
            key=lambda e: (e.t_start, e.t_end, e.label),
        )
        timeline_events = [e for e in timeline_events if e.t_end >= lo and e.t_start <= hi]
        segments = build_segments(shot_records, shot_means, options.max_lines)
        seg_means = _as_unit32(np.stack([s["sum"] for s in segments]))
        headings = tag_rows(seg_means, bank, 1, only=("place",))
        seg_tags = tag_rows(seg_means, bank, 3, exclude=("place",))
        segment_records = []
        seg_starts = [seg["start"] for seg in segments]
        counts: list[dict[tuple[str, str], int]] = [{} for _ in segments]
        for e in timeline_events:  # an event belongs to the segment in which it starts
            at = max(0, bisect.bisect_right(seg_starts, max(e.t_start, lo)) - 1)
            counts[at][(e.kind, e.label)] = counts[at].get((e.kind, e.label), 0) + 1
        for seg, head, tags, count in zip(segments, headings, seg_tags, counts):
            segment_records.append({
                "start": round(seg["start"], 3), "end": round(seg["end"], 3), "shots": [seg["first"], seg["last"]],
                "heading": head[0]["label"] if head else None, "tags": [t["label"] for t in tags],
                "events": [{"kind": k, "label": lab, "count": c} for (k, lab), c in count.items()],
            })
        query_records = []
        if queries:
            vectors = _as_unit32(text_tower().embed_texts(list(queries)))
            for text, vector in zip(queries, vectors):
                times, scores = _downsample(sub.times, sub.siglip @ vector)
                query_records.append({"text": text, "times": times, "scores": scores})
        stages.step("tags")

        video_path = Path(video) if video is not None else None
        pictures = fetch_keyframe_images(store, sub, rows, video=video_path, short_side=short_side)
        captions: dict[int, str] = {}
        if captioner is not None and pictures:
            ordered = [row for row in rows if row in pictures]
            captions = dict(zip(ordered, captioner.caption([pictures[row][1] for row in ordered])))
        shot_index = np.searchsorted([s.first for s in shots], rows, side="right") - 1
        keyframe_records = [{
            "t": round(float(sub.image_times[row]), 3), "image": pictures[row][0] if row in pictures else None,
            "shot": int(shot_index[j]), "scene": scene_of_row[row], "caption": captions.get(row),
        } for j, row in enumerate(rows)]
        stages.step("images")

        prefix = summary_prefix(track.source_id, start, end)
        keys = {name: check_key(f"{prefix}/{file}") for name, file in (
            ("summary", "summary.json"), ("contact_sheet", "contact_sheet.png"), ("timeline", "timeline.png"),
            ("report", "report.html"))}
        summary = {
            "schema_version": SCHEMA_VERSION,
            "source": {"source": track.source, "source_id": track.source_id, "kind": track.source_kind},
            "range": {"start": round(lo, 3), "end": round(hi, 3), "duration": round(track.duration, 3)},
            "models": asdict(track.models),
            "untrained": bool(track.models.untrained),
            "captioner": getattr(captioner, "model_id", None) if captioner is not None else None,
            "features": {"kind": sub.kind, "interval": round(sub.interval, 6), "count": len(sub)},
            "settings": {"sensitivity": options.sensitivity, "min_change": options.min_change,
                         "min_shot": options.min_shot, "keyframes_requested": options.keyframes,
                         "max_keyframes": options.max_keyframes, "tags_per_shot": options.tags_per_shot},
            "vocabulary": {"size": len(concepts), "digest": bank.digest, "template": TEMPLATE},
            "shots": shot_records,
            "keyframes": keyframe_records,
            "segments": segment_records,
            "events": [e.to_json() for e in timeline_events],
            "queries": query_records,
            "text": "",
            "files": keys,
        }
        summary["text"] = summary_text(summary)
        validate_summary(summary)

        from pipeline.summaries import render as render

        thumbs = {j: pictures[row][1] for j, row in enumerate(rows) if row in pictures}
        sheet = render.contact_sheet_png(summary, thumbs, width=options.thumb_width)
        timeline = render.timeline_png(summary)
        report = render.report_html(summary, sheet, timeline, thumbs)
        stages.step("render")

        store.put(keys["contact_sheet"], sheet)
        store.put(keys["timeline"], timeline)
        store.put(keys["report"], report.encode("utf-8"))
        store.put(keys["summary"], (json.dumps(summary, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode())
        stages.step("write")
    finally:
        stages.close()
    return SummaryResult(summary, keys, reused, sub.kind, hi - lo, time.perf_counter() - began,
                         {str(r): pictures[r][0] for r in pictures})


# ----------------------------------------------------------------------------------------------- entry points


def expected_model_ids(spec) -> tuple[str, str]:
    """The model ids a `--models` spec will record (folders absolute), without loading anything."""
    from pipeline.models import resolve_models

    source = resolve_models(spec)

    def norm(value: str) -> str:
        path = Path(value).expanduser()
        return str(path.absolute()) if path.is_dir() else value

    return norm(source.siglip), norm(source.dinov2)


def _same_models(models: ModelIds, wanted: tuple[str, str] | None) -> bool:
    return wanted is None or (models.siglip, models.dinov2) == wanted


def stored_track(store: ObjectStore, sid: str, *, shots_from: str = "auto", wanted: tuple[str, str] | None = None,
                 file: Path | None = None, settings: dict | None = None, start: float | None = None,
                 end: float | None = None) -> FeatureTrack | None:
    """The features of a source already in the store, or None: per-frame features (summaries/.../frames.npz)
    when fresh, else (auto or clips) the archive's clip windows. Fresh means: made with the `wanted` models
    (any when None), from the file as it is now (size and mtime) and, for frames, with these decode settings."""
    if shots_from in ("auto", "frames"):
        track = read_frame_track(store, sid)
        if track is not None and _same_models(track.models, wanted):
            fresh = file is None or track.meta.get("file") == _file_identity(file)
            if fresh and (settings is None or track.meta.get("settings") == settings):
                return track
    if shots_from in ("auto", "clips"):
        track = read_clip_track(store, sid, start, end)
        if track is not None and _same_models(track.models, wanted):
            record = track.meta.get("record")
            if file is None or (record and (record["size"], record["mtime_ns"]) == tuple(_file_identity(file).values())):
                return track
    return None


def _load_text_encoder(model_id: str, config) -> Any:
    from pipeline.models import SiglipEncoder

    return SiglipEncoder.from_pretrained(model_id, device=config.device, precision=config.precision,
                                         batch_size=config.batch_size)


def summarize_file(
    path: str | Path,
    config,
    store: ObjectStore,
    *,
    encoders=None,
    models_explicit: bool = False,
    start: float | None = None,
    end: float | None = None,
    options: SummaryOptions | None = None,
    progress: bool = False,
    **kwargs,
) -> SummaryResult:
    """Summarize one video file: per-frame features from the store when fresh (else the archive's clips in
    `shots_from="auto"`), otherwise decoded once, streaming, and stored for next time.

    Models: `encoders` if given; else `config.models` when `models_explicit`; else the models the stored
    features were made with (like `vigil search`), falling back to `config.models` for a fresh decode."""
    began = time.perf_counter()
    options = options or SummaryOptions()
    path = Path(path)
    if not path.exists():
        raise SummarizeError(f"no such file: {path}")
    if not path.is_file():
        raise SummarizeError(f"{path} is not a file: summarize takes one video file")
    if path.stat().st_size == 0:
        raise SummarizeError(f"{path} is empty (0 bytes): nothing to summarize")
    path = path.resolve()
    sid = source_id(str(path))
    if encoders is not None:
        wanted = (encoders.ids.siglip, encoders.ids.dinov2)
    elif models_explicit:
        wanted = expected_model_ids(config.models)
    else:
        wanted = None
    track = stored_track(store, sid, shots_from=options.shots_from, wanted=wanted, file=path,
                         settings=decode_settings(config))
    reused = track is not None
    if track is None:
        if options.shots_from == "clips":
            raise SummarizeError(f"{path} has no stored clips in {store.url} (made with these models): "
                                 "run `vigil index` first, or summarize with shots from frames")
        if encoders is None:
            from pipeline.models import load_encoders

            encoders = load_encoders(config.models, device=config.device, precision=config.precision,
                                     batch_size=config.batch_size)
        track = _decode_and_store(path, config, store, encoders, progress)
    if encoders is not None and (encoders.ids.siglip, encoders.ids.dinov2) == (track.models.siglip, track.models.dinov2):
        text_encoder: Any = encoders.siglip
    else:
        text_encoder = lambda: _load_text_encoder(track.models.siglip, config)  # noqa: E731 - lazy: often unused
    result = summarize_track(track, store, start=start, end=end, options=options, text_encoder=text_encoder,
                             video=path, short_side=config.decode.short_side, progress=progress, reused=reused,
                             **kwargs)
    result.elapsed = time.perf_counter() - began  # decoding and model loading included
    return result


def _decode_and_store(path: Path, config, store: ObjectStore, encoders, progress: bool) -> FeatureTrack:
    from tqdm import tqdm

    duration = _decode.probe(path).duration
    started = time.perf_counter()
    bar = tqdm(total=round(duration, 1), unit="s", desc="decoding + features", disable=not progress,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} video s [{elapsed}<{remaining}{postfix}]")
    done = [0.0]

    def advance(position: float) -> None:
        position = min(position, duration)
        bar.update(max(0.0, position - done[0]))
        done[0] = max(done[0], position)
        bar.set_postfix_str(f"{bar.n / max(time.perf_counter() - started, 1e-6):.1f}x realtime", refresh=False)

    try:
        track = extract_frame_track(path, config, encoders, on_progress=advance)
        advance(duration)
    finally:
        bar.close()
    write_frame_track(store, track)
    return track


_SOURCE_ID = re.compile(r"^[a-z0-9-]*-[0-9a-f]{12}$")


def summarize_stored(
    store: ObjectStore,
    source: str,
    *,
    start: float | None = None,
    end: float | None = None,
    config=None,
    shots_from: str = "auto",
    **kwargs,
) -> SummaryResult:
    """Summarize a time range of a source (a file path, a camera id or a source_id) from what the store
    holds: its per-frame features, or its clip windows. Never decodes features. The live monitor's stored
    alerts for the source join the given `events`. This is what the rolling summarizer actor of the live
    monitor calls for each camera and period."""
    candidates = [source] if _SOURCE_ID.match(source) else []
    candidates.append(source_id(source))
    if Path(source).expanduser().exists():
        candidates.append(source_id(str(Path(source).expanduser().resolve())))
    track = None
    for sid in dict.fromkeys(candidates):
        track = stored_track(store, sid, shots_from=shots_from, start=start, end=end)
        if track is not None:
            break
    if track is None:
        raise SummarizeError(f"nothing stored for {source} in {store.url}: no per-frame features and no clips")
    if config is not None and "text_encoder" not in kwargs:
        kwargs["text_encoder"] = lambda: _load_text_encoder(track.models.siglip, config)
    video = Path(track.source) if track.source_kind == "file" and Path(track.source).is_file() else None
    kwargs["events"] = [*kwargs.get("events", ()), *stored_alerts(store, track.source_id)]
    return summarize_track(track, store, start=start, end=end, video=video,
                           options=kwargs.pop("options", None) or SummaryOptions(shots_from=shots_from), **kwargs)


class RollingSummaries:
    """Rolling summaries of live cameras: period k of a camera is [k * every, (k + 1) * every) of its media
    time, summarized from its stored clip windows (`summarize_stored`) under the period's range key once
    every window overlapping it is in the store.

    What is done comes from the store: periods are summarized in order, so every period before a camera's
    latest stored period summary is settled (summarized, or with too little footage to summarize), and a
    restart or a replay writes no period twice. A summary's `summary.json` is its last object written, so
    a period interrupted mid-write is done again, over the same keys."""

    def __init__(self, store: ObjectStore, *, every: float, window: float, **options):
        """`window`: the clip window length (windows are [k * window, (k + 1) * window)); `options` go to
        `summarize_stored` (`config` or `text_encoder` for the vocabulary's first embedding, events, ...)."""
        if every <= 0 or window <= 0:
            raise ValueError(f"the summary period and the clip window must be positive, got {every} and {window}")
        self.store = store
        self.every = every
        self.window = window
        self.options = options
        self._next_period: dict[str, int] = {}  # camera -> its first period not settled yet

    def period_prefix(self, camera: str, period: int) -> str:
        return summary_prefix(source_id(camera), period * self.every, (period + 1) * self.every)

    def _first_unsettled(self, camera: str) -> int:
        if camera not in self._next_period:
            latest = -1
            for key in self.store.list(f"summaries/{source_id(camera)}/range-"):
                if not key.endswith("/summary.json"):
                    continue
                prefix = key.rsplit("/", 1)[0]
                start_ms = int(prefix.rsplit("/range-", 1)[1].split("-", 1)[0])
                period = round(start_ms / 1000 / self.every)
                if self.period_prefix(camera, period) == prefix:  # one of ours, not a summary of another range
                    latest = max(latest, period)
            self._next_period[camera] = latest + 1
        return self._next_period[camera]

    def advance(self, latest_pts: Mapping[str, float], *, ended: bool = False) -> list[SummaryResult]:
        """Summarize the periods that became complete, given the latest pts each camera's stored output covers.

        A camera's open clip window is not stored yet; every window before it is. With `ended` the streams
        ended and their last windows were flushed to the store, so the last, partial period is summarized
        too (under its period's key). Returns the summaries written."""
        written = []
        for camera, pts in sorted(latest_pts.items()):
            if ended:
                due = math.floor(pts / self.every + 1e-9) + 1
            else:
                stored_until = math.floor(pts / self.window + 1e-9) * self.window  # the open window's start
                due = math.floor(stored_until / self.every + 1e-9)
            for period in range(self._first_unsettled(camera), due):
                start, end = period * self.every, (period + 1) * self.every
                try:
                    written.append(summarize_stored(self.store, camera, start=start, end=end, shots_from="clips",
                                                    **self.options))
                except NotEnoughFootage as exc:  # the camera was off, or a short tail: nothing to show
                    log.warning("no rolling summary of %s %s-%s: %s", camera, format_time(start), format_time(end), exc)
                self._next_period[camera] = period + 1
        return written


def export_summary(store: ObjectStore, result: SummaryResult, folder: str | Path) -> list[Path]:
    """Copy the summary files (and the keyframe pictures it names) to a folder a person opens."""
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SummarizeError(f"cannot create output folder {folder}: {exc}") from None
    written = []
    for key in result.keys.values():
        target = folder / key.rsplit("/", 1)[-1]
        target.write_bytes(store.get(key))
        written.append(target)
    for keyframe in result.summary["keyframes"]:
        if keyframe["image"]:
            target = folder / "keyframes" / keyframe["image"].rsplit("/", 1)[-1]
            target.parent.mkdir(exist_ok=True)
            target.write_bytes(store.get(keyframe["image"]))
            written.append(target)
    return written


__all__ = [
    "SCHEMA_VERSION", "SummarizeError", "NotEnoughFootage", "SummaryOptions", "TimelineEvent", "read_events",
    "stored_alerts", "FeatureTrack", "Shot", "ConceptBank", "SummaryResult", "frames_key", "summary_prefix", "decode_settings",
    "read_frame_track", "write_frame_track", "read_clip_track", "extract_frame_track", "frame_changes",
    "adaptive_threshold", "detect_shots", "joint_embedding", "keyframe_budget", "scene_radius",
    "choose_keyframes", "concept_bank", "tag_rows", "build_segments", "summary_text", "format_time",
    "read_frames_at", "fetch_keyframe_images", "summary_schema", "validate_summary", "summarize_track",
    "summarize_file", "summarize_stored", "RollingSummaries", "stored_track", "expected_model_ids",
    "export_summary",
]
