import numpy as np
import pytest

from pipeline.config import IndexConfig
from pipeline.records import ClipEmbedding, ModelIds, SearchHit
from pipeline.search.filters import ClipFilter
from pipeline.search.index import ClipIndex, IndexMismatchError
from pipeline.search.manifest import read_newest
from pipeline.search.moments import merge_hits
from pipeline.search.segments import choose_kind
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
    sizes = IndexConfig(exact_max=100, hnsw_max=1000)
    assert [choose_kind(n, sizes) for n in (10, 100, 101, 1000, 1001)] == ["flat", "flat", "hnsw", "hnsw", "ivf"]
    assert choose_kind(10, IndexConfig(kind="ivf_sq8")) == "ivf_sq8"
    index = ClipIndex(settings=IndexConfig(exact_max=10, seal_rows=5))
    index.replace_source("a", _clips("a", vectors))
    assert index.kind == "growing"  # new rows: exact search until sealed
    store = LocalStore(tmp_path)
    index.save(store)  # 20 rows >= seal_rows: sealed in the background, and 20 > exact_max: HNSW
    index.wait_for_maintenance()
    assert index.kind == "hnsw"
    assert [(e.kind, e.rows) for e in read_newest(store).segments] == [("hnsw", 20)]
    loaded = ClipIndex.load(store)
    assert loaded.search(siglip=_unit(vectors[7]), k=1)[0].start == 14.0


def test_a_save_writes_only_what_is_new(tmp_path, vectors):
    store = LocalStore(tmp_path)
    index = ClipIndex()
    index.replace_source("a", _clips("a", vectors))
    generation = index.save(store)
    files = {k: store.get(k) for k in store.list()}
    assert ClipIndex.load(store).save(store) == generation  # nothing new: nothing written
    assert {k: store.get(k) for k in store.list()} == files
    index.replace_source("b", _clips("b", vectors[:3]))
    assert index.save(store) == generation + 1
    after = {k: store.get(k) for k in store.list()}
    assert {k: after[k] for k in files} == files  # append-only: every earlier object is untouched
    added = sorted(set(after) - set(files))
    assert len(added) == 3 and added[0].startswith("index/generations/")  # the generation, rows, vectors
    assert {k.rsplit("/", 1)[1] for k in added[1:]} == {"rows.parquet", "vectors.npz"}
    assert ClipIndex.load(store).sources == {"a", "b"}


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
    first.save(LocalStore(tmp_path / "1"))
    second.save(LocalStore(tmp_path / "2"))
    assert ClipIndex.load(LocalStore(tmp_path / "1")).rows == ClipIndex.load(LocalStore(tmp_path / "2")).rows


def test_upsert_replaces_windows_by_source_and_start(vectors):
    index = ClipIndex()
    index.upsert(_clips("cam", vectors[:3]))
    index.upsert(_clips("cam", vectors[3:7]))  # windows 0..3: the first three are replaced
    assert len(index) == 4
    assert index.search(siglip=_unit(vectors[4]), k=1)[0].start == 2.0


# ------------------------------------------------------------------------------------------ segments


def _brute_force(reference: dict, query: np.ndarray, k: int) -> list[tuple[str, float]]:
    scored = sorted(((-float(vector @ query), key) for key, vector in reference.items()))
    return [key for _, key in scored[:k]]


def test_interleaved_adds_removes_and_searches_match_brute_force(tmp_path):
    """Small segments sealed and compacted many times over (exact kinds): the same top-k as brute force."""
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((5, 12))
    store = LocalStore(tmp_path)
    settings = IndexConfig(seal_rows=6, background=False)  # each writer below saves once, then is reloaded
    index = ClipIndex(settings=settings)
    reference: dict[tuple[str, float], np.ndarray] = {}
    for step in range(40):
        sid = f"s{step % 7}"
        if step % 9 == 8:
            index.remove_source(sid)
            reference = {key: v for key, v in reference.items() if key[0] != sid}
        else:
            starts = rng.choice(12, size=3, replace=False)
            raw = centres[rng.integers(5, size=3)] + 0.3 * rng.standard_normal((3, 12))
            clips = [_clips(sid, raw[i : i + 1])[0] for i in range(3)]
            for clip, start in zip(clips, starts, strict=True):
                clip.start, clip.end = float(start) * 2, float(start) * 2 + 2
                reference[(sid, clip.start)] = clip.siglip
            index.upsert(clips)
        if step % 3 == 2:
            index.save(store)
            index = ClipIndex.load(store, settings)
        query = _unit(centres[step % 5] + 0.1 * rng.standard_normal(12))
        got = [(hit.source_id, hit.start) for hit in index.search(siglip=query, k=5)]
        assert got == _brute_force(reference, query, 5), step
        assert len(index) == len(reference) and index.sources == {key[0] for key in reference}
    index.save(store)
    newest = read_newest(store)
    assert sum(e.kind != "growing" for e in newest.segments) >= 1  # sealing happened
    assert len(newest.segments) <= 9 + 1  # compaction keeps the segment count bounded


