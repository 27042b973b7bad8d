"""Clip embeddings and keyframes as store objects: a clip is an npz of its two vectors plus its metadata as
JSON (deterministic bytes, so a rewrite of the same clip writes the same object); a keyframe is a JPEG."""

from __future__ import annotations

import json

import numpy as np

from pipeline.records import ClipEmbedding, ModelIds
from pipeline.storage.codecs import decode_npz, encode_jpeg, encode_npz
from pipeline.storage.layout import clip_key
from pipeline.storage.store import ObjectStore


def write_clip(store: ObjectStore, clip: ClipEmbedding) -> str:
    meta = {
        "source": clip.source,
        "source_id": clip.source_id,
        "start": clip.start,
        "end": clip.end,
        "keyframe_pts": clip.keyframe_pts,
        "keyframe_key": clip.keyframe_key,
        "frame_count": clip.frame_count,
        "recorded_at": clip.recorded_at,
        "models": {"siglip": clip.models.siglip, "dinov2": clip.models.dinov2, "untrained": clip.models.untrained},
    }
    key = clip_key(clip.source_id, clip.start)
    store.put(
        key,
        encode_npz(
            {
                "siglip": clip.siglip.astype(np.float32),
                "dinov2": clip.dinov2.astype(np.float32),
                "meta": np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8),
            }
        ),
    )
    return key


def read_clip(store: ObjectStore, key: str) -> ClipEmbedding:
    data = decode_npz(store.get(key))
    meta = json.loads(data["meta"].tobytes())
    return ClipEmbedding(
        source=meta["source"],
        source_id=meta["source_id"],
        start=meta["start"],
        end=meta["end"],
        siglip=data["siglip"],
        dinov2=data["dinov2"],
        keyframe_pts=meta["keyframe_pts"],
        keyframe_key=meta["keyframe_key"],
        models=ModelIds(**meta["models"]),
        frame_count=meta["frame_count"],
        recorded_at=meta.get("recorded_at"),  # clips written before recording times were kept: unknown
    )


def write_keyframe(store: ObjectStore, key: str, image: np.ndarray, quality: int = 88) -> None:
    store.put(key, encode_jpeg(image, quality))
