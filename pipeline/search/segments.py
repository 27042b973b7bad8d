"""Index segments: immutable sets of clip rows with their SigLIP2 and DINOv2 vectors.

A segment is written once under `index/segments/{id}/` and never changed: its rows as Parquet (`rows.parquet`:
source, source_id, start, end, keyframe_key, recorded), its vectors (`vectors.npz`), and once sealed its FAISS
indexes (`siglip.faiss`, `dinov2.faiss`). New clips go to small growing segments, searched exactly with a
matrix product; sealing merges them into one segment with an ANN index (`choose_kind`). A sealed segment in
memory is its FAISS indexes alone: the vectors are read back from them (flat, HNSW and IVF hold them as they
are; IVF-SQ8 approximately, through its direct map), and a merge reads the exact ones from the store.

A search is mostly a read of vectors from memory, so the kinds are chosen for the bytes a query reads: flat
segments (and growing ones) are one BLAS matrix-vector product (faster than FAISS's one-query flat scan);
"ivf" scans 8-bit codes, a quarter of the bytes, and re-ranks the best `REFINE_FACTOR * k` by their exact
vectors (FAISS's IndexRefineFlat), so its answer has the exact scores of the rows it finds.
Which rows of a segment are alive (not removed, not replaced by a newer row of the same window) is the
index's business, given to `nearest` as a mask.
"""

from __future__ import annotations

import io
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.config import IndexConfig
from pipeline.records import ClipEmbedding
from pipeline.search.filters import FilterColumns
from pipeline.storage.codecs import decode_npz, encode_npz
from pipeline.storage.layout import index_segment_prefix
from pipeline.storage.store import ObjectStore

COLUMNS = ("source", "source_id", "start", "end", "keyframe_key", "recorded")
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
TOWERS = ("siglip", "dinov2")
KINDS = ("flat", "hnsw", "ivf", "ivf_sq8")
# A filter leaving at most this many rows of a sealed segment is answered exactly from those rows: an ANN
# graph or inverted lists filtered that hard would miss most of them.
EXACT_FILTERED_MAX = 8192
# Search effort never grows beyond these, however selective the filter (beyond that it is exact anyway).
HNSW_EF_MAX = 1024
# "ivf" re-ranks this many candidates per wanted row from its 8-bit scan by the exact vectors.
REFINE_FACTOR = 4
_ID_TIME = "%Y%m%dT%H%M%SZ"


@dataclass(frozen=True)
class IndexRow:
    source: str
    source_id: str
    start: float
    end: float
    keyframe_key: str
    recorded: float | None = None  # wall-clock time of `start` (Unix seconds); None when unknown


def choose_kind(count: int, settings: IndexConfig) -> str:
    """The FAISS kind for a sealed segment of `count` rows: exact up to `exact_max`, HNSW up to `hnsw_max`
    (fast to search, slow to build), IVF above (fast to build; `ivf_nprobe` of its lists searched)."""
    if settings.kind != "auto":
        return settings.kind
    if count <= settings.exact_max:
        return "flat"
    return "hnsw" if count <= settings.hnsw_max else "ivf"


def ivf_lists(count: int) -> int:
    """Inverted lists for `count` rows: about 2 sqrt(count), so a list holds about sqrt(count) / 2 rows."""
    return max(1, min(65536, int(2 * math.sqrt(count))))


def _build(vectors: np.ndarray, kind: str, settings: IndexConfig) -> faiss.Index:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    count, dim = vectors.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = 128
    elif kind in ("ivf", "ivf_sq8"):
        lists = ivf_lists(count)
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, dim, lists, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        index.cp.niter = 10
        index.cp.min_points_per_centroid = 1  # small segments train on what they have, without faiss's warning
        # k-means on a sample: 32 points a list is plenty for the centroids and keeps training cheap.
        sample = min(count, 32 * lists)
        chosen = np.random.default_rng(0).choice(count, sample, replace=False) if sample < count else slice(None)
        index.train(vectors[chosen])
        index.own_fields = True
        quantizer.this.disown()
        if kind == "ivf":
            scan = index
            index = faiss.IndexRefineFlat(scan)
            index.k_factor = REFINE_FACTOR
            index.own_fields = True
            scan.this.disown()
    else:
        raise ValueError(f"unknown index kind {kind!r} (one of {', '.join(KINDS)})")
    index.add(vectors)
    _prepare(index)
    return index


def _prepare(index: faiss.Index) -> None:
    """What a loaded or built index needs before use: IVF kinds keep a direct map to read vectors back."""
    if isinstance(index, faiss.IndexIVF):
        index.make_direct_map()


def _stored_vectors(index: faiss.Index) -> np.ndarray | None:
    """The exact vectors a flat, HNSW or IVF index holds, as a view (no copy); None for IVF-SQ8."""
    if isinstance(index, faiss.IndexHNSW):
        flat = faiss.downcast_index(index.storage)
    elif isinstance(index, faiss.IndexRefine):
        flat = faiss.downcast_index(index.refine_index)
    else:
        flat = index
    if not isinstance(flat, faiss.IndexFlat):
        return None
    return faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d).reshape(flat.ntotal, flat.d)


