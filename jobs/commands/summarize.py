"""`vigil summarize`: one video (or a stored camera's clips) in, one page out that says what happened when.

    vigil summarize cam3.mp4 --out ~/Desktop/cam3        # report.html, summary.json, PNGs in that folder too
    vigil summarize cam3.mp4 --from 10:00 --to 25:00 --query "a person at the gate" --events alerts.json
    vigil summarize --camera gate-1 --from 3600 --to 7200  # from the clips stored for a camera

The first summary of a file decodes it once and keeps its per-frame features in the store
(`summaries/{source_id}/frames.npz`); later ones, of any range, decode nothing. See `pipeline/summaries/`.
"""

from __future__ import annotations

import argparse
import json
import re

from jobs.commands.common import UsageError, add_common_options, checked_cameras, config_from
from pipeline.models import TransformersCaptioner
from pipeline.storage.layout import camera_source_id, clips_prefix, summary_frames_key
from pipeline.storage.store import open_configured_store
from pipeline.summaries import (
    SummaryOptions,
    export_summary,
    load_vocabulary,
    read_events,
    summarize_file,
    summarize_stored,
)

_TIME = re.compile(r"^(?:(\d+):)?(?:(\d+):)?(\d+(?:\.\d*)?)$")


def parse_time(text: str) -> float:
    """Seconds from "90", "90.5", "1:30" or "1:02:03"."""
    match = _TIME.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (use seconds, MM:SS or HH:MM:SS)")
    first, second, seconds = match.groups()
    hours, minutes = (first, second) if second is not None else (None, first)
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "summarize",
        help="summarize a video: shots, keyframes, tags, events and a one-page report",
        description="Summarize one video file (or a camera's stored clips): shot boundaries, diverse keyframes, "
        "zero-shot tags, alerts/events and a self-contained report.html, written to the store under "
        "summaries/{source_id}/.",
    )
    parser.add_argument("path", nargs="?", metavar="PATH", help="a video file")
    parser.add_argument("--camera", metavar="ID", help="a camera whose clips are in the store (instead of PATH)")
    parser.add_argument("--from", dest="start", type=parse_time, metavar="T", help="start: seconds, MM:SS or HH:MM:SS")
    parser.add_argument("--to", dest="end", type=parse_time, metavar="T", help="end: seconds, MM:SS or HH:MM:SS")
    parser.add_argument("--out", metavar="DIR", help="also copy the summary files to this folder")
    parser.add_argument(
        "--keyframes", type=int, metavar="K", help="exactly K keyframes (default: from duration and content)"
    )
    parser.add_argument(
        "--query",
        action="append",
        default=[],
        metavar="TEXT",
        help="plot this phrase's score over time (repeatable, any language)",
    )
    parser.add_argument("--events", metavar="FILE", help="JSON (lines) of events/alerts: {t_start, t_end, label}")
    parser.add_argument(
        "--concepts",
        action="append",
        default=[],
        metavar="FILE",
        help="extra tagging concepts, one per line ('category: label [= prompt]'); repeatable",
    )
    parser.add_argument("--only-concepts", action="store_true", help="tag with the --concepts files only")
    parser.add_argument(
        "--shots-from",
        choices=["auto", "frames", "clips"],
        default="auto",
        help="auto: stored per-frame features, else stored clips, else decode; frames: per-frame "
        "(decode if not stored); clips: stored clip windows only",
    )
    parser.add_argument(
        "--sensitivity", type=float, help="cut threshold in robust deviations above the local median (4)"
    )
    parser.add_argument("--min-shot", type=float, help="shortest shot in seconds (1)")
    parser.add_argument(
        "--captioner", metavar="MODEL", help="caption keyframes with this Hugging Face vision-language model"
    )
    parser.add_argument("--fps", type=float, help="sampled frames per second when decoding")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--json", action="store_true", help="print summary.json instead of the text")
    parser.add_argument("--no-progress", action="store_true")
    add_common_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    checked_cameras(args.camera)
    if (args.path is None) == (args.camera is None):
        raise UsageError("give a video PATH or --camera ID (one of them)")
    if args.start is not None and args.end is not None and args.end <= args.start:
        raise UsageError(f"--to ({args.end:g} s) must come after --from ({args.start:g} s)")
    config = config_from(args)
    store = open_configured_store(config)
    tuning = {k: v for k, v in (("sensitivity", args.sensitivity), ("min_shot", args.min_shot)) if v is not None}
    options = SummaryOptions(keyframes=args.keyframes, shots_from=args.shots_from, **tuning)
    common = dict(
        events=read_events(args.events) if args.events else [],
        queries=args.query,
        concepts=load_vocabulary(args.concepts, builtin=not args.only_concepts),
        captioner=TransformersCaptioner(args.captioner, device="cuda" if config.device == "cuda" else "cpu")
        if args.captioner
        else None,
        options=options,
        start=args.start,
        end=args.end,
        progress=not args.no_progress,
    )
    if args.path is not None:
        explicit = args.models is not None or config.models != "default"
        result = summarize_file(args.path, config, store, models_explicit=explicit, **common)
    else:
        sid = camera_source_id(args.camera)
        if not any(True for _ in store.list(clips_prefix(sid))) and not store.exists(summary_frames_key(sid)):
            raise UsageError(
                f"summaries of live cameras are not available until live monitoring lands: the store {store.url} "
                f"holds no clips for camera {args.camera!r}"
            )
        result = summarize_stored(store, args.camera, config=config, shots_from=args.shots_from, **common)

    summary = result.summary
    if args.json:
        print(json.dumps(summary, indent=1, sort_keys=True, ensure_ascii=False))
    else:
        print(summary["text"])
        features = summary["features"]
        origin = "read from the store, nothing decoded" if result.reused else "decoded once and stored for next time"
        print(f"\nfeatures: {features['kind']} every {features['interval']:g} s ({features['count']}), {origin}")
        speed = result.video_seconds / result.elapsed if result.elapsed else 0.0
        print(f"summarized {result.video_seconds:.1f} s of video in {result.elapsed:.1f} s ({speed:.0f}x realtime)")
        print(f"report: {store.locate(result.keys['report'])}")
        print(f"summary: {store.locate(result.keys['summary'])}")
    if args.out:
        written = export_summary(store, result, args.out)
        report = next(path for path in written if path.name == "report.html")
        print(f"copied {len(written)} files to {report.parent} (open {report})")
    return 0
