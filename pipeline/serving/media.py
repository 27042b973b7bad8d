"""What `/v1/media/{key}` may read of the store, and byte ranges of what it reads.

A media key is a store key (`pipeline.storage.store.check_key`: no "..", no absolute key, no empty part) under
one of the prefixes of pictures and summary files a person looks at; every other key (checkpoints, clips, index
segments, alerts, query definitions) is refused as if it did not exist, so no request reads outside them.
"""

from __future__ import annotations

import mimetypes
import re

from pipeline.storage.store import StoreError, check_key

# keyframes (of clips and alerts), summary files and pictures, track thumbnails and results, query examples
MEDIA_PREFIXES = ("keyframes/", "summaries/", "tracks/", "queries/")
MEDIA_SUFFIXES = (".jpg", ".jpeg", ".png", ".svg", ".json", ".html", ".txt")

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeNotSatisfiable(ValueError):
    """A Range header no byte of the object satisfies (416)."""


def media_key(key: str) -> str | None:
    """`key` when a media request may read it, else None (a malformed key included)."""
    try:
        check_key(key)
    except StoreError:
        return None
    if not key.startswith(MEDIA_PREFIXES) or not key.lower().endswith(MEDIA_SUFFIXES):
        return None
    if key.startswith("queries/") and not key.endswith(".jpg"):  # an example image, not a definition
        return None
    return key


def content_type(key: str) -> str:
    return mimetypes.guess_type(key)[0] or "application/octet-stream"


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive (first, last) byte a `Range` header asks of an object of `size` bytes; None for the whole
    object (no header, or one that is not a single bytes range, which HTTP lets a server ignore)."""
    if header is None:
        return None
    found = _RANGE.match(header.strip())
    if found is None or found.group(1) == found.group(2) == "":
        return None
    first, last = found.group(1), found.group(2)
    if first == "":  # the last `last` bytes
        length = int(last)
        if length == 0 or size == 0:
            raise RangeNotSatisfiable(f"bytes=-{last} of an object of {size} bytes")
        return max(0, size - length), size - 1
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if start >= size or end < start:
        raise RangeNotSatisfiable(f"bytes={first}-{last} of an object of {size} bytes")
    return start, end
