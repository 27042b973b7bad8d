"""`vigil remove`: remove sources from the store and the index."""

from __future__ import annotations

import argparse

from jobs.commands.common import UsageError, add_common_options, checked_cameras, config_from, load_index
from pipeline.search.index import ClipIndex
from pipeline.storage.layout import (
    camera_source_id,
    clips_prefix,
    file_source_id,
    looks_like_source_id,
    source_key,
    source_prefixes,
    tracks_key,
)
from pipeline.storage.store import ObjectStore, open_configured_store


def register(subparsers) -> None:
    parser = subparsers.add_parser("remove", help="remove a source from the store and the index")
    parser.add_argument(
        "sources",
        nargs="*",
        metavar="SOURCE",
        help="a video path, a camera id or a source id: what `vigil search` shows",
    )
    parser.add_argument("--camera", action="append", default=[], metavar="ID", help="a camera (repeatable)")
    add_common_options(parser)
    parser.set_defaults(run=run)


def _stored(store: ObjectStore, index: ClipIndex, sid: str) -> bool:
    """Whether anything of the source is left: rows, its record, clips (a removal interrupted after the record
    went is finished by removing the source again) or tracks (`vigil track` needs no index)."""
    return (
        sid in index.sources
        or store.exists(source_key(sid))
        or any(True for _ in store.list(clips_prefix(sid)))
        or store.exists(tracks_key(sid))
    )


def _source_of(name: str, store: ObjectStore, index: ClipIndex) -> str:
    """The source id `name` stands for: a source id, else a stored file's path, else a stored camera's id."""
    if looks_like_source_id(name) and _stored(store, index, name):
        return name
    file_sid, camera_sid = file_source_id(name), camera_source_id(name)
    stored_file, stored_camera = _stored(store, index, file_sid), _stored(store, index, camera_sid)
    if stored_file and stored_camera:
        raise UsageError(
            f"{name!r} names both a file and a camera in the store {store.url}: give --camera {name} for the "
            f"camera, or {file_sid} (its source id) for the file"
        )
    if not (stored_file or stored_camera):
        raise UsageError(f"{name} is not in the store {store.url} (neither a file, a camera nor a source id there)")
    return file_sid if stored_file else camera_sid


def run(args: argparse.Namespace) -> int:
    if not args.sources and not args.camera:
        raise UsageError("give a SOURCE (a path, a camera or a source id) or --camera ID")
    config = config_from(args)
    store = open_configured_store(config, create=False)  # removing from a store that is not there makes none
    index = load_index(config, store)
    named: dict[str, str] = {}  # source id -> as the user named it
    for name in args.sources:
        named.setdefault(_source_of(name, store, index), name)
    for camera in checked_cameras(args.camera):
        sid = camera_source_id(camera)
        if not _stored(store, index, sid):
            raise UsageError(f"camera {camera!r} is not in the store {store.url}")
        named.setdefault(sid, camera)
    # Every object is listed before anything changes, so a store that refuses a listing (a link planted in
    # it) is left as it was.
    objects = {sid: [key for prefix in source_prefixes(sid) for key in store.list(prefix)] for sid in named}
    removed = {sid: index.remove_source(sid) for sid in named}
    # Hidden from searches first, then the record (without it nothing brings the rows back), then the objects,
    # clips last: an interruption leaves objects no search shows, which removing the source again deletes.
    index.save(store)
    for sid, name in named.items():
        store.delete(source_key(sid))
        for key in reversed(objects[sid]):
            store.delete(key)
        print(f"removed {name}: {removed[sid]} clips")
    return 0
