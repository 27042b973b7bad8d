"""Durability of the segmented clip index: a writer killed (SIGKILL) at each phase of a save leaves a
loadable index holding exactly the last committed generation, racing writers on S3 (SeaweedFS) keep each
other's rows, and a writer whose base generation was collected long ago still saves without losing any."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import traceback
import uuid
import zlib
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import IndexConfig, S3Config
from pipeline.records import ClipEmbedding, ModelIds
from pipeline.search import index as index_module
from pipeline.search.index import MAX_SEALED, ClipIndex
from pipeline.search.manifest import KEEP_GENERATIONS, Manifest, collect, generation_keys, read_newest
from pipeline.storage.layout import index_generation_key, index_segment_prefix
from pipeline.storage.store import LocalStore, ObjectStore, S3Store

ROOT = Path(__file__).resolve().parent.parent
MODELS = ModelIds("siglip-x", "dino-x")
# Every save seals; the ninth sealed segment compacts. In the foreground, so each phase has a known place.
SETTINGS = IndexConfig(seal_rows=2, exact_max=1000, background=False)
BUCKET = "vigil-test"
S3_SETTINGS = S3Config(attempts=20, backoff=0.05, backoff_max=0.5, deadline=30, connect_timeout=2, read_timeout=10)

# The killed writer's plan: ten sources saved one by one, then one save re-indexing s0 and adding s10.
BEFORE = {f"s{i}": (1, 3) for i in range(10)}  # source -> (version, clips)
LAST_SAVE = {"s0": (2, 4), "s10": (1, 3)}
AFTER = BEFORE | LAST_SAVE


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def clips_of(source_id: str, version: int, count: int, first: int = 0) -> list[ClipEmbedding]:
    """`count` clips of a source from window `first` on; each version of a source has its own vectors."""
    clips = []
    for i in range(first, first + count):
        rng = np.random.default_rng(zlib.crc32(f"{source_id}/{version}/{i}".encode()))
        siglip, dinov2 = rng.standard_normal(16), rng.standard_normal(8)
        clips.append(
            ClipEmbedding(
                f"/v/{source_id}.mp4",
                source_id,
                i * 2.0,
                (i + 1) * 2.0,
                _unit(siglip),
                _unit(dinov2),
                i * 2.0,
                f"keyframes/{source_id}/{version}/{i}.jpg",
                MODELS,
            )
        )
    return clips


def expected_clips(plan: dict[str, tuple[int, int]]) -> list[ClipEmbedding]:
    return [clip for source_id, (version, count) in plan.items() for clip in clips_of(source_id, version, count)]


def assert_holds_exactly(index: ClipIndex, clips: list[ClipEmbedding]) -> None:
    """`index` holds each clip once (its row, its vectors) and nothing else; searches find each one first."""
    wanted = sorted((c.source_id, c.start, c.end, c.keyframe_key) for c in clips)
    rows = [(r.source_id, r.start, r.end, r.keyframe_key) for r in index.rows]
    assert sorted(rows) == wanted
    assert len(index) == len({(c.source_id, c.start) for c in clips}) == len(rows)
    assert index.sources == {c.source_id for c in clips}
    for clip in clips:
        for query in ({"siglip": clip.siglip}, {"siglip": clip.siglip, "dinov2": clip.dinov2}):
            hit = index.search(**query, k=1)[0]
            assert (hit.source_id, hit.start, hit.keyframe_key) == (clip.source_id, clip.start, clip.keyframe_key)
            assert hit.score == pytest.approx(1.0, abs=1e-4)


def segment_files_missing(store: ObjectStore, manifest: Manifest) -> list[str]:
    """Files of segments `manifest` names that are not in the store."""
    missing = []
    for entry in manifest.segments:
        names = ["rows.parquet", "vectors.npz"] + ([] if entry.kind == "growing" else ["siglip.faiss", "dinov2.faiss"])
        missing += [key for name in names if not store.exists(key := f"{index_segment_prefix(entry.id)}{name}")]
    return missing


def segment_ids_in_store(store: ObjectStore) -> set[str]:
    return {key.split("/")[2] for key in store.list("index/segments/")}


# ---------------------------------------------------------------- SIGKILL at each phase of a save

CHILD = r"""
import sys, time
from pipeline.search import index as index_module
from pipeline.search.index import ClipIndex
from pipeline.search.segments import Segment
from pipeline.storage.store import LocalStore
from tests.test_index_durability import BEFORE, LAST_SAVE, SETTINGS, clips_of

