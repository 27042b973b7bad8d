"""Decoding with sampling: PyAV (FFmpeg) primary, decord optional.

`decode_frames` walks a time grid t0, t0 + 1/fps, ... and emits the first decoded frame whose pts
reaches the next grid time, so `Frame.pts` is always an exact media time taken from the stream's
time base (variable frame rate works). When every keyframe gap fits inside one sampling interval,
only keyframes are decoded (`plan_sampling`), which is several times cheaper than decoding every
frame. Output images are RGB uint8, upright (display-matrix rotation applied) and resized by the
decoder's scaler so the short side equals `short_side`.

Every failure of the input (cannot open, no video stream, garbage, truncated data) surfaces as
`VideoDecodeError` naming the file and the media position of the last good frame.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

import av
import numpy as np

from pipeline.records import Frame

__all__ = [
    "VideoDecodeError",
    "VideoInfo",
    "Shortcuts",
    "NO_SHORTCUTS",
    "DecodeStream",
    "probe",
    "plan_sampling",
    "decode_frames",
    "mark_still_frames",
    "output_size",
    "apply_rotation",
    "BACKENDS",
]

log = logging.getLogger(__name__)

BACKENDS = ("pyav", "decord")

# Grid comparisons tolerate this much float noise (seconds); media time bases are far coarser.
_EPS = 1e-6
# Keyframe-only sampling is chosen when the largest keyframe gap <= interval * (1 + this).
_KEYFRAME_TOLERANCE = 0.01
# Truncation: data ending more than this many frame periods (+ 10 ms) before the declared
# stream duration means the file was cut.
_TRUNCATION_FRAMES = 2.0


class VideoDecodeError(Exception):
    """A video could not be (fully) decoded. `position` is the media time (s) of the last good
    frame or packet, None when nothing could be read at all."""

    def __init__(self, path, position: float | None, cause: object):
        self.path = str(path)
        self.position = None if position is None else float(position)
        self.cause = str(cause)
        where = "before any frame was read" if self.position is None else f"at {self.position:.3f} s"
        super().__init__(f"cannot decode {self.path} {where}: {self.cause}")

    def __reduce__(self):  # picklable across processes (Ray workers)
        return (type(self), (self.path, self.position, self.cause))


@dataclass(frozen=True)
class VideoInfo:
    path: str
    duration: float  # seconds
    fps: float  # average frame rate
    width: int  # displayed (upright) width, i.e. after `rotation` is applied
    height: int  # displayed (upright) height
    rotation: int  # counter-clockwise degrees to turn the stored picture upright: 0, 90, 180 or 270
    keyframe_interval: float | None  # largest gap between keyframes (s), the stream end included
    frame_count: int = 0  # video packets demuxed
    creation_time: float | None = None  # when the recording started (Unix seconds), if the container says
    keyframe_times: tuple[float, ...] = ()  # media times of the keyframes, ascending
    end_time: float | None = None  # media time the last frame ends (its pts plus its duration)


@dataclass(frozen=True)
class Shortcuts:
    """Work the decoder may leave out when the sampling does not need it (each measured by bench.archive).

    unsampled_gops: packets of a GOP (keyframe to keyframe) after its last sampled frame are never decoded,
        a GOP holding no sampled frame not at all: the effect of seeking to the next sample's keyframe, without
        a seek (the demuxer reads on; only decoding costs).
    nonref_frames: frames no other frame references (most B-frames) are not decoded (H.264 and HEVC); a sample
        then falls on the next decoded frame, a frame period or two later, its pts still exact.
    loop_filter: the deblocking filter is skipped when the output is at most half the picture's size, where
        the blocking it removes is averaged away by the downscale (H.264 has no reduced-resolution decoding).
    """

    unsampled_gops: bool = True
    nonref_frames: bool = True
    loop_filter: bool = True


NO_SHORTCUTS = Shortcuts(unsampled_gops=False, nonref_frames=False, loop_filter=False)
# Codecs whose decoders skip non-reference frames and whose skipped frames nothing else needs.
_NONREF_CODECS = frozenset({"h264", "hevc"})


# --------------------------------------------------------------------------------------------- helpers


def check_fps(fps: float) -> float:
    try:
        value = float(fps)
    except (TypeError, ValueError):
        raise ValueError(f"fps must be a positive number, got {fps!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"fps must be a positive finite number, got {fps!r}")
    return value


def _normalise_rotation(degrees) -> int:
    """Any angle -> 0, 90, 180 or 270 (nearest quarter turn, counter-clockwise)."""
    if degrees is None:
        return 0
    return int(round(float(degrees) / 90.0)) % 4 * 90


def apply_rotation(image: np.ndarray, rotation: int) -> np.ndarray:
    """Turn a stored picture upright: `rotation` is the counter-clockwise angle reported by the
    display matrix (`VideoFrame.rotation`, -180..180 or 0..270). Returns a C-contiguous array."""
    k = _normalise_rotation(rotation) // 90
    if k == 0:
        return image
    return np.ascontiguousarray(np.rot90(image, k=k))


def _even(x: float) -> int:
    return max(2, int(round(x / 2.0)) * 2)


def output_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) with the short side scaled to `short_side`, aspect ratio kept, both even.
    None keeps the original size."""
    if short_side is None:
        return int(width), int(height)
    scale = float(short_side) / float(min(width, height))
    return _even(width * scale), _even(height * scale)


