"""`vigil remove`: remove sources from the store and the index."""

from __future__ import annotations

import argparse

from jobs.commands.common import UsageError, add_common_options, config_from, load_index
from pipeline.storage.layout import file_source_id, source_key, source_prefixes
from pipeline.storage.store import open_configured_store


def register(subparsers) -> None:
    parser = subparsers.add_parser("remove", help="remove a source from the store and the index")
    parser.add_argument("sources", nargs="+", metavar="PATH", help="a video path or a source id")
    add_common_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = config_from(args)
    store = open_configured_store(config)
    index = load_index(config, store)
    for source in args.sources:
        sid = source if source in index.sources else file_source_id(source)
        if sid not in index.sources and not store.exists(source_key(sid)):
            raise UsageError(f"{source} is not in the store {store.url}")
        removed = index.remove_source(sid)
        for prefix in source_prefixes(sid):
            store.delete_prefix(prefix)
        store.delete(source_key(sid))
        print(f"removed {source}: {removed} clips")
    index.save(store)
    return 0
