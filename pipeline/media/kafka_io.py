"""Kafka I/O for live monitoring: the `vigil.frames` wire format, producer, consumer and dead letters.

Wire format, schema version 1 (no pickle, nothing executable: bytes a JPEG or H.264 decoder reads):

    key      camera id (UTF-8, 1-256 bytes, no control characters): one camera stays in one partition
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

A segment's frame i has pts = header pts + (its MPEG-TS time - the first frame's MPEG-TS time); the
90 kHz MPEG-TS clock represents 25, 30 and 29.97 fps frame times exactly.

`decode_message` checks all of it (and a size limit) and raises `MalformedMessage(reason)`;
`consume_frames` sends such messages to `vigil.dlq` (original key, value and headers plus `reason`)
and goes on. Offsets are committed only after the caller's outputs are durable (ARCHITECTURE.md, delivery
invariant 2).

kafka-python is imported inside the functions and classes that need it (ARCHITECTURE.md, layering).
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import numpy as np
from PIL import Image

from pipeline.config import KafkaConfig
from pipeline.records import Frame
from pipeline.storage.codecs import encode_jpeg

__all__ = [
    "SCHEMA_VERSION",
    "CODEC_JPEG",
    "CODEC_SEGMENT",
    "CODECS",
    "DEFAULT_BROKERS",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "MAX_SEGMENT_FRAMES",
    "MalformedMessage",
    "KafkaUnavailable",
    "Message",
    "frame_message",
    "segment_message",
    "decode_message",
    "parse_headers",
    "check_camera",
    "resolve_brokers",
    "MessageProducer",
    "FrameConsumer",
    "DeadLetters",
    "ConsumeStats",
    "next_offsets",
    "consume_frames",
]

log = logging.getLogger(__name__)

SCHEMA_VERSION = "1"
CODEC_JPEG = "jpeg"
CODEC_SEGMENT = "h264/mpegts"
CODECS = (CODEC_JPEG, CODEC_SEGMENT)

DEFAULT_BROKERS = KafkaConfig.model_fields["brokers"].default
BROKERS_ENV = "VIGIL_KAFKA_BROKERS"
# Kafka's own default limit (message.max.bytes): a message we build always fits a default broker.
DEFAULT_MAX_MESSAGE_BYTES = KafkaConfig.model_fields["max_message_bytes"].default
MAX_KEY_BYTES = 256
MAX_SIDE = 8192
MAX_PIXELS = 8192 * 4320
MAX_SEGMENT_FRAMES = 1000
MAX_SEGMENT_SECONDS = 600.0
MAX_PTS = 1e10  # seconds (> 300 years): anything beyond is garbage
# Room for headers and record framing on top of the value.
_OVERHEAD = 64 * 1024

H_SCHEMA = "vigil-schema"
H_CAMERA = "camera"
H_PTS = "pts"
H_INDEX = "frame-index"
H_CODEC = "codec"
H_WIDTH = "width"
H_HEIGHT = "height"
H_FRAMES = "frames"
H_DURATION = "duration"
H_REASON = "reason"
_KNOWN = (H_SCHEMA, H_CAMERA, H_PTS, H_INDEX, H_CODEC, H_WIDTH, H_HEIGHT, H_FRAMES, H_DURATION)

_DECIMAL = re.compile(r"^-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?$")
_INTEGER = re.compile(r"^[0-9]{1,19}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TS_CLOCK = 90000  # MPEG-TS timestamps tick at 90 kHz
_TS_BASE = Fraction(1, _TS_CLOCK)


class MalformedMessage(ValueError):
    """A message that is not a valid `vigil.frames` message; `reason` says what is wrong."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class KafkaUnavailable(ConnectionError):
    """The brokers could not be reached after the configured attempts."""


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
    cam = camera or frame.camera or frame.source
    check_camera(cam)
    return cam


def check_camera(camera: str) -> None:
    if not isinstance(camera, str) or not camera:
        raise ValueError("a camera id must be a non-empty string")
    if len(camera.encode()) > MAX_KEY_BYTES or _CONTROL.search(camera):
        raise ValueError(f"camera id {camera!r} is longer than {MAX_KEY_BYTES} bytes or has control characters")


def _fmt_time(t: float) -> str:
    t = float(t)
    if not math.isfinite(t):
        raise ValueError(f"time must be finite, got {t!r}")
    return repr(round(t, 6))