def plan_sampling(info: VideoInfo, fps: float) -> bool:
    """True when decoding only keyframes still yields at least one frame per sampling interval,
    i.e. the largest keyframe gap (stream end included) is <= 1/fps (1% tolerance)."""
    interval = 1.0 / check_fps(fps)
    gap = info.keyframe_interval
    return gap is not None and gap <= interval * (1.0 + _KEYFRAME_TOLERANCE) + _EPS


class SamplingGrid:
    """Sampling grid t0, t0 + 1/fps, ...: `take(t)` says whether the frame at `t` is emitted, and
    if so moves the grid past `t`. Grid points use an integer step count (no float drift)."""

    def __init__(self, fps: float):
        self.interval = 1.0 / fps
        self.t0: float | None = None
        self.k = 0

    def next_time(self) -> float:
        """The grid time the next emitted frame must reach (-inf before the first frame)."""
        return -math.inf if self.t0 is None else self.t0 + self.k * self.interval

    def take(self, t: float) -> bool:
        if self.t0 is None:
            self.t0 = t
        if t + _EPS < self.t0 + self.k * self.interval:
            return False
        self.k = math.floor((t - self.t0) / self.interval + _EPS) + 1
        return True


def _open(path: str):
    try:
        container = av.open(path, metadata_errors="ignore")
    except av.FFmpegError as e:
        raise VideoDecodeError(path, None, e) from e
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(path, None, "no video stream")
    return container


def _declared_duration(stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    return None


def _nominal_fps(stream) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate):
        if rate:
            return float(rate)
    return None


def _truncation(declared: float | None, start: float | None, end: float | None, fps: float | None) -> str | None:
    """A reason string when the demuxed data ends clearly before the declared stream duration."""
    if declared is None or end is None:
        return None
    period = 1.0 / fps if fps else 1.0 / 30.0
    measured = end - (start or 0.0)
    if measured < declared - (_TRUNCATION_FRAMES * period + 0.01):
        return f"data ends at {measured:.3f} s but the container declares {declared:.3f} s (truncated file?)"
    return None


