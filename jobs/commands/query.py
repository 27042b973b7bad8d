"""`vigil query add|remove|list`: manage the standing queries in the store (a running monitor follows them)."""

from __future__ import annotations

import argparse
import json

from jobs.commands.common import UsageError, add_common_options, checked_cameras, config_from, read_image
from pipeline.config import VigilConfig
from pipeline.live.queries import StandingQuery, delete_query, load_queries, save_query
from pipeline.records import CROSSING_DIRECTIONS, TRACK_EVENT_KINDS
from pipeline.storage.store import open_configured_store


def register(subparsers) -> None:
    parser = subparsers.add_parser("query", help="add, remove or list standing queries (the monitor follows them)")
    actions = parser.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="add a standing query")
    add.add_argument("id")
    add.add_argument("text", nargs="?", help="what to watch for, in any language")
    add.add_argument("--image", help="an example image instead of a phrase")
    add.add_argument(
        "--track",
        choices=list(TRACK_EVENT_KINDS),
        help="instead of a phrase: alert once per tracked object that does this in --where (needs track.live)",
    )
    add.add_argument("--where", help="--track: the zone or line (events config section) it happens in")
    add.add_argument("--class", dest="classes", action="append", help="--track: object class (repeatable; default any)")
    add.add_argument("--direction", choices=list(CROSSING_DIRECTIONS), help="--track cross: this direction only")
    add.add_argument("--camera", action="append", help="cameras it watches (repeatable; default all)")
    add.add_argument("--threshold", type=float)
    add.add_argument("--min-duration", type=float)
    add.add_argument("--cooldown", type=float)
    add.add_argument("--calibration", choices=["calibrated", "prompts", "camera", "raw"])
    add_common_options(add)
    remove = actions.add_parser("remove", help="remove a standing query")
    remove.add_argument("id")
    add_common_options(remove)
    listing = actions.add_parser("list", help="list standing queries as JSON lines")
    add_common_options(listing)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = config_from(args)
    if args.action == "add":
        return add(args, config)
    store = open_configured_store(config, create=False)  # listing or removing makes no store
    if args.action == "list":
        for query, _ in load_queries(store):
            print(json.dumps(query.to_json(), sort_keys=True))
    else:
        if not delete_query(store, args.id):
            raise UsageError(f"no standing query {args.id!r} in {store.url}")
        print(f"removed query {args.id}")
    return 0


def add(args: argparse.Namespace, config: VigilConfig) -> int:
    if sum(given is not None for given in (args.text, args.image, args.track)) != 1:
        raise UsageError("give a phrase, --image PATH or --track EVENT (one of them)")
    if args.track is None and (args.where or args.classes or args.direction):
        raise UsageError("--where, --class and --direction go with --track")
    if args.track is not None and not args.where:
        raise UsageError("--track needs --where ZONE_OR_LINE")
    track = None
    if args.track is not None:
        track = {"event": args.track, "where": args.where, "classes": args.classes, "direction": args.direction}
    fields = {
        "min_duration": args.min_duration,
        "cooldown": args.cooldown,
        "threshold": args.threshold,
        "calibration": args.calibration,
    }
    cameras = checked_cameras(args.camera) or None  # none given: every camera
    definition = {"id": args.id, "text": args.text, "image": args.image, "track": track, "cameras": cameras}
    query = StandingQuery.from_json({**definition, **{k: v for k, v in fields.items() if v is not None}})
    image = read_image(args.image) if args.image else None  # refused before the store is touched
    save_query(open_configured_store(config), query, image)
    print(f"added query {args.id}")
    return 0
