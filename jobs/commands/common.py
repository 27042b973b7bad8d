"""What the `vigil` commands share: usage errors, the common options, the config from the arguments, reading
an example image, loading the index and printing found moments."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from pipeline.cameras import check_camera_id
from pipeline.config import VigilConfig, load_config
from pipeline.records import UNTRAINED_NOTE, Event
from pipeline.search.index import ClipIndex
from pipeline.storage.codecs import ImageTooLargeError, decode_image
from pipeline.storage.store import ObjectStore


class UsageError(Exception):
    """Bad command-line input, reported without a traceback."""


def add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file overriding configs/default.yaml")
    parser.add_argument("--store", help="store folder or s3://bucket/prefix (env VIGIL_STORE; default ./vigil-data)")
    parser.add_argument("--models", help="default | tiny | SIGLIP,DINOV2 (HF ids or folders) | DIR (env VIGIL_MODELS)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16", "int8", "int8-compiled"])


def config_from(args: argparse.Namespace, overrides: dict | None = None) -> VigilConfig:
    """The config file, then the common options and a command's own `overrides` (None values: not given), each
    validated by `load_config`: a bad one is a one-line error naming its key."""
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
            "kafka.brokers": getattr(args, "brokers", None),
            **(overrides or {}),
        },
    )


def checked_cameras(cameras: list[str] | str | None) -> list[str]:
    """`--camera` values, each held to the one rule for camera ids; a bad one is a UsageError."""
    cameras = [cameras] if isinstance(cameras, str) else list(cameras or [])
    for camera in cameras:
        try:
            check_camera_id(camera)
        except ValueError as exc:
            raise UsageError(f"--camera: {exc}") from None
    return cameras


def load_index(config: VigilConfig, store: ObjectStore) -> ClipIndex:
    return ClipIndex.load(store, config.index)


def read_image(path: str) -> np.ndarray:
    """An example image file as RGB; a missing, unreadable or oversized one is a UsageError naming it."""
    try:
        return decode_image(Path(path))
    except FileNotFoundError:
        raise UsageError(f"example image not found: {path}") from None
    except ImageTooLargeError as exc:
        raise UsageError(f"example image {path} is too large: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:  # what Pillow raises on files it cannot decode
        raise UsageError(f"cannot read example image {path}: {exc}") from None


def recorded_start(event: Event) -> str | None:
    """When the event's first clip was recorded, as ISO 8601 UTC; None when unknown."""
    recorded = event.hits[0].recorded_at if event.hits else None
    if recorded is None:
        return None
    return datetime.fromtimestamp(recorded, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def print_events(events: list[Event], store: ObjectStore, as_json: bool) -> None:
    def keyframe(event: Event) -> str | None:  # imported clips may come without one
        return store.locate(event.keyframe_key) if event.keyframe_key else None

    if as_json:
        for event in events:
            print(json.dumps(event.to_json() | {"keyframe": keyframe(event), "recorded": recorded_start(event)}))
        return
    if events and events[0].untrained:
        print(UNTRAINED_NOTE)
    if not events:
        print("no matches")
    for rank, event in enumerate(events, 1):
        recorded = recorded_start(event)
        print(
            f"{rank:>3}. {event.score:.4f}  {event.start:8.2f}s - {event.end:8.2f}s  {event.source}\n"
            + (f"     recorded: {recorded}\n" if recorded else "")
            + f"     keyframe: {keyframe(event) or 'none'}"
        )
