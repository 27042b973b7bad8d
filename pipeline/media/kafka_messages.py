"""The `vigil.frames` wire format of live monitoring: messages made from frames, and frames from messages.

Wire format, schema version 1 (no pickle, nothing executable: bytes a JPEG or H.264 decoder reads):

    key      camera id (UTF-8, 1-256 bytes, no control characters or line breaks: the rule of
             `pipeline.cameras`): one camera stays in one partition
    value    codec "jpeg": the JPEG bytes of one RGB frame
             codec "h264/mpegts": an MPEG-TS segment of H.264 frames that starts on a keyframe and
             decodes on its own (no frame refers outside the segment)
    headers  vigil-schema  "1"
             camera        the camera id again; must equal the key
             pts           media time of the (first) frame in seconds, as decimal text ("12.04")
             frame-index   index of the (first) frame in the camera's sampled stream
             codec         "jpeg" | "h264/mpegts"
             width,height  picture size in pixels (every frame of a segment has it)
             frames        segments: number of frames (1..MAX_SEGMENT_FRAMES); jpeg: absent or "1"
             duration      segments: seconds from the first frame's pts to the end of the segment
             wallclock     optional: when the camera took the (first) frame, Unix seconds as decimal text
                           ("1796025600.25"); absent, the record's CreateTime timestamp stands in for it

A segment's frame i has pts = header pts + (its MPEG-TS time - the first frame's MPEG-TS time), and wall
clock = header wallclock + (its pts - the first frame's pts); the 90 kHz MPEG-TS clock represents 25, 30
and 29.97 fps frame times exactly.

`decode_message` checks all of it (and a size limit) and raises `MalformedMessage(reason)`; the clients
(`pipeline.media.kafka_clients`) send such messages to `vigil.dlq`. Nothing here talks to a broker.

Decoded size is bounded too (ARCHITECTURE.md, delivery invariant 4): a few hundred kilobytes of H.264 can
decode to gigabytes. A message whose headers announce more than `max_pixels` decoded pixels (frames x width x
height; config `kafka.max_message_pixels`) is refused before any decoding, and the payload is held to its
headers while it decodes: no picture larger than announced is even allocated, and decoding stops at the
first frame beyond the announced count. Frames are converted (and downscaled, with `short_side`) one at a
time, so only the output frames are held.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import av
import numpy as np
from PIL import Image

from pipeline.cameras import check_camera_id
from pipeline.config import KafkaConfig
from pipeline.media.decode import output_size
from pipeline.records import Frame
from pipeline.storage.codecs import encode_jpeg

SCHEMA_VERSION = "1"
CODEC_JPEG = "jpeg"
CODEC_SEGMENT = "h264/mpegts"
CODECS = (CODEC_JPEG, CODEC_SEGMENT)

# Kafka's own default limit (message.max.bytes): a message we build always fits a default broker.
DEFAULT_MAX_MESSAGE_BYTES = KafkaConfig.model_fields["max_message_bytes"].default
DEFAULT_MAX_MESSAGE_PIXELS = KafkaConfig.model_fields["max_message_pixels"].default
MAX_SIDE = 8192
MAX_PIXELS = 8192 * 4320
MAX_SEGMENT_FRAMES = 1000
MAX_SEGMENT_SECONDS = 600.0
MAX_PTS = 1e10  # seconds (> 300 years): anything beyond is garbage

H_SCHEMA = "vigil-schema"
H_CAMERA = "camera"
H_PTS = "pts"
H_INDEX = "frame-index"
H_CODEC = "codec"
H_WIDTH = "width"
H_HEIGHT = "height"
H_FRAMES = "frames"
H_DURATION = "duration"
H_WALLCLOCK = "wallclock"
H_REASON = "reason"
_KNOWN = (H_SCHEMA, H_CAMERA, H_PTS, H_INDEX, H_CODEC, H_WIDTH, H_HEIGHT, H_FRAMES, H_DURATION, H_WALLCLOCK)

_DECIMAL = re.compile(r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$")
_INTEGER = re.compile(r"^[0-9]{1,19}$")
_TS_CLOCK = 90000  # MPEG-TS timestamps tick at 90 kHz
_TS_BASE = Fraction(1, _TS_CLOCK)
_BINARY = (bytes, bytearray, memoryview)  # what a key, value or header value may be (bytes(n) of an int allocates n)


class MalformedMessage(ValueError):
    """A message that is not a valid `vigil.frames` message; `reason` says what is wrong."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


