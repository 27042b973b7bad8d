"""MOTChallenge text files: detections in, tracks out.

A row is `frame,id,x,y,w,h,conf,...`: frames count from 1, (x, y) is the box's top-left corner and (w, h) its
size in pixels; a detection file's id is -1 and its further columns are ignored. A track file's rows are
`frame,id,x,y,w,h,conf,-1,-1,-1`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from pipeline.records import Detections, Track

_SEPARATOR = re.compile(r"\s*,\s*|\s+")  # commas (the format), or spaces as some tools write


class MOTInputError(ValueError):
    """A MOTChallenge detection file, or its appearance file, that is missing or malformed (one-line message)."""


def _parse(path: Path) -> np.ndarray:
    """The rows of a detection file as (rows, 7) float64: frame, id, x, y, w, h, conf."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MOTInputError(f"detection file not found: {path}") from None
    except UnicodeDecodeError:
        raise MOTInputError(f"{path} is not a text file") from None
    except OSError as exc:
        raise MOTInputError(f"cannot read detection file {path}: {exc.strerror or exc}") from None
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        fields = _SEPARATOR.split(line)
        if len(fields) < 7:
            raise MOTInputError(f"{path}:{number}: expected frame,id,x,y,w,h,conf, got {len(fields)} field(s)")
        try:
            values = [float(field) for field in fields[:7]]
        except ValueError:
            raise MOTInputError(f"{path}:{number}: not a number among frame,id,x,y,w,h,conf: {line[:80]!r}") from None
        frame, _, _, _, width, height, _ = values
        if not all(np.isfinite(values)):
            raise MOTInputError(f"{path}:{number}: frame,id,x,y,w,h,conf must be finite numbers")
        if frame < 1 or frame != int(frame):
            raise MOTInputError(f"{path}:{number}: the frame must be a whole number from 1, got {fields[0]}")
        if width < 0 or height < 0:
            raise MOTInputError(f"{path}:{number}: the box's width and height must not be negative")
        rows.append(values)
    return np.array(rows, dtype=np.float64).reshape(len(rows), 7)


def _appearance(path: Path, rows: int) -> np.ndarray:
    """The appearance vectors of an .npy file (rows, D), normalised to unit length."""
    try:
        with open(path, "rb") as file:
            # np.load takes any file without the .npy magic for a pickle and says so: the magic is checked first
            is_npy = file.read(6) == b"\x93NUMPY"
            file.seek(0)
            vectors = np.load(file, allow_pickle=False) if is_npy else None  # object arrays need pickle: refused
    except FileNotFoundError:
        raise MOTInputError(f"appearance file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise MOTInputError(f"cannot read appearance file {path}: {str(exc).splitlines()[0]}") from None
    if vectors is None:
        raise MOTInputError(f"{path} is not a .npy array file")
    if vectors.ndim != 2 or not np.issubdtype(vectors.dtype, np.number):
        raise MOTInputError(f"{path}: appearance must be a 2-D numeric array (rows, D), got {vectors.shape}")
    if len(vectors) != rows:
        raise MOTInputError(f"{path} has {len(vectors)} appearance rows but the detection file has {rows}")
    vectors = vectors.astype(np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if not (np.isfinite(norms).all() and (norms > 0).all()):
        raise MOTInputError(f"{path}: every appearance row must be finite and non-zero")
    return vectors / norms


def read_detections(path: str | Path, appearance: str | Path | None = None) -> dict[int, Detections]:
    """The detections of a MOTChallenge det.txt per frame number (frames without a row are absent), boxes as
    x1, y1, x2, y2; with `appearance`, an .npy file of shape (rows, D) whose row i belongs to the file's i-th
    detection row (blank lines are no rows)."""
    path = Path(path)
    rows = _parse(path)
    vectors = None if appearance is None else _appearance(Path(appearance), len(rows))
    frames = rows[:, 0].astype(np.int64)
    boxes = np.concatenate([rows[:, 2:4], rows[:, 2:4] + rows[:, 4:6]], axis=1)
    order = np.argsort(frames, kind="stable")  # rows of a frame keep the file's order
    starts = np.flatnonzero(np.diff(frames[order], prepend=-1))
    return {
        int(frames[group[0]]): Detections(
            boxes[group], rows[group, 6], appearance=None if vectors is None else vectors[group]
        )
        for group in np.split(order, starts[1:])
        if len(group)
    }


def write_tracks(path: str | Path, per_frame: Iterable[tuple[int, list[Track]]]) -> int:
    """Write tracks as MOTChallenge rows `frame,id,x,y,w,h,conf,-1,-1,-1`, one per track of each (frame, tracks)
    pair; the file appears whole (written beside it, then renamed). Returns the rows written."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    rows = 0
    try:
        out = open(temporary, "w", encoding="utf-8")
    except OSError as exc:
        raise OSError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with out:
            for frame, tracks in per_frame:
                for track in tracks:
                    x1, y1, x2, y2 = track.box
                    box = f"{x1:.3f},{y1:.3f},{x2 - x1:.3f},{y2 - y1:.3f}"
                    out.write(f"{frame},{track.track_id},{box},{track.score:.5f},-1,-1,-1\n")
                    rows += 1
    except BaseException:  # a failed write, or the tracks' producer failing: no half file left behind
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, path)
    return rows
