"""The feature track: one SigLIP2 and one DINOv2 unit vector per row along media time, a row being a sampled
frame (`kind="frames"`) or a stored clip window (`kind="clips"`); and reading a few frames of a file.

Where the per-frame features come from (the decision the store layout forces): the archive job keeps only
clip windows (`clips/{source_id}/*.npz`, 2 s by default), too coarse for boundaries within one sampling
interval. So summarizing a file decodes it once (streaming: batches of frames are embedded and dropped) and
stores the per-frame features as one compact object, `summaries/{source_id}/frames.npz` (float16, keyed by
the file's size and mtime, the decode settings and the models); any later summary of that file, of any
range, reads it and decodes nothing. When a source has no frames.npz but was indexed (or is a camera whose
clips are stored), shots come from the clip windows instead: no decode, boundaries at window edges (the
`features` block of summary.json says which, with its interval).

Memory: features grow with the sampled frames (~2.3 KB per frame with the default models, float16);
frames themselves are never held beyond one model batch.
"""

from __future__ import annotations

import bisect
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import av
import numpy as np

from pipeline.media import decode as _decode
from pipeline.media.decode import probe
from pipeline.media.sampling import sampled_frames
from pipeline.records import ModelIds
from pipeline.search.embed import FeatureCarry, extract_features, model_batches
from pipeline.storage.clips import read_clip
from pipeline.storage.codecs import decode_npz, encode_npz
from pipeline.storage.layout import (
    clip_start_ms,
    clips_prefix,
    file_source_id,
    ms,
    source_key,
    summary_frames_key,
)
from pipeline.storage.store import ObjectStore
from pipeline.summaries.errors import SummarizeError

MIN_ROWS = 2  # the fewest feature rows a summary is made from


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
        keep = np.flatnonzero(
            (self.times > start - lead + 1e-9 * bool(lead) - 1e-9 * (not lead)) & (self.times < end - 1e-9)
        )
        if self.kind == "frames":
            keep = keep[self.times[keep] >= start - 1e-9]
        return replace(
            self,
            times=self.times[keep],
            siglip=self.siglip[keep],
            dinov2=self.dinov2[keep],
            image_times=self.image_times[keep],
            image_keys=None if self.image_keys is None else [self.image_keys[i] for i in keep],
        )


def unit_rows(x: np.ndarray) -> np.ndarray:
    """The rows of `x` scaled to unit length, as float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _file_identity(path: Path) -> dict:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def write_frame_track(store: ObjectStore, track: FeatureTrack) -> str:
    meta = {
        **track.meta,
        "source": track.source,
        "source_id": track.source_id,
        "interval": track.interval,
        "duration": track.duration,
        "models": asdict(track.models),
    }
    key = summary_frames_key(track.source_id)
    store.put(
        key,
        encode_npz(
            {
                "times": track.times.astype(np.float64),
                "siglip": track.siglip.astype(np.float16),
                "dinov2": track.dinov2.astype(np.float16),
                "meta": np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8),
            }
        ),
    )
    return key


def read_frame_track(store: ObjectStore, sid: str) -> FeatureTrack | None:
    key = summary_frames_key(sid)
    if not store.exists(key):
        return None
    data = decode_npz(store.get(key))
    meta = json.loads(data["meta"].tobytes())
    times = data["times"]
    return FeatureTrack(
        source=meta["source"],
        source_id=meta["source_id"],
        kind="frames",
        times=times,
        siglip=unit_rows(data["siglip"]),
        dinov2=unit_rows(data["dinov2"]),
        interval=float(meta["interval"]),
        duration=float(meta["duration"]),
        models=ModelIds(**meta["models"]),
        image_times=times.copy(),
        meta=meta,
    )


def read_clip_track(
    store: ObjectStore, sid: str, start: float | None = None, end: float | None = None
) -> FeatureTrack | None:
    """The stored clip windows of a source (indexed file or camera) as a coarse track. With `start`/`end`,
    only the windows starting in [start, end) and the one before (it may reach into the range) are read,
    so a camera's rolling summaries cost the same however long it has been recorded."""
    keys = sorted(store.list(clips_prefix(sid)), key=clip_start_ms)
    if start is not None or end is not None:
        starts = [clip_start_ms(key) for key in keys]
        first = max(0, bisect.bisect_right(starts, ms(start or 0.0)) - 1)
        last = bisect.bisect_left(starts, ms(end)) if end is not None else len(keys)
        keys = keys[first : max(last, first + 1)]
    if not keys:
        return None
    clips = sorted((read_clip(store, key) for key in keys), key=lambda c: c.start)
    record = store.get_json(source_key(sid)) if store.exists(source_key(sid)) else None
    duration = float(record["duration"]) if record and record.get("duration") else max(c.end for c in clips)
    models = {c.models for c in clips}
    if len(models) != 1:
        raise SummarizeError(f"the stored clips of {sid} were made with different models: re-index the source")
    return FeatureTrack(
        source=clips[0].source,
        source_id=sid,
        kind="clips",
        times=np.array([c.start for c in clips], dtype=np.float64),
        siglip=unit_rows(np.stack([c.siglip for c in clips])),
        dinov2=unit_rows(np.stack([c.dinov2 for c in clips])),
        interval=float(np.median([c.end - c.start for c in clips])),
        duration=duration,
        models=clips[0].models,
        image_times=np.array([c.keyframe_pts for c in clips], dtype=np.float64),
        image_keys=[c.keyframe_key for c in clips],
        source_kind=record.get("kind", "file") if record else "camera",  # older file records have no kind
        meta={"record": record},
    )


