"""`vigil tracks`: a store's tracks per source, or the tracks most like one of them, across cameras and time;
and the tracks most like an example image, for `vigil search --image PATH --tracks`.

    vigil tracks                                           # every source's tracks
    vigil tracks --similar cam3.mp4#2                      # tracks like track 2 of cam3.mp4, of any source
    vigil tracks --similar gate#5 --camera --json          # SOURCE a camera id (`vigil track --camera`); JSON lines
    vigil tracks --similar gate#5 --live                   # track 5 of the live monitor's tracks of camera gate
"""

from __future__ import annotations

import argparse
import json
import sys

from jobs.commands.common import UsageError, add_common_options, checked_cameras, config_from, read_image
from pipeline.config import VigilConfig
from pipeline.models import Dinov2Encoder, resolve_models
from pipeline.records import UNTRAINED_NOTE
from pipeline.storage.layout import camera_source_id, file_source_id
from pipeline.storage.store import ObjectStore, open_configured_store
from pipeline.tracking import (
    StoredSource,
    StoredTrack,
    TrackHit,
    TrackIndex,
    TrackSearchError,
    live_source_id,
    similar_tracks,
    stored_sources,
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "tracks", help="list the stored tracks, or find the tracks most like one (the same object elsewhere)"
    )
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--list", action="store_true", help="every source's tracks (the default)")
    choice.add_argument(
        "--similar", metavar="SOURCE#ID", help="the tracks most like track ID of SOURCE (a file, or a source id)"
    )
    parser.add_argument("--camera", action="store_true", help="SOURCE of --similar is a camera id")
    parser.add_argument(
        "--live", action="store_true", help="SOURCE of --similar is a camera id, its track one of the live monitor's"
    )
    parser.add_argument("--top-k", type=int)
    parser.add_argument(
        "--json", action="store_true", help="JSON lines: source, source_id, track_id, class_name, times, thumbnail"
    )
    add_common_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    for flag in ("camera", "live"):
        if getattr(args, flag) and args.similar is None:
            raise UsageError(f"--{flag} goes with --similar SOURCE#ID")
    config = config_from(args)
    store = open_configured_store(config, create=False)  # reading tracks never makes a store
    sources = list(stored_sources(store))
    if not any(source.tracks for source in sources):
        raise UsageError(f"no tracks in {store.url}: run `vigil track VIDEO`, or a monitor with track.live, first")
    if args.similar is None:
        _print_sources(sources, store, args.json)
        return 0
    source_text, track_id = _parse_track(args.similar)
    query = _query_source(sources, source_text, camera=args.camera, live=args.live)
    try:
        index, hits = similar_tracks(sources, query, track_id, config.search.top_k, store.url)
    except TrackSearchError as exc:
        raise UsageError(str(exc)) from None
    _note_skipped(index, args.command)
    print_track_hits(hits, store, args.json)
    return 0


def search_tracks_by_image(args: argparse.Namespace, config: VigilConfig, store: ObjectStore) -> int:
    """`vigil search --image PATH --tracks`: the stored tracks ranked by cosine to the example image's DINOv2
    vector, the image embedded whole (a crop, as a track's thumbnail is) by the tracks' appearance model."""
    image = read_image(args.image)
    # Without an explicit choice, the model most tracks were made with; with one, its DINOv2.
    chosen = args.models is not None or config.models != "default"
    try:
        index = TrackIndex.from_store(store, resolve_models(config.models).dinov2 if chosen else None)
    except TrackSearchError as exc:
        raise UsageError(str(exc)) from None
    encoder = Dinov2Encoder.from_pretrained(
        index.appearance_model, device=config.device, precision=config.precision, batch_size=config.batch_size
    )
    try:
        hits = index.search(encoder.embed_images([image])[0], encoder.model_id, config.search.top_k)
    except TrackSearchError as exc:
        raise UsageError(str(exc)) from None
    _note_skipped(index, args.command)
    print_track_hits(hits, store, args.json, untrained=encoder.untrained)
    return 0


def print_track_hits(hits: list[TrackHit], store: ObjectStore, as_json: bool, untrained: bool = False) -> None:
    if as_json:
        for hit in hits:
            print(json.dumps(hit.to_json() | {"thumbnail": _thumbnail(hit.track, store)}))
        return
    if untrained or any(hit.track.untrained for hit in hits):
        print(UNTRAINED_NOTE)
    if not hits:
        print("no other tracks")
    for rank, hit in enumerate(hits, 1):
        print(f"{rank:>3}. {hit.score:.4f}  {_describe(hit.track)}  {hit.track.source}")
        print(f"     thumbnail: {_thumbnail(hit.track, store)}")


def _print_sources(sources: list[StoredSource], store: ObjectStore, as_json: bool) -> None:
    if as_json:
        for source in sources:
            for track in source.tracks:
                print(json.dumps(track.to_json() | {"thumbnail": _thumbnail(track, store)}))
        return
    if any(track.untrained for source in sources for track in source.tracks):
        print(UNTRAINED_NOTE)
    for source in sources:
        print(
            f"{source.source} ({source.source_id}): {len(source.tracks)} tracks, appearance {source.appearance_model}"
        )
        for track in source.tracks:
            print(f"  {_describe(track)}  thumbnail: {_thumbnail(track, store)}")


def _thumbnail(track: StoredTrack, store: ObjectStore) -> str:
    """Where its thumbnail is; none for a live track a restart left without a crop (crops are not checkpointed)."""
    return store.locate(track.thumbnail) if track.thumbnail else "none"


def _describe(track: StoredTrack) -> str:
    return f"#{track.track_id} {track.class_name}  {track.first_pts:8.2f}s - {track.last_pts:8.2f}s"


def _parse_track(text: str) -> tuple[str, int]:
    """SOURCE#ID as (SOURCE, ID); split at the last '#', which a file's path may hold too."""
    source, _, track_id = text.rpartition("#")
    if not source or not track_id.isdigit():
        raise UsageError(f"--similar {text!r}: give SOURCE#ID, a source and a track number, e.g. cam3.mp4#2")
    return source, int(track_id)


def _query_source(sources: list[StoredSource], source: str, *, camera: bool, live: bool) -> StoredSource:
    """The tracked source SOURCE names: a camera's live tracks (with --live), a camera id (with --camera), else
    a file path, else a source id."""
    by_id = {stored.source_id: stored for stored in sources}
    if live:
        candidates = [live_source_id(camera_source_id(checked_cameras(source)[0]))]
    elif camera:
        candidates = [camera_source_id(checked_cameras(source)[0])]
    else:
        candidates = [file_source_id(source), source]
    for source_id in candidates:
        if source_id in by_id:
            return by_id[source_id]
    if live:
        raise UsageError(f"no live tracks of camera {source}: none has ended yet in a monitor with track.live")
    if camera:
        hint = " (a monitor's live tracks of it need --live)"
    else:
        hint = " (a camera id needs --camera; a monitor's live tracks, --live)"
    raise UsageError(f"no tracks of {source}{hint}: run `vigil track` on it first")


def _note_skipped(index: TrackIndex, command: str) -> None:
    if index.skipped:
        names = ", ".join(source.source for source in index.skipped)
        print(
            f"vigil {command}: left out {len(index.skipped)} sources tracked with another appearance model "
            f"than {index.appearance_model}: {names}",
            file=sys.stderr,
        )
