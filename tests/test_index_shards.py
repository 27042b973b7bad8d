"""The index searched by shard actors on Ray (`actors.index_shards`) answers exactly as one index in the process."""

import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest

from actors.index_shards import ShardedIndex, open_search_index
from pipeline.config import IndexConfig, load_config
from pipeline.records import ClipEmbedding, ModelIds
from pipeline.search.filters import ClipFilter, TimeRange
from pipeline.search.index import ClipIndex, IndexMismatchError
from pipeline.search.manifest import read_newest
from pipeline.search.moments import find_moments
from pipeline.storage.store import LocalStore

MODELS = ModelIds("siglip-x", "dino-x")
DAY = 1_764_460_800.0  # 2025-11-30T00:00:00Z
CENTRES = np.random.default_rng(3).standard_normal((6, 32))
SHARDS = 3
# Light enough that the module's shards and one test's own fit in the session Ray's three CPU slots.
NUM_CPUS = 0.25


def _unit(rows):
    rows = np.atleast_2d(rows).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _clips(source_id, count, *, seed, recorded=None, first=0):
    """`count` clips around the shared centres, windows [2 i, 2 i + 2) from window `first`; `recorded` is the
    source's recording start (None: unknown)."""
    rng = np.random.default_rng(seed)
    raw = CENTRES[rng.integers(len(CENTRES), size=count)] + 0.4 * rng.standard_normal((count, 32))
    siglip, dinov2 = _unit(raw), _unit(raw[:, ::2])
    clips = []
    for i, number in enumerate(range(first, first + count)):
        start = 2.0 * number
        clips.append(
            ClipEmbedding(
                f"/v/{source_id}.mp4",
                source_id,
                start,
                start + 2.0,
                siglip[i],
                dinov2[i],
                start,
                f"keyframes/{source_id}/{number}.jpg",
                MODELS,
                recorded_at=None if recorded is None else recorded + start,
            )
        )
    return clips


def _write(store, kind, seal_rows, *changes):
    """One writer: load, apply `changes` (clips to upsert, or a source id to remove), save."""
    index = ClipIndex.load(store, IndexConfig(kind=kind, seal_rows=seal_rows, background=False))
    for change in changes:
        if isinstance(change, str):
            index.remove_source(change)
        else:
            index.upsert(change)
    return index.save(store)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """An index of sealed flat, HNSW and IVF segments (with rows replaced and a source removed since) and three
    growing ones; one IVF segment is large enough that a loose filter searches it through FAISS."""
    path = tmp_path_factory.mktemp("sharded-index")
    store = LocalStore(path)
    _write(store, "flat", 100, _clips("cam-a", 60, seed=1, recorded=DAY))
    _write(store, "flat", 100, _clips("cam-b", 60, seed=2, recorded=DAY + 3600))  # 120 rows: sealed flat
    # cam-a's first 20 windows anew (and 5 more later): their rows in the flat segment are replaced.
    _write(store, "hnsw", 100, _clips("film-c", 80, seed=3), _clips("cam-a", 20, seed=4, recorded=DAY))
    _write(store, "ivf", 8400, _clips("film-big", 8300, seed=5), _clips("cam-d", 100, seed=6, recorded=DAY + 7200))
    _write(store, "auto", 10**6, "cam-b", _clips("film-e", 30, seed=7))
    _write(
        store,
        "auto",
        10**6,
        _clips("cam-f", 25, seed=8, recorded=DAY + 60),
        _clips("cam-a", 5, seed=9, recorded=DAY, first=40),
    )
    kinds = sorted(entry.kind for entry in read_newest(store).segments)
    assert kinds == ["flat", "growing", "growing", "growing", "hnsw", "ivf"]
    return path


@pytest.fixture(scope="module")
def sharded(built, ray_local):
    with ShardedIndex(LocalStore(built), IndexConfig(), SHARDS, num_cpus=NUM_CPUS) as index:
        yield index


@pytest.fixture
def own_store(built, tmp_path):
    """A copy of the built index that a test may write to."""
    shutil.copytree(built, tmp_path / "store")
    return LocalStore(tmp_path / "store")


EVERY_SOURCE_BUT_CAM_D = {"cam-a", "film-c", "film-big", "film-e", "cam-f"}
FILTERS = [
    None,
    ClipFilter.of({"cam-a", "film-c"}),
    ClipFilter.of(EVERY_SOURCE_BUT_CAM_D),  # most of the IVF segment: a FAISS search with a row selector
    ClipFilter.of({"cam-b"}),  # removed: nothing
    ClipFilter.of(time=TimeRange(DAY + 30, DAY + 7300)),
    ClipFilter.of(time=TimeRange(10.0, 40.0, "media")),
    ClipFilter.of({"cam-d", "cam-f"}, TimeRange(DAY + 100, None)),
]


def _queries(count, seed):
    """Text-like (SigLIP2 only) and image-like (both towers) queries near the centres, with assorted k."""
    rng = np.random.default_rng(seed)
    for number in range(count):
        siglip = _unit(CENTRES[number % len(CENTRES)] + 0.5 * rng.standard_normal(32))[0]
        dinov2 = _unit(siglip[::2] + 0.1 * rng.standard_normal(16))[0] if number % 2 else None
        yield {"siglip": siglip, "dinov2": dinov2, "k": int(rng.choice([1, 7, 64]))}