phase, root = sys.argv[1], sys.argv[2]
armed = False


def pause():
    print("PAUSED", phase, flush=True)
    time.sleep(120)  # the parent kills us here
    sys.exit(3)


class PausingStore:
    # Pauses a segment write after its rows and before its vectors: a half-written segment.
    def __init__(self, store):
        self.store = store

    def put(self, key, data):
        if key.endswith("vectors.npz"):
            pause()
        self.store.put(key, data)


write, try_commit, build_merge = Segment.write, index_module.try_commit, ClipIndex._build_merge
if phase == "add":
    Segment.write = lambda self, store, *vectors: write(self, PausingStore(store) if armed else store, *vectors)
elif phase == "commit":
    index_module.try_commit = lambda store, manifest: pause() if armed else try_commit(store, manifest)
else:
    def paused_merge(self, store, entries):
        sealing = all(entry.kind == "growing" for entry in entries)
        if armed and sealing == (phase == "seal"):
            pause()
        return build_merge(self, store, entries)

    ClipIndex._build_merge = paused_merge

store = LocalStore(root)
index = ClipIndex.load(store, settings=SETTINGS)
for source_id, (version, count) in BEFORE.items():
    index.replace_source(source_id, clips_of(source_id, version, count))
    print("SAVED", index.save(store), flush=True)
armed = True
for source_id, (version, count) in LAST_SAVE.items():
    index.replace_source(source_id, clips_of(source_id, version, count))
print("SAVED", index.save(store), flush=True)
print("NOT PAUSED", flush=True)
"""


def run_until_paused(phase: str, root: Path, log: Path) -> int:
    """Run the writer in a child process until it pauses at `phase`, SIGKILL it; its last saved generation."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    with open(log, "w") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, phase, str(root)], stdout=subprocess.PIPE, stderr=stderr, text=True, env=env
        )
    watchdog = threading.Timer(60, child.kill)  # only should the child never pause nor exit
    watchdog.start()
    saved, paused = 0, False
    try:
        for line in child.stdout:
            if line.startswith("SAVED "):
                saved = int(line.split()[1])
            elif line.strip() == f"PAUSED {phase}":
                paused = True
                os.kill(child.pid, signal.SIGKILL)
                break
    finally:
        watchdog.cancel()
        child.stdout.close()
        returncode = child.wait(timeout=30)
    assert paused, f"the child never paused at {phase} (exit {returncode}):\n{log.read_text()[-3000:]}"
    assert returncode == -signal.SIGKILL
    return saved


@pytest.mark.parametrize("phase", ["add", "commit", "seal", "compact"])
def test_a_writer_killed_at_any_phase_leaves_the_last_committed_generation(phase, tmp_path):
    root = tmp_path / "store"
    saved = run_until_paused(phase, root, tmp_path / "child.log")
    assert saved >= len(BEFORE)  # every save before the last one committed (and sealed, compacted)
    store = LocalStore(root)
    newest = read_newest(store)
    assert segment_files_missing(store, newest) == []
    named = {entry.id for key in generation_keys(store) for entry in Manifest.from_json(store.get(key)).segments}
    orphans = segment_ids_in_store(store) - named  # segments no generation names
    # The kill came at the intended point of the last save.
    if phase == "add":  # half a segment written, nothing committed
        assert newest.generation == saved and len(orphans) == 1
        (orphan,) = orphans
        assert list(store.list(index_segment_prefix(orphan))) == [f"{index_segment_prefix(orphan)}rows.parquet"]
    elif phase == "commit":  # both new segments written whole, not committed
        assert newest.generation == saved and len(orphans) == 2
        assert all(store.exists(f"{index_segment_prefix(orphan)}vectors.npz") for orphan in orphans)
    else:  # the new rows committed as growing segments; seal and compaction are committed together after
        assert newest.generation == saved + 1
        assert sum(entry.kind == "growing" for entry in newest.segments) == 2
        # Killed before the seal was built: nothing more written; before the compaction: the sealed segment is
        # written, never named.
        assert len(orphans) == (0 if phase == "seal" else 1)

    committed = BEFORE if phase in ("add", "commit") else AFTER
    index = ClipIndex.load(store, settings=SETTINGS)
    assert_holds_exactly(index, expected_clips(committed))

    # The same adds again complete the interrupted save.
    for source_id, (version, count) in LAST_SAVE.items():
        index.replace_source(source_id, clips_of(source_id, version, count))
    index.save(store)
    assert_holds_exactly(index, expected_clips(AFTER))
    reloaded = ClipIndex.load(store, settings=SETTINGS)
    assert_holds_exactly(reloaded, expected_clips(AFTER))
    newest = read_newest(store)
    assert segment_files_missing(store, newest) == []
    assert sum(entry.kind != "growing" for entry in newest.segments) <= MAX_SEALED


