"""`vigil index PATH...`: index video files and folders into the store and its search index."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs.archive import index_paths
from jobs.commands.common import UsageError, add_common_options, config_from
from pipeline.records import UNTRAINED_NOTE
from pipeline.search.filters import FilterError, parse_instant
from pipeline.storage.store import open_configured_store


def register(subparsers) -> None:
    parser = subparsers.add_parser("index", help="index video files and folders")
    parser.add_argument("paths", nargs="+", metavar="PATH")
    parser.add_argument("--fps", type=float, help="sampled frames per second")
    parser.add_argument("--window", type=float, help="clip window in seconds")
    parser.add_argument("--decoder", choices=["pyav", "decord"], help="decoding backend")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--force", action="store_true", help="re-index files already indexed unchanged")
    parser.add_argument(
        "--recorded-at",
        metavar="ISO8601",
        help="when the one file given started recording (e.g. 2026-11-30T08:00:00Z; no zone means UTC), "
        "instead of its container's creation time",
    )
    parser.add_argument("--ray", action="store_true", help="spread files over Ray decoder and extractor actors")
    parser.add_argument("--no-progress", action="store_true")
    add_common_options(parser)
    parser.set_defaults(run=run)


def recording_start(text: str, paths: list[str]) -> float:
    """`--recorded-at` as Unix seconds: the recording start of exactly one file."""
    if len(paths) != 1 or Path(paths[0]).is_dir():
        raise UsageError("--recorded-at is one file's recording start: give exactly one file, not a folder or several")
    try:
        seconds, clock = parse_instant(text, name="--recorded-at")
        if clock == "wall":  # plain seconds are media time: no recording start
            return seconds
    except FilterError:
        pass
    raise UsageError(f"--recorded-at {text!r} is not an ISO 8601 time (like 2026-11-30T08:00:00Z)")


def run(args: argparse.Namespace) -> int:
    config = config_from(args)
    start = None if args.recorded_at is None else recording_start(args.recorded_at, args.paths)
    store = open_configured_store(config)
    report = index_paths(
        args.paths,
        config,
        store,
        use_ray=args.ray,
        force=args.force,
        progress=not args.no_progress,
        recording_start=start,
    )
    speed = report.video_seconds / report.elapsed if report.elapsed else 0.0
    print(
        f"indexed {len(report.indexed)} file(s), {report.clips} clips, {report.video_seconds:.1f} s of video "
        f"in {report.elapsed:.1f} s ({speed:.1f}x realtime); {len(report.unchanged)} unchanged; store: {store.url}"
    )
    if report.untrained:
        print(UNTRAINED_NOTE)
    for path, reason in report.failed:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    return 1 if report.failed and not (report.indexed or report.unchanged) else 0
