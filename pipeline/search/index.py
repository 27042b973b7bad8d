"""The clip index: a segmented FAISS index in the object store (its hits merged into events: pipeline.search.moments).

Two inner-product searches over unit vectors (so scores are cosines): SigLIP2 (text and image queries) and
DINOv2 (image queries). Rows live in immutable segments (`pipeline.search.segments`); a manifest generation
(`pipeline.search.manifest`) names the live ones. A save writes only what is new: the new rows as a small
growing segment and the next manifest generation. Once the growing segments hold `index.seal_rows` rows (or
there are more than `MAX_GROWING` of them) they are sealed into one segment with a FAISS index
(`pipeline.search.segments.choose_kind`); when more than `MAX_SEALED` sealed segments exist the smallest are
compacted into one, dropping removed and replaced rows. Sealing and compaction are built in a background
thread of the writer, on a snapshot of the index (`index.background`); the writer commits them with its next
save. A removed source is hidden at once: the manifest records the generation it was removed at, until no
segment older than that holds its rows. Two writers never lose each other's work: a
save that loses the race for the next generation puts its changes on the newest one and tries again.

A search over many segments can be spread over Ray actors (`actors.index_shards`): each loads the rows of
every segment (which rows are alive depends on all of them) and the vectors of its share of the segments.
"""

from __future__ import annotations

import atexit
import functools
import gc
import json
import logging
import os
import threading
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import faiss
import numpy as np
from threadpoolctl import ThreadpoolController

from pipeline.config import IndexConfig
from pipeline.records import ClipEmbedding, ModelIds, SearchHit
from pipeline.search.filters import ClipFilter
from pipeline.search.manifest import Manifest, SegmentEntry, collect, due_for_collection, read_newest, try_commit
from pipeline.search.segments import TOWERS, IndexRow, Segment, gpu_available
from pipeline.storage.layout import INDEX, MANIFEST_KEY, index_version_prefix
from pipeline.storage.store import ObjectStore, StoreError

log = logging.getLogger(__name__)

# Sealed segments beyond this many are compacted, the smallest first.
MAX_SEALED = 8
# Growing segments (one a save) beyond this many are sealed however few rows they hold: each costs a search
# a matrix product and an open two reads.
MAX_GROWING = 32
# A segment search over at least this many rows runs in a worker thread beside the others.
PARALLEL_SEARCH_ROWS = 4096


# Indexes of this process with background maintenance running: at exit each waits for it and commits its
# result, so a short-lived writer (a CLI run) finishes the sealing it started instead of leaving it for the
# next writer to redo (a killed one leaves it safely).
_maintaining: set[ClipIndex] = set()


@atexit.register
def _finish_maintenance() -> None:
    for index in list(_maintaining):
        index.wait_for_maintenance()


@functools.cache
def _search_pool() -> ThreadPoolExecutor:
    # One OpenMP thread in each worker: a one-query FAISS search gains nothing from more, and idle OpenMP
    # threads spinning beside the other workers and BLAS cost milliseconds on a machine with few cores.
    return ThreadPoolExecutor(
        max_workers=max(2, min(8, os.cpu_count() or 2)),
        thread_name_prefix="index-search",
        initializer=faiss.omp_set_num_threads,
        initargs=(1,),
    )


@functools.cache
def _thread_pools() -> ThreadpoolController:
    return ThreadpoolController()


def freeze_long_lived() -> None:
    """Put every object alive now beyond the cyclic garbage collector's reach (`gc.freeze`). An index holds a
    Python object per row, for as long as the process lives; a full collection walks them all (tens of
    milliseconds at a million rows) and stalls whatever search runs then. Reference counting still frees
    them."""
    gc.freeze()


def _collect_quietly(store: ObjectStore) -> None:
    try:
        collect(store)
    except Exception:  # noqa: BLE001 - what is not collected now is collected at a later save
        log.exception("collecting old index generations failed; it is tried again later")


class IndexMismatchError(RuntimeError):
    """The index was built with other models than the ones used to query or extend it."""


