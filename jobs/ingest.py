"""The ingest job: publish a video file or a live stream to Kafka `vigil.frames`, keyed by its camera id.

Frames are sampled at config decode.fps (with track.live, detect.rate when above it: the monitor's models take
decode.fps of them, its trackers all) and resized to config decode.short_side (0 keeps the source size),
then sent either one JPEG per frame (payload "jpeg") or as self-contained H.264 MPEG-TS segments of `segment_seconds`
of sampled frames, each starting on a keyframe (payload "segment"). See pipeline/media/kafka_messages.py for the
message format.

A file ends when it is read. A live source (rtsp://, http://, ...) runs until stopped (SIGINT or SIGTERM:
the queued messages are flushed and the report returned), `max_frames` or `duration`; when it drops it is
reopened as its ReconnectPolicy says, and pts stay monotonic across reconnections (pipeline/media/streams.py).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from pipeline.config import VigilConfig
from pipeline.media.decode import VideoDecodeError
from pipeline.media.kafka_clients import MessageProducer
from pipeline.media.kafka_messages import MAX_SEGMENT_FRAMES, frame_message, segment_message
from pipeline.media.sampling import decode_file, first_seconds, sampling_rate
from pipeline.media.streams import LiveSourceLost, ReconnectPolicy, is_live, read_live
from pipeline.records import Frame


@dataclass
class IngestReport:
    sampled: int = 0  # frames read from the source
    frames: int = 0  # frames delivered
    messages: int = 0  # messages delivered
    bytes: int = 0
    errors: list[str] = field(default_factory=list)  # frames, messages or the source that failed
    elapsed: float = 0.0
    reconnects: int | None = None  # a live source's reconnections; None for a file


class _Counts:
    """Delivery accounting fed by producer callbacks (the producer's I/O thread)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.frames = 0
        self.messages = 0
        self.bytes = 0
        self.errors: list[str] = []

    def delivered(self, frames: int, size: int) -> None:
        with self.lock:
            self.frames += frames
            self.messages += 1
            self.bytes += size

    def failed(self, what: str) -> None:
        with self.lock:
            self.errors.append(what)


def ingest_source(
    source: str,
    camera: str,
    config: VigilConfig,
    *,
    payload: str = "jpeg",
    segment_seconds: float = 2.0,
    quality: int = 90,
    max_frames: int | None = None,
    duration: float | None = None,
    policy: ReconnectPolicy | None = None,
    rtsp_transport: str = "tcp",
) -> IngestReport:
    """Publish `source`'s sampled frames to config kafka.topics.frames; `policy` says how a live source is
    reopened. Raises KafkaUnavailable when the brokers cannot be reached; once connected, every failure (a
    frame, a message, the source) is an error in the report instead."""
    live = is_live(source)
    fps = sampling_rate(config)  # a live tracker's detect.rate when above decode.fps
    decode = config.decode.model_copy(update={"fps": fps})
    topic = config.kafka.topics.frames
    settings = config.kafka

    producer = MessageProducer(settings, client_id=f"vigil-ingest-{camera}"[:200])

    stopping = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stopping.set())

    counts = _Counts()
    started = time.monotonic()
    live_stream = None

    def publish(message, n_frames: int) -> None:
        size = message.size

        def on_error(exc, n=n_frames):
            counts.failed(f"delivery of {n} frame(s) failed: {exc}")

        future = producer.send(topic, message)
        future.add_callback(lambda _md: counts.delivered(n_frames, size))
        future.add_errback(on_error)

    def send_segment(frames: list[Frame]) -> None:
        try:
            message = segment_message(frames, camera, period=1.0 / fps, max_bytes=settings.max_message_bytes)
            publish(message, len(frames))
        except ValueError as exc:
            if len(frames) > 1 and "exceeds the limit" in str(exc):  # too big: halve it
                half = len(frames) // 2
                send_segment(frames[:half])
                send_segment(frames[half:])
            else:
                counts.failed(f"segment at {frames[0].pts:.3f} s not sent: {exc}")

    def frames_of() -> Iterator[Frame]:
        nonlocal live_stream
        if live:
            live_stream = read_live(
                source,
                camera=camera,
                fps=fps,
                short_side=config.decode.short_side or None,
                policy=policy,
                rtsp_transport=rtsp_transport,
                stop=stopping.is_set,
            )
            return live_stream
        return decode_file(source, decode, source=camera, camera=camera)

    pending: list[Frame] = []
    sampled = 0
    try:
        frames = frames_of()
        for frame in frames if duration is None else first_seconds(frames, duration):
            if stopping.is_set():
                break
            sampled += 1
            if payload == "jpeg":
                try:
                    publish(frame_message(frame, camera, quality=quality, max_bytes=settings.max_message_bytes), 1)
                except ValueError as exc:
                    counts.failed(f"frame at {frame.pts:.3f} s not sent: {exc}")
            else:
                if pending and (
                    frame.pts - pending[0].pts >= segment_seconds - 1e-6 or len(pending) >= MAX_SEGMENT_FRAMES
                ):
                    send_segment(pending)
                    pending = []
                pending.append(frame)
            if max_frames is not None and sampled >= max_frames:
                break
    except VideoDecodeError as exc:
        counts.failed(str(exc))
    except LiveSourceLost as exc:
        counts.failed(f"gave up: {exc}")
    except Exception as exc:  # a broker that stays away (send blocks past its timeout), ...
        counts.failed(f"{type(exc).__name__}: {exc}")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        try:
            if pending:
                send_segment(pending)
            producer.flush(timeout=settings.delivery_timeout + 5)
        except Exception as exc:
            counts.failed(f"flush failed: {exc}")
        finally:
            producer.close(timeout=5)

    return IngestReport(
        sampled=sampled,
        frames=counts.frames,
        messages=counts.messages,
        bytes=counts.bytes,
        errors=counts.errors,
        elapsed=time.monotonic() - started,
        reconnects=live_stream.stats.reconnects if live_stream is not None else None,
    )
