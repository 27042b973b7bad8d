"""Index manifests: write-once generations, so concurrent writers never lose each other's work.

Generation g is the object `index/generations/{g:012d}.json`, created with the store's write-once `create`
(S3 `If-None-Match: *`, a hard link locally): of two writers that both read generation g, exactly one
creates g + 1; the other re-reads the newest generation, puts its own changes on top and tries g + 2. A
reader takes the newest generation, which names only segments whose files were written before it, so it
always sees a complete index. Old generations are collected in batches, each with the segments no newer
generation still names. A segment no generation names (a writer that died before committing) is collected
once it is `ORPHAN_AGE` old: a live writer's segments look the same until it commits, which it does within
seconds of writing them.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field

from pipeline.records import ModelIds
from pipeline.search.segments import segment_created_at
from pipeline.storage.layout import (
    INDEX_GENERATIONS,
    INDEX_SEGMENTS,
    index_generation_key,
    index_generation_of,
    index_segment_prefix,
)
from pipeline.storage.store import ObjectStore, StoreError

# Generations kept after a collection; a collection runs once twice as many exist.
KEEP_GENERATIONS = 16
# Unnamed segments younger than this may belong to a writer about to commit them (hours, for clock skew).
ORPHAN_AGE = 6 * 3600.0


@dataclass(frozen=True)
class SegmentEntry:
    """A live segment as the manifest names it. Its rows count from `data_generation` on: a source removed
    at a later generation hides them, and a row of the same window in a newer segment replaces them."""

    id: str
    kind: str  # "growing", or the sealed FAISS kind
    rows: int
    data_generation: int


@dataclass
class Manifest:
    generation: int = 0
    models: ModelIds | None = None
    segments: list[SegmentEntry] = field(default_factory=list)
    removed: dict[str, int] = field(default_factory=dict)  # source_id -> generation it was removed at

    def to_json(self) -> bytes:
        body = {
            "generation": self.generation,
            "models": asdict(self.models) if self.models else None,
            "segments": [asdict(entry) for entry in self.segments],
            "removed": self.removed,
            # Distinguishes this writer's commit from another with the same content (see ObjectStore.create).
            "writer": uuid.uuid4().hex,
        }
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        body = json.loads(data)
        models = ModelIds(**body["models"]) if body.get("models") else None
        segments = [SegmentEntry(**entry) for entry in body["segments"]]
        return cls(body["generation"], models, segments, {k: int(v) for k, v in body["removed"].items()})


def generation_keys(store: ObjectStore) -> list[str]:
    return [key for key in store.list(INDEX_GENERATIONS) if key.endswith(".json")]


def read_newest(store: ObjectStore) -> Manifest | None:
    keys = generation_keys(store)
    return Manifest.from_json(store.get(keys[-1])) if keys else None


def try_commit(store: ObjectStore, manifest: Manifest) -> bool:
    """Create `manifest` as its generation: False when another writer created that generation first."""
    base = manifest.generation - 1
    if base and not store.exists(index_generation_key(base)):
        return False  # the base was collected: the newest generation is far ahead, go on from there
    key = index_generation_key(manifest.generation)
    if not store.create(key, manifest.to_json()):
        return False
    # A writer whose base generation was collected long ago creates again a number far below the newest:
    # such a commit is never read, so it counts as lost (its changes go on the newest and are tried again).
    # Only numbers at least KEEP_GENERATIONS below the newest are ever collected; a newer one that exists
    # was built on this commit.
    newest = index_generation_of(generation_keys(store)[-1])
    if newest - manifest.generation >= KEEP_GENERATIONS:
        store.delete(key)
        return False
    return True


def due_for_collection(generation: int) -> bool:
    """Whether the writer that committed `generation` collects old ones: every KEEP_GENERATIONS-th, so that
    saves need not list the generations (each number is committed by exactly one writer)."""
    return generation % KEEP_GENERATIONS == 0


def collect(store: ObjectStore) -> None:
    """Delete the oldest generations, beyond KEEP_GENERATIONS, and the segments only they name.

    Only the run of generations just below the kept ones is collected: a lone older number is a commit of a
    writer whose base was collected, which that writer deletes itself (its segments are about to be named by
    its next commit). Several writers may collect at once: a generation another one deleted is skipped."""
    keys = generation_keys(store)
    if len(keys) < 2 * KEEP_GENERATIONS:
        return
    kept = keys[-KEEP_GENERATIONS:]
    old = []
    expected = index_generation_of(kept[0]) - 1
    for key in reversed(keys[:-KEEP_GENERATIONS]):
        if index_generation_of(key) != expected:
            break
        old.append(key)
        expected -= 1
    named = {entry.id for key in kept for entry in _segments_of(store, key)}
    for key in old:
        for entry in _segments_of(store, key):
            if entry.id not in named:
                store.delete_prefix(index_segment_prefix(entry.id))
                named.add(entry.id)  # deleted once, though several old generations name it
        store.delete(key)
    collect_orphans(store, now=time.time())


def collect_orphans(store: ObjectStore, *, now: float) -> list[str]:
    """Delete the segments no generation names that are older than ORPHAN_AGE; their ids."""
    named = {entry.id for key in generation_keys(store) for entry in _segments_of(store, key)}
    stored = {key[len(INDEX_SEGMENTS) :].split("/", 1)[0] for key in store.list(INDEX_SEGMENTS)}
    orphans = []
    for segment_id in sorted(stored - named):
        created = segment_created_at(segment_id)
        if created is not None and now - created > ORPHAN_AGE:
            store.delete_prefix(index_segment_prefix(segment_id))
            orphans.append(segment_id)
    return orphans


def _segments_of(store: ObjectStore, key: str) -> list[SegmentEntry]:
    """The segments a generation names; none when another writer's collection deleted it meanwhile."""
    try:
        return Manifest.from_json(store.get(key)).segments
    except StoreError:
        return []
