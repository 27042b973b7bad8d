import multiprocessing
import threading

import numpy as np
import pytest

from pipeline.records import ClipEmbedding, ModelIds
from pipeline.storage.layout import clip_key, source_id
from pipeline.storage.store import LocalStore, StoreError, open_store, read_clip, write_clip


def _clip(sid="cam-1", start=4.0):
    rng = np.random.default_rng(0)
    return ClipEmbedding(
        source="/videos/a b.mp4",
        source_id=sid,
        start=start,
        end=start + 2,
        siglip=rng.standard_normal(8).astype(np.float32),
        dinov2=rng.standard_normal(4).astype(np.float32),
        keyframe_pts=4.5,
        keyframe_key=f"keyframes/{sid}/000000004500.jpg",
        models=ModelIds("s", "d", untrained=True),
        frame_count=2,
    )


def test_put_get_list_delete(tmp_path):
    store = LocalStore(tmp_path)
    store.put("a/b/c.bin", b"one")
    store.put("a/x.bin", b"two")
    assert store.get("a/b/c.bin") == b"one"
    assert list(store.list("a/")) == ["a/b/c.bin", "a/x.bin"]
    assert store.exists("a/x.bin") and not store.exists("a/y.bin")
    assert store.delete_prefix("a/b/") == 1
    assert list(store.list()) == ["a/x.bin"]
    with pytest.raises(StoreError, match="no object"):
        store.get("a/b/c.bin")


def test_rewriting_the_same_bytes_leaves_the_file_alone(tmp_path):
    store = LocalStore(tmp_path)
    store.put("k.bin", b"data")
    before = (tmp_path / "k.bin").stat().st_mtime_ns
    store.put("k.bin", b"data")
    assert (tmp_path / "k.bin").stat().st_mtime_ns == before
    store.put("k.bin", b"new")
    assert store.get("k.bin") == b"new"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


@pytest.mark.parametrize("key", ["../escape", "/abs", "a//b", "a/./b", "sp ace", ""])
def test_malformed_keys_are_refused(tmp_path, key):
    with pytest.raises(StoreError, match="malformed"):
        LocalStore(tmp_path).put(key, b"x")


def test_source_id_is_stable_and_path_safe():
    sid = source_id("/videos/Front Gate (2024).mp4")
    assert sid == source_id("/videos/Front Gate (2024).mp4")
    assert sid.startswith("front-gate-2024-")
    assert sid != source_id("/other/Front Gate (2024).mp4")
    assert "/" not in source_id("rtsp://cam/../../etc")


def test_clip_roundtrip_and_deterministic_bytes(tmp_path):
    store = LocalStore(tmp_path)
    clip = _clip()
    key = write_clip(store, clip)
    assert key == clip_key("cam-1", 4.0) == "clips/cam-1/000000004000.npz"
    first = store.get(key)
    write_clip(LocalStore(tmp_path / "other"), clip)
    assert LocalStore(tmp_path / "other").get(key) == first
    back = read_clip(store, key)
    np.testing.assert_array_equal(back.siglip, clip.siglip)
    assert (back.start, back.end, back.keyframe_key, back.models) == (
        clip.start,
        clip.end,
        clip.keyframe_key,
        clip.models,
    )


def test_open_store_rejects_unknown_scheme(tmp_path):
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    with pytest.raises(StoreError, match="ftp://"):
        open_store("ftp://host/bucket")


# ---------------------------------------------------------------- create: write-once


def _leftovers(root) -> list:
    return [path for path in root.rglob("*") if path.name.startswith(".tmp-")]


def test_create_writes_once(tmp_path):
    store = LocalStore(tmp_path)
    assert store.create("locks/a.json", b"first") is True
    assert store.create("locks/a.json", b"second") is False
    assert store.create("locks/a.json", b"first") is False  # the same bytes again: still not this call's object
    assert store.get("locks/a.json") == b"first" and list(store.list()) == ["locks/a.json"]
    store.put("p.bin", b"put")
    assert store.create("p.bin", b"other") is False and store.get("p.bin") == b"put"  # a put object counts too
    store.delete("locks/a.json")
    assert store.create("locks/a.json", b"again") is True and store.get("locks/a.json") == b"again"
    assert store.create("empty.bin", b"") is True and store.get("empty.bin") == b""
    assert not _leftovers(tmp_path)
    with pytest.raises(StoreError, match="malformed"):
        store.create("../escape", b"x")
    assert not (tmp_path.parent / "escape").exists()


def test_create_refuses_a_folder_of_that_name(tmp_path):
    store = LocalStore(tmp_path)
    store.put("a/b.bin", b"x")
    with pytest.raises(StoreError, match="folder"):
        store.create("a", b"y")
    assert not _leftovers(tmp_path)


def test_racing_threads_create_exactly_once(tmp_path):
    store, threads, rounds = LocalStore(tmp_path), 8, 25
    barrier = threading.Barrier(threads)
    results: dict[tuple[int, int], bool] = {}

    def creator(writer: int) -> None:
        for round_ in range(rounds):
            barrier.wait()
            results[round_, writer] = store.create(f"race/{round_}.bin", f"writer-{writer}".encode() * 1000)

    workers = [threading.Thread(target=creator, args=(writer,)) for writer in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert len(results) == threads * rounds
    for round_ in range(rounds):
        winners = [writer for writer in range(threads) if results[round_, writer]]
        assert len(winners) == 1, f"round {round_}: winners {winners}"
        assert store.get(f"race/{round_}.bin") == f"writer-{winners[0]}".encode() * 1000
    assert not _leftovers(tmp_path)


def _create_in_process(root: str, writer: int, rounds: int, barrier, results) -> None:
    store = LocalStore(root)
    for round_ in range(rounds):
        barrier.wait(timeout=60)
        results.put((round_, writer, store.create(f"race/{round_}.bin", f"process-{writer}".encode())))


def test_racing_processes_create_exactly_once(tmp_path):
    context = multiprocessing.get_context("spawn")
    processes, rounds = 4, 10
    barrier, results = context.Barrier(processes), context.Queue()
    workers = [
        context.Process(target=_create_in_process, args=(str(tmp_path), writer, rounds, barrier, results))
        for writer in range(processes)
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in range(processes * rounds)]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    store = LocalStore(tmp_path)
    for round_ in range(rounds):
        winners = [writer for r, writer, won in outcomes if r == round_ and won]
        assert len(winners) == 1, f"round {round_}: winners {winners}"
        assert store.get(f"race/{round_}.bin") == f"process-{winners[0]}".encode()
    assert not _leftovers(tmp_path)
