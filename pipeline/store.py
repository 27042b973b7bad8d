"""Object storage: the interface, `LocalStore`, and the key layout every store shares.

Key layout (relative to the store root; an S3 store uses the same keys under its prefix):

    sources/{source_id}.json                 what was indexed: source, file size and mtime, settings, clip keys
    clips/{source_id}/{start_ms:012d}.npz     one ClipEmbedding: SigLIP2 and DINOv2 vectors plus metadata
    keyframes/{source_id}/{pts_ms:012d}.jpg   the representative frame of a clip window
    index/MANIFEST.json                      names the current index version (readers never see a half-written one)
    index/{version}/...                      FAISS files and row metadata of that version

`source_id` is a path-safe slug plus a hash of the source, so user input never becomes a raw key.
Every write is a whole object put atomically (write then rename), keyed deterministically: writing
the same thing twice changes nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.records import ClipEmbedding, ModelIds

_KEY = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


class StoreError(RuntimeError):
    """The store cannot be reached, or a key is missing or malformed."""


def check_key(key: str) -> str:
    if not _KEY.match(key) or any(part in (".", "..") for part in key.split("/")):
        raise StoreError(f"malformed store key: {key!r}")
    return key


class ObjectStore(ABC):
    """Whole-object puts and gets under string keys, as S3 offers them."""

    url: str

    @abstractmethod
    def put(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def get(self, key: str) -> bytes: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under `prefix`, sorted."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    def locate(self, key: str) -> str:
        """Where a person finds the object: a file path or a URL."""
        return f"{self.url}/{check_key(key)}"

    def delete_prefix(self, prefix: str) -> int:
        keys = list(self.list(prefix))
        for key in keys:
            self.delete(key)
        return len(keys)

    def put_json(self, key: str, value) -> None:
        self.put(key, json.dumps(value, indent=1, sort_keys=True).encode())

    def get_json(self, key: str):
        return json.loads(self.get(key))


class LocalStore(ObjectStore):
    """A folder on local disk; the embedded default."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.url = str(self.root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create store folder {self.root}: {exc}") from exc

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
            return  # unchanged: leave the file (and its mtime) alone
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"no object {key!r} in store {self.url}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[str]:
        base = self.root / prefix if prefix else self.root
        folder = base if base.is_dir() else base.parent
        if not folder.is_dir():
            return iter(())
        keys = (
            path.relative_to(self.root).as_posix()
            for path in folder.rglob("*")
            if path.is_file() and not path.name.startswith(".tmp-")
        )
        return iter(sorted(key for key in keys if key.startswith(prefix)))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


def open_store(url: str) -> ObjectStore:
    """Open the store named by `url`: a folder path (or file:// URL)."""
    if "://" in url and not url.startswith("file://"):
        scheme = url.split("://", 1)[0]
        raise StoreError(f"unsupported store URL {url!r}: scheme {scheme}:// is not available; use a folder path")
    return LocalStore(url.removeprefix("file://"))


def source_id(source: str) -> str:
    """A stable, path-safe id: a slug of the name plus a hash of the full source (path or camera id)."""
    name = Path(source).stem if "://" not in source else source.rsplit("/", 1)[-1]
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()[:40] or "source"
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    return f"{slug}-{digest}"


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


def source_key(sid: str) -> str:
    return f"sources/{sid}.json"


def clip_key(sid: str, start: float) -> str:
    return f"clips/{sid}/{_ms(start):012d}.npz"


def keyframe_key(sid: str, pts: float) -> str:
    return f"keyframes/{sid}/{_ms(pts):012d}.jpg"


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz that np.load reads, with fixed zip timestamps so equal arrays give equal bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), member.getvalue())
    return buffer.getvalue()


def write_clip(store: ObjectStore, clip: ClipEmbedding) -> str:
    meta = {
        "source": clip.source,
        "source_id": clip.source_id,
        "start": clip.start,
        "end": clip.end,
        "keyframe_pts": clip.keyframe_pts,
        "keyframe_key": clip.keyframe_key,
        "frame_count": clip.frame_count,
        "models": {"siglip": clip.models.siglip, "dinov2": clip.models.dinov2, "untrained": clip.models.untrained},
    }
    key = clip_key(clip.source_id, clip.start)
    store.put(
        key,
        _npz_bytes(
            {
                "siglip": clip.siglip.astype(np.float32),
                "dinov2": clip.dinov2.astype(np.float32),
                "meta": np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8),
            }
        ),
    )
    return key


def read_clip(store: ObjectStore, key: str) -> ClipEmbedding:
    with np.load(io.BytesIO(store.get(key)), allow_pickle=False) as data:
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
        )


def write_keyframe(store: ObjectStore, key: str, image: np.ndarray, quality: int = 88) -> None:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    store.put(key, buffer.getvalue())
