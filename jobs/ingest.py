"""`vigil ingest SOURCE --camera ID`: publish a video file or a live stream to Kafka `vigil.frames`.

Frames are sampled at `--fps` (config decode.fps) and resized to `--short-side` (config
decode.short_side; 0 keeps the source size), then sent keyed by the camera id either one JPEG per
frame (`--payload jpeg`) or as self-contained H.264 MPEG-TS segments of `--segment-seconds` of
sampled frames, each starting on a keyframe (`--payload segment`). See pipeline/media/kafka_io.py for the
message format.

A file ends when it is read. A live source (rtsp://, http://, ...) runs until stopped (SIGINT or
SIGTERM: the queued messages are flushed and the summary printed), `--max-frames` or `--duration`;
when it drops it is reopened with backoff, forever unless `--max-reconnects` bounds the consecutive
attempts that bring no frame, and pts stay monotonic across reconnections (pipeline/media/streams.py).

Exit status: 0 all sent, 1 some frames or messages failed (the summary says which), 2 bad arguments
or unreachable brokers.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from pipeline.config import ConfigError, load_config
from pipeline.records import Frame

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("ingest", help="publish a video file or live stream to Kafka as frames")
    p.add_argument("source", metavar="SOURCE", help="a video file, or a stream URL (rtsp://, http://, rtmp://, ...)")
    p.add_argument("--camera", required=True, help="camera id: the Kafka key of every message")
    p.add_argument("--brokers", help="Kafka brokers H:P[,H:P] (env VIGIL_KAFKA_BROKERS; default 127.0.0.1:9092)")
    p.add_argument("--topic", help="topic (config kafka.topics.frames; default vigil.frames)")
    p.add_argument("--fps", type=float, help="sampled frames per second of media time (config decode.fps)")
    p.add_argument("--short-side", type=int, help="resize so the short side is this many pixels; 0 keeps the source size")
    p.add_argument("--payload", choices=["jpeg", "segment"], default="jpeg", help="one JPEG per frame, or H.264 segments")
    p.add_argument("--segment-seconds", type=float, default=2.0, help="media seconds of frames per segment")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality 1-95")
    p.add_argument("--max-frames", type=int, help="stop after sending this many frames")
    p.add_argument("--duration", type=float, help="stop after this many seconds of media time")
    p.add_argument("--max-reconnects", type=int, help="live: give up after this many consecutive failed reconnections (default: never)")
    p.add_argument("--reconnect-backoff", type=float, default=0.5, help="live: seconds before the first reconnection, doubling up to 10 s")
    p.add_argument("--read-timeout", type=float, default=10.0, help="live: seconds without data before the stream counts as dropped")
    p.add_argument("--rtsp-transport", choices=["tcp", "udp"], default="tcp")
    p.add_argument("--config", help="YAML config file overriding configs/default.yaml")
    return p


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


def _fail(message: str) -> int:
    print(f"vigil ingest: error: {message}", file=sys.stderr)
    return 2


def run(args: argparse.Namespace) -> int:
    from pipeline.media.decode import VideoDecodeError, decode_frames
    from pipeline.media.kafka_io import (
        MAX_SEGMENT_FRAMES,
        MessageProducer,
        KafkaUnavailable,
        check_camera,
        frame_message,
        segment_message,
    )
    from pipeline.media.streams import LiveSourceLost, ReconnectPolicy, is_live, read_live

    try:
        config = load_config(
            args.config,
            {"kafka.brokers": args.brokers, "kafka.topics.frames": args.topic, "decode.fps": args.fps},
        )
    except ConfigError as exc:
        return _fail(str(exc))
    try:
        check_camera(args.camera)
    except ValueError as exc:
        return _fail(str(exc))
    if args.short_side is not None and args.short_side != 0 and args.short_side < 2:
        return _fail(f"--short-side must be 0 or at least 2, got {args.short_side}")
    if args.segment_seconds <= 0 or args.read_timeout <= 0 or args.reconnect_backoff < 0:
        return _fail("--segment-seconds and --read-timeout must be positive, --reconnect-backoff not negative")
    if (args.max_frames is not None and args.max_frames < 1) or (args.duration is not None and args.duration <= 0):
        return _fail("--max-frames and --duration must be positive")
    if args.max_reconnects is not None and args.max_reconnects < 0:
        return _fail("--max-reconnects must be >= 0")
    if not 1 <= args.quality <= 95:
        return _fail("--quality must be within 1-95")
    live = is_live(args.source)
    if not live and not Path(args.source).is_file():
        return _fail(f"no such file: {args.source} (live sources are URLs such as rtsp://host/path)")
    fps = config.decode.fps
    short_side = config.decode.short_side if args.short_side is None else (args.short_side or None)
    topic = config.kafka.topics.frames
    settings = config.kafka
    camera = args.camera

    try:
        producer = MessageProducer(settings, client_id=f"vigil-ingest-{camera}"[:200])
    except KafkaUnavailable as exc:
        return _fail(str(exc))

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
            publish(segment_message(frames, camera, period=1.0 / fps, max_bytes=settings.max_message_bytes), len(frames))
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
            policy = ReconnectPolicy(
                max_reconnects=args.max_reconnects,
                backoff=args.reconnect_backoff,
                open_timeout=max(args.read_timeout, 5.0),
                read_timeout=args.read_timeout,
            )
            live_stream = read_live(
                args.source, camera=camera, fps=fps, short_side=short_side, policy=policy,
                rtsp_transport=args.rtsp_transport, stop=stopping.is_set,
            )
            return live_stream
        keyframes_only = None if config.decode.keyframes_only == "auto" else config.decode.keyframes_only
        return decode_frames(
            args.source, fps=fps, short_side=short_side, keyframes_only=keyframes_only,
            threads=config.decode.threads, source=camera, camera=camera,
        )

    pending: list[Frame] = []
    sampled = 0
    first_pts = None
    try:
        for frame in frames_of():
            if stopping.is_set():
                break
            first_pts = frame.pts if first_pts is None else first_pts
            if args.duration is not None and frame.pts - first_pts >= args.duration:
                break
            sampled += 1
            if args.payload == "jpeg":
                try:
                    publish(frame_message(frame, camera, quality=args.quality, max_bytes=settings.max_message_bytes), 1)
                except ValueError as exc:
                    counts.failed(f"frame at {frame.pts:.3f} s not sent: {exc}")
            else:
                if pending and (frame.pts - pending[0].pts >= args.segment_seconds - 1e-6 or len(pending) >= MAX_SEGMENT_FRAMES):
                    send_segment(pending)
                    pending = []
                pending.append(frame)
            if args.max_frames is not None and sampled >= args.max_frames:
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

    elapsed = time.monotonic() - started
    reconnects = f", {live_stream.stats.reconnects} reconnection(s)" if live_stream is not None else ""
    print(
        f"ingest {camera}: sent {counts.frames} of {sampled} sampled frames in {counts.messages} {args.payload} "
        f"message(s), {counts.bytes} bytes, to {topic} on {settings.brokers} in {elapsed:.1f} s; "
        f"{len(counts.errors)} error(s){reconnects}"
    )
    for error in counts.errors[:20]:
        print(f"vigil ingest: {error}", file=sys.stderr)
    if len(counts.errors) > 20:
        print(f"vigil ingest: ... and {len(counts.errors) - 20} more error(s)", file=sys.stderr)
    return 1 if counts.errors else 0
