"""Segment kinds, filters, background maintenance, orphans and shards of the clip index, against brute force."""

import gc
import time

import faiss
import numpy as np
import pytest

from pipeline.config import IndexConfig
from pipeline.records import ClipEmbedding, ModelIds
from pipeline.search.filters import ClipFilter, FilterColumns, FilterError, TimeRange
from pipeline.search.index import ClipIndex, Shard, best_hits
from pipeline.search.manifest import ORPHAN_AGE, collect_orphans, read_newest
from pipeline.search.segments import Segment, segment_created_at
from pipeline.storage.store import LocalStore

MODELS = ModelIds("siglip-x", "dino-x")
DAY = 1_764_460_800.0  # 2025-11-30T00:00:00Z


def _unit(rows):
    rows = np.atleast_2d(rows).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _clips(source_id, vectors, *, recorded=None, window=2.0):
    """One clip per vector, windows [i w, (i+1) w); `recorded` is the source's recording start (None: unknown)."""
    siglip, dinov2 = _unit(vectors), _unit(vectors[:, ::2])
    return [
        ClipEmbedding(
            f"/v/{source_id}.mp4",
            source_id,
            i * window,
            (i + 1) * window,
            siglip[i],
            dinov2[i],
            i * window,
            f"keyframes/{source_id}/{i}.jpg",
            MODELS,
            recorded_at=None if recorded is None else recorded + i * window,
        )
        for i in range(len(vectors))
    ]


def _reference(clips, where, query_siglip, query_dinov2, k):
    """Brute force: the k best (source, start) by the mean cosine of the towers queried, filtered."""
    scored = []
    for clip in clips:
        if where is not None:
            recorded = np.nan if clip.recorded_at is None else clip.recorded_at
            columns = FilterColumns(
                np.array([clip.source_id], dtype=object), *np.array([[clip.start], [clip.end], [recorded]])
            )
            if not where.mask(columns)[0]:
                continue
        scores = [float(clip.siglip @ query_siglip)]
        if query_dinov2 is not None:
            scores.append(float(clip.dinov2 @ query_dinov2))
        scored.append((-np.mean(scores), clip.source_id, clip.start))
    return [(source_id, start) for _, source_id, start in sorted(scored)[:k]]


@pytest.fixture(scope="module")
def corpus():
    """Four sources around shared centres, two with recording times; 60 clips each."""
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((6, 32))
    sources = {}
    for number, (source_id, recorded) in enumerate(
        (("cam-a", DAY), ("cam-b", DAY + 3600), ("film-c", None), ("film-d", DAY + 7200))
    ):
        raw = centres[rng.integers(6, size=60)] + 0.4 * rng.standard_normal((60, 32))
        sources[source_id] = _clips(source_id, raw + 0.05 * number, recorded=recorded)
    return centres, sources


FILTERS = {
    "none": None,
    "sources": ClipFilter.of({"cam-b", "film-c"}),
    "wall": ClipFilter.of(time=TimeRange(DAY + 30, DAY + 3700)),  # cam-a from 30 s, cam-b's first 100 s
    "media": ClipFilter.of(time=TimeRange(10.0, 40.0)),
    "camera and wall": ClipFilter.of({"cam-b"}, TimeRange(DAY + 3610, None)),
}


def _build(store, corpus, kind):
    """The sources sealed into segments of `kind`, then one more growing segment on top."""
    _, sources = corpus
    settings = IndexConfig(kind=kind, seal_rows=100, background=False)
    index = ClipIndex(settings=settings)
    for source_id in ("cam-a", "cam-b", "film-c"):
        index.upsert(sources[source_id])
        index.save(store)
    index.upsert(sources["film-d"][:30])
    index.save(store)
    return settings, [clip for source_id in ("cam-a", "cam-b", "film-c") for clip in sources[source_id]] + sources[
        "film-d"
    ][:30]


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
@pytest.mark.parametrize("filter_name", list(FILTERS))
def test_every_kind_and_filter_matches_brute_force(tmp_path, corpus, kind, filter_name):
    store = LocalStore(tmp_path)
    settings, clips = _build(store, corpus, kind)
    kinds = {entry.kind for entry in read_newest(store).segments}
    assert kinds == {kind, "growing"}
    index = ClipIndex.load(store, settings)
    where = FILTERS[filter_name]
    centres, _ = corpus
    rng = np.random.default_rng(11)
    for number in range(12):
        query = _unit(centres[number % 6] + 0.3 * rng.standard_normal(32))[0]
        image = _unit(query[::2])[0] if number % 2 else None
        hits = index.search(siglip=query, dinov2=image, k=8, where=where)
        assert [(hit.source_id, hit.start) for hit in hits] == _reference(clips, where, query, image, 8)
        for hit in hits:
            clip = next(c for c in clips if (c.source_id, c.start) == (hit.source_id, hit.start))
            assert hit.recorded_at == clip.recorded_at


