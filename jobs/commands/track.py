"""`vigil track`: track the objects of a video into the store, or of a MOTChallenge detection file into a
track file.

    vigil track cam3.mp4                                   # tracks/{source_id}/: tracks.json, events, thumbs
    vigil track rtsp://10.0.0.5/main --camera gate --seconds 60
    vigil track --det det.txt [--appearance feats.npy] --out tracks.txt
    vigil track --kafka [--brokers host:9092] [--idle-exit 30]   # vigil.detections from a detector of your own
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Iterator

from jobs.commands.common import UsageError, add_common_options, checked_cameras, config_from
from jobs.track import track_source
from jobs.track_detections import track_detections
from pipeline.media.kafka_clients import KafkaUnavailable, check_brokers
from pipeline.media.streams import is_live
from pipeline.records import UNTRAINED_NOTE, Detections, Track
from pipeline.storage.store import open_configured_store
from pipeline.tracking import Tracker, read_detections, write_tracks


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "track",
        help="track the objects of a video into the store, or of a MOTChallenge det.txt into tracks.txt",
    )
    parser.add_argument("video", nargs="?", metavar="VIDEO", help="a video file or a live URL (with --camera)")
    parser.add_argument("--camera", metavar="ID", help="the camera a live URL (or a file) is tracked as")
    parser.add_argument(
        "--seconds", type=float, metavar="N", help="track only the first N seconds (a live URL: needed)"
    )
    parser.add_argument(
        "--detector", choices=["motion", "owl"], help="the detector (default: the config's detect.kind)"
    )
    parser.add_argument(
        "--det", metavar="FILE", help="instead of VIDEO: MOTChallenge detections, frame,id,x,y,w,h,conf"
    )
    parser.add_argument(
        "--appearance", metavar="FILE", help="with --det: an .npy (rows, D) of appearance vectors, row i for row i"
    )
    parser.add_argument("--out", metavar="FILE", help="with --det: the track file, frame,id,x,y,w,h,conf,-1,-1,-1 rows")
    parser.add_argument(
        "--kafka",
        action="store_true",
        help="instead of VIDEO: track the detections on vigil.detections (docs/DETECTIONS.md)",
    )
    parser.add_argument("--brokers", help="with --kafka: Kafka brokers host:port[,...] (env VIGIL_KAFKA_BROKERS)")
    parser.add_argument(
        "--idle-exit", type=float, metavar="S", help="with --kafka: stop after S seconds without a message"
    )
    add_common_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if sum(given for given in (args.video is not None, args.det is not None, args.kafka)) != 1:
        raise UsageError("give a VIDEO, --det FILE or --kafka (one of them)")
    if (args.brokers is not None or args.idle_exit is not None) and not args.kafka:
        raise UsageError("--brokers and --idle-exit go with --kafka")
    if args.det is not None:
        return _run_mot(args)
    if args.kafka:
        return _run_kafka(args)
    if args.out is not None or args.appearance is not None:
        raise UsageError("--out and --appearance go with --det, not with a VIDEO")
    checked_cameras(args.camera)
    if args.seconds is not None and not args.seconds > 0:
        raise UsageError(f"--seconds must be more than 0, got {args.seconds:g}")
    if is_live(args.video) and (args.camera is None or args.seconds is None):
        raise UsageError(f"a live URL needs --camera ID and --seconds N: {args.video}")
    config = config_from(args)
    if args.detector is not None:
        config = config.model_copy(update={"detect": config.detect.model_copy(update={"kind": args.detector})})
    store = open_configured_store(config)
    report = track_source(args.video, config, store, camera=args.camera, seconds=args.seconds)
    print(
        f"tracked {report.frames} frames of {report.source} in {report.elapsed:.1f} s: {report.tracks} tracks, "
        f"{report.events} events, written to {store.locate(report.tracks_key)}"
    )
    if report.untrained:
        print(UNTRAINED_NOTE)
    return 0


def _run_kafka(args: argparse.Namespace) -> int:
    if any(value is not None for value in (args.camera, args.seconds, args.detector, args.out, args.appearance)):
        raise UsageError("--camera, --seconds, --detector, --out and --appearance do not go with --kafka")
    if args.idle_exit is not None and not args.idle_exit > 0:
        raise UsageError(f"--idle-exit must be more than 0, got {args.idle_exit:g}")
    config = config_from(args)
    try:
        check_brokers(config.kafka, "track")
    except KafkaUnavailable as exc:
        raise UsageError(str(exc)) from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    report = track_detections(config, idle_exit=args.idle_exit, stop=stop.is_set)
    print(
        f"tracked {report.frames} detection frames ({report.malformed} of {report.messages} messages refused): "
        f"{report.track_events} events, {report.alerts} alerts, {report.checkpoints} checkpoints; store: {config.store}"
    )
    return 0


def _run_mot(args: argparse.Namespace) -> int:
    if args.out is None:
        raise UsageError("--det needs --out FILE, the track file to write")
    if args.camera is not None or args.seconds is not None or args.detector is not None:
        raise UsageError("--camera, --seconds and --detector go with a VIDEO, not with --det")
    config = config_from(args).track
    per_frame = read_detections(args.det, args.appearance)
    tracker = Tracker(config)
    last = max(per_frame, default=0)
    no_detections = Detections.empty()
    track_ids: set[int] = set()

    def tracked() -> Iterator[tuple[int, list[Track]]]:
        # Every frame up to the last is a step of the tracker, those without detections too: a track's motion
        # and its time lost are counted in frames.
        for frame in range(1, last + 1):
            tracks = tracker.update(per_frame.get(frame, no_detections))
            track_ids.update(track.track_id for track in tracks)
            yield frame, tracks

    rows = write_tracks(args.out, tracked())
    print(f"tracked {last} frames: {len(track_ids)} tracks, {rows} rows written to {args.out}")
    return 0
