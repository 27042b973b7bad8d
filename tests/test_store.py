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