# --------------------------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class Message:
    """One Kafka record to send: key, value and headers, all bytes."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]

    @property
    def size(self) -> int:
        return len(self.key or b"") + len(self.value) + sum(len(k) + len(v) for k, v in self.headers)

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v.decode()
        return None


def _camera_of(frame: Frame, camera: str | None) -> str:
    return check_camera_id(camera or frame.camera or frame.source)


def _fmt_time(t: float) -> str:
    t = float(t)
    if not math.isfinite(t):
        raise ValueError(f"time must be finite, got {t!r}")
    return repr(round(t, 6))


def _headers(
    camera: str, pts: float, index: int, codec: str, width: int, height: int, wallclock: float | None, **extra
) -> list[tuple[str, bytes]]:
    if wallclock is not None:
        extra[H_WALLCLOCK] = _fmt_time(wallclock)
    items = [
        (H_SCHEMA, SCHEMA_VERSION),
        (H_CAMERA, camera),
        (H_PTS, _fmt_time(pts)),
        (H_INDEX, str(int(index))),
        (H_CODEC, codec),
        (H_WIDTH, str(int(width))),
        (H_HEIGHT, str(int(height))),
        *((k, v) for k, v in extra.items()),
    ]
    return [(k, str(v).encode()) for k, v in items]


def _check_size(message: Message, max_bytes: int) -> Message:
    if len(message.value) > max_bytes:
        raise ValueError(f"message value of {len(message.value)} bytes exceeds the limit of {max_bytes} bytes")
    return message


def frame_message(
    frame: Frame, camera: str | None = None, *, quality: int = 90, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> Message:
    """One frame as a JPEG message. `camera` defaults to `frame.camera`, then `frame.source`; the frame's
    wall clock, when it has one, goes in the `wallclock` header."""
    cam = _camera_of(frame, camera)
    image = np.ascontiguousarray(frame.image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"frame image must be RGB uint8 (H, W, 3), got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    headers = _headers(cam, frame.pts, frame.index, CODEC_JPEG, width, height, frame.wallclock)
    return _check_size(Message(cam.encode(), encode_jpeg(image, quality), headers), max_bytes)


def segment_message(
    frames: Sequence[Frame],
    camera: str | None = None,
    *,
    period: float | None = None,
    crf: int = 23,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> Message:
    """Frames (increasing pts, one size) as one self-contained H.264 MPEG-TS segment message.

    The first frame is an IDR keyframe and no frame refers outside the segment, so any consumer can
    decode it alone. Frame times are kept relative to the first frame on the 90 kHz MPEG-TS clock; the
    first frame's wall clock, when it has one, goes in the `wallclock` header.
    `period` is the sampling interval, used for the segment's duration (last - first + period);
    None takes the mean gap between frames. Odd sizes are cropped by one pixel (yuv420p)."""
    if not frames:
        raise ValueError("a segment needs at least one frame")
    if len(frames) > MAX_SEGMENT_FRAMES:
        raise ValueError(f"a segment holds at most {MAX_SEGMENT_FRAMES} frames, got {len(frames)}")
    cam = _camera_of(frames[0], camera)
    first = frames[0]
    shape = first.image.shape
    if any(f.image.shape != shape for f in frames):
        raise ValueError("every frame of a segment must have the same size")
    if len(shape) != 3 or shape[2] != 3:
        raise ValueError(f"frame images must be RGB (H, W, 3), got {shape}")
    height, width = shape[0] & ~1, shape[1] & ~1
    if width < 2 or height < 2:
        raise ValueError(f"frames too small for H.264: {shape}")
    ticks: list[int] = []
    for f in frames:
        tick = int(round((float(f.pts) - float(first.pts)) * _TS_CLOCK))
        if ticks and tick <= ticks[-1]:
            if float(f.pts) < float(frames[len(ticks) - 1].pts):
                raise ValueError("segment frames must have increasing pts")
            tick = ticks[-1] + 1
        ticks.append(tick)
    span = ticks[-1] / _TS_CLOCK
    if period is None:
        period = span / (len(frames) - 1) if len(frames) > 1 else 0.0
    duration = span + float(period)

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mpegts") as container:
        rate = Fraction(1 / period).limit_denominator(1001) if period and period > 0 else Fraction(25)
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = _TS_BASE
        stream.codec_context.time_base = _TS_BASE
        # zerolatency: no B-frames and no lookahead, so frames leave the encoder in order and at once;
        # one IDR at the start (keyint beyond the segment) keeps the segment small and self-contained.
        stream.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "crf": str(int(crf)),
            "x264-params": f"keyint={MAX_SEGMENT_FRAMES + 1}:min-keyint=1:scenecut=0:threads=1",
        }
        for f, tick in zip(frames, ticks):
            image = np.ascontiguousarray(f.image[:height, :width], dtype=np.uint8)
            vf = av.VideoFrame.from_ndarray(image, format="rgb24")
            vf.pts = tick
            for packet in stream.encode(vf):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    headers = _headers(
        cam,
        first.pts,
        first.index,
        CODEC_SEGMENT,
        width,
        height,
        first.wallclock,
        **{H_FRAMES: len(frames), H_DURATION: _fmt_time(duration)},
    )
    return _check_size(Message(cam.encode(), buf.getvalue(), headers), max_bytes)


def _text(name: str, raw) -> str:
    if raw is None:
        raise MalformedMessage(f"header '{name}' has no value")
    if isinstance(raw, str):
        return raw
    try:
        if not isinstance(raw, _BINARY):
            raise TypeError
        return bytes(raw).decode("utf-8")
    except (UnicodeDecodeError, TypeError):
        raise MalformedMessage(f"header '{name}' is not UTF-8 text") from None


def _decimal(values: Mapping[str, str], name: str, lo: float, hi: float) -> float:
    text = values.get(name)
    if text is None:
        raise MalformedMessage(f"missing header '{name}'")
    if not _DECIMAL.match(text):
        raise MalformedMessage(f"header '{name}' is not a decimal number: {text[:40]!r}")
    value = float(text)
    if not (math.isfinite(value) and lo <= value <= hi):
        raise MalformedMessage(f"header '{name}' = {text[:40]} is out of range [{lo}, {hi}]")
    return value


def _integer(values: Mapping[str, str], name: str, lo: int, hi: int) -> int:
    text = values.get(name)
    if text is None:
        raise MalformedMessage(f"missing header '{name}'")
    if not _INTEGER.match(text):
        raise MalformedMessage(f"header '{name}' is not a non-negative integer: {text[:40]!r}")
    value = int(text)
    if not lo <= value <= hi:
        raise MalformedMessage(f"header '{name}' = {value} is out of range [{lo}, {hi}]")
    return value


@dataclass(frozen=True)
class FrameHeaders:
    """The validated headers of a `vigil.frames` message."""

    camera: str
    pts: float
    index: int
    codec: str
    width: int
    height: int
    frames: int
    duration: float
    wallclock: float | None = None  # of the (first) frame, Unix seconds; None when the header is absent

    @property
    def pixels(self) -> int:
        """The decoded pixels the message asks for: frames x width x height."""
        return self.frames * self.width * self.height


def parse_headers(headers: Iterable[tuple[str, Any]] | None) -> FrameHeaders:
    """Validate the headers of a `vigil.frames` message (unknown extra headers are ignored)."""
    values: dict[str, str] = {}
    try:
        items = list(headers or ())
    except TypeError:
        raise MalformedMessage("headers are not a list of (name, value) pairs") from None
    for item in items:
        try:
            name, raw = item
        except (TypeError, ValueError):
            raise MalformedMessage("headers are not (name, value) pairs") from None
        if name in _KNOWN:
            if name in values:
                raise MalformedMessage(f"duplicate header '{name}'")
            values[name] = _text(name, raw)
    version = values.get(H_SCHEMA)
    if version is None:
        raise MalformedMessage(f"missing header '{H_SCHEMA}' (not a vigil.frames message)")
    if version != SCHEMA_VERSION:
        raise MalformedMessage(f"unsupported schema version {version[:20]!r} (this reader knows {SCHEMA_VERSION!r})")
    camera = values.get(H_CAMERA)
    if not camera:
        raise MalformedMessage(f"missing header '{H_CAMERA}'")
    codec = values.get(H_CODEC)
    if codec is None:
        raise MalformedMessage(f"missing header '{H_CODEC}'")
    if codec not in CODECS:
        raise MalformedMessage(f"unknown codec {codec[:40]!r} (expected one of {', '.join(CODECS)})")
    pts = _decimal(values, H_PTS, -MAX_PTS, MAX_PTS)
    index = _integer(values, H_INDEX, 0, 2**63 - 1)
    width = _integer(values, H_WIDTH, 1, MAX_SIDE)
    height = _integer(values, H_HEIGHT, 1, MAX_SIDE)
    if width * height > MAX_PIXELS:
        raise MalformedMessage(f"picture of {width}x{height} exceeds {MAX_PIXELS} pixels")
    if codec == CODEC_JPEG:
        frames = _integer(values, H_FRAMES, 1, 1) if H_FRAMES in values else 1
        duration = _decimal(values, H_DURATION, 0, MAX_SEGMENT_SECONDS) if H_DURATION in values else 0.0
    else:
        frames = _integer(values, H_FRAMES, 1, MAX_SEGMENT_FRAMES)
        duration = _decimal(values, H_DURATION, 0, MAX_SEGMENT_SECONDS)
        if width % 2 or height % 2:
            raise MalformedMessage(f"H.264 segment size {width}x{height} is not even")
    wallclock = _decimal(values, H_WALLCLOCK, 0, MAX_PTS) if H_WALLCLOCK in values else None
    return FrameHeaders(camera, pts, index, codec, width, height, frames, duration, wallclock)


def _check_key(key) -> str:
    if key is None:
        raise MalformedMessage("missing key (the camera id)")
    try:
        if not isinstance(key, (str, *_BINARY)):
            raise TypeError
        text = bytes(key).decode("utf-8") if not isinstance(key, str) else key
    except (UnicodeDecodeError, TypeError):
        raise MalformedMessage("key is not UTF-8 text") from None
    if not text:
        raise MalformedMessage("empty key (the camera id)")
    try:
        return check_camera_id(text)
    except ValueError as exc:
        raise MalformedMessage(f"key: {exc}") from None


def _output_size(h: FrameHeaders, short_side: int | None) -> tuple[int, int]:
    """The size frames leave the decoder at: the message's own, or smaller, with the short side `short_side`
    (never larger: a producer's small frames stay small)."""
    if short_side is None or min(h.width, h.height) <= short_side:
        return h.width, h.height
    return output_size(h.width, h.height, short_side)


def _decode_jpeg(value: bytes, h: FrameHeaders, size: tuple[int, int]) -> list[Frame]:
    # A JPEG starts with SOI and ends with EOI: anything else is not one, or was cut short (a truncated
    # JPEG may otherwise decode "successfully" with grey rows where Pillow is lenient).
    if not value.startswith(b"\xff\xd8\xff"):
        raise MalformedMessage("value is not a JPEG (no SOI marker)")
    if not value.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise MalformedMessage("truncated JPEG (no EOI marker)")
    try:
        with Image.open(io.BytesIO(value), formats=["JPEG"]) as img:
            if img.size != (h.width, h.height):
                raise MalformedMessage(f"JPEG is {img.size[0]}x{img.size[1]} but headers say {h.width}x{h.height}")
            if size != img.size:
                img.draft("RGB", size)  # DCT scaling: decoded at 1/2, 1/4 or 1/8 size where that still covers `size`
            img.load()
            rgb = img.convert("RGB")
            if rgb.size != size:
                rgb = rgb.resize(size, Image.Resampling.BILINEAR)
            image = np.asarray(rgb)
    except MalformedMessage:
        raise
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... on bad data
        raise MalformedMessage(f"undecodable JPEG: {exc}") from None
    return [Frame(h.camera, h.pts, h.index, np.ascontiguousarray(image), camera=h.camera, wallclock=h.wallclock)]


def _decode_segment(value: bytes, h: FrameHeaders, size: tuple[int, int]) -> list[Frame]:
    frames: list[Frame] = []
    t0 = None
    # FFmpeg's decoders (the one probing the stream included) refuse a picture larger than this before
    # allocating it: a segment whose stream is larger than its headers say costs no memory to refuse. They
    # count buffers: the picture rounded up to whole macroblocks (16 pixels; 32 rows with field coding), rows
    # padded to up to 64 bytes.
    picture = str((h.width + 80) * (h.height + 32))
    options = {"probesize": str(max(32, len(value))), "max_pixels": picture}
    try:
        with av.open(io.BytesIO(value), mode="r", format="mpegts", options=options) as c:
            if len(c.streams.video) != 1:
                raise MalformedMessage(f"segment has {len(c.streams.video)} video streams, expected 1")
            stream = c.streams.video[0]
            context = stream.codec_context
            if context.name != "h264":
                raise MalformedMessage(f"segment video is {context.name}, expected h264")
            if context.width and (context.width, context.height) != (h.width, h.height):
                raise MalformedMessage(
                    f"segment stream is {context.width}x{context.height} but headers say {h.width}x{h.height}"
                )
            context.thread_count = 1
            context.options = {"max_pixels": picture}
            for vf in c.decode(stream):
                if not frames and not vf.key_frame:
                    raise MalformedMessage("segment does not start on a keyframe")
                if len(frames) >= h.frames:
                    raise MalformedMessage(f"segment holds more than the {h.frames} frames its headers announce")
                if (vf.width, vf.height) != (h.width, h.height):
                    raise MalformedMessage(
                        f"segment frame is {vf.width}x{vf.height} but headers say {h.width}x{h.height}"
                    )
                if vf.pts is None:
                    raise MalformedMessage("segment frame without a timestamp")
                t = vf.pts * vf.time_base
                t0 = t if t0 is None else t0
                offset = float(t - t0)
                if offset < 0 or offset > h.duration + 1e-3 or (frames and h.pts + offset <= frames[-1].pts):
                    raise MalformedMessage(
                        f"segment frame time {offset:.6f} s is outside the segment (duration {h.duration} s) "
                        "or out of order"
                    )
                # one frame at a time, straight to its output size: only the output frames are held
                image = vf.reformat(width=size[0], height=size[1], format="rgb24").to_ndarray()
                wallclock = None if h.wallclock is None else round(h.wallclock + offset, 6)
                frames.append(
                    Frame(
                        h.camera,
                        round(h.pts + offset, 6),
                        h.index + len(frames),
                        image,
                        camera=h.camera,
                        wallclock=wallclock,
                    )
                )
    except MalformedMessage:
        raise
    except Exception as exc:  # av.FFmpegError and friends on garbage
        raise MalformedMessage(f"undecodable segment: {exc}") from None
    if len(frames) != h.frames:
        raise MalformedMessage(f"segment decodes to {len(frames)} frames but headers announce {h.frames}")
    return frames


def value_problem(value: Any, max_bytes: int) -> str | None:
    """Why a record's value cannot be a message (not bytes, empty, over `max_bytes`), or None: the checks every
    message kind on vigil's topics starts with."""
    if value is not None and not isinstance(value, _BINARY):
        return f"value is {type(value).__name__}, not bytes"
    if value is None or len(value) == 0:
        return "empty value"
    if len(value) > max_bytes:
        return f"value of {len(value)} bytes exceeds the limit of {max_bytes} bytes"
    return None


def decode_message(
    key,
    value,
    headers,
    *,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_pixels: int = DEFAULT_MAX_MESSAGE_PIXELS,
    short_side: int | None = None,
    timestamp_ms: int | None = None,
) -> list[Frame]:
    """The frames of a `vigil.frames` message (one for JPEG, every frame of a segment, in order), as
    `Frame(source=camera, pts, index, RGB image, camera=camera, wallclock)`. Raises `MalformedMessage` for
    anything wrong: key, headers, schema version, size limit, more than `max_pixels` decoded pixels, or a
    payload that does not decode to exactly what the headers announce. Frames whose short side exceeds
    `short_side` leave downscaled to it. `timestamp_ms` (the record's CreateTime) dates the first frame when
    the message has no `wallclock` header."""
    camera = _check_key(key)
    if problem := value_problem(value, max_bytes):
        raise MalformedMessage(problem)
    h = parse_headers(headers)
    if h.pixels > max_pixels:
        raise MalformedMessage(
            f"{h.frames} frame(s) of {h.width}x{h.height} would decode to {h.pixels} pixels, over the limit of "
            f"{max_pixels} pixels per message (kafka.max_message_pixels)"
        )
    if h.wallclock is None and timestamp_ms is not None and timestamp_ms > 0:
        h = replace(h, wallclock=timestamp_ms / 1000)
    if h.camera != camera:
        raise MalformedMessage(f"camera header {h.camera[:60]!r} differs from the key {camera[:60]!r}")
    value = bytes(value)
    size = _output_size(h, short_side)
    return _decode_jpeg(value, h, size) if h.codec == CODEC_JPEG else _decode_segment(value, h, size)