@dataclass(frozen=True)
class Shard:
    """Shard `number` of `count`: it searches the segments whose id hashes to it."""

    number: int
    count: int

    def owns(self, segment_id: str) -> bool:
        return zlib.crc32(segment_id.encode()) % self.count == self.number


@dataclass(frozen=True)
class Merge:
    """Segments merged into one sealed segment, written but not yet committed. `origins` gives, per input, the
    row numbers the merged rows came from (in merged order): the rows alive when it was built."""

    inputs: tuple[SegmentEntry, ...]
    merged: Segment | None  # None: none of their rows was alive
    origins: dict[str, np.ndarray]

    @property
    def input_ids(self) -> frozenset[str]:
        return frozenset(entry.id for entry in self.inputs)

    @property
    def entry(self) -> SegmentEntry | None:
        """The merged segment as the manifest names it: its rows keep their inputs' newest data generation, so
        a newer row still replaces them."""
        if self.merged is None:
            return None
        generation = max(entry.data_generation for entry in self.inputs)
        return SegmentEntry(self.merged.id, self.merged.kind, len(self.merged), generation)


def best_hits(hits: Iterable[SearchHit], k: int) -> list[SearchHit]:
    """The `k` best hits, ties broken by source and start: any split of the candidates merges to the same list."""
    return sorted(hits, key=lambda hit: (-hit.score, hit.source_id, hit.start))[:k]