# ---------------------------------------------------------------- racing writers on S3


@pytest.fixture
def s3_store(s3_server, monkeypatch):
    """A fresh prefix of a bucket on the session's SeaweedFS: each call of the value opens another client of it."""
    for variable, value in s3_server.env().items():
        monkeypatch.setenv(variable, value)
    for variable in ("AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION"):
        monkeypatch.delenv(variable, raising=False)
    prefix = f"durability-{uuid.uuid4().hex[:10]}"

    def open_s3() -> S3Store:
        return S3Store(BUCKET, prefix, endpoint=s3_server.endpoint, settings=S3_SETTINGS)

    return open_s3


@pytest.fixture
def lost_commits(monkeypatch):
    """Counts commits that lost the race for their generation (the index's `try_commit` answering False)."""
    lost, lock, try_commit = [0], threading.Lock(), index_module.try_commit

    def counting(store, manifest):
        won = try_commit(store, manifest)
        if not won:
            with lock:
                lost[0] += 1
        return won

    monkeypatch.setattr(index_module, "try_commit", counting)
    return lost


ROUNDS = 12  # enough commits (> 2 * KEEP_GENERATIONS) for collections while the writers race


def writer_plan(writer: int) -> dict[str, tuple[int, int]]:
    """What writer `writer` leaves after ROUNDS rounds: its re-indexed source at the last version, and its
    live source with one window a round."""
    return {f"w{writer}-re": (ROUNDS - 1, 2 + (ROUNDS - 1) % 3), f"w{writer}-live": (0, ROUNDS)}


def run_writer(open_store, writer: int, barrier: threading.Barrier, errors: list) -> None:
    try:
        store = open_store()
        index = ClipIndex.load(store, settings=IndexConfig(seal_rows=4, exact_max=1000))
        for round_number in range(ROUNDS):
            index.replace_source(f"w{writer}-re", clips_of(f"w{writer}-re", round_number, 2 + round_number % 3))
            index.upsert(clips_of(f"w{writer}-live", 0, 1, first=round_number))
            barrier.wait(timeout=60)  # every writer saves at once
            index.save(store)
        index.wait_for_maintenance()  # as a writer's exit does: its sealing and collection finish
    except BaseException as exc:  # noqa: BLE001  (reported by the test)
        errors.append((writer, exc))
        barrier.abort()


