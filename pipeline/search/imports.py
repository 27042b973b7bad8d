"""Clip embeddings computed elsewhere (a batch job on a GPU cluster, say), read from Parquet for the index.

Schema of the file (one row per clip window; Parquet as any Arrow writer makes it):

    source        string            a file path or a camera id
    kind          string, optional  "file" (default) or "camera": the source's namespace
    start, end    double            the window in seconds of media time, start < end
    siglip        list<float>       the SigLIP2 image embedding of the window (normalised on import)
    dinov2        list<float>       the DINOv2 embedding of the window (normalised on import)
    keyframe_key  string, optional  the store key of the window's keyframe JPEG, when one was stored
    recorded      double, optional  the wall-clock time of `start` (Unix seconds); null when unknown, and the
                                   clip then never matches a wall-clock search (`vigil search --from ISO`)

and in the file's key-value metadata `vigil.siglip` and `vigil.dinov2`: the checkpoints that made the
vectors (Hugging Face ids), compared with the index's models; `vigil.untrained: "true"` when they were
random-weight checkpoints.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.records import ClipEmbedding, ModelIds
from pipeline.storage.layout import camera_source_id, file_source_id

REQUIRED = ("source", "start", "end", "siglip", "dinov2")
KINDS = ("file", "camera")


class ClipImportError(ValueError):
    """A clip file that does not follow the schema, named with what is wrong."""


def read_clip_table(path: str | Path) -> list[ClipEmbedding]:
    """The clips of a Parquet file of the schema above."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise ClipImportError(f"{path}: not a readable Parquet file ({exc})") from None
    if not table.num_rows:
        raise ClipImportError(f"{path}: holds no clips")
    missing = [name for name in REQUIRED if name not in table.column_names]
    if missing:
        raise ClipImportError(f"{path}: missing column(s) {', '.join(missing)} (see `vigil import-clips --help`)")
    metadata = {key.decode(): value.decode() for key, value in (table.schema.metadata or {}).items()}
    if "vigil.siglip" not in metadata or "vigil.dinov2" not in metadata:
        raise ClipImportError(f"{path}: the file's metadata must name the models (vigil.siglip, vigil.dinov2)")
    untrained = metadata.get("vigil.untrained", "false").lower() == "true"
    models = ModelIds(metadata["vigil.siglip"], metadata["vigil.dinov2"], untrained)
    columns = table.to_pydict()
    kinds = columns.get("kind") or ["file"] * table.num_rows
    keyframes = columns.get("keyframe_key") or [""] * table.num_rows
    recorded = columns.get("recorded") or [None] * table.num_rows
    vectors = {tower: _matrix(path, tower, columns[tower]) for tower in ("siglip", "dinov2")}
    clips = []
    for row, (source, kind, start, end) in enumerate(zip(columns["source"], kinds, columns["start"], columns["end"])):
        if kind not in KINDS:
            raise ClipImportError(f"{path}: row {row}: kind {kind!r} is not one of {', '.join(KINDS)}")
        if not source or start is None or end is None or not 0 <= start < end:
            raise ClipImportError(f"{path}: row {row}: needs a source and 0 <= start < end (got {start!r}, {end!r})")
        sid = camera_source_id(source) if kind == "camera" else file_source_id(source)
        clips.append(
            ClipEmbedding(
                source=source,
                source_id=sid,
                start=float(start),
                end=float(end),
                siglip=vectors["siglip"][row],
                dinov2=vectors["dinov2"][row],
                keyframe_pts=float(start),
                keyframe_key=keyframes[row] or "",
                models=models,
                recorded_at=_recorded(path, row, recorded[row]),
            )
        )
    return clips


def _recorded(path, row: int, value) -> float | None:
    """A row's recording time: finite Unix seconds, or None (null: unknown)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ClipImportError(
            f"{path}: row {row}: recorded must be Unix seconds (a finite number) or null, got {value!r}"
        )
    return float(value)


def _matrix(path, tower: str, values: list) -> np.ndarray:
    """One tower's vectors as unit rows; every row of one length, finite and not zero."""
    lengths = {len(vector) if vector is not None else 0 for vector in values}
    if len(lengths) != 1 or 0 in lengths:
        raise ClipImportError(f"{path}: the {tower} vectors must all have one length (found {sorted(lengths)})")
    matrix = np.asarray(values, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if not np.isfinite(matrix).all() or (norms == 0).any():
        raise ClipImportError(f"{path}: the {tower} vectors must be finite and not zero")
    return matrix / norms
