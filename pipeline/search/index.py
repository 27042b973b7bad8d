"""FAISS search index over clip embeddings, persisted in the object store, and merging of hits into events.

Two inner-product indexes over unit vectors (so scores are cosines): SigLIP2 (text and image queries) and
DINOv2 (image queries). Exact search up to `exact_max` clips, HNSW above; the choice is recorded in the
manifest. A save writes a new version folder, then swaps `index/MANIFEST.json`, then drops old versions,
so a reader always finds a complete index. The version is a hash of the content: saving the same content
twice changes nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import faiss
import numpy as np

from pipeline.config import IndexConfig
from pipeline.records import ClipEmbedding, Event, ModelIds, SearchHit
from pipeline.storage.layout import INDEX, MANIFEST_KEY, index_version_prefix
from pipeline.storage.store import ObjectStore, StoreError


class IndexMismatchError(RuntimeError):
    """The index was built with other models than the ones used to query or extend it."""


@dataclass(frozen=True)
class IndexRow:
    source: str
    source_id: str
    start: float
    end: float
    keyframe_key: str


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
    if len(vectors):
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def _vectors(index: faiss.Index | None) -> np.ndarray | None:
    return None if index is None else index.reconstruct_n(0, index.ntotal)


def _stack(old: np.ndarray | None, keep: list[int], new: list[np.ndarray]) -> np.ndarray | None:
    parts = ([old[keep]] if old is not None and keep else []) + [vector[None] for vector in new]
    return np.concatenate(parts).astype(np.float32) if parts else None


class ClipIndex:
    """Clip rows with their SigLIP2 and DINOv2 vectors, searchable by either."""

    def __init__(self, models: ModelIds | None = None, *, settings: IndexConfig | None = None):
        self.models = models
        self.settings = settings or IndexConfig()
        self.rows: list[IndexRow] = []
        self.kind = "flat"
        self._siglip: faiss.Index | None = None
        self._dinov2: faiss.Index | None = None

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def sources(self) -> set[str]:
        return {row.source_id for row in self.rows}

    def check_models(self, models: ModelIds) -> None:
        if self.models is not None and self.rows and self.models != models:
            raise IndexMismatchError(
                f"the index was built with models {self.models.siglip} + {self.models.dinov2}; "
                f"these are {models.siglip} + {models.dinov2}. Use the same --models, or index into another --store."
            )

    def _rebuild(self, rows: list[IndexRow], siglip: np.ndarray | None, dinov2: np.ndarray | None) -> None:
        s = self.settings
        self.kind = choose_kind(len(rows), s.kind, s.exact_max)
        self.rows = rows
        self._siglip = None if siglip is None else _build(siglip, self.kind, s.hnsw_m)
        self._dinov2 = None if dinov2 is None else _build(dinov2, self.kind, s.hnsw_m)

    def replace_source(self, source_id: str, clips: Sequence[ClipEmbedding]) -> None:
        """Drop every row of `source_id`, then add `clips`: re-indexing a source."""
        if any(clip.source_id != source_id for clip in clips):
            raise ValueError(f"clips of other sources given for {source_id}")
        self._adopt_models(clips)
        keep = [i for i, row in enumerate(self.rows) if row.source_id != source_id]
        self._reorder(keep, clips)

    def _adopt_models(self, clips: Sequence[ClipEmbedding]) -> None:
        for clip in clips:
            self.check_models(clip.models)
            self.models = clip.models

    def _reorder(self, keep: list[int], clips: Sequence[ClipEmbedding]) -> None:
        """Rebuild from the kept rows plus `clips`."""
        rows = [self.rows[i] for i in keep] + [
            IndexRow(c.source, c.source_id, c.start, c.end, c.keyframe_key) for c in clips
        ]
        siglip = _stack(_vectors(self._siglip), keep, [c.siglip for c in clips])
        dinov2 = _stack(_vectors(self._dinov2), keep, [c.dinov2 for c in clips])
        # Rows in (source, start) order whatever order sources arrive in: the same content is the same index.
        order = sorted(range(len(rows)), key=lambda i: (rows[i].source_id, rows[i].start))
        self._rebuild(
            [rows[i] for i in order],
            None if siglip is None else siglip[order],
            None if dinov2 is None else dinov2[order],
        )

    def upsert(self, clips: Sequence[ClipEmbedding]) -> None:
        """Add clips, replacing rows with the same source and start: live streams grow window by window."""
        self._adopt_models(clips)
        fresh = {(c.source_id, c.start) for c in clips}
        keep = [i for i, row in enumerate(self.rows) if (row.source_id, row.start) not in fresh]
        self._reorder(keep, clips)

    def remove_source(self, source_id: str) -> int:
        before = len(self.rows)
        self.replace_source(source_id, [])
        return before - len(self.rows)

    def search(
        self, *, siglip: np.ndarray | None = None, dinov2: np.ndarray | None = None, k: int = 10
    ) -> list[SearchHit]:
        """Rows nearest the query vectors; with both, the score is the mean of the two cosines."""
        if not self.rows or (siglip is None and dinov2 is None):
            return []
        k = min(k, len(self.rows))
        queries = [(q, idx) for q, idx in ((siglip, self._siglip), (dinov2, self._dinov2)) if q is not None]
        candidates: set[int] = set()
        for query, index in queries:
            _, ids = index.search(np.ascontiguousarray(query[None], dtype=np.float32), k)
            candidates.update(int(i) for i in ids[0] if i >= 0)
        scored = []
        for i in candidates:
            score = float(np.mean([float(index.reconstruct(i) @ query) for query, index in queries]))
            row = self.rows[i]
            scored.append(SearchHit(row.source, row.source_id, row.start, row.end, score, row.keyframe_key))
        scored.sort(key=lambda hit: (-hit.score, hit.source_id, hit.start))
        return scored[:k]

    def save(self, store: ObjectStore) -> str:
        rows = json.dumps([asdict(row) for row in self.rows], sort_keys=True).encode()
        digest = hashlib.sha256(rows + self.kind.encode())
        for vectors in (_vectors(self._siglip), _vectors(self._dinov2)):
            if vectors is not None:
                digest.update(vectors.tobytes())
        version = digest.hexdigest()[:16]
        prefix = index_version_prefix(version)
        if self._siglip is not None:
            store.put(f"{prefix}/siglip.faiss", faiss.serialize_index(self._siglip).tobytes())
            store.put(f"{prefix}/dinov2.faiss", faiss.serialize_index(self._dinov2).tobytes())
        store.put(f"{prefix}/rows.json", rows)
        store.put_json(
            MANIFEST_KEY,
            {
                "version": version,
                "kind": self.kind,
                "count": len(self.rows),
                "sources": len(self.sources),
                "models": asdict(self.models) if self.models else None,
            },
        )
        for key in store.list(INDEX):
            if key != MANIFEST_KEY and not key.startswith(prefix + "/"):
                store.delete(key)
        return version

    @classmethod
    def load(cls, store: ObjectStore, settings: IndexConfig | None = None) -> ClipIndex:
        """The current index in `store`, or an empty one when none was saved yet."""
        index = cls(settings=settings)
        if not store.exists(MANIFEST_KEY):
            return index
        manifest = store.get_json(MANIFEST_KEY)
        prefix = index_version_prefix(manifest["version"])
        try:
            index.rows = [IndexRow(**row) for row in json.loads(store.get(f"{prefix}/rows.json"))]
            if index.rows:
                index._siglip = faiss.deserialize_index(np.frombuffer(store.get(f"{prefix}/siglip.faiss"), np.uint8))
                index._dinov2 = faiss.deserialize_index(np.frombuffer(store.get(f"{prefix}/dinov2.faiss"), np.uint8))
        except StoreError as exc:
            raise StoreError(f"index version {manifest['version']} named by the manifest is incomplete: {exc}") from exc
        index.kind = manifest["kind"]
        index.models = ModelIds(**manifest["models"]) if manifest.get("models") else None
        return index


def merge_hits(hits: Iterable[SearchHit], *, merge_drop: float = 0.15, untrained: bool = False) -> list[Event]:
    """Merge time-adjacent hits of one source into events, best first.

    Scores are rescaled to [0, 1] over the candidates; starting from the best unassigned hit, a neighbour
    window (touching in time) joins while its rescaled score is within `merge_drop` of the event's peak.
    """
    hits = list(hits)
    if not hits:
        return []
    low, high = min(h.score for h in hits), max(h.score for h in hits)
    span = high - low or 1.0
    level = {h: (h.score - low) / span for h in hits}
    by_source: dict[str, list[SearchHit]] = {}
    for hit in sorted(hits, key=lambda h: h.start):
        by_source.setdefault(hit.source_id, []).append(hit)
    assigned: set[SearchHit] = set()
    events = []
    for seed in sorted(hits, key=lambda h: (-h.score, h.source_id, h.start)):
        if seed in assigned:
            continue
        timeline = by_source[seed.source_id]
        lo = hi = timeline.index(seed)
        floor = level[seed] - merge_drop

        def joins(i: int, neighbour_of: int) -> bool:
            if not 0 <= i < len(timeline) or timeline[i] in assigned or level[timeline[i]] < floor:
                return False
            a, b = sorted((timeline[i], timeline[neighbour_of]), key=lambda h: h.start)
            return b.start <= a.end + 1e-6

        while joins(lo - 1, lo):
            lo -= 1
        while joins(hi + 1, hi):
            hi += 1
        members = tuple(timeline[lo : hi + 1])
        assigned.update(members)
        events.append(
            Event(
                source=seed.source,
                source_id=seed.source_id,
                start=members[0].start,
                end=members[-1].end,
                score=seed.score,
                peak_time=(seed.start + seed.end) / 2,
                keyframe_key=seed.keyframe_key,
                untrained=untrained,
                hits=members,
            )
        )
    return events


def find_moments(
    index: ClipIndex,
    encoders,
    *,
    text: str | None = None,
    image: np.ndarray | None = None,
    top_k: int = 10,
    merge_drop: float = 0.15,
) -> list[Event]:
    """Moments matching a phrase (SigLIP2 text tower) or an example image (SigLIP2 and DINOv2), best first."""
    if (text is None) == (image is None):
        raise ValueError("search needs exactly one of a text query or an example image")
    index.check_models(encoders.ids)
    candidates = max(top_k * 8, 64)
    if text is not None:
        if not text.strip():
            raise ValueError("the text query is empty")
        hits = index.search(siglip=encoders.siglip.embed_texts([text])[0], k=candidates)
    else:
        siglip, dinov2 = encoders.embed_images(image[None])
        hits = index.search(siglip=siglip[0], dinov2=dinov2[0], k=candidates)
    return merge_hits(hits, merge_drop=merge_drop, untrained=encoders.ids.untrained)[:top_k]
