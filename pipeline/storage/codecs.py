"""Byte encodings of what the store and the Kafka topics hold: JPEG pictures and deterministic .npz arrays."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """RGB uint8 (H, W, 3) as JPEG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image).convert("RGB").save(buffer, format="JPEG", quality=int(quality))
    return buffer.getvalue()


def decode_image(data: bytes, formats: Sequence[str] | None = None) -> np.ndarray:
    """Encoded picture bytes (any format Pillow reads, or only `formats`) as RGB uint8 (H, W, 3)."""
    with Image.open(io.BytesIO(data), formats=formats) as image:
        return np.asarray(image.convert("RGB"))


def encode_npz(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An .npz that np.load reads, with fixed zip timestamps so equal arrays give equal bytes (a rewrite of
    an object with the same content writes the same object)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), member.getvalue())
    return buffer.getvalue()


def decode_npz(data: bytes) -> dict[str, np.ndarray]:
    """Every array of .npz bytes, loaded (never pickles)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        return {name: arrays[name] for name in arrays.files}
