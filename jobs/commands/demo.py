"""`vigil demo`: generate a short sample video with distinct scenes, index it, search it by phrase and by image."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from PIL import Image

from jobs.archive import index_paths
from jobs.commands.common import add_common_options, config_from, load_index, print_events
from pipeline.config import VigilConfig
from pipeline.media.decode import decode_frames
from pipeline.media.synthetic import Scene, write_scene_video
from pipeline.models import DEFAULT_MODELS, Encoders, ModelUnavailableError, load_encoders
from pipeline.records import UNTRAINED_NOTE
from pipeline.search.moments import find_moments
from pipeline.storage.store import open_configured_store

SCENES = [Scene("harbour", 6.0), Scene("forest", 6.0), Scene("street", 6.0), Scene("night", 6.0), Scene("beach", 6.0)]
EXAMPLE_SCENE = 2


def _banner(lines: list[str]) -> None:
    lines = [wrapped for line in lines for wrapped in textwrap.wrap(line, 96)]
    width = max(len(line) for line in lines) + 4
    print("#" * width)
    for line in lines:
        print(f"# {line.ljust(width - 4)} #")
    print("#" * width)


def _encoders(config: VigilConfig) -> Encoders:
    """The configured models; for the default ones, fall back to tiny untrained models when they can't be had."""
    load = dict(device=config.device, precision=config.precision, batch_size=config.batch_size)
    if config.models != "default":
        return load_encoders(config.models, **load)
    try:
        return load_encoders("default", **load)
    except ModelUnavailableError as exc:
        _banner(
            [
                f"The default models ({DEFAULT_MODELS.siglip}, {DEFAULT_MODELS.dinov2}) are not available here:",
                *str(exc).splitlines()[:1],
                "The demo runs on TINY UNTRAINED models instead: it shows the pipeline working end to end,",
                "but its rankings mean nothing. See README.md (Models) to provide the real weights.",
            ]
        )
        return load_encoders("tiny", **load)


def register(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="generate a sample video, index it and search it")
    parser.add_argument(
        "--out", default="vigil-demo", help="folder for the sample video and (unless --store) the store"
    )
    add_common_options(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    config = config_from(args)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.store is None:
        config = config.model_copy(update={"store": str(out / "store")})
    sample = out / "sample.mp4"
    if not sample.exists():
        print(f"writing a {sum(s.duration for s in SCENES):.0f} s sample video with {len(SCENES)} scenes: {sample}")
        write_scene_video(sample, SCENES, fps=25, size=(640, 360), gop=25)

    encoders = _encoders(config)
    store = open_configured_store(config)
    report = index_paths([sample], config, store, encoders=encoders)
    print(f"indexed {report.clips} clips in {report.elapsed:.1f} s into {store.url}")
    index = load_index(config, store)

    query = "a quiet street with parked cars"
    print(f'\ntext search: "{query}"')
    print_events(find_moments(index, encoders, text=query, top_k=3), store, as_json=False)

    name, start, end = _scene_bounds()[EXAMPLE_SCENE]
    moment = (start + end) / 2
    frame = next(f for f in decode_frames(sample, fps=4, short_side=None) if f.pts >= moment)
    example = out / "example.jpg"
    Image.fromarray(frame.image).save(example, quality=92)
    print(f"\nexample-image search: {example} (a frame of the '{name}' scene, {start:.0f}-{end:.0f} s)")
    print_events(find_moments(index, encoders, image=frame.image, top_k=3), store, as_json=False)

    print(
        f"\nresults are in {store.url}: keyframes/ (JPEG), clips/ (embeddings), index/ (FAISS), sources/ (records)\n"
        f'try: vigil search --store {store.url} "your phrase"   or   '
        f"vigil search --store {store.url} --image {example}"
    )
    if encoders.ids.untrained:
        print(UNTRAINED_NOTE)
    return 0


def _scene_bounds() -> list[tuple[str, float, float]]:
    bounds, start = [], 0.0
    for scene in SCENES:
        bounds.append((scene.name, start, start + scene.duration))
        start += scene.duration
    return bounds