def test_racing_writers_on_s3_keep_each_others_rows(s3_store, lost_commits):
    writers = 4
    barrier, errors = threading.Barrier(writers), []
    threads = [threading.Thread(target=run_writer, args=(s3_store, w, barrier, errors)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    failures = [e for _, e in errors if not isinstance(e, threading.BrokenBarrierError)] + [e for _, e in errors]
    assert not errors, "".join(traceback.format_exception(failures[0]))  # the first error not a broken barrier
    assert lost_commits[0] > 0  # the writers did race for generations

    store = s3_store()
    newest = read_newest(store)
    assert segment_files_missing(store, newest) == []
    for key in generation_keys(store):  # every generation a reader may still take is complete
        assert segment_files_missing(store, Manifest.from_json(store.get(key))) == [], key
    plan = {source: version for w in range(writers) for source, version in writer_plan(w).items()}
    assert_holds_exactly(ClipIndex.load(store), expected_clips(plan))


# ---------------------------------------------------------------- a writer on a long-collected base


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_a_writer_on_a_collected_base_generation_loses_nothing(backend, tmp_path, request, lost_commits):
    if backend == "s3":
        store = request.getfixturevalue("s3_store")()
    else:
        store = LocalStore(tmp_path / "store")
    settings = IndexConfig(seal_rows=2, exact_max=1000, background=False)
    first = ClipIndex(settings=settings)
    first.replace_source("stale", clips_of("stale", 0, 3))
    first.save(store)

    stale = ClipIndex.load(store, settings=settings)
    base = stale.manifest.generation
    known = set(stale.segments)
    # Changes made on the old base, saved only after the others moved far ahead.
    stale.replace_source("stale", clips_of("stale", 1, 2))
    stale.upsert(clips_of("stale-new", 0, 2))

    other = ClipIndex.load(store, settings=settings)
    other_plan: dict[str, tuple[int, int]] = {}
    saves = 0

    def stale_base_remains() -> bool:
        """The stale writer's base generation, the next, or a segment it holds is still in the store."""
        generations = (index_generation_key(base), index_generation_key(base + 1))
        return any(store.exists(key) for key in generations) or not known - segment_ids_in_store(store)

    while stale_base_remains():
        assert saves < 4 * KEEP_GENERATIONS, "the old generations were never collected"
        source = f"o{saves % 12}"
        version = other_plan.get(source, (0, 0))[0] + 1
        other.replace_source(source, clips_of(source, version, 5))  # bigger than the stale source's segment
        other.save(store)
        other_plan[source] = (version, 5)
        saves += 1
    assert known - segment_ids_in_store(store)  # segments the stale writer holds were collected
    newest_before = read_newest(store).generation

    lost_before = lost_commits[0]
    generation = stale.save(store)
    assert lost_commits[0] > lost_before  # its first try, on the collected base, did not count
    assert generation > newest_before
    assert not store.exists(index_generation_key(base + 1))  # the stale attempt left no generation behind
    plan = other_plan | {"stale": (1, 2), "stale-new": (0, 2)}
    assert_holds_exactly(stale, expected_clips(plan))
    assert_holds_exactly(ClipIndex.load(store), expected_clips(plan))
    assert segment_files_missing(store, read_newest(store)) == []


def test_a_collection_during_a_stale_writers_doomed_commit_keeps_its_new_segments(tmp_path):
    """A stale writer's first try re-creates a collected generation number (then deletes it, as not the newest).
    A collection that runs meanwhile sees that generation among the old ones: it must not delete the segments
    the stale writer just wrote, which its next try (on the newest generation) commits."""
    store = LocalStore(tmp_path / "store")
    settings = IndexConfig(seal_rows=2, exact_max=1000, background=False)
    first = ClipIndex(settings=settings)
    first.replace_source("stale", clips_of("stale", 0, 3))
    first.save(store)
    stale = ClipIndex.load(store, settings=IndexConfig(seal_rows=1000))  # its new rows stay a growing segment
    base = stale.manifest.generation
    stale.upsert(clips_of("stale-new", 0, 2))

    other = ClipIndex.load(store, settings=settings)
    other_plan: dict[str, tuple[int, int]] = {}

    def other_saves(source: str) -> None:
        version = other_plan.get(source, (0, 0))[0] + 1
        other.replace_source(source, clips_of(source, version, 5))
        other.save(store)
        other_plan[source] = (version, 5)

    saves = 0
    while read_newest(store).generation <= base + 1 or store.exists(index_generation_key(base + 1)):
        assert saves < 4 * KEEP_GENERATIONS, "the old generations were never collected"
        other_saves(f"o{saves % 12}")
        saves += 1

    create, collected = store.create, []

    def create_then_collect(key: str, data: bytes) -> bool:
        created = create(key, data)
        if created and key == index_generation_key(base + 1):  # the stale writer's doomed first try
            # Meanwhile another writer commits until a collection is due, and collects.
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(store, "create", create)
                patch.setattr(index_module, "collect", lambda store: None)
                for round_number in range(2 * KEEP_GENERATIONS):
                    if len(generation_keys(store)) >= 2 * KEEP_GENERATIONS:
                        break
                    other_saves(f"o{round_number % 12}")
            assert len(generation_keys(store)) >= 2 * KEEP_GENERATIONS
            collect(store)
            collected.append(key)
        return created

    store.create = create_then_collect
    # The stale writer checks that its base generation still exists just before a collection deletes it: the
    # narrow race its check before creating cannot close.
    exists = store.exists
    store.exists = lambda key: key == index_generation_key(base) or exists(key)
    stale.save(store)
    del store.create, store.exists
    assert collected == [index_generation_key(base + 1)]  # the interleaving did happen
    assert segment_files_missing(store, read_newest(store)) == []
    for key in generation_keys(store):
        assert segment_files_missing(store, Manifest.from_json(store.get(key))) == [], key
    plan = other_plan | {"stale": (0, 3), "stale-new": (0, 2)}
    assert_holds_exactly(ClipIndex.load(store), expected_clips(plan))