def test_a_compressed_kind_keeps_recall_at_a_quarter_of_the_memory(tmp_path, corpus):
    store = LocalStore(tmp_path)
    settings, clips = _build(store, corpus, "ivf_sq8")
    index = ClipIndex.load(store, settings)
    centres, _ = corpus
    rng = np.random.default_rng(5)
    found = 0
    for number in range(20):
        query = _unit(centres[number % 6] + 0.3 * rng.standard_normal(32))[0]
        got = {(hit.source_id, hit.start) for hit in index.search(siglip=query, k=10)}
        found += len(got & set(_reference(clips, None, query, None, 10)))
    assert found / 200 >= 0.9
    sealed = next(s for s in index.segments.values() if s.kind == "ivf_sq8")
    codes = sealed.faiss_indexes["siglip"].code_size
    assert codes == 32  # one byte a dimension, against four for float32


def test_a_strict_filter_on_a_large_ann_segment_still_finds_every_match(tmp_path):
    """2000 rows in one HNSW segment, a filter leaving 40: the answer is exact, not an ANN graph's few."""
    rng = np.random.default_rng(2)
    vectors = rng.standard_normal((2000, 16))
    clips = _clips("big", vectors[:1960]) + _clips("few", vectors[1960:])
    store = LocalStore(tmp_path)
    index = ClipIndex(settings=IndexConfig(kind="hnsw", seal_rows=1, background=False))
    index.upsert(clips)
    index.save(store)
    assert [entry.kind for entry in read_newest(store).segments] == ["hnsw"]
    where = ClipFilter.of({"few"})
    for query in _unit(rng.standard_normal((10, 16))):
        hits = index.search(siglip=query, k=40, where=where)
        assert [(h.source_id, h.start) for h in hits] == _reference(clips, where, query, None, 40)


def test_ivf_scans_8_bit_codes_and_answers_with_exact_scores_and_vectors(tmp_path):
    """An "ivf" segment re-ranks its 8-bit scan by the exact vectors: scores equal the exact cosines (every list
    probed, so that the answer is the exact one)."""
    rng = np.random.default_rng(4)
    clips = _clips("many", rng.standard_normal((3000, 32)))
    store = LocalStore(tmp_path)
    index = ClipIndex(settings=IndexConfig(kind="ivf", seal_rows=1, background=False, ivf_nprobe=1000))
    index.upsert(clips)
    index.save(store)
    sealed = ClipIndex.load(store, index.settings).segments[read_newest(store).segments[0].id]
    assert (
        faiss.downcast_index(sealed.faiss_indexes["siglip"].base_index).code_size == 32
    )  # one byte a dimension in the scan
    rows = np.arange(3000)
    assert np.array_equal(sealed.vectors_of("siglip", rows), np.stack([clip.siglip for clip in clips]))
    for query in _unit(rng.standard_normal((5, 32))):
        hits = index.search(siglip=query, k=10)
        assert [(h.source_id, h.start) for h in hits] == _reference(clips, None, query, None, 10)
        for hit in hits:
            clip = clips[int(hit.start / 2.0)]
            assert hit.score == pytest.approx(float(clip.siglip @ query), abs=1e-6)


def test_ivf_segments_of_earlier_releases_still_load_and_search(tmp_path):
    """Before the 8-bit scan, "ivf" segments were IVF-Flat with a direct map; stores keep them."""
    rng = np.random.default_rng(6)
    clips = _clips("old", rng.standard_normal((400, 32)))
    segment = Segment.from_clips(clips)
    indexes = {}
    for tower, vectors in segment.vectors.items():
        ivf_flat = faiss.IndexIVFFlat(
            faiss.IndexFlatIP(vectors.shape[1]), vectors.shape[1], 8, faiss.METRIC_INNER_PRODUCT
        )
        ivf_flat.train(vectors)
        ivf_flat.add(vectors)
        indexes[tower] = ivf_flat
    old = Segment(segment.id, segment.rows, {}, "ivf", indexes)
    store = LocalStore(tmp_path)
    old.write(store, segment.vectors)
    loaded = Segment.read(store, old.id, "ivf")
    everything = np.ones(len(clips), bool)
    for query in _unit(rng.standard_normal((5, 32))):
        nearest = loaded.nearest("siglip", query, 10, everything, IndexConfig(ivf_nprobe=8))
        assert sorted(clips[i].start for i in nearest) == sorted(s for _, s in _reference(clips, None, query, None, 10))
    assert np.allclose(loaded.vectors_of("siglip", np.arange(5)), segment.vectors["siglip"][:5])