def _headers(
    camera: str, pts: float, index: int, codec: str, width: int, height: int, **extra
) -> list[tuple[str, bytes]]:
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
    """One frame as a JPEG message. `camera` defaults to `frame.camera`, then `frame.source`."""
    cam = _camera_of(frame, camera)
    image = np.ascontiguousarray(frame.image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"frame image must be RGB uint8 (H, W, 3), got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    headers = _headers(cam, frame.pts, frame.index, CODEC_JPEG, width, height)
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
    decode it alone. Frame times are kept relative to the first frame on the 90 kHz MPEG-TS clock.
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
        **{H_FRAMES: len(frames), H_DURATION: _fmt_time(duration)},
    )
    return _check_size(Message(cam.encode(), buf.getvalue(), headers), max_bytes)


def _text(name: str, raw) -> str:
    if raw is None:
        raise MalformedMessage(f"header '{name}' has no value")
    if isinstance(raw, str):
        return raw
    try:
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


def parse_headers(headers: Iterable[tuple[str, Any]] | None) -> FrameHeaders:
    """Validate the headers of a `vigil.frames` message (unknown extra headers are ignored)."""
    values: dict[str, str] = {}
    for item in headers or ():
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
    return FrameHeaders(camera, pts, index, codec, width, height, frames, duration)


def _check_key(key) -> str:
    if key is None:
        raise MalformedMessage("missing key (the camera id)")
    try:
        text = bytes(key).decode("utf-8") if not isinstance(key, str) else key
    except (UnicodeDecodeError, TypeError):
        raise MalformedMessage("key is not UTF-8 text") from None
    if not text:
        raise MalformedMessage("empty key (the camera id)")
    if len(text.encode()) > MAX_KEY_BYTES or _CONTROL.search(text):
        raise MalformedMessage(f"key is longer than {MAX_KEY_BYTES} bytes or has control characters")
    return text


def _decode_jpeg(value: bytes, h: FrameHeaders) -> list[Frame]:
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
            img.load()
            image = np.asarray(img.convert("RGB"))
    except MalformedMessage:
        raise
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... on bad data
        raise MalformedMessage(f"undecodable JPEG: {exc}") from None
    return [Frame(h.camera, h.pts, h.index, np.ascontiguousarray(image), camera=h.camera)]


def _decode_segment(value: bytes, h: FrameHeaders) -> list[Frame]:
    frames: list[Frame] = []
    t0 = None
    try:
        with av.open(
            io.BytesIO(value), mode="r", format="mpegts", options={"probesize": str(max(32, len(value)))}
        ) as c:
            if len(c.streams.video) != 1:
                raise MalformedMessage(f"segment has {len(c.streams.video)} video streams, expected 1")
            stream = c.streams.video[0]
            if stream.codec_context.name != "h264":
                raise MalformedMessage(f"segment video is {stream.codec_context.name}, expected h264")
            stream.codec_context.thread_count = 1
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
                image = vf.to_ndarray(format="rgb24")
                frames.append(Frame(h.camera, round(h.pts + offset, 6), h.index + len(frames), image, camera=h.camera))
    except MalformedMessage:
        raise
    except Exception as exc:  # av.FFmpegError and friends on garbage
        raise MalformedMessage(f"undecodable segment: {exc}") from None
    if len(frames) != h.frames:
        raise MalformedMessage(f"segment decodes to {len(frames)} frames but headers announce {h.frames}")
    return frames


