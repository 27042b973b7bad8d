import multiprocessing
import os
import stat
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.records import ClipEmbedding, ModelIds
from pipeline.storage.clips import read_clip, write_clip
from pipeline.storage.codecs import ImageTooLargeError, decode_image
from pipeline.storage.layout import clip_key, source_id
from pipeline.storage.store import LocalStore, StoreError, open_store


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


# ---------------------------------------------------------------- modes and emptied folders


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_and_folders_get_the_modes_the_umask_allows(tmp_path, umask):
    previous = os.umask(umask)
    try:
        store = LocalStore(tmp_path / "store")
        store.put("a/b/put.bin", b"x")
        store.create("a/b/created.bin", b"y")
    finally:
        os.umask(previous)
    root = tmp_path / "store"
    for file in ("a/b/put.bin", "a/b/created.bin"):
        assert stat.S_IMODE((root / file).stat().st_mode) == 0o666 & ~umask, file
    for folder in ("a", "a/b"):
        assert stat.S_IMODE((root / folder).stat().st_mode) == 0o777 & ~umask, folder


def test_deleting_removes_the_folders_it_empties_up_to_the_root(tmp_path):
    store = LocalStore(tmp_path)
    store.put("clips/cam/000000000000.npz", b"1")
    store.put("clips/cam/000000002000.npz", b"2")
    store.put("clips/other/000000000000.npz", b"3")
    store.put("index/segments/s1/rows.parquet", b"4")
    store.delete("clips/cam/000000000000.npz")
    assert (tmp_path / "clips/cam").is_dir()  # still holds a file
    assert store.delete_prefix("clips/cam/") == 1
    assert not (tmp_path / "clips/cam").exists() and (tmp_path / "clips/other").is_dir()
    assert store.delete_prefix("index/segments/s1/") == 1
    assert not (tmp_path / "index").exists()  # emptied all the way up
    store.delete("clips/other/000000000000.npz")
    assert list(tmp_path.iterdir()) == [] and tmp_path.is_dir()  # the root stays, empty
    store.delete("never/written.bin")  # nothing there: nothing happens
    assert tmp_path.is_dir()


def test_a_write_into_a_folder_removed_meanwhile_makes_it_again(tmp_path, monkeypatch):
    """A concurrent delete removes a folder it empties right between a writer's mkdir and its temp file."""
    store, folder = LocalStore(tmp_path), tmp_path / "keyframes" / "cam"
    real_open, removed = os.open, []

    def open_after_a_concurrent_removal(path, flags, *args, **kwargs):
        if Path(path).parent == folder and not removed:
            folder.rmdir()
            (tmp_path / "keyframes").rmdir()
            removed.append(path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_after_a_concurrent_removal)
    store.put("keyframes/cam/000000000000.jpg", b"picture")
    assert removed and store.get("keyframes/cam/000000000000.jpg") == b"picture"
    store.delete("keyframes/cam/000000000000.jpg")
    removed.clear()
    assert store.create("keyframes/cam/000000001000.jpg", b"other") is True
    assert removed and store.get("keyframes/cam/000000001000.jpg") == b"other"


def test_writers_and_deleters_of_one_folder_never_fail(tmp_path):
    store, rounds, errors = LocalStore(tmp_path), 300, []

    def churn(name: str) -> None:
        try:
            for round_ in range(rounds):
                key = f"shared/folder/{name}-{round_}.bin"
                store.put(key, name.encode())
                assert store.get(key) == name.encode()
                store.delete(key)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    workers = [threading.Thread(target=churn, args=(name,)) for name in ("a", "b", "c")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert errors == []
    assert list(tmp_path.iterdir()) == [] and not _leftovers(tmp_path)


# ---------------------------------------------------------------- pictures


def claimed_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height pixels and whose pixel data is cut short: a decompression bomb
    as a reader sees it before decoding pixels (a real one, 30000x30000 in 109 KB, takes seconds to make)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit a pixel, greyscale
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(1000))) + chunk(b"IEND", b"")
    )
    return path


# Pillow warns about the second picture; the CLI's tests check that no warning reaches a user.
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_oversized_pictures_are_refused_before_their_pixels_are_decoded(tmp_path):
    bomb = claimed_png(tmp_path / "bomb.png", 30000, 30000)
    with pytest.raises(ImageTooLargeError, match="900000000 pixels, more than the 89478485 allowed"):
        decode_image(bomb)
    with pytest.raises(ImageTooLargeError, match="900000000 pixels"):
        decode_image(bomb.read_bytes())
    # Above the limit but below where Pillow refuses by itself: refused here, by its dimensions.
    with pytest.raises(ImageTooLargeError, match="10000x9000 pixels, more than the 89478485 allowed"):
        decode_image(claimed_png(tmp_path / "big.png", 10000, 9000))
    Image.new("RGB", (64, 48), (10, 200, 30)).save(tmp_path / "fine.png")
    assert decode_image(tmp_path / "fine.png").shape == (48, 64, 3)