def test_a_removed_source_is_hidden_at_once_and_dropped_at_compaction(tmp_path, vectors):
    store = LocalStore(tmp_path)
    index = ClipIndex(settings=IndexConfig(seal_rows=4))
    index.replace_source("a", _clips("a", vectors[:4]))
    index.replace_source("b", _clips("b", vectors[4:8]))
    index.save(store)  # 8 rows: sealed into one segment
    index.wait_for_maintenance()
    assert [e.rows for e in read_newest(store).segments] == [8]
    index = ClipIndex.load(store, IndexConfig(seal_rows=4))
    index.remove_source("a")
    index.save(store)
    loaded = ClipIndex.load(store)
    assert loaded.sources == {"b"} and all(hit.source_id == "b" for hit in loaded.search(siglip=_unit(vectors[0])))
    assert "a" in read_newest(store).removed
    for number in range(10):  # enough sealed segments to compact the one holding a's rows
        extra = ClipIndex.load(store, IndexConfig(seal_rows=4))
        extra.upsert(_clips(f"c{number}", vectors[:4]))
        extra.save(store)
        extra.wait_for_maintenance()
    newest = read_newest(store)
    assert sum(e.rows for e in newest.segments) == len(ClipIndex.load(store)), "compaction dropped the removed rows"
    assert "a" not in newest.removed, "the removal is forgotten once no segment holds the source's rows"


def test_writers_racing_keep_everything(tmp_path, vectors):
    """Several writers (one index each, as separate `vigil index` runs and a monitor are) commit at once,
    many times over: every source each one wrote is in the index."""
    import threading

    store = LocalStore(tmp_path)
    settings = IndexConfig(seal_rows=10)
    barrier = threading.Barrier(4)
    errors = []

    def writer(number: int) -> None:
        try:
            for round_number in range(6):
                index = ClipIndex.load(store, settings)
                barrier.wait()
                index.replace_source(f"w{number}-{round_number}", _clips(f"w{number}-{round_number}", vectors[:3]))
                index.save(store)
        except Exception as exc:  # reported below: a thread's failure must fail the test
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    index = ClipIndex.load(store)
    assert index.sources == {f"w{n}-{r}" for n in range(4) for r in range(6)}
    assert len(index) == 4 * 6 * 3


def test_an_index_of_an_earlier_release_is_taken_over(tmp_path, vectors):
    """The single-version layout (index/MANIFEST.json naming index/{version}/) is read, then replaced."""
    import json

    import faiss

    store = LocalStore(tmp_path)
    clips = _clips("a", vectors[:5])
    rows = [
        {"source": c.source, "source_id": c.source_id, "start": c.start, "end": c.end, "keyframe_key": c.keyframe_key}
        for c in clips
    ]
    store.put("index/v1/rows.json", json.dumps(rows).encode())
    for tower in ("siglip", "dinov2"):
        flat = faiss.IndexFlatIP(getattr(clips[0], tower).shape[0])
        flat.add(np.stack([getattr(c, tower) for c in clips]))
        store.put(f"index/v1/{tower}.faiss", faiss.serialize_index(flat).tobytes())
    store.put_json(
        "index/MANIFEST.json",
        {
            "version": "v1",
            "kind": "flat",
            "count": 5,
            "sources": 1,
            "models": {"siglip": "siglip-x", "dinov2": "dino-x", "untrained": False},
        },
    )
    index = ClipIndex.load(store)
    assert index.search(siglip=_unit(vectors[2]), k=1)[0].start == 4.0 and index.models == MODELS
    index.save(store)
    assert not store.exists("index/MANIFEST.json") and not list(store.list("index/v1/"))
    assert ClipIndex.load(store).search(siglip=_unit(vectors[2]), k=1)[0].start == 4.0


def test_a_source_filter_searches_only_those_sources_in_every_kind_of_segment(tmp_path, vectors):
    store = LocalStore(tmp_path)
    index = ClipIndex(settings=IndexConfig(seal_rows=11, exact_max=1000, background=False))
    for number, sid in enumerate("abcd"):
        index.replace_source(sid, _clips(sid, vectors[number * 5 : number * 5 + 5]))
        index.save(store)  # a, b and c sealed together at 15 rows, d growing
    index = ClipIndex.load(store)
    assert {e.kind for e in read_newest(store).segments} == {"flat", "growing"}
    for query in vectors:
        hits = index.search(siglip=_unit(query), k=4, where=ClipFilter.of({"b", "d"}))
        reference = {
            (sid, i * 2.0): _unit(v)
            for sid, base in (("b", 5), ("d", 15))
            for i, v in enumerate(vectors[base : base + 5])
        }
        assert [(h.source_id, h.start) for h in hits] == _brute_force(reference, _unit(query), 4)
    assert index.search(siglip=_unit(vectors[0]), where=ClipFilter.of(set())) == []