def _creation_time(path: str, container, stream) -> float | None:
    """The container's `creation_time` (else the video stream's) as Unix seconds; None when there is none or
    it is not a time after 1970 (muxers write 0, read back as 1970 or 1904, for "unset")."""
    for metadata in (container.metadata, stream.metadata):
        text = (metadata.get("creation_time") or "").strip()
        if not text:
            continue
        try:  # ISO 8601 as FFmpeg writes it; "Z" spelled out for Python 3.10, no zone taken as UTC
            moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            log.warning("%s: creation_time %r is not ISO 8601; its recording start is unknown", path, text[:40])
            continue
        seconds = (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()
        if seconds > 0:
            return seconds
    return None


# --------------------------------------------------------------------------------------------- probe


def probe(path) -> VideoInfo:
    """Demux every video packet (decoding only the first frame, for the rotation) to measure the
    duration, frame rate, size and the largest keyframe gap, and read when the recording started. Raises
    VideoDecodeError on input that cannot be read, has no video stream, or is truncated/corrupt."""
    path = str(path)
    container = _open(path)
    with container:
        stream = container.streams.video[0]
        tb = stream.time_base
        ctx = stream.codec_context
        ctx.thread_count = 1  # only one frame is decoded here
        keyframes: list[float] = []
        start = end = last = None
        count = 0
        rotation = None
        try:
            for packet in container.demux(stream):
                if packet.is_corrupt:
                    raise VideoDecodeError(path, last, "corrupt or incomplete packet (truncated file?)")
                if packet.size == 0:
                    continue
                count += 1
                if packet.pts is not None:
                    t = float(packet.pts * tb)
                    start = t if start is None else min(start, t)
                    t_end = t + float((packet.duration or 0) * tb)
                    end = t_end if end is None else max(end, t_end)
                    last = t if last is None else max(last, t)
                    if packet.is_keyframe:
                        keyframes.append(t)
                if rotation is None:  # decode until the first frame comes out
                    for frame in ctx.decode(packet):
                        rotation = getattr(frame, "rotation", 0)  # PyAV >= 13
                        break
        except av.FFmpegError as e:
            raise VideoDecodeError(path, last, e) from e
        if count == 0:
            raise VideoDecodeError(path, None, "no video packets")
        fps = _nominal_fps(stream)
        declared = _declared_duration(stream)
        reason = _truncation(declared, start, end, fps)
        if reason:
            raise VideoDecodeError(path, last, reason)
        # The demuxed extent is the truth (muxers can write odd edit-list durations for VFR
        # streams); the declared duration only serves when no packet carried a pts.
        measured = (end - start) if end is not None and start is not None else None
        duration = measured if measured else (declared or 0.0)
        if fps is None:
            fps = count / duration if duration > 0 else 0.0
        gap = None
        if keyframes:
            kf = sorted(keyframes)
            stops = kf + ([end] if end is not None else [])
            gap = max((b - a for a, b in zip(stops, stops[1:])), default=0.0)
        rot = _normalise_rotation(rotation)
        w, h = ctx.width, ctx.height
        if rot in (90, 270):
            w, h = h, w
        creation = _creation_time(path, container, stream)
        return VideoInfo(path, duration, fps, w, h, rot, gap, count, creation, tuple(sorted(keyframes)), end)


# --------------------------------------------------------------------------------------------- decode


class DecodeStream(Iterator[Frame]):
    """The iterator `decode_frames` returns. After the first frame is requested, `keyframes_only`
    tells which path was taken and `info` holds the probe result (None when no probe was needed);
    `frames_decoded` counts the pictures the decoder produced so far (PyAV), sampled or not."""

    def __init__(self, gen_factory):
        self.keyframes_only: bool | None = None
        self.info: VideoInfo | None = None
        self.frames_decoded = 0
        self._gen = gen_factory(self)

    def __next__(self) -> Frame:
        return next(self._gen)

    def close(self) -> None:
        self._gen.close()

    def __enter__(self) -> DecodeStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def decode_frames(
    path,
    *,
    fps: float = 1.0,
    short_side: int | None = 256,
    keyframes_only: bool | None = None,
    threads: int = 2,
    backend: str = "pyav",
    source: str | None = None,
    camera: str | None = None,
    shortcuts: Shortcuts = NO_SHORTCUTS,
) -> DecodeStream:
    """Decode `path`, sampled at `fps` frames per second of media time, as upright RGB `Frame`s.

    keyframes_only: None = automatic (`plan_sampling` on `probe`), True = decode keyframes only,
    False = decode every frame (less the `shortcuts`, PyAV only). Arguments are validated now; the file is
    opened on first `next()`.
    """
    fps = check_fps(fps)
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    if short_side is not None and int(short_side) < 2:
        raise ValueError(f"short_side must be >= 2 or None, got {short_side!r}")
    if keyframes_only not in (None, True, False):
        raise ValueError("keyframes_only must be None, True or False")
    path = os.fspath(path)
    src = source or str(path)

    def factory(state: DecodeStream):
        args = (state, str(path), fps, short_side, keyframes_only, max(1, int(threads)), src, camera)
        return _decode_pyav(*args, shortcuts) if backend == "pyav" else _decode_decord(*args)

    return DecodeStream(factory)


def _decide(state: DecodeStream, path: str, fps: float, keyframes_only: bool | None, need_info: bool) -> bool:
    if keyframes_only is None or need_info:
        state.info = probe(path)
    if keyframes_only is None:
        keyframes_only = plan_sampling(state.info, fps)
        log.info(
            "%s: largest keyframe gap %s s, sampling interval %.3f s -> %s",
            path,
            None if state.info.keyframe_interval is None else round(state.info.keyframe_interval, 3),
            1.0 / fps,
            "keyframes only" if keyframes_only else "all frames",
        )
    state.keyframes_only = bool(keyframes_only)
    return state.keyframes_only


def _decode_pyav(state, path, fps, short_side, keyframes_only, threads, source, camera, shortcuts) -> Iterator[Frame]:
    need_keyframe_times = shortcuts.unsampled_gops and keyframes_only is not True
    keyframes_only = _decide(state, path, fps, keyframes_only, need_info=need_keyframe_times)
    container = _open(path)
    with container:
        stream = container.streams.video[0]
        tb = stream.time_base
        context = stream.codec_context
        stream.thread_type = "AUTO"
        context.thread_count = threads
        if keyframes_only:
            context.skip_frame = "NONKEY"
        elif shortcuts.nonref_frames and context.name in _NONREF_CODECS:
            context.skip_frame = "NONREF"
        if shortcuts.loop_filter and not keyframes_only and short_side is not None:
            if 2 * int(short_side) <= min(context.width, context.height):
                context.options = {**context.options, "skip_loop_filter": "all"}
        # where each GOP ends: the next keyframe, the last one at the end of the stream
        gop_ends: tuple[float, ...] = ()
        if shortcuts.unsampled_gops and not keyframes_only:
            info = state.info
            gop_ends = info.keyframe_times + ((info.end_time,) if info.end_time is not None else ())
        gop_end = math.inf
        nominal = _nominal_fps(stream)
        period = 1.0 / nominal if nominal else 1.0 / 30.0
        grid = SamplingGrid(fps)
        index = 0
        last_good: float | None = None  # last decoded frame time
        last_packet: float | None = None  # latest pts of a packet read (and decoded) without error
        start = end = None

        def position() -> float | None:
            known = [t for t in (last_good, last_packet) if t is not None]
            return max(known) if known else None

        try:
            for packet in container.demux(stream):
                if packet.is_corrupt:
                    raise VideoDecodeError(path, position(), "corrupt or incomplete packet (truncated file?)")
                t_packet = None
                if packet.size and packet.pts is not None:
                    t_packet = float(packet.pts * tb)
                    start = t_packet if start is None else min(start, t_packet)
                    t_end = t_packet + float((packet.duration or 0) * tb)
                    end = t_end if end is None else max(end, t_end)
                if gop_ends and packet.is_keyframe and t_packet is not None:
                    following = bisect.bisect_right(gop_ends, t_packet + _EPS)
                    gop_end = gop_ends[following] if following < len(gop_ends) else math.inf
                unneeded = keyframes_only and not packet.is_keyframe
                # the rest of this GOP (closed: its frames show before `gop_end`) holds no sample
                unneeded = unneeded or (t_packet is not None and grid.next_time() >= gop_end - _EPS)
                if packet.size and unneeded:
                    if t_packet is not None:  # intact, just not needed
                        last_packet = t_packet if last_packet is None else max(last_packet, t_packet)
                    continue  # never even parsed: the cheap path
                for frame in stream.decode(packet):
                    state.frames_decoded += 1
                    t = frame.time
                    if t is None:  # no pts: continue from the previous frame
                        t = (last_good + period) if last_good is not None else 0.0
                    last_good = t
                    if not grid.take(t):
                        continue
                    rotation = getattr(frame, "rotation", 0)
                    # scaled in stored orientation (the short side is the same either way)
                    w, h = output_size(frame.width, frame.height, short_side)
                    rgb = frame.reformat(width=w, height=h, format="rgb24").to_ndarray()
                    image = np.ascontiguousarray(apply_rotation(rgb, rotation))  # rows may be padded
                    yield Frame(source, t, index, image, camera=camera)
                    index += 1
                if t_packet is not None:
                    last_packet = t_packet if last_packet is None else max(last_packet, t_packet)
        except av.FFmpegError as e:
            raise VideoDecodeError(path, position(), e) from e
        reason = _truncation(_declared_duration(stream), start, end, nominal)
        if reason:
            raise VideoDecodeError(path, position(), reason)
        if index == 0:
            raise VideoDecodeError(path, None, "no frame could be decoded")


def _resize_rgb(image: np.ndarray, width: int, height: int) -> np.ndarray:
    if image.shape[1] == width and image.shape[0] == height:
        return image
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    return frame.reformat(width=width, height=height).to_ndarray()


def _decode_decord(state, path, fps, short_side, keyframes_only, threads, source, camera) -> Iterator[Frame]:
    try:
        import decord
        from decord._ffi.base import DECORDError
    except ImportError as e:
        raise ImportError("backend='decord' needs the decord package: pip install decord") from e
    # Probe with PyAV in any case: it validates the file (truncation) and gives the rotation.
    keyframes_only = _decide(state, path, fps, keyframes_only, need_info=True)
    info = state.info
    errors = (RuntimeError, DECORDError)
    # decord applies the display rotation itself, but its width/height resize is broken for rotated
    # videos (scrambled or failing buffers), so then decode at full size and scale with swscale.
    target = output_size(info.width, info.height, short_side)
    native_resize = short_side is not None and info.rotation == 0
    kwargs = {"width": target[0], "height": target[1]} if native_resize else {}
    last_good: float | None = None
    try:
        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=threads, **kwargs)
        n = len(reader)
        if n == 0:
            raise VideoDecodeError(path, None, "no frames")
        times = reader.get_frame_timestamp(np.arange(n))[:, 0].astype(np.float64)
        candidates = sorted(reader.get_key_indices()) if keyframes_only else range(n)
        grid = SamplingGrid(fps)
        chosen = [i for i in candidates if grid.take(float(times[i]))]
        index = 0
        for c in range(0, len(chosen), 16):  # bounded memory: 16 frames per batch
            chunk = chosen[c : c + 16]
            batch = reader.get_batch(chunk).asnumpy()
            for i, image in zip(chunk, batch):
                if short_side is not None and not native_resize:
                    image = _resize_rgb(image, *target)
                last_good = float(times[i])
                yield Frame(source, last_good, index, np.ascontiguousarray(image), camera=camera)
                index += 1
    except errors as e:
        raise VideoDecodeError(path, last_good, e) from e