def decode_message(key, value, headers, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[Frame]:
    """The frames of a `vigil.frames` message (one for JPEG, every frame of a segment, in order), as
    `Frame(source=camera, pts, index, RGB image, camera=camera)`. Raises `MalformedMessage` for
    anything wrong: key, headers, schema version, size limit, or a payload that does not decode to
    exactly what the headers announce."""
    camera = _check_key(key)
    if value is None or len(value) == 0:
        raise MalformedMessage("empty value")
    if len(value) > max_bytes:
        raise MalformedMessage(f"value of {len(value)} bytes exceeds the limit of {max_bytes} bytes")
    h = parse_headers(headers)
    if h.camera != camera:
        raise MalformedMessage(f"camera header {h.camera[:60]!r} differs from the key {camera[:60]!r}")
    value = bytes(value)
    return _decode_jpeg(value, h) if h.codec == CODEC_JPEG else _decode_segment(value, h)


# --------------------------------------------------------------------------------------------- clients


def resolve_brokers(brokers: str | None = None) -> str:
    """`brokers` if given, else env VIGIL_KAFKA_BROKERS, else 127.0.0.1:9092. (load_config applies the
    same order to `kafka.brokers`: flags > environment > config file > defaults.)"""
    return brokers or os.environ.get(BROKERS_ENV) or DEFAULT_BROKERS


def _connect(settings: KafkaConfig, what: str, factory: Callable[[], Any]):
    """`factory()` until it reaches the brokers, with exponential backoff between attempts."""
    from kafka import errors

    # kafka-python 3 raises KafkaTimeoutError("Unable to bootstrap ..."); 2.x raised NoBrokersAvailable.
    unreachable = (errors.KafkaTimeoutError, errors.KafkaConnectionError, OSError) + tuple(
        getattr(errors, name) for name in ("NoBrokersAvailable",) if hasattr(errors, name)
    )
    started = time.monotonic()
    last: Exception | None = None
    for attempt in range(1, settings.connect_attempts + 1):
        try:
            return factory()
        except unreachable as exc:
            last = exc
            if attempt < settings.connect_attempts:
                delay = settings.delay(attempt)
                log.warning(
                    "Kafka %s: brokers %s unreachable (%s); retrying in %.1f s", what, settings.brokers, exc, delay
                )
                time.sleep(delay)
    raise KafkaUnavailable(
        f"cannot reach Kafka brokers {settings.brokers} ({what}) after {settings.connect_attempts} attempt(s) "
        f"over {time.monotonic() - started:.1f} s: {last}"
    )


def _ms(seconds: float) -> int:
    return max(1, int(round(seconds * 1000)))


class MessageProducer:
    """A KafkaProducer with acks=all (idempotent where the broker supports it: kafka-python enables it
    by default and turns it off, with a warning, for brokers too old for it), bounded blocking, and
    delivery accounting: `sent`/`bytes` count acknowledged messages, `errors` failed deliveries."""

    def __init__(self, settings: KafkaConfig | None = None, *, client_id: str = "vigil"):
        from kafka import KafkaProducer

        self.settings = settings = settings or KafkaConfig(brokers=resolve_brokers())
        delivery = _ms(settings.delivery_timeout)
        linger = 5
        self._producer = _connect(
            settings,
            "producer",
            lambda: KafkaProducer(
                bootstrap_servers=settings.servers,
                client_id=client_id,
                acks="all",
                linger_ms=linger,
                max_request_size=settings.max_message_bytes + _OVERHEAD,
                bootstrap_timeout_ms=_ms(settings.connect_timeout),
                request_timeout_ms=max(1, min(30000, delivery - linger)),
                delivery_timeout_ms=delivery,
                max_block_ms=delivery,
                retry_backoff_ms=_ms(min(settings.backoff, 1.0)),
                reconnect_backoff_max_ms=_ms(max(settings.backoff_max, 0.05)),
            ),
        )
        self._lock = threading.Lock()
        self.sent = 0
        self.bytes = 0
        self.errors = 0
        self.last_error: str | None = None

    @property
    def idempotent(self) -> bool:
        return bool(self._producer.config.get("enable_idempotence"))

    def send(self, topic: str, message: Message, *, partition: int | None = None):
        """Queue one message (to the key's partition unless `partition` is given); returns
        kafka-python's future. Delivery is counted when acknowledged."""
        size = message.size

        def ok(_metadata):
            with self._lock:
                self.sent += 1
                self.bytes += size

        def failed(exc):
            with self._lock:
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
            log.error("Kafka delivery to %s failed: %s", topic, exc)

        future = self._producer.send(
            topic, key=message.key, value=message.value, headers=message.headers, partition=partition
        )
        future.add_callback(ok)
        future.add_errback(failed)
        return future

    def flush(self, timeout: float | None = None) -> None:
        """Block until every queued message is acknowledged or has failed."""
        self._producer.flush(timeout=timeout)

    def close(self, timeout: float | None = None) -> None:
        self._producer.close(timeout=timeout)

    def __enter__(self) -> MessageProducer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FrameConsumer:
    """A KafkaConsumer with manual commits only.

    With `assign=False` it joins `group_id` (subscribe; fast joins: session 6 s, heartbeat 1 s, max
    poll interval 10 s). With `assign=True` it takes every partition of `topics` itself (no group
    join, so no rebalance wait); offsets are still committed under `group_id` when one is given.
    Where there is no committed offset it starts from the earliest message (`from_beginning`) or
    the end. `commit(offsets)` is for the caller to call once everything derived from the messages
    before those offsets is durable."""

    def __init__(
        self,
        settings: KafkaConfig | None,
        topics: str | Sequence[str],
        *,
        group_id: str | None = None,
        assign: bool = False,
        from_beginning: bool = True,
        client_id: str = "vigil",
        max_poll_records: int = 100,
    ):
        from kafka import KafkaConsumer, TopicPartition

        self.settings = settings = settings or KafkaConfig(brokers=resolve_brokers())
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        if not assign and not group_id:
            raise ValueError("a subscribing consumer needs a group_id (or use assign=True)")
        self.group_id = group_id
        self._consumer = _connect(
            settings,
            "consumer",
            lambda: KafkaConsumer(
                bootstrap_servers=settings.servers,
                client_id=client_id,
                group_id=group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest" if from_beginning else "latest",
                session_timeout_ms=6000,
                heartbeat_interval_ms=1000,
                max_poll_interval_ms=10000,
                max_poll_records=max_poll_records,
                # a message at our size limit must always be fetchable
                max_partition_fetch_bytes=max(1024 * 1024, settings.max_message_bytes + _OVERHEAD),
                bootstrap_timeout_ms=_ms(settings.connect_timeout),
                retry_backoff_ms=_ms(min(settings.backoff, 1.0)),
                reconnect_backoff_max_ms=_ms(max(settings.backoff_max, 0.05)),
            ),
        )
        if assign:
            partitions = []
            deadline = time.monotonic() + settings.connect_timeout
            for topic in self.topics:
                ids = self._consumer.partitions_for_topic(topic)
                while not ids and time.monotonic() < deadline:
                    time.sleep(0.1)
                    ids = self._consumer.partitions_for_topic(topic)
                if not ids:
                    self._consumer.close()
                    raise KafkaUnavailable(f"topic {topic!r} not found on Kafka brokers {settings.brokers}")
                partitions += [TopicPartition(topic, p) for p in sorted(ids)]
            self._consumer.assign(partitions)
        else:
            self._consumer.subscribe(self.topics)

    @property
    def kafka(self):
        """The underlying kafka-python KafkaConsumer."""
        return self._consumer

    def poll(self, timeout: float = 1.0, max_records: int | None = None) -> list:
        """Records fetched within `timeout` seconds, partition by partition, offsets increasing."""
        batches = self._consumer.poll(timeout_ms=_ms(timeout), max_records=max_records)
        return [r for tp in sorted(batches, key=lambda tp: (tp.topic, tp.partition)) for r in batches[tp]]

    def gather(self, max_records: int, timeout: float, refetch: float = 0.05) -> list:
        """Every record on hand, up to `max_records`: waits up to `timeout` seconds for the first ones, then
        fetches again (waiting up to `refetch` seconds each time) while more keep coming. The consumer
        prefetches in the background, so what the first poll hands over can be an old, small response
        while the broker holds far more: the refetches take the backlog. A caller that gathers when it is
        ready for more gets batches that grow with the load (adaptive batching). Partition by partition,
        offsets increasing."""
        records = self.poll(timeout, max_records)
        while records and len(records) < max_records:
            more = self.poll(min(refetch, timeout), max_records - len(records))
            if not more:
                break
            records += more
        return sorted(records, key=lambda r: (r.topic, r.partition))  # stable: offsets stay in order

    def commit(self, offsets: Mapping[Any, int]) -> None:
        """Commit `{TopicPartition or (topic, partition): next offset to read}`. Without a group_id
        there is nowhere to commit and this does nothing."""
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        if not self.group_id or not offsets:
            return
        self._consumer.commit({TopicPartition(*tp): OffsetAndMetadata(int(off), "", -1) for tp, off in offsets.items()})

    def committed(self, topic: str, partition: int) -> int | None:
        from kafka import TopicPartition

        return self._consumer.committed(TopicPartition(topic, partition))

    def close(self) -> None:
        self._consumer.close(autocommit=False)

    def __enter__(self) -> FrameConsumer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def next_offsets(records: Iterable) -> dict[tuple[str, int], int]:
    """{(topic, partition): last offset + 1} over `records`: what to commit once they are done."""
    out: dict[tuple[str, int], int] = {}
    for r in records:
        key = (r.topic, r.partition)
        out[key] = max(out.get(key, 0), r.offset + 1)
    return out


class DeadLetters:
    """Publishes malformed messages to the DLQ topic: the original key, value and headers, plus
    `reason`, `original-topic`, `original-partition` and `original-offset` headers. A value larger
    than the size limit is cut to it, with an `original-size` header. `count` and `reasons` (a
    Counter) say what went there; `flush()` raises if a dead letter could not be delivered (then
    the consumer must not commit past it)."""

    def __init__(self, producer: MessageProducer, topic: str = "vigil.dlq"):
        self.producer = producer
        self.topic = topic
        self.count = 0
        self.reasons: Counter[str] = Counter()
        self._futures: list = []

    def publish(self, record, reason: str) -> None:
        value = record.value if record.value is not None else b""
        headers = [
            (str(k), v if isinstance(v, bytes) else (b"" if v is None else str(v).encode()))
            for k, v in (record.headers or [])
        ]
        headers += [
            (H_REASON, reason.encode("utf-8", "replace")),
            ("original-topic", str(record.topic).encode()),
            ("original-partition", str(record.partition).encode()),
            ("original-offset", str(record.offset).encode()),
        ]
        limit = self.producer.settings.max_message_bytes
        if len(value) > limit:
            headers.append(("original-size", str(len(value)).encode()))
            value = value[:limit]
        key = record.key if record.key is None or isinstance(record.key, bytes) else bytes(record.key)
        self._futures.append(self.producer.send(self.topic, Message(key, bytes(value), headers)))
        self.count += 1
        self.reasons[reason] += 1
        log.warning("dead letter %s[%s]@%s: %s", record.topic, record.partition, record.offset, reason)

    def flush(self, timeout: float | None = None) -> None:
        if not self._futures:
            return
        self.producer.flush(timeout)
        futures, self._futures = self._futures, []
        for future in futures:
            future.get(timeout=0)  # raises the delivery error, if any


@dataclass
class ConsumeStats:
    messages: int = 0  # records read
    frames: int = 0  # frames handed to `handle`
    malformed: int = 0  # records sent to the DLQ
    commits: int = 0
    reasons: Counter = field(default_factory=Counter)


def consume_frames(
    consumer: FrameConsumer,
    dlq: DeadLetters,
    handle: Callable[[list[Frame], Any], None],
    *,
    flush: Callable[[], None] | None = None,
    max_messages: int | None = None,
    idle_timeout: float | None = None,
    stop: Callable[[], bool] | None = None,
    poll_timeout: float = 0.5,
    max_bytes: int | None = None,
) -> ConsumeStats:
    """Read `vigil.frames` records and call `handle(frames, record)` for each valid one, in order.

    Malformed records go to the DLQ and are counted; they never stop the loop (exceptions from
    `handle`, `flush` or the brokers do: they are not the message's fault). After each polled batch:
    `flush()` (which must make everything handed to `handle` so far durable; omit it when `handle`
    is durable on return), then the DLQ is flushed, then the batch's offsets are committed. So no
    offset is committed ahead of the outputs it covers, and a restart replays from the last commit.

    Stops after `max_messages` records, after `idle_timeout` seconds without a record, or when
    `stop()` returns True."""
    stats = ConsumeStats()
    limit = max_bytes if max_bytes is not None else consumer.settings.max_message_bytes
    last_record = time.monotonic()
    while max_messages is None or stats.messages < max_messages:
        if stop is not None and stop():
            break
        remaining = None if max_messages is None else max_messages - stats.messages
        records = consumer.poll(poll_timeout, max_records=remaining)
        if not records:
            if idle_timeout is not None and time.monotonic() - last_record >= idle_timeout:
                break
            continue
        last_record = time.monotonic()
        for record in records:
            stats.messages += 1
            try:
                frames = decode_message(record.key, record.value, record.headers, max_bytes=limit)
            except MalformedMessage as exc:
                dlq.publish(record, exc.reason)
                stats.malformed += 1
                stats.reasons[exc.reason] += 1
                continue
            handle(frames, record)
            stats.frames += len(frames)
        if flush is not None:
            flush()
        dlq.flush()
        consumer.commit(next_offsets(records))
        stats.commits += 1
    return stats
