"""A video source sampled as the `decode` config section says: the one place that section becomes decoder
arguments, for archive files, embedded monitor sources, Kafka ingest and summaries alike."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from pipeline.config import DecodeConfig
from pipeline.media.decode import DecodeStream, SamplingGrid, Shortcuts, StillFrameMarker, decode_frames
from pipeline.media.streams import is_live, read_live
from pipeline.records import Frame


def decode_file(
    path: str | Path, decode: DecodeConfig, *, source: str | None = None, camera: str | None = None
) -> DecodeStream:
    """A file's sampled frames: the section's rate, size, keyframe path ("auto": when keyframes are dense
    enough), threads and backend. The stream reports which keyframe path it took."""
    return decode_frames(
        path,
        fps=decode.fps,
        short_side=decode.short_side or None,
        keyframes_only=None if decode.keyframes_only == "auto" else decode.keyframes_only,
        threads=decode.threads,
        backend=decode.backend,
        source=source,
        camera=camera,
        shortcuts=Shortcuts(decode.skip_unsampled_gops, decode.skip_nonref_frames, decode.skip_loop_filter),
    )


def still_marker(decode: DecodeConfig) -> StillFrameMarker | None:
    """The marker of still frames the section asks for; None when `still_threshold` is 0 (marking off)."""
    return StillFrameMarker(decode.still_threshold) if decode.still_threshold > 0 else None


def mark_still(frames: Iterator[Frame], decode: DecodeConfig) -> Iterator[Frame]:
    """`frames` with near-duplicates of their source's previous frame marked still (`still_threshold` > 0)."""
    marker = still_marker(decode)
    return frames if marker is None else map(marker.mark, frames)


def first_seconds(frames: Iterable[Frame], seconds: float) -> Iterator[Frame]:
    """The frames of the first `seconds` of media time, counted from the first frame's pts."""
    start = None
    for frame in frames:
        start = frame.pts if start is None else start
        if frame.pts - start >= seconds:
            return
        yield frame


def sampled_frames(
    url: str | Path,
    decode: DecodeConfig,
    *,
    camera: str | None = None,
    source: str | None = None,
    tracker_rate: float | None = None,
) -> Iterator[Frame]:
    """A file's or a live URL's sampled frames with still frames marked: what the models are fed. Frames of
    a camera carry its id as source and camera; a live stream reconnects with the default policy.

    A `tracker_rate` above the section's rate (a live tracker's `detect.rate`) samples at that rate instead,
    and marks `tracker_only` the frames between those the section's rate takes of them: the models see about
    the section's rate, the tracker all."""
    url = str(url)
    models_fps = decode.fps
    if tracker_rate is not None and tracker_rate > models_fps:
        decode = decode.model_copy(update={"fps": tracker_rate})
    if is_live(url):
        frames: Iterator[Frame] = read_live(
            url, camera=camera or url, fps=decode.fps, short_side=decode.short_side or None
        )
    else:
        frames = decode_file(url, decode, source=source or camera, camera=camera)
    if decode.fps > models_fps:
        frames = _mark_tracker_only(frames, models_fps)
    return mark_still(frames, decode)


def _mark_tracker_only(frames: Iterator[Frame], models_fps: float) -> Iterator[Frame]:
    """Each source's frames off a grid of `models_fps` (its first frame at or after each point is on it) marked
    `tracker_only`."""
    grids: dict[str, SamplingGrid] = {}
    for frame in frames:
        frame.tracker_only = not grids.setdefault(frame.source, SamplingGrid(models_fps)).take(frame.pts)
        yield frame