def test_a_loaded_index_keeps_its_rows_beyond_the_cyclic_garbage_collector(tmp_path):
    """Full collections would walk every row object of a large index and stall a search meanwhile."""
    rng = np.random.default_rng(8)
    store = LocalStore(tmp_path)
    index = ClipIndex(settings=IndexConfig(background=False))
    index.upsert(_clips("rows", rng.standard_normal((300, 16))))
    index.save(store)
    gc.unfreeze()
    try:
        loaded = ClipIndex.load(store, index.settings)
        assert gc.get_freeze_count() > len(loaded)  # the rows among the objects frozen
    finally:
        gc.unfreeze()


def test_background_maintenance_keeps_writes_made_while_it_runs(tmp_path, corpus, monkeypatch):
    """A save that makes sealing due returns at once; rows saved while the seal runs stay, and the sealed
    segment is taken up from memory, not read back from the store."""
    _, sources = corpus
    store = LocalStore(tmp_path)
    settings = IndexConfig(kind="hnsw", seal_rows=100)
    index = ClipIndex(settings=settings)
    index.upsert(sources["cam-a"])
    index.save(store)
    release = __import__("threading").Event()
    original_build = Segment.sealed_from

    def slow_seal(rows, vectors, settings):
        release.wait(30)
        return original_build(rows, vectors, settings)

    monkeypatch.setattr(Segment, "sealed_from", staticmethod(slow_seal))
    index.upsert(sources["cam-b"])
    index.save(store)  # 120 growing rows: the seal starts in the background and waits
    assert {entry.kind for entry in read_newest(store).segments} == {"growing"}
    index.upsert(sources["film-c"][:10])
    index.save(store)  # committed while the seal is stuck
    reads = []
    original_read = Segment.read.__func__

    def counted_read(cls, store, segment_id, kind, **options):
        reads.append(kind)
        return original_read(cls, store, segment_id, kind, **options)

    monkeypatch.setattr(Segment, "read", classmethod(counted_read))
    release.set()
    index.wait_for_maintenance()
    newest = read_newest(store)
    assert index.manifest.generation == newest.generation
    assert sorted(entry.kind for entry in newest.segments) == ["growing", "hnsw"]
    assert "hnsw" not in reads  # the sealed segment came from memory
    monkeypatch.undo()
    expected = sources["cam-a"] + sources["cam-b"] + sources["film-c"][:10]
    for loaded in (index, ClipIndex.load(store, settings)):
        assert len(loaded) == len(expected)
        query = expected[70].siglip
        assert [(h.source_id, h.start) for h in loaded.search(siglip=query, k=5)] == _reference(
            expected, None, query, None, 5
        )


def test_segments_no_generation_names_are_collected_once_old(tmp_path, corpus):
    _, sources = corpus
    store = LocalStore(tmp_path)
    index = ClipIndex(settings=IndexConfig(background=False))
    index.upsert(sources["cam-a"][:5])
    index.save(store)
    orphan = Segment.from_clips(sources["cam-b"][:3])  # a writer that died before committing it
    orphan.write(store)
    created = segment_created_at(orphan.id)
    assert created == pytest.approx(time.time(), abs=5)
    assert collect_orphans(store, now=created + ORPHAN_AGE / 2) == []  # could be a live writer's: kept
    assert collect_orphans(store, now=created + ORPHAN_AGE + 1) == [orphan.id]
    assert not list(store.list(orphan.prefix))
    assert len(ClipIndex.load(store)) == 5  # the named segment stays


def test_shards_together_search_like_the_whole_index(tmp_path, corpus):
    store = LocalStore(tmp_path)
    settings, _ = _build(store, corpus, "flat")
    whole = ClipIndex.load(store, settings)
    shards = [ClipIndex.load(store, settings, shard=Shard(number, 3)) for number in range(3)]
    assert sum(s.has_data for shard in shards for s in shard.segments.values()) == len(whole.segments)
    centres, _ = corpus
    for number, where in enumerate(FILTERS.values()):
        query = _unit(centres[number])[0]
        merged = best_hits([hit for shard in shards for hit in shard.search(siglip=query, k=7, where=where)], 7)
        assert merged == whole.search(siglip=query, k=7, where=where)
    with pytest.raises(RuntimeError, match="only searches"):
        shards[0].save(store)


def test_time_ranges_parse_iso_or_seconds_and_refuse_mixtures():
    assert TimeRange.parse("2025-11-30T00:00:00Z", "2025-11-30T01:00") == TimeRange(DAY, DAY + 3600, "wall")
    assert TimeRange.parse("90", None) == TimeRange(90.0, None, "media")
    assert TimeRange.parse(None, None) is None
    for start, end in (("90", "2025-11-30T01:00"), ("yesterday", None), ("-3", None), ("50", "40")):
        with pytest.raises(FilterError):
            TimeRange.parse(start, end)
