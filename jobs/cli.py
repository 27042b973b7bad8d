"""The `vigil` command line: index, search, remove, demo."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from jobs import ingest
from jobs import monitor as monitor_job
from jobs import summarize as summarize_job
from pipeline.config import ConfigError, VigilConfig, load_config
from pipeline.media.decode import VideoDecodeError
from pipeline.search.index import ClipIndex, IndexMismatchError, find_moments
from pipeline.models import ModelUnavailableError, load_encoders
from pipeline.records import Event
from pipeline.storage.layout import source_id, source_key
from pipeline.storage.store import ObjectStore, StoreError, open_configured_store

UNTRAINED_NOTE = "UNTRAINED models (random weights): these results prove the plumbing, not accuracy."


class UsageError(Exception):
    """Bad command-line input, reported without a traceback."""


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file overriding configs/default.yaml")
    parser.add_argument("--store", help="store folder or s3://bucket/prefix (env VIGIL_STORE; default ./vigil-data)")
    parser.add_argument("--models", help="default | tiny | SIGLIP,DINOV2 (HF ids or folders) | DIR (env VIGIL_MODELS)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16", "int8"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vigil", description="Index video and find moments by phrase or example image.")
    commands = parser.add_subparsers(dest="command", required=True)

    index = commands.add_parser("index", help="index video files and folders")
    index.add_argument("paths", nargs="+", metavar="PATH")
    index.add_argument("--fps", type=float, help="sampled frames per second")
    index.add_argument("--window", type=float, help="clip window in seconds")
    index.add_argument("--decoder", choices=["pyav", "decord"], help="decoding backend")
    index.add_argument("--batch-size", type=int)
    index.add_argument("--force", action="store_true", help="re-index files already indexed unchanged")
    index.add_argument("--ray", action="store_true", help="spread files over Ray decoder and extractor actors")
    index.add_argument("--no-progress", action="store_true")
    add_common_options(index)

    search = commands.add_parser("search", help="find moments by a phrase or an example image")
    search.add_argument("text", nargs="?", help="what to look for, in any language")
    search.add_argument("--image", help="an example image file instead of a phrase")
    search.add_argument("--top-k", type=int)
    search.add_argument("--json", action="store_true", help="JSON lines: source, start, end, score, keyframe")
    add_common_options(search)

    remove = commands.add_parser("remove", help="remove a source from the store and the index")
    remove.add_argument("sources", nargs="+", metavar="PATH", help="a video path or a source id")
    add_common_options(remove)

    demo = commands.add_parser("demo", help="generate a sample video, index it and search it")
    demo.add_argument("--out", default="vigil-demo", help="folder for the sample video and (unless --store) the store")
    add_common_options(demo)

    ingest.add_parser(commands)
    summarize_job.add_parser(commands)
    monitor_job.add_parser(commands)
    return parser


def config_from(args: argparse.Namespace) -> VigilConfig:
    return load_config(
        args.config,
        {
            "store": args.store,
            "models": args.models,
            "device": args.device,
            "precision": args.precision,
            "decode.fps": getattr(args, "fps", None),
            "decode.backend": getattr(args, "decoder", None),
            "embed.window": getattr(args, "window", None),
            "batch_size": getattr(args, "batch_size", None),
            "search.top_k": getattr(args, "top_k", None),
        },
    )


def load_index(config: VigilConfig, store: ObjectStore) -> ClipIndex:
    return ClipIndex.load(store, kind=config.index.kind, exact_max=config.index.exact_max, hnsw_m=config.index.hnsw_m)


def read_image(path: str) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise UsageError(f"example image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise UsageError(f"cannot read example image {path}: {exc}") from None


def print_events(events: list[Event], store: ObjectStore, as_json: bool) -> None:
    if as_json:
        for event in events:
            print(json.dumps(event.to_json() | {"keyframe": store.locate(event.keyframe_key)}))
        return
    if events and events[0].untrained:
        print(UNTRAINED_NOTE)
    if not events:
        print("no matches")
    for rank, event in enumerate(events, 1):
        print(
            f"{rank:>3}. {event.score:.4f}  {event.start:8.2f}s - {event.end:8.2f}s  {event.source}\n"
            f"     keyframe: {store.locate(event.keyframe_key)}"
        )


def cmd_index(args: argparse.Namespace) -> int:
    from jobs.archive import index_paths

    config = config_from(args)
    store = open_configured_store(config)
    report = index_paths(args.paths, config, store, use_ray=args.ray, force=args.force, progress=not args.no_progress)
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


def cmd_search(args: argparse.Namespace) -> int:
    config = config_from(args)
    store = open_configured_store(config)
    index = load_index(config, store)
    if not len(index):
        raise UsageError(f"the index in {store.url} is empty: run `vigil index PATH` first")
    image = read_image(args.image) if args.image else None
    if (args.text is None) == (image is None):
        raise UsageError("give a phrase or --image PATH (one of them)")
    # Without an explicit choice, query with the models the index was built with.
    spec = config.models
    if args.models is None and config.models == "default" and index.models is not None:
        spec = f"{index.models.siglip},{index.models.dinov2}"
    encoders = load_encoders(spec, device=config.device, precision=config.precision, batch_size=config.batch_size)
    events = find_moments(
        index, encoders, text=args.text, image=image, top_k=config.search.top_k, merge_drop=config.search.merge_drop
    )
    print_events(events, store, args.json)
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    config = config_from(args)
    store = open_configured_store(config)
    index = load_index(config, store)
    for source in args.sources:
        sid = source if source in index.sources else source_id(str(Path(source).resolve()))
        if sid not in index.sources and not store.exists(source_key(sid)):
            raise UsageError(f"{source} is not in the store {store.url}")
        removed = index.remove_source(sid)
        for prefix in (f"clips/{sid}/", f"keyframes/{sid}/", f"summaries/{sid}/"):
            store.delete_prefix(prefix)
        store.delete(source_key(sid))
        print(f"removed {source}: {removed} clips")
    index.save(store)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from jobs.demo import run_demo

    return run_demo(args, config_from(args))


COMMANDS = {"index": cmd_index, "search": cmd_search, "remove": cmd_remove, "demo": cmd_demo, "ingest": ingest.run}
COMMANDS["summarize"] = summarize_job.run
COMMANDS.update(monitor=monitor_job.run, query=monitor_job.run, alerts=monitor_job.run)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (UsageError, ConfigError, StoreError, ModelUnavailableError, IndexMismatchError, VideoDecodeError, ValueError) as exc:
        print(f"vigil {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
