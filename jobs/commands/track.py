"""`vigil track`: track the objects of a MOTChallenge detection file, one id per object, into a track file."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from pipeline.config import load_config
from pipeline.records import Detections, Track
from pipeline.tracking import Tracker, read_detections, write_tracks


def register(subparsers) -> None:
    parser = subparsers.add_parser("track", help="track the objects of a MOTChallenge det.txt into tracks.txt")
    parser.add_argument("--det", required=True, metavar="FILE", help="detections: frame,id,x,y,w,h,conf,... rows")
    parser.add_argument(
        "--appearance", metavar="FILE", help="an .npy (rows, D) of appearance vectors, row i for the det file's row i"
    )
    parser.add_argument("--out", required=True, metavar="FILE", help="tracks: frame,id,x,y,w,h,conf,-1,-1,-1 rows")
    parser.add_argument("--config", help="YAML config file overriding configs/default.yaml (its `track` section)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config).track
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