# --------------------------------------------------------------------------------------------- stills

_THUMB = 32
_GRAY = np.array([0.299, 0.587, 0.114], np.float32)


def _thumbnail(image: np.ndarray, size: int = _THUMB) -> np.ndarray:
    """Grayscale area-average thumbnail (at most size x size), float32 in 0..255."""
    gray = image.astype(np.float32) @ _GRAY if image.ndim == 3 else image.astype(np.float32)
    h, w = gray.shape
    rows, cols = min(size, h), min(size, w)
    r_edges = (np.arange(rows) * h) // rows
    c_edges = (np.arange(cols) * w) // cols
    sums = np.add.reduceat(np.add.reduceat(gray, r_edges, axis=0), c_edges, axis=1)
    counts = np.diff(np.append(r_edges, h))[:, None] * np.diff(np.append(c_edges, w))[None, :]
    return sums / counts


class StillFrameMarker:
    """Sets `frame.still = True` when a frame is a near-duplicate of the last non-still frame of its
    source (each source against its own, so interleaved cameras work): mean absolute difference of 32x32
    grayscale area thumbnails below `threshold` (0..255 units). The first frame of each source is never
    still; comparing against the last *non-still* frame makes slow drift accumulate until it triggers a
    fresh (non-still) frame.

    Default 1.0: averaging ~100-900 pixels per thumbnail cell cancels codec and sensor noise, so a
    still H.264 camera measures 0.0-0.25 (keyframe re-encodes included), while an object covering
    ~1% of the picture with ~50 levels of luma contrast that moves to a new place already measures
    ~1.0 (it changes the cells it left and the cells it entered). Misses cost recall and false
    alarms only cost a model call, so the threshold sits low, ~4x above the noise floor.
    """

    def __init__(self, threshold: float = 1.0):
        self.threshold = threshold
        self._references: dict[str, np.ndarray] = {}  # per source, the thumbnail of its last non-still frame

    def mark(self, frame: Frame) -> Frame:
        if frame.tracker_only:  # never a model's: neither still nor a reference
            return frame
        thumb = _thumbnail(frame.image)
        reference = self._references.get(frame.source)
        still = (
            reference is not None
            and thumb.shape == reference.shape
            and float(np.abs(thumb - reference).mean()) < self.threshold
        )
        frame.still = bool(still)
        if not still:
            self._references[frame.source] = thumb
        return frame


def mark_still_frames(frames: Iterable[Frame], threshold: float = 1.0) -> Iterator[Frame]:
    """`frames` with their `still` flags set by one `StillFrameMarker`."""
    marker = StillFrameMarker(threshold)
    for frame in frames:
        yield marker.mark(frame)
