import numpy as np
import pytest

from pipeline.config import IndexConfig
from pipeline.records import ClipEmbedding, ModelIds, SearchHit
from pipeline.search.index import ClipIndex, IndexMismatchError, choose_kind, merge_hits
from pipeline.storage.store import LocalStore

MODELS = ModelIds("siglip-x", "dino-x")


def _unit(v):
    return (v / np.linalg.norm(v)).astype(np.float32)


def _clips(sid, vectors, window=2.0):
    return [
        ClipEmbedding(
            f"/v/{sid}.mp4",
            sid,
            i * window,
            (i + 1) * window,
            _unit(v),
            _unit(v[:6]),
            i * window,
            f"keyframes/{sid}/{i}.jpg",
            MODELS,
        )
        for i, v in enumerate(vectors)
    ]


@pytest.fixture
def vectors():
    return np.random.default_rng(1).standard_normal((20, 12)).astype(np.float32)


def test_exact_search_finds_each_clip_first(vectors):
    index = ClipIndex()
    index.replace_source("a", _clips("a", vectors))
    for i, v in enumerate(vectors):
        hit = index.search(siglip=_unit(v), k=3)[0]
        assert (hit.source_id, hit.start) == ("a", i * 2.0)
        assert hit.score == pytest.approx(1.0, abs=1e-5)


def test_image_query_scores_average_both_towers(vectors):
    index = ClipIndex()
    index.replace_source("a", _clips("a", vectors))
    hit = index.search(siglip=_unit(vectors[3]), dinov2=_unit(vectors[3][:6]), k=1)[0]
    assert hit.start == 6.0 and hit.score == pytest.approx(1.0, abs=1e-5)


def test_kind_is_chosen_by_size_and_recorded(tmp_path, vectors):
    assert choose_kind(10, "auto", exact_max=100) == "flat"
    assert choose_kind(101, "auto", exact_max=100) == "hnsw"
    index = ClipIndex(settings=IndexConfig(exact_max=10))
    index.replace_source("a", _clips("a", vectors))
    assert index.kind == "hnsw"
    store = LocalStore(tmp_path)
    index.save(store)
    assert store.get_json("index/MANIFEST.json")["kind"] == "hnsw"
    loaded = ClipIndex.load(store)
    assert loaded.search(siglip=_unit(vectors[7]), k=1)[0].start == 14.0


def test_save_is_idempotent_and_atomic(tmp_path, vectors):
    store = LocalStore(tmp_path)
    index = ClipIndex()
    index.replace_source("a", _clips("a", vectors))
    version = index.save(store)
    files = {k: store.get(k) for k in store.list()}
    assert ClipIndex.load(store).save(store) == version
    assert {k: store.get(k) for k in store.list()} == files
    index.replace_source("b", _clips("b", vectors[:3]))
    new = index.save(store)
    assert new != version
    assert not [k for k in store.list("index/") if version in k], "old versions are dropped after the manifest swap"


def test_replace_and_remove_source(vectors):
    index = ClipIndex()
    index.replace_source("a", _clips("a", vectors[:5]))
    index.replace_source("b", _clips("b", vectors[5:10]))
    index.replace_source("a", _clips("a", vectors[10:12]))
    assert len(index) == 7 and index.sources == {"a", "b"}
    assert index.search(siglip=_unit(vectors[6]), k=1)[0].source_id == "b"
    assert index.remove_source("b") == 5
    assert index.sources == {"a"} and len(index) == 2
    assert index.remove_source("a") == 2 and index.search(siglip=_unit(vectors[0])) == []


def test_other_models_are_refused(vectors):
    index = ClipIndex()
    index.replace_source("a", _clips("a", vectors[:2]))
    other = _clips("b", vectors[:2])
    other[0].models = ModelIds("another", "dino-x")
    with pytest.raises(IndexMismatchError, match="another"):
        index.replace_source("b", other[:1])


def _hit(sid, start, score):
    return SearchHit(f"/v/{sid}", sid, start, start + 2, score, f"k/{sid}/{start}")


def test_merge_joins_adjacent_strong_windows_only():
    hits = [
        _hit("a", 10, 0.90),
        _hit("a", 12, 0.88),
        _hit("a", 14, 0.50),
        _hit("a", 20, 0.89),
        _hit("b", 12, 0.70),
        _hit("a", 8, 0.40),
    ]
    events = merge_hits(hits, merge_drop=0.15)
    assert [(e.source_id, e.start, e.end) for e in events] == [
        ("a", 10, 14),
        ("a", 20, 22),
        ("b", 12, 14),
        ("a", 14, 16),
        ("a", 8, 10),
    ]
    assert events[0].score == 0.90 and events[0].keyframe_key == "k/a/10"
    assert merge_hits([]) == []


def test_the_same_content_gives_the_same_index_in_any_order(tmp_path, vectors):
    first, second = ClipIndex(), ClipIndex()
    first.replace_source("a", _clips("a", vectors[:4]))
    first.replace_source("b", _clips("b", vectors[4:8]))
    second.replace_source("b", _clips("b", vectors[4:8])[::-1])
    second.replace_source("a", _clips("a", vectors[:4]))
    assert first.rows == second.rows
    assert first.save(LocalStore(tmp_path / "1")) == second.save(LocalStore(tmp_path / "2"))


def test_upsert_replaces_windows_by_source_and_start(vectors):
    index = ClipIndex()
    index.upsert(_clips("cam", vectors[:3]))
    index.upsert(_clips("cam", vectors[3:7]))  # windows 0..3: the first three are replaced
    assert len(index) == 4
    assert index.search(siglip=_unit(vectors[4]), k=1)[0].start == 2.0