def test_shards_search_exactly_as_one_index(built, sharded):
    whole = ClipIndex.load(LocalStore(built))
    stats = sharded.stats()
    assert {shard.generation for shard in stats} == {whole.manifest.generation}
    assert {shard.rows for shard in stats} == {len(whole)} and len(sharded) == len(whole)
    assert sum(shard.segments for shard in stats) == len(whole.segments)  # each segment searched once
    assert sharded.models == whole.models and sharded.sources == whole.sources
    searches = 0
    for number, where in enumerate(FILTERS):
        for query in _queries(20, seed=number):
            expected = whole.search(**query, where=where)
            assert sharded.search(**query, where=where) == expected, (where, query["k"])
            searches += bool(expected)
    assert searches >= 6 * 20  # every filter but the removed source's finds rows


def test_find_moments_takes_the_sharded_index(built, sharded):
    whole = ClipIndex.load(LocalStore(built))
    query = next(_queries(1, seed=1))["siglip"]

    def encoders(ids):
        """Stand-ins for the models: every text and image embeds as `query`."""
        return SimpleNamespace(
            ids=ids,
            siglip=SimpleNamespace(embed_texts=lambda texts: query[None]),
            embed_images=lambda images: (query[None], _unit(query[::2])),
        )

    for search in ({"text": "a gate"}, {"image": np.zeros((8, 8, 3), np.uint8)}):
        expected = find_moments(whole, encoders(MODELS), **search, top_k=5)
        assert expected and find_moments(sharded, encoders(MODELS), **search, top_k=5) == expected
    with pytest.raises(IndexMismatchError):
        find_moments(sharded, encoders(ModelIds("other", "dino-x")), text="a gate")


def test_refresh_follows_another_writer(own_store, ray_local):
    with ShardedIndex(own_store, IndexConfig(), SHARDS, num_cpus=NUM_CPUS) as sharded:
        before = sharded.generation
        newest = _write(own_store, "auto", 10**6, _clips("late", 40, seed=10), "film-e")
        late = ClipFilter.of({"late"})
        query = next(_queries(1, seed=2))
        assert sharded.search(**query, where=late) == []  # not seen before a refresh
        assert sharded.refresh() == newest > before
        whole = ClipIndex.load(own_store)
        assert len(sharded) == len(whole) and sharded.sources == whole.sources
        for where in (None, late, ClipFilter.of({"film-e"})):
            for query in _queries(6, seed=3):
                assert sharded.search(**query, where=where) == whole.search(**query, where=where)


def test_a_lost_shard_is_restarted_and_searches_stay_on_one_generation(own_store, ray_local, monkeypatch):
    with ShardedIndex(own_store, IndexConfig(), SHARDS, num_cpus=NUM_CPUS) as sharded:
        refreshes = []
        refresh = sharded.refresh

        def counted_refresh() -> int:
            refreshes.append(refresh())
            return refreshes[-1]

        monkeypatch.setattr(sharded, "refresh", counted_refresh)
        queries = list(_queries(6, seed=4))

        # Lost during a search: the call queued on the shard is answered by the restarted one, on the same
        # generation as the others.
        lost = sharded.actors[1]
        first_process = ray_local.get(lost.__ray_call__.remote(lambda actor: os.getpid()))
        lost.__ray_call__.remote(lambda actor: time.sleep(3))  # the search waits behind it
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(sharded.search, **queries[0])
            time.sleep(1)
            ray_local.kill(lost, no_restart=False)
            whole = ClipIndex.load(own_store)
            assert answer.result(timeout=120) == whole.search(**queries[0])
        assert refreshes == [] and ray_local.get(lost.__ray_call__.remote(lambda actor: os.getpid())) != first_process

        # Lost between searches after another writer committed: restarted, the shard loads the newer generation
        # and refuses the search of the older one; the others follow it and the search is asked again.
        newest = _write(own_store, "auto", 10**6, _clips("late", 40, seed=11))
        ray_local.kill(sharded.actors[2], no_restart=False)
        _wait_for_generation(ray_local, sharded.actors[2], newest)
        assert [shard.generation for shard in sharded.stats()] == [whole.manifest.generation] * 2 + [newest]
        whole = ClipIndex.load(own_store)
        for query in queries:
            assert sharded.search(**query) == whole.search(**query)
        assert refreshes == [newest] and {shard.generation for shard in sharded.stats()} == {newest}


def _wait_for_generation(ray, actor, generation: int) -> None:
    """Until the (restarting) shard actor answers from `generation`."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if ray.get(actor.stats.remote()).generation == generation:  # Ray holds the call while it restarts
            return
        time.sleep(0.2)
    raise AssertionError(f"the shard did not come back with generation {generation}")


def test_open_search_index_is_one_index_or_the_shards(built, ray_local):
    config = load_config(None, {"store": str(built)})
    assert isinstance(open_search_index(config, LocalStore(built)), ClipIndex)
    config = load_config(None, {"store": str(built), "index.shards": 2})
    with open_search_index(config, LocalStore(built)) as sharded:
        assert isinstance(sharded, ShardedIndex) and len(sharded.actors) == 2
        query = next(_queries(1, seed=5))
        assert sharded.search(**query) == ClipIndex.load(LocalStore(built)).search(**query)
