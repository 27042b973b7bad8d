"""`vigil import-clips FILE.parquet`: clip embeddings computed elsewhere join the index (schema in
pipeline/search/imports.py)."""

from __future__ import annotations

import argparse

from jobs.commands.common import add_common_options, config_from, load_index
from pipeline.search.imports import read_clip_table
from pipeline.storage.clips import write_clip
from pipeline.storage.layout import camera_source_id, source_key
from pipeline.storage.store import open_configured_store


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "import-clips",
        help="add clip embeddings computed elsewhere (Parquet) to the index",
        description="Add clip windows embedded elsewhere to the store and the index. Columns: source, kind "
        "(file|camera, optional), start, end, siglip, dinov2 (float lists), keyframe_key (optional), recorded (the "
        "wall-clock time of start in Unix seconds, optional); the file's "
        "metadata names the models as vigil.siglip and vigil.dinov2 (and vigil.untrained: true for random "
        "weights).",
    )
    parser.add_argument("path", metavar="FILE.parquet")
    add_common_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = config_from(args)
    clips = read_clip_table(args.path)
    store = open_configured_store(config)
    index = load_index(config, store)
    index.upsert(clips)  # in memory first: other models or dimensions are refused before anything is written
    for clip in clips:
        write_clip(store, clip)  # a source's rows can be rebuilt from its clips and its record
    sources = {clip.source_id: clip.source for clip in clips}
    for sid, source in sources.items():
        kind = "camera" if sid == camera_source_id(source) else "file"
        store.put_json(source_key(sid), {"source": source, "source_id": sid, "kind": kind, "imported": True})
    index.save(store)
    print(f"imported {len(clips)} clips of {len(sources)} source(s) into {store.url}")
    return 0