def _search_parameters(index: faiss.Index, k: int, selected: int, selector, settings: IndexConfig):
    """Search parameters with the row selector; the search widens as the selector gets stricter, so a filtered
    search still finds `k` rows."""
    widen = max(1.0, index.ntotal / max(selected, 1))
    if isinstance(index, faiss.IndexRefine):
        base = _search_parameters(faiss.downcast_index(index.base_index), k, selected, selector, settings)
        return faiss.IndexRefineSearchParameters(k_factor=REFINE_FACTOR, base_index_params=base)
    if isinstance(index, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(sel=selector, efSearch=int(min(HNSW_EF_MAX, max(128, k) * widen)))
    if isinstance(index, faiss.IndexIVF):
        probes = int(min(index.nlist, settings.ivf_nprobe * widen))
        return faiss.SearchParametersIVF(sel=selector, nprobe=probes)
    return faiss.SearchParameters(sel=selector) if selector is not None else None


def gpu_available() -> bool:
    """Whether faiss was built with CUDA (faiss-gpu) and sees a GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


_gpu_resources = []  # one set of GPU resources (streams, scratch memory) for the process, made on first use


def _to_gpu(index: faiss.Index, settings: IndexConfig) -> faiss.Index:
    """A search copy on the GPU; "ivf" moves its inverted lists and keeps re-ranking on the CPU's exact vectors."""
    if isinstance(index, faiss.IndexRefine):
        refined = faiss.IndexRefine(_to_gpu(faiss.downcast_index(index.base_index), settings), index.refine_index)
        refined.k_factor = REFINE_FACTOR
        return refined
    if not _gpu_resources:
        _gpu_resources.append(faiss.StandardGpuResources())
    gpu_index = faiss.index_cpu_to_gpu(_gpu_resources[0], 0, index)
    if isinstance(index, faiss.IndexIVF):
        faiss.GpuParameterSpace().set_index_parameter(gpu_index, "nprobe", settings.ivf_nprobe)
    return gpu_index


def segment_created_at(segment_id: str) -> float | None:
    """When a segment was made (Unix seconds, from its id); None for ids of earlier releases."""
    stamp = segment_id.split("-", 1)[0]
    try:
        return time.mktime(time.strptime(stamp, _ID_TIME)) - time.timezone
    except ValueError:
        return None


@dataclass
class Segment:
    """Rows with their vectors: `kind` "growing" (vectors in memory, exact search), or a sealed FAISS kind
    (`faiss_indexes` hold the vectors). Rows only (`has_data` False) for a shard that searches other segments."""

    id: str
    rows: list[IndexRow]
    vectors: dict[str, np.ndarray] = field(default_factory=dict)  # growing: tower -> (rows, dim) unit float32
    kind: str = "growing"
    faiss_indexes: dict[str, faiss.Index] = field(default_factory=dict)
    has_data: bool = True
    gpu_indexes: dict[str, faiss.Index] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def sealed(self) -> bool:
        return self.kind != "growing"

    def uses_faiss(self, alive: int) -> bool:
        """Whether a search over `alive` of the rows goes through FAISS (else it is an exact matrix product: flat
        and growing segments, and filters that leave few rows)."""
        if alive == len(self) and self.gpu_indexes:
            return True
        return self.kind not in ("growing", "flat") and alive > min(EXACT_FILTERED_MAX, len(self) - 1)

    @cached_property
    def columns(self) -> FilterColumns:
        rows = self.rows
        return FilterColumns(
            np.array([row.source_id for row in rows], dtype=object),
            np.array([row.start for row in rows], dtype=np.float64),
            np.array([row.end for row in rows], dtype=np.float64),
            np.array([np.nan if row.recorded is None else row.recorded for row in rows], dtype=np.float64),
        )

    @cached_property
    def source_set(self) -> frozenset[str]:
        return frozenset(row.source_id for row in self.rows)

    @property
    def prefix(self) -> str:
        return index_segment_prefix(self.id)

    @staticmethod
    def new_id() -> str:
        """Unique, and tells when it was made (orphaned segments are collected by age)."""
        return f"{time.strftime(_ID_TIME, time.gmtime())}-{uuid.uuid4().hex[:20]}"

    @classmethod
    def from_clips(cls, clips: Sequence[ClipEmbedding]) -> Segment:
        rows = [IndexRow(c.source, c.source_id, c.start, c.end, c.keyframe_key, c.recorded_at) for c in clips]
        vectors = {tower: np.stack([getattr(c, tower) for c in clips]).astype(np.float32) for tower in TOWERS}
        return cls(cls.new_id(), rows, vectors)

    @classmethod
    def sealed_from(
        cls, rows: list[IndexRow], vectors: dict[str, np.ndarray], settings: IndexConfig
    ) -> tuple[Segment, dict[str, np.ndarray]]:
        """A sealed segment of the rows, and the vectors to write beside it (its FAISS indexes hold them)."""
        kind = choose_kind(len(rows), settings)
        indexes = {tower: _build(vectors[tower], kind, settings) for tower in TOWERS}
        return cls(cls.new_id(), rows, {}, kind, indexes), vectors

    def dimension(self, tower: str) -> int:
        return self.faiss_indexes[tower].d if self.sealed else self.vectors[tower].shape[1]

    def write(self, store: ObjectStore, vectors: dict[str, np.ndarray] | None = None) -> None:
        """Every file of the segment; the manifest that names it is written after (readers never see part).
        A sealed segment is given its exact vectors, kept for merges."""
        prefix = self.prefix
        table = pa.table({name: [getattr(row, name) for row in self.rows] for name in COLUMNS}, schema=ROW_SCHEMA)
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        store.put(f"{prefix}rows.parquet", buffer.getvalue())
        store.put(f"{prefix}vectors.npz", encode_npz(vectors if vectors is not None else self.vectors))
        for tower, index in self.faiss_indexes.items():
            store.put(f"{prefix}{tower}.faiss", faiss.serialize_index(index).tobytes())

    @classmethod
    def read(cls, store: ObjectStore, segment_id: str, kind: str, *, data: bool = True) -> Segment:
        """A stored segment; its rows alone when not `data`."""
        prefix = index_segment_prefix(segment_id)
        table = pq.read_table(pa.BufferReader(store.get(f"{prefix}rows.parquet"))).to_pydict()
        count = len(table["source_id"])
        # Segments written before recorded times existed lack the column: unknown.
        columns = [table.get(name, [None] * count) for name in COLUMNS]
        rows = [IndexRow(*values) for values in zip(*columns, strict=True)]
        segment = cls(segment_id, rows, kind=kind, has_data=data)
        if not data:
            return segment
        if kind == "growing":
            vectors = decode_npz(store.get(f"{prefix}vectors.npz"))
            segment.vectors = {tower: vectors[tower] for tower in TOWERS}
        else:
            for tower in TOWERS:
                index = faiss.deserialize_index(np.frombuffer(store.get(f"{prefix}{tower}.faiss"), np.uint8))
                _prepare(index)
                segment.faiss_indexes[tower] = index
        return segment

    def exact_vectors(self, store: ObjectStore) -> dict[str, np.ndarray]:
        """Every row's exact vectors (a merge's input): from memory, or the store for a sealed segment."""
        if not self.sealed:
            return self.vectors
        stored = decode_npz(store.get(f"{self.prefix}vectors.npz"))
        return {tower: stored[tower] for tower in TOWERS}

    def _matrix(self, tower: str) -> np.ndarray | None:
        """Every row's exact vectors of the tower, as they are held (no copy); None for IVF-SQ8."""
        return self.vectors[tower] if not self.sealed else _stored_vectors(self.faiss_indexes[tower])

    def vectors_of(self, tower: str, row_numbers: np.ndarray) -> np.ndarray:
        """The tower's vectors of the given rows (approximate for `ivf_sq8`)."""
        matrix = self._matrix(tower)
        if matrix is not None:
            return matrix[row_numbers]
        return self.faiss_indexes[tower].reconstruct_batch(np.asarray(row_numbers, dtype=np.int64))

    def nearest(self, tower: str, query: np.ndarray, k: int, alive: np.ndarray, settings: IndexConfig) -> list[int]:
        """Up to `k` alive rows nearest `query` by the tower's vectors."""
        count = int(alive.sum())
        if not count:
            return []
        k = min(k, count)
        if not self.uses_faiss(count):
            return self._nearest_exactly(tower, query, k, alive, count)
        if count == len(self) and self.gpu_indexes:
            query = np.ascontiguousarray(query[None], np.float32)
            return [int(i) for i in self.gpu_indexes[tower].search(query, k)[1][0] if i >= 0]
        index = self.faiss_indexes[tower]
        selector, bitmap = None, None
        if count < len(self):
            bitmap = np.packbits(alive, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(alive), faiss.swig_ptr(bitmap))
        params = _search_parameters(index, k, count, selector, settings)
        _, ids = index.search(np.ascontiguousarray(query[None], np.float32), k, params=params)
        del bitmap  # the selector read it during the search
        return [int(i) for i in ids[0] if i >= 0]

    def _nearest_exactly(self, tower: str, query: np.ndarray, k: int, alive: np.ndarray, count: int) -> list[int]:
        matrix = self._matrix(tower)
        if matrix is not None and count * 2 >= len(self):
            # Most rows pass: one product over the whole matrix reads less than gathering the passing rows.
            scores = matrix @ query
            if count < len(self):
                scores[~alive] = -np.inf
            return [int(i) for i in np.argpartition(-scores, k - 1)[:k]]
        rows = np.flatnonzero(alive)
        scores = self.vectors_of(tower, rows) @ query
        return [int(rows[i]) for i in np.argpartition(-scores, k - 1)[:k]]

    def to_gpu(self, settings: IndexConfig) -> None:
        """Search copies on the GPU for the kinds faiss-gpu has (flat and IVF; HNSW stays on the CPU). Searches
        that need a row selector stay on the CPU: faiss-gpu has none."""
        if self.sealed and self.kind != "hnsw" and not self.gpu_indexes:
            self.gpu_indexes = {tower: _to_gpu(index, settings) for tower, index in self.faiss_indexes.items()}