class ClipIndex:
    """Clip rows with their SigLIP2 and DINOv2 vectors, searchable by either.

    The state is a committed manifest (the generation it was loaded from or last saved as) plus changes made
    since: new growing segments and removed sources, which `save` commits."""

    def __init__(
        self, models: ModelIds | None = None, *, settings: IndexConfig | None = None, shard: Shard | None = None
    ):
        self.models = models
        self.settings = settings or IndexConfig()
        self.shard = shard
        self.manifest = Manifest()
        self.segments: dict[str, Segment] = {}  # committed and new, by id
        self._new: list[Segment] = []  # not yet committed, oldest first
        self._removed: set[str] = set()  # sources removed since the last commit
        self._legacy: list[str] = []  # keys of a single-version index of earlier releases, dropped once saved
        self._alive: dict[str, np.ndarray] = {}
        self._owner: dict[tuple[str, float], tuple[str, int]] = {}  # (source_id, start) -> its live row
        self._by_source: dict[str, set[tuple[str, float]]] = {}
        self._merges: list[Merge] = []  # built (by a background snapshot: handed over), not yet committed
        self._maintenance: threading.Thread | None = None
        self._maintained: ClipIndex | None = None  # the snapshot the thread works on
        self._maintenance_store: ObjectStore | None = None
        self._collection: threading.Thread | None = None  # deleting old generations, in the background
        self._known: dict[str, Segment] = {}  # merged segments in memory, not yet named by this state
        self._use_gpu = self.settings.device != "cpu" and gpu_available()
        if self.settings.device == "cuda" and not self._use_gpu:
            log.warning("index.device is cuda but faiss sees no GPU (faiss-cpu installed?): searching on the CPU")

    # ------------------------------------------------------------------------------------------ visibility

    def _ordered(self) -> list[tuple[Segment, int]]:
        """Every segment with its data generation, oldest first; new ones count as the next generation."""
        committed = [(self.segments[e.id], e.data_generation) for e in self.manifest.segments]
        return committed + [(segment, self.manifest.generation + 1) for segment in self._new]

    def _reindex(self) -> None:
        """Which rows are alive, from scratch: not removed after their segment, not replaced by a newer row."""
        self._alive, self._owner, self._by_source = {}, {}, {}
        for segment, _ in self._ordered():
            self._alive[segment.id] = np.zeros(len(segment), bool)
        removed, committed = self.manifest.removed, self.manifest.generation
        for segment, generation in self._ordered():
            for row_number, row in enumerate(segment.rows):
                if removed.get(row.source_id, -1) > generation:
                    continue
                if generation <= committed and row.source_id in self._removed:
                    continue  # removed since the last commit
                self._adopt(segment, row_number, row)

    def _adopt(self, segment: Segment, row_number: int, row: IndexRow) -> None:
        """Make a row alive, retiring the row of the same window it replaces."""
        key = (row.source_id, row.start)
        if key in self._owner:
            old_segment, old_row = self._owner[key]
            self._alive[old_segment][old_row] = False
        self._owner[key] = (segment.id, row_number)
        self._alive[segment.id][row_number] = True
        self._by_source.setdefault(row.source_id, set()).add(key)

    def __len__(self) -> int:
        return len(self._owner)

    @property
    def sources(self) -> set[str]:
        return set(self._by_source)

    @property
    def rows(self) -> list[IndexRow]:
        """The live rows in (source, start) order."""
        return [self.segments[s].rows[r] for _, (s, r) in sorted(self._owner.items())]

    def check_models(self, models: ModelIds) -> None:
        if self.models is not None and len(self) and self.models != models:
            raise IndexMismatchError(
                f"the index was built with models {self.models.siglip} + {self.models.dinov2}; "
                f"these are {models.siglip} + {models.dinov2}. Use the same --models, or index into another --store."
            )

    # ------------------------------------------------------------------------------------------ changes

    def _accept(self, clips: Sequence[ClipEmbedding]) -> Segment:
        """The clips as a new segment, once their models and dimensions are the index's (checked before any
        change, so a refused call changes nothing)."""
        if self.shard is not None:
            raise RuntimeError("an index shard only searches; change the index through a whole one")
        for clip in clips:
            self.check_models(clip.models)
        segment = Segment.from_clips(clips)
        for tower in TOWERS:
            have = next((s.dimension(tower) for s in self.segments.values() if len(s) and s.has_data), None)
            if have is not None and segment.dimension(tower) != have:
                raise IndexMismatchError(
                    f"{tower} vectors of {segment.dimension(tower)} dimensions; the index holds {have}"
                )
        self.models = clips[0].models
        return segment

    def _add(self, segment: Segment) -> None:
        self._new.append(segment)
        self.segments[segment.id] = segment
        self._alive[segment.id] = np.zeros(len(segment), bool)
        for row_number, row in enumerate(segment.rows):
            self._adopt(segment, row_number, row)

    def upsert(self, clips: Sequence[ClipEmbedding]) -> None:
        """Add clips, replacing rows with the same source and start: live streams grow window by window."""
        if clips:
            self._add(self._accept(clips))

    def remove_source(self, source_id: str) -> int:
        """Hide every row of a source at once (dropped physically at the next compaction); the rows hidden."""
        keys = self._by_source.pop(source_id, set())
        for key in keys:
            segment_id, row_number = self._owner.pop(key)
            self._alive[segment_id][row_number] = False
        self._removed.add(source_id)
        # New rows of the source made before its removal go with it: only committed rows need the record.
        self._new = [self._without(segment, source_id) for segment in self._new]
        return len(keys)

    def _without(self, segment: Segment, source_id: str) -> Segment:
        keep = [i for i, row in enumerate(segment.rows) if row.source_id != source_id]
        if len(keep) == len(segment):
            return segment
        rows = [segment.rows[i] for i in keep]
        vectors = {tower: segment.vectors[tower][keep] for tower in TOWERS}
        trimmed = Segment(segment.id, rows, vectors)
        self.segments[segment.id] = trimmed
        alive = self._alive[segment.id][keep]
        self._alive[segment.id] = alive
        for new_number, row in enumerate(rows):
            if alive[new_number]:
                self._owner[(row.source_id, row.start)] = (segment.id, new_number)
        return trimmed

    def replace_source(self, source_id: str, clips: Sequence[ClipEmbedding]) -> None:
        """Drop every row of `source_id`, then add `clips`: re-indexing a source."""
        if any(clip.source_id != source_id for clip in clips):
            raise ValueError(f"clips of other sources given for {source_id}")
        segment = self._accept(clips) if clips else None
        self.remove_source(source_id)
        if segment is not None:
            self._add(segment)

    # ------------------------------------------------------------------------------------------ search

    def search(
        self,
        *,
        siglip: np.ndarray | None = None,
        dinov2: np.ndarray | None = None,
        k: int = 10,
        where: ClipFilter | None = None,
    ) -> list[SearchHit]:
        """Rows nearest the query vectors, of those `where` lets through (None: all); with both vectors, the
        score is the mean of the two cosines. A shard searches its own segments only."""
        queries = {tower: q for tower, q in (("siglip", siglip), ("dinov2", dinov2)) if q is not None}
        if not len(self) or not queries:
            return []
        k = min(k, len(self))
        segments = [segment for segment, _ in self._ordered() if segment.has_data]
        alive = {segment.id: self._alive[segment.id] for segment in segments}
        if where is not None:
            alive = {segment.id: alive[segment.id] & where.mask(segment.columns) for segment in segments}

        def segment_hits(segment: Segment) -> list[SearchHit]:
            candidates = set()
            for tower, query in queries.items():
                candidates.update(segment.nearest(tower, query, k, alive[segment.id], self.settings))
            if not candidates:
                return []
            row_numbers = np.array(sorted(candidates))
            scores = np.mean([segment.vectors_of(t, row_numbers) @ q for t, q in queries.items()], axis=0)
            rows = [segment.rows[number] for number in row_numbers]
            return [
                SearchHit(row.source, row.source_id, row.start, row.end, float(score), row.keyframe_key, row.recorded)
                for row, score in zip(rows, scores, strict=True)
            ]

        # Large searches side by side in threads (FAISS and BLAS release the GIL; one query's search runs on one
        # core), the small ones in this thread meanwhile: in a thread each would wait its turn for the GIL. The
        # products are memory-bound, so BLAS gets one thread: its idle threads would spin on the cores the
        # workers need.
        counts = {segment.id: int(alive[segment.id].sum()) for segment in segments}
        large = [s for s in segments if s.uses_faiss(counts[s.id]) or counts[s.id] >= PARALLEL_SEARCH_ROWS]
        small = [segment for segment in segments if segment not in large]
        with _thread_pools().limit(limits=1, user_api="blas"):
            if len(large) > 1:
                pending = [_search_pool().submit(segment_hits, segment) for segment in large]
                parts = [segment_hits(segment) for segment in small] + [future.result() for future in pending]
            else:
                parts = [segment_hits(segment) for segment in segments]
        return best_hits([hit for part in parts for hit in part], k)

    # ------------------------------------------------------------------------------------------ persistence

    def save(self, store: ObjectStore) -> int:
        """Commit the changes since the last commit (new rows, removed sources, merges built in the background)
        in one generation, then seal and compact when due (in the background with `index.background`);
        returns the committed generation. Nothing to commit writes nothing."""
        if self.shard is not None:
            raise RuntimeError("an index shard only searches; save the whole index")
        self._take_up_maintenance(wait=False)
        before = self.manifest.generation
        self._commit_changes(store)
        collection_due = self.manifest.generation != before and due_for_collection(self.manifest.generation)
        if not self.settings.background:
            if self._maintenance_due() or collection_due:
                self.maintain(store)
            return self.manifest.generation
        if self._maintenance_due():
            self._start_maintenance(store)
        if collection_due and not (self._collection and self._collection.is_alive()):
            # A thread of its own: deleting old generations' files must not hold up the next seal.
            self._collection = threading.Thread(target=_collect_quietly, args=(store,), name="index-collection")
            self._collection.start()
        return self.manifest.generation

    def maintain(self, store: ObjectStore) -> None:
        """Seal the growing segments and compact the sealed ones as far as due, and collect old generations,
        in this thread."""
        snapshot = self._snapshot()
        snapshot._build_merges(store)
        self._merges += snapshot._merges
        self._commit_changes(store)
        collect(store)

    def _snapshot(self) -> ClipIndex:
        """The committed state, to build merges on: segments shared, alive masks copied, no owners (merges
        read which rows are alive, never who owns a window)."""
        snapshot = ClipIndex(self.models, settings=self.settings.model_copy(update={"device": "cpu"}))
        snapshot.manifest = self.manifest
        snapshot.segments = {entry.id: self.segments[entry.id] for entry in self.manifest.segments}
        snapshot._alive = {segment_id: self._alive[segment_id].copy() for segment_id in snapshot.segments}
        return snapshot

    def wait_for_maintenance(self) -> None:
        """Let background sealing, compaction and collection finish and commit their result (before a writer
        exits)."""
        store = self._maintenance_store
        self._take_up_maintenance(wait=True)
        if store is not None:
            self._commit_changes(store)
        if self._collection is not None:
            self._collection.join()

    def _commit_changes(self, store: ObjectStore) -> None:
        """One commit of the new segments, the removed sources and the merges built: each merge whose inputs
        another writer merged meanwhile is dropped (its files deleted)."""
        new, removed, merges = [segment for segment in self._new if len(segment)], self._removed, self._merges
        if not (new or removed or merges or self._legacy):
            return
        for segment in new:
            segment.write(store)
        self._new, self._removed, self._merges = [], set(), []  # from here on part of the commit
        applied: list[Merge] = []

        def with_changes(base: Manifest) -> Manifest:
            """`base` with the merges that still apply, the new segments and removed sources."""
            generation = base.generation + 1
            entries = list(base.segments)
            applied.clear()
            for merge in merges:
                ids = merge.input_ids
                if ids <= {entry.id for entry in entries}:
                    entries = [entry for entry in entries if entry.id not in ids] + [merge.entry] * bool(merge.merged)
                    applied.append(merge)
            entries.sort(key=lambda entry: entry.data_generation)
            present = {entry.id for entry in entries}  # a commit counted as lost may still be read
            entries += [SegmentEntry(s.id, s.kind, len(s), generation) for s in new if s.id not in present]
            gone = self._tombstones_needed(dict(base.removed), entries) if applied else dict(base.removed)
            gone |= {source_id: generation for source_id in removed}
            return Manifest(generation, self.models or base.models, entries, gone)

        def adopt(manifest: Manifest) -> None:
            for merge in applied:
                self._adopt_merge(merge)
            self.manifest = manifest

        built = {merge.merged.id: merge.merged for merge in merges if merge.merged is not None}
        self._known.update(built)  # followed without reading them back
        self._commit(store, with_changes, adopt)
        named = {entry.id for entry in self.manifest.segments}
        for segment_id, segment in built.items():
            self._known.pop(segment_id, None)
            if segment_id not in named:  # its merge was dropped, or a later merge of the same commit took it
                store.delete_prefix(segment.prefix)
        for key in self._legacy:
            store.delete(key)
        self._legacy = []

    def _maintenance_due(self) -> bool:
        growing = [entry for entry in self.manifest.segments if entry.kind == "growing"]
        sealed = [entry for entry in self.manifest.segments if entry.kind != "growing"]
        return (
            sum(entry.rows for entry in growing) >= self.settings.seal_rows
            or len(growing) > MAX_GROWING
            or len(sealed) > MAX_SEALED
            or any(not self._alive[entry.id].any() for entry in sealed)
        )

    def _start_maintenance(self, store: ObjectStore) -> None:
        """Build the due merges on a snapshot of the committed state, and collect old generations, in a thread
        (unless one is still at it). This index commits the merges at its next save: one committer in the
        process, so the two never race for a generation."""
        if self._maintenance is not None:
            return
        snapshot = self._snapshot()

        def run() -> None:
            try:
                snapshot._build_merges(store)
            except Exception:  # noqa: BLE001 - a failed merge changes nothing; the next save tries again
                log.exception("index sealing/compaction failed; it is tried again at the next save")

        self._maintained, self._maintenance_store = snapshot, store
        self._maintenance = threading.Thread(target=run, name="index-maintenance", daemon=True)
        _maintaining.add(self)
        self._maintenance.start()

    def _take_up_maintenance(self, *, wait: bool) -> None:
        """The merges a finished background run built join the next commit."""
        thread = self._maintenance
        if thread is None or (thread.is_alive() and not wait):
            return
        thread.join()
        self._merges += self._maintained._merges
        self._maintenance, self._maintained, self._maintenance_store = None, None, None
        _maintaining.discard(self)

    def _build_merges(self, store: ObjectStore) -> None:
        """Seal, then compact, as far as due: each merge written and kept for the next commit, and applied to
        this state at once so that the next is decided on what the last one left."""
        growing = [entry for entry in self.manifest.segments if entry.kind == "growing"]
        if sum(entry.rows for entry in growing) >= self.settings.seal_rows or len(growing) > MAX_GROWING:
            self._build_merge(store, growing)
        sealed = [entry for entry in self.manifest.segments if entry.kind != "growing"]
        if len(sealed) > MAX_SEALED:
            smallest = sorted(sealed, key=lambda entry: int(self._alive[entry.id].sum()))
            self._build_merge(store, smallest[: len(sealed) - MAX_SEALED + 1])
        elif empty := [entry for entry in sealed if not self._alive[entry.id].any()]:
            self._build_merge(store, empty)

    def _build_merge(self, store: ObjectStore, entries: list[SegmentEntry]) -> None:
        """One sealed segment of the live rows of `entries`, written, kept for the next commit and applied to
        this state (as uncommitted: the manifest in memory names it; only a commit makes that durable)."""
        rows, vectors, origins = self._alive_rows(store, entries)
        merged = None
        if rows:
            merged, exact = Segment.sealed_from(rows, vectors, self.settings)
            merged.write(store, exact)
        merge = Merge(tuple(entries), merged, origins)
        self._merges.append(merge)
        kept = [entry for entry in self.manifest.segments if entry.id not in merge.input_ids]
        kept = sorted(kept + [merge.entry] * bool(merged), key=lambda entry: entry.data_generation)
        self._adopt_merge(merge)
        self.manifest = Manifest(self.manifest.generation, self.manifest.models, kept, self.manifest.removed)

    def _commit(self, store: ObjectStore, change: Callable[[Manifest], Manifest | None], adopt) -> bool:
        """Commit `change(manifest)` on the newest generation, putting it on each newer one that another
        writer committed first; False when `change` gives up (returns None). When nobody committed in between,
        `adopt(manifest)` brings the state in memory up to it at the cost of the change alone; otherwise the
        other writers' segments are read and the live rows worked out again."""
        base = self.manifest
        while True:
            manifest = change(base)
            if manifest is None:
                self._follow(store, base)
                return False
            if try_commit(store, manifest):
                if base is self.manifest:
                    adopt(manifest)
                else:
                    self._follow(store, manifest)
                return True
            base = read_newest(store) or Manifest()
            if base.models is not None and self.models is not None and base.models != self.models:
                raise IndexMismatchError(
                    f"another writer built the index with models {base.models.siglip} + {base.models.dinov2}; "
                    f"these are {self.models.siglip} + {self.models.dinov2}"
                )

    def _follow(self, store: ObjectStore, manifest: Manifest) -> None:
        """Take `manifest` as the committed state (changes not yet committed stay on top)."""
        named = {entry.id for entry in manifest.segments}
        fresh = {segment.id for segment in self._new}
        for entry in manifest.segments:
            if entry.id not in self.segments or self.segments[entry.id].kind != entry.kind:
                self.segments[entry.id] = self._known.pop(entry.id, None) or self._read_segment(store, entry)
        self.segments = {i: s for i, s in self.segments.items() if i in named or i in fresh}
        self._known = {i: s for i, s in self._known.items() if i not in named}
        self.manifest = manifest
        self.models = self.models or manifest.models
        self._new = [segment for segment in self._new if segment.id not in named]
        self._reindex()

    def _read_segment(self, store: ObjectStore, entry: SegmentEntry) -> Segment:
        segment = Segment.read(store, entry.id, entry.kind, data=self.shard is None or self.shard.owns(entry.id))
        if self._use_gpu and segment.has_data:
            segment.to_gpu(self.settings)
        return segment

    def refresh(self, store: ObjectStore) -> bool:
        """Follow the newest committed generation when another writer made one; whether anything changed."""
        newest = read_newest(store)
        if newest is None or newest.generation == self.manifest.generation:
            return False
        self._follow(store, newest)
        return True

    def _alive_rows(self, store: ObjectStore, entries: list[SegmentEntry]):
        """The rows alive in `entries`, their exact vectors, and per segment the row numbers they are."""
        rows, parts, origins = [], {tower: [] for tower in TOWERS}, {}
        for entry in entries:
            segment, alive = self.segments[entry.id], self._alive[entry.id]
            numbers = np.flatnonzero(alive)
            if not len(numbers):
                continue
            origins[entry.id] = numbers
            rows += [segment.rows[number] for number in numbers]
            vectors = segment.exact_vectors(store)
            everything = len(numbers) == len(segment)
            for tower in TOWERS:  # no copy of a whole segment's vectors: merges of large segments are large
                parts[tower].append(vectors[tower] if everything else vectors[tower][numbers])
        if not rows:
            return rows, {}, origins
        joined = {tower: arrays[0] if len(arrays) == 1 else np.concatenate(arrays) for tower, arrays in parts.items()}
        return rows, joined, origins

    def _adopt_merge(self, merge: Merge) -> None:
        """Bring the state up to `merge`: its rows are alive where the rows they came from still are (a newer
        row or a removal since it was built keeps its effect), and take over those windows."""
        merged = merge.merged
        if merged is not None:
            alive = np.concatenate([self._alive[segment_id][numbers] for segment_id, numbers in merge.origins.items()])
            if self._owner:  # a background snapshot keeps no owners: it never changes rows
                for row_number in np.flatnonzero(alive):
                    row = merged.rows[row_number]
                    self._owner[(row.source_id, row.start)] = (merged.id, int(row_number))
            if self._use_gpu:
                merged.to_gpu(self.settings)
            self.segments[merged.id] = merged
            self._alive[merged.id] = alive
        for segment_id in merge.input_ids:
            del self.segments[segment_id], self._alive[segment_id]

    def _tombstones_needed(self, removed: dict[str, int], entries: list[SegmentEntry]) -> dict[str, int]:
        """The removals that still hide rows: a source's removal goes once no segment older than it holds
        rows of the source (segments this state has not read are assumed to)."""
        known = {**self.segments, **self._known}
        needed = {}
        for source_id, generation in removed.items():
            older = [entry for entry in entries if entry.data_generation < generation]
            if any(entry.id not in known or source_id in known[entry.id].source_set for entry in older):
                needed[source_id] = generation
        return needed

    @property
    def kind(self) -> str:
        """The kind of the largest segment ("growing" before the first seal)."""
        entries = self.manifest.segments
        return max(entries, key=lambda entry: entry.rows).kind if entries else "growing"

    @classmethod
    def load(cls, store: ObjectStore, settings: IndexConfig | None = None, *, shard: Shard | None = None) -> ClipIndex:
        """The newest committed index in `store` (an index of an earlier release is taken over at the next
        save), or an empty one when none was saved yet; a shard holds the vectors of its segments only."""
        index = cls(settings=settings, shard=shard)
        manifest = read_newest(store)
        if manifest is not None:
            index._follow(store, manifest)
        elif store.exists(MANIFEST_KEY):
            index._take_over_legacy(store)
        freeze_long_lived()
        return index

    def _take_over_legacy(self, store: ObjectStore) -> None:
        """Read the single-version index of an earlier release as new rows: the next save commits them as a
        segment and then deletes the old files."""
        manifest = store.get_json(MANIFEST_KEY)
        prefix = index_version_prefix(manifest["version"])
        try:
            rows = [IndexRow(**row) for row in json.loads(store.get(f"{prefix}/rows.json"))]
            vectors = {}
            if rows:
                for tower in TOWERS:
                    faiss_index = faiss.deserialize_index(np.frombuffer(store.get(f"{prefix}/{tower}.faiss"), np.uint8))
                    vectors[tower] = faiss_index.reconstruct_n(0, faiss_index.ntotal)
        except StoreError as exc:
            raise StoreError(f"index version {manifest['version']} named by the manifest is incomplete: {exc}") from exc
        self.models = ModelIds(**manifest["models"]) if manifest.get("models") else None
        if rows:
            segment = Segment(Segment.new_id(), rows, vectors)
            self._new.append(segment)
            self.segments[segment.id] = segment
            self._reindex()
        self._legacy = [key for key in store.list(INDEX) if key == MANIFEST_KEY or key.startswith(prefix + "/")]
