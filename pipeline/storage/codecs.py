"""Byte encodings of what the store and the Kafka topics hold: JPEG pictures and deterministic .npz arrays."""

from __future__ import annotations

import io
import re
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """RGB uint8 (H, W, 3) as JPEG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image).convert("RGB").save(buffer, format="JPEG", quality=int(quality))
    return buffer.getvalue()


# The most pixels a picture may have to be decoded: Pillow's own limit (about 89 megapixels, 268 MB as RGB). A
# small file can claim far more (a 109 KB PNG of 30000x30000): the size is checked from the header first.
MAX_IMAGE_PIXELS = 89_478_485

# Pillow warns, on opening, about pictures between its limit and twice it; `decode_image` refuses those with an
# error of its own, which the warning would only repeat over several lines.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class ImageTooLargeError(ValueError):
    """A picture with more pixels than may be decoded (a decompression bomb, or just too big)."""


def decode_image(data: bytes | Path, formats: Sequence[str] | None = None) -> np.ndarray:
    """Encoded picture bytes, or a file of them (any format Pillow reads, or only `formats`), as RGB uint8
    (H, W, 3). A picture of more than MAX_IMAGE_PIXELS pixels is refused (ImageTooLargeError) from its header,
    before any pixel is decoded."""
    try:
        image = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data, formats=formats)
    except Image.DecompressionBombError as exc:  # Pillow refuses above twice its limit, before we see the size
        claimed = re.search(r"\d+ pixels", str(exc))
        raise ImageTooLargeError(
            f"{claimed.group() if claimed else 'too many pixels'}, more than the {MAX_IMAGE_PIXELS} allowed"
        ) from None
    with image:
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise ImageTooLargeError(f"{width}x{height} pixels, more than the {MAX_IMAGE_PIXELS} allowed")
        return np.asarray(image.convert("RGB"))


def encode_npz(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An .npz that np.load reads, with fixed zip timestamps so equal arrays give equal bytes (a rewrite of
    an object with the same content writes the same object)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, value in arrays.items():
            array = np.asarray(value)
            # Streamed into the archive in chunks (no whole-array copies: a sealed segment's vectors are GBs).
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w", force_zip64=array.nbytes > zipfile.ZIP64_LIMIT // 2) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)
    return buffer.getvalue()


def decode_npz(data: bytes) -> dict[str, np.ndarray]:
    """Every array of .npz bytes, loaded (never pickles)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        return {name: arrays[name] for name in arrays.files}
