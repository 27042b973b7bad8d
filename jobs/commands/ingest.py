"""`vigil ingest SOURCE --camera ID`: publish a video file or a live stream to Kafka `vigil.frames` (the job
itself: jobs/ingest.py).

`--fps` (config decode.fps) and `--short-side` (config decode.short_side; 0 keeps the source size) set the
sampling; `--payload jpeg` sends one JPEG per frame, `--payload segment` H.264 MPEG-TS segments of
`--segment-seconds` of sampled frames. A live source (rtsp://, http://, ...) runs until stopped (SIGINT or
SIGTERM: the queued messages are flushed and the summary printed), `--max-frames` or `--duration`; when it
drops it is reopened with backoff, forever unless `--max-reconnects` bounds the consecutive attempts that
bring no frame.

Exit status: 0 all sent, 1 some frames or messages failed (the summary says which), 2 bad arguments
or unreachable brokers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs.commands.common import UsageError
from jobs.ingest import ingest_source
from pipeline.cameras import check_camera_id
from pipeline.config import load_config
from pipeline.media.kafka_clients import KafkaUnavailable
from pipeline.media.streams import ReconnectPolicy, is_live

MAX_ERRORS_SHOWN = 20


def register(subparsers) -> None:
    parser = subparsers.add_parser("ingest", help="publish a video file or live stream to Kafka as frames")
    parser.add_argument(
        "source", metavar="SOURCE", help="a video file, or a stream URL (rtsp://, http://, rtmp://, ...)"
    )
    parser.add_argument("--camera", required=True, help="camera id: the Kafka key of every message")
    parser.add_argument("--brokers", help="Kafka brokers H:P[,H:P] (env VIGIL_KAFKA_BROKERS; default 127.0.0.1:9092)")
    parser.add_argument("--topic", help="topic (config kafka.topics.frames; default vigil.frames)")
    parser.add_argument("--fps", type=float, help="sampled frames per second of media time (config decode.fps)")
    parser.add_argument(
        "--short-side", type=int, help="resize so the short side is this many pixels; 0 keeps the source size"
    )
    parser.add_argument(
        "--payload", choices=["jpeg", "segment"], default="jpeg", help="one JPEG per frame, or H.264 segments"
    )
    parser.add_argument("--segment-seconds", type=float, default=2.0, help="media seconds of frames per segment")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality 1-95")
    parser.add_argument("--max-frames", type=int, help="stop after sending this many frames")
    parser.add_argument("--duration", type=float, help="stop after this many seconds of media time")
    parser.add_argument(
        "--max-reconnects",
        type=int,
        help="live: give up after this many consecutive failed reconnections (default: never)",
    )
    parser.add_argument(
        "--reconnect-backoff",
        type=float,
        default=0.5,
        help="live: seconds before the first reconnection, doubling up to 10 s",
    )
    parser.add_argument(
        "--read-timeout",
        type=float,
        default=10.0,
        help="live: seconds without data before the stream counts as dropped",
    )
    parser.add_argument("--rtsp-transport", choices=["tcp", "udp"], default="tcp")
    parser.add_argument("--config", help="YAML config file overriding configs/default.yaml")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(
        args.config,
        {
            "kafka.brokers": args.brokers,
            "kafka.topics.frames": args.topic,
            "decode.fps": args.fps,
            "decode.short_side": args.short_side,
        },
    )
    try:
        check_camera_id(args.camera)
    except ValueError as exc:
        raise UsageError(f"--camera: {exc}") from None
    if args.segment_seconds <= 0 or args.read_timeout <= 0 or args.reconnect_backoff < 0:
        raise UsageError("--segment-seconds and --read-timeout must be positive, --reconnect-backoff not negative")
    if (args.max_frames is not None and args.max_frames < 1) or (args.duration is not None and args.duration <= 0):
        raise UsageError("--max-frames and --duration must be positive")
    if args.max_reconnects is not None and args.max_reconnects < 0:
        raise UsageError("--max-reconnects must be >= 0")
    if not 1 <= args.quality <= 95:
        raise UsageError("--quality must be within 1-95")
    if not is_live(args.source) and not Path(args.source).is_file():
        raise UsageError(f"no such file: {args.source} (live sources are URLs such as rtsp://host/path)")
    policy = ReconnectPolicy(
        max_reconnects=args.max_reconnects,
        backoff=args.reconnect_backoff,
        open_timeout=max(args.read_timeout, 5.0),
        read_timeout=args.read_timeout,
    )
    try:
        report = ingest_source(
            args.source,
            args.camera,
            config,
            payload=args.payload,
            segment_seconds=args.segment_seconds,
            quality=args.quality,
            max_frames=args.max_frames,
            duration=args.duration,
            policy=policy,
            rtsp_transport=args.rtsp_transport,
        )
    except KafkaUnavailable as exc:  # unreachable brokers: an error in what was given, like a bad argument
        raise UsageError(str(exc)) from None

    reconnects = f", {report.reconnects} reconnection(s)" if report.reconnects is not None else ""
    print(
        f"ingest {args.camera}: sent {report.frames} of {report.sampled} sampled frames in {report.messages} "
        f"{args.payload} message(s), {report.bytes} bytes, to {config.kafka.topics.frames} on {config.kafka.brokers} "
        f"in {report.elapsed:.1f} s; {len(report.errors)} error(s){reconnects}"
    )
    for error in report.errors[:MAX_ERRORS_SHOWN]:
        print(f"vigil ingest: {error}", file=sys.stderr)
    if len(report.errors) > MAX_ERRORS_SHOWN:
        print(f"vigil ingest: ... and {len(report.errors) - MAX_ERRORS_SHOWN} more error(s)", file=sys.stderr)
    return 1 if report.errors else 0
