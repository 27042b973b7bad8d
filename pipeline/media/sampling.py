"""A video source sampled as the `decode` config section says: the one place that section becomes decoder
arguments, for archive files, embedded monitor sources, Kafka ingest and summaries alike."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from pipeline.config import DecodeConfig, VigilConfig
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
        frames = map(TrackerOnlyMarker(models_fps).mark, frames)
    return mark_still(frames, decode)


def sampling_rate(config: VigilConfig) -> float:
    """The frames a second a source is sampled at: `decode.fps`, or a live tracker's `detect.rate` when it is
    above that (`vigil ingest` sends them all; the monitor marks those between the models' `tracker_only`)."""
    return max(config.decode.fps, config.detect.rate) if config.track.live else config.decode.fps


class TrackerOnlyMarker:
    """Marks `tracker_only` each source's frames off a grid of the models' rate (its first frame at or after each
    grid point is on it): frames sampled above that rate for a live tracker alone."""

    def __init__(self, models_fps: float):
        self.models_fps = models_fps
        self._grids: dict[str, SamplingGrid] = {}

    def mark(self, frame: Frame) -> Frame:
        frame.tracker_only = not self._grids.setdefault(frame.source, SamplingGrid(self.models_fps)).take(frame.pts)
        return frame


def tracker_only_marker(config: VigilConfig) -> TrackerOnlyMarker | None:
    """The marker a monitor's frames need: one when they come above the models' rate (`sampling_rate`)."""
    return TrackerOnlyMarker(config.decode.fps) if sampling_rate(config) > config.decode.fps else None
