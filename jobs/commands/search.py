"""`vigil search`: find moments in the index by a phrase or an example image."""

from __future__ import annotations

import argparse

from actors.index_shards import open_search_index
from jobs.commands.common import UsageError, add_common_options, checked_cameras, config_from, print_events, read_image
from jobs.commands.tracks import search_tracks_by_image
from pipeline.models import load_encoders
from pipeline.search.filters import ClipFilter, FilterError, TimeRange
from pipeline.search.moments import find_moments
from pipeline.storage.layout import camera_source_id, file_source_id
from pipeline.storage.store import open_configured_store


def register(subparsers) -> None:
    parser = subparsers.add_parser("search", help="find moments by a phrase or an example image")
    parser.add_argument("text", nargs="?", help="what to look for, in any language")
    parser.add_argument("--image", help="an example image file instead of a phrase")
    parser.add_argument(
        "--tracks", action="store_true", help="with --image: rank the stored tracks (`vigil track`), not clips"
    )
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--json", action="store_true", help="JSON lines: source, start, end, score, keyframe, recorded")
    parser.add_argument("--camera", action="append", default=[], metavar="ID", help="only this camera (repeatable)")
    parser.add_argument(
        "--source", action="append", default=[], metavar="PATH", help="only this file or source id (repeatable)"
    )
    clocks = "ISO 8601 (when recorded; clips of unknown recording time are left out) or seconds into each source"
    parser.add_argument("--from", dest="time_from", metavar="TIME", help=f"only clips ending after TIME: {clocks}")
    parser.add_argument("--to", dest="time_to", metavar="TIME", help=f"only clips starting before TIME: {clocks}")
    add_common_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.tracks:
        return _run_tracks(args)
    try:
        time_range = TimeRange.parse(args.time_from, args.time_to)
    except FilterError as exc:
        raise UsageError(str(exc)) from None
    config = config_from(args)
    store = open_configured_store(config, create=False)  # a search never makes a store
    index = open_search_index(config, store)
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
    sources = None
    if args.camera or args.source:
        sources = {camera_source_id(camera) for camera in checked_cameras(args.camera)}
        sources |= {source if source in index.sources else file_source_id(source) for source in args.source}
    events = find_moments(
        index,
        encoders,
        text=args.text,
        image=image,
        top_k=config.search.top_k,
        merge_drop=config.search.merge_drop,
        where=ClipFilter.of(sources, time_range),
    )
    print_events(events, store, args.json)
    return 0


def _run_tracks(args: argparse.Namespace) -> int:
    if args.text is not None or args.image is None:
        raise UsageError("--tracks needs --image PATH, not a phrase: tracks have no text vectors")
    if args.camera or args.source or args.time_from or args.time_to:
        raise UsageError("--camera, --source, --from and --to filter clips, not --tracks")
    config = config_from(args)
    return search_tracks_by_image(args, config, open_configured_store(config, create=False))