def extract_frame_track(
    path: Path,
    config,
    encoders,
    *,
    on_progress: Callable[[float], None] = lambda seconds: None,
) -> FeatureTrack:
    """Decode `path` at the configured sampling and embed every sampled frame, streaming: each model batch
    of frames is dropped once embedded; only the features stay (float16, ~2.3 KB per frame)."""
    info = probe(path)
    d = config.decode
    times: list[float] = []
    siglip_parts: list[np.ndarray] = []
    dinov2_parts: list[np.ndarray] = []
    carry = FeatureCarry()
    for batch in model_batches(sampled_frames(path, d, source=str(path)), config.batch_size):
        s_rows, d_rows = [], []
        for frame, features in carry.per_frame(extract_features(batch, encoders)):
            s_rows.append(features.siglip)
            d_rows.append(features.dinov2)
            times.append(frame.pts)
        siglip_parts.append(np.asarray(s_rows, dtype=np.float16))
        dinov2_parts.append(np.asarray(d_rows, dtype=np.float16))
        on_progress(batch.frames[-1].pts)
        del batch
    if len(times) < MIN_ROWS:
        raise SummarizeError(
            f"{path}: only {len(times)} frame could be sampled ({info.duration:.2f} s of video at {d.fps:g} fps): "
            f"a summary needs at least {MIN_ROWS} (a longer video, or a higher --fps)"
        )
    stamp = np.asarray(times, dtype=np.float64)
    meta = {"file": _file_identity(path), "settings": config.decode.sampling()}
    return FeatureTrack(
        source=str(path),
        source_id=file_source_id(path),
        kind="frames",
        times=stamp,
        siglip=unit_rows(np.concatenate(siglip_parts)),
        dinov2=unit_rows(np.concatenate(dinov2_parts)),
        interval=1.0 / d.fps,
        duration=max(info.duration, float(stamp[-1])),
        models=encoders.ids,
        image_times=stamp.copy(),
        meta=meta,
    )


def extract_and_store_frame_track(path: Path, config, store: ObjectStore, encoders, progress: bool) -> FeatureTrack:
    """`extract_frame_track` with a progress bar in video seconds, then the track stored for every later summary."""
    from tqdm import tqdm

    duration = probe(path).duration
    started = time.perf_counter()
    bar = tqdm(
        total=round(duration, 1),
        unit="s",
        desc="decoding + features",
        disable=not progress,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} video s [{elapsed}<{remaining}{postfix}]",
    )
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


def _same_models(models: ModelIds, wanted: tuple[str, str] | None) -> bool:
    return wanted is None or (models.siglip, models.dinov2) == wanted


def stored_track(
    store: ObjectStore,
    sid: str,
    *,
    shots_from: str = "auto",
    wanted: tuple[str, str] | None = None,
    file: Path | None = None,
    settings: dict | None = None,
    start: float | None = None,
    end: float | None = None,
) -> FeatureTrack | None:
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
            if file is None or (
                record and (record["size"], record["mtime_ns"]) == tuple(_file_identity(file).values())
            ):
                return track
    return None


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
