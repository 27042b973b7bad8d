"""Index segments: immutable sets of clip rows with their SigLIP2 and DINOv2 vectors.

A segment is written once under `index/segments/{id}/` and never changed: its rows as Parquet (`rows.parquet`:
source, source_id, start, end, keyframe_key, recorded), its vectors (`vectors.npz`), and once sealed its FAISS indexes
(`siglip.faiss`, `dinov2.faiss`). New clips go to small growing segments, searched exactly with a matrix
product; sealing merges them into one segment with an ANN index (exact below `index.exact_max` rows, HNSW
above). Which rows of a segment are alive (not removed, not replaced by a newer row of the same window) is the
index's business, given to `search` as a mask.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.records import ClipEmbedding
from pipeline.storage.codecs import decode_npz, encode_npz
from pipeline.storage.layout import index_segment_prefix
from pipeline.storage.store import ObjectStore

COLUMNS = ("source", "source_id", "start", "end", "keyframe_key", "recorded")
TOWERS = ("siglip", "dinov2")
ROW_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("source_id", pa.string()),
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("keyframe_key", pa.string()),
        ("recorded", pa.float64()),
    ]
)


@dataclass(frozen=True)
class IndexRow:
    source: str
    source_id: str
    start: float
    end: float
    keyframe_key: str
    recorded: float | None = None  # wall-clock time of `start` (Unix seconds); None when unknown


def choose_kind(count: int, kind: str = "auto", exact_max: int = 50000) -> str:
    if kind != "auto":
        return kind
    return "flat" if count <= exact_max else "hnsw"


def _build(vectors: np.ndarray, kind: str, hnsw_m: int) -> faiss.Index:
    dim = vectors.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = 128
    else:
        raise ValueError(f"unknown index kind {kind!r} (flat or hnsw)")
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


@dataclass
class Segment:
    """Rows and vectors; `kind` is "growing" (exact matrix search) or the sealed FAISS kind."""

    id: str
    rows: list[IndexRow]
    vectors: dict[str, np.ndarray]  # tower -> (rows, dim) unit float32
    kind: str = "growing"
    faiss_indexes: dict[str, faiss.Index] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def sealed(self) -> bool:
        return self.kind != "growing"

    @cached_property
    def columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Each row's source id, start, end and recorded time (NaN: unknown), for filters."""
        rows = self.rows
        return (
            np.array([row.source_id for row in rows], dtype=object),
            np.array([row.start for row in rows], dtype=np.float64),
            np.array([row.end for row in rows], dtype=np.float64),
            np.array([np.nan if row.recorded is None else row.recorded for row in rows], dtype=np.float64),
        )

    @property
    def prefix(self) -> str:
        return index_segment_prefix(self.id)

    @staticmethod
    def new_id() -> str:
        return uuid.uuid4().hex

    @classmethod
    def from_clips(cls, clips: Sequence[ClipEmbedding]) -> Segment:
        rows = [IndexRow(c.source, c.source_id, c.start, c.end, c.keyframe_key, c.recorded_at) for c in clips]
        vectors = {tower: np.stack([getattr(c, tower) for c in clips]).astype(np.float32) for tower in TOWERS}
        return cls(cls.new_id(), rows, vectors)

    @classmethod
    def sealed_from(cls, rows: list[IndexRow], vectors: dict[str, np.ndarray], kind: str, hnsw_m: int) -> Segment:
        indexes = {tower: _build(vectors[tower], kind, hnsw_m) for tower in TOWERS}
        return cls(cls.new_id(), rows, vectors, kind, indexes)

    def write(self, store: ObjectStore) -> None:
        """Every file of the segment; the manifest that names it is written after (readers never see part)."""
        prefix = self.prefix
        table = pa.table(
            {name: [getattr(row, name) for row in self.rows] for name in COLUMNS},
            schema=ROW_SCHEMA,
        )
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        store.put(f"{prefix}rows.parquet", buffer.getvalue())
        store.put(f"{prefix}vectors.npz", encode_npz(self.vectors))
        for tower, index in self.faiss_indexes.items():
            store.put(f"{prefix}{tower}.faiss", faiss.serialize_index(index).tobytes())

    @classmethod
    def read(cls, store: ObjectStore, segment_id: str, kind: str) -> Segment:
        prefix = index_segment_prefix(segment_id)
        table = pq.read_table(pa.BufferReader(store.get(f"{prefix}rows.parquet"))).to_pydict()
        count = len(table["source_id"])
        # Segments written before recorded times existed lack the column: unknown.
        columns = [table.get(name, [None] * count) for name in COLUMNS]
        rows = [IndexRow(*values) for values in zip(*columns, strict=True)]
        vectors = decode_npz(store.get(f"{prefix}vectors.npz"))
        indexes = {}
        if kind != "growing":
            for tower in TOWERS:
                data = np.frombuffer(store.get(f"{prefix}{tower}.faiss"), np.uint8)
                indexes[tower] = faiss.deserialize_index(data)
        return cls(segment_id, rows, {tower: vectors[tower] for tower in TOWERS}, kind, indexes)

    def nearest(self, tower: str, query: np.ndarray, k: int, alive: np.ndarray) -> list[int]:
        """Up to `k` alive rows nearest `query` by the tower's vectors."""
        count = int(alive.sum())
        if not count:
            return []
        k = min(k, count)
        if not self.sealed:
            scores = self.vectors[tower] @ query
            scores = np.where(alive, scores, -np.inf)
            best = np.argpartition(-scores, k - 1)[:k]
            return [int(i) for i in best]
        params = None
        dead = np.flatnonzero(~alive).astype(np.int64)
        if len(dead):
            excluded = faiss.IDSelectorBatch(len(dead), faiss.swig_ptr(dead))
            selector = faiss.IDSelectorNot(excluded)
            params = (
                faiss.SearchParametersHNSW(sel=selector)
                if self.kind == "hnsw"
                else faiss.SearchParameters(sel=selector)
            )
        _, ids = self.faiss_indexes[tower].search(np.ascontiguousarray(query[None], np.float32), k, params=params)
        return [int(i) for i in ids[0] if i >= 0]
