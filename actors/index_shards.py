"""The clip index searched by N Ray actors (`index.shards`), with the same answers as one index in the process.

Each shard actor (`IndexShardActor`) loads the rows of every segment and the vectors of its share
(`pipeline.search.index.Shard`); `ShardedIndex` asks every shard for its best `k` and merges them with
`best_hits`, whose total order makes the merge equal the single index's best `k`. That holds only when every
shard answers from one generation: a search names the generation the shards were last brought to, and a
shard on another one refuses, after which every shard follows the newest and the search is asked once more.
That happens after a shard is lost: Ray restarts it, it loads the newest generation, and Ray sends it the
calls the lost one did not answer. Ray is imported when the actors are made, so a search without shards does
not load it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.config import IndexConfig, VigilConfig
from pipeline.records import ModelIds, SearchHit
from pipeline.search.filters import ClipFilter
from pipeline.search.index import ClipIndex, Shard, best_hits
from pipeline.storage.store import ObjectStore


class ShardGenerationError(RuntimeError):
    """A shard holds another generation of the index than the one a search was asked of."""


@dataclass(frozen=True)
class ShardStats:
    """What one shard holds."""

    generation: int
    rows: int  # live rows of the whole index: every shard holds the rows of every segment
    segments: int  # the segments whose vectors the shard holds (the ones it searches)
    models: ModelIds | None


class IndexShardActor:
    """One shard of the index, run as a Ray actor by `ShardedIndex`."""

    def __init__(self, store: ObjectStore, settings: IndexConfig, shard: Shard):
        self.store = store
        self.index = ClipIndex.load(store, settings, shard=shard)

    def search(
        self,
        generation: int,
        *,
        siglip: np.ndarray | None = None,
        dinov2: np.ndarray | None = None,
        k: int = 10,
        where: ClipFilter | None = None,
    ) -> list[SearchHit]:
        """The best `k` hits of this shard's segments, in the index at `generation`."""
        if self.index.manifest.generation != generation:
            raise ShardGenerationError(
                f"index shard {self.index.shard.number} holds generation {self.index.manifest.generation}, "
                f"the search was asked of {generation}"
            )
        return self.index.search(siglip=siglip, dinov2=dinov2, k=k, where=where)

    def refresh(self) -> int:
        """Follow the newest committed generation; that generation."""
        self.index.refresh(self.store)
        return self.index.manifest.generation

    def stats(self) -> ShardStats:
        index = self.index
        segments = sum(segment.has_data for segment in index.segments.values())
        return ShardStats(index.manifest.generation, len(index), segments, index.models)

    def sources(self) -> set[str]:
        return self.index.sources


class ShardedIndex:
    """The index spread over `count` shard actors: `search`, `models`, `len`, `sources` and `check_models`
    as `ClipIndex` has them, so `find_moments` takes either.

    Shards are spread over the cluster's nodes and restarted whenever lost (they reload from the store). Ray
    sends a restarted shard the calls its predecessor did not answer: a call made while a shard restarts
    would otherwise fail at once (ActorUnavailableError) instead of waiting for it. A search is idempotent, so
    a repeated call does no harm; the retries are bounded in case a call is what kills the shard."""

    # The whole index's rule, which reads only `models` and `len`.
    check_models = ClipIndex.check_models

    def __init__(self, store: ObjectStore, settings: IndexConfig, count: int, *, num_cpus: float = 0.5):
        import ray

        self._ray = ray
        actor = ray.remote(IndexShardActor).options(
            num_cpus=num_cpus, scheduling_strategy="SPREAD", max_restarts=-1, max_task_retries=2
        )
        self.actors = [actor.remote(store, settings, Shard(number, count)) for number in range(count)]
        self.generation = -1
        self.models: ModelIds | None = None
        self._rows = 0
        self.refresh()

    def __len__(self) -> int:
        return self._rows

    @property
    def sources(self) -> set[str]:
        return self._ray.get(self.actors[0].sources.remote())

    def refresh(self) -> int:
        """Every shard follows the newest committed generation; the generation they then agree on."""
        generations: set[int] = set()
        while len(generations) != 1:  # a writer committed while the shards refreshed: once more
            generations = set(self._ray.get([actor.refresh.remote() for actor in self.actors]))
        (self.generation,) = generations
        whole = self._ray.get(self.actors[0].stats.remote())
        self.models, self._rows = whole.models, whole.rows
        return self.generation

    def stats(self) -> list[ShardStats]:
        return self._ray.get([actor.stats.remote() for actor in self.actors])

    def search(
        self,
        *,
        siglip: np.ndarray | None = None,
        dinov2: np.ndarray | None = None,
        k: int = 10,
        where: ClipFilter | None = None,
    ) -> list[SearchHit]:
        """As `ClipIndex.search`, the same hits in the same order with the same scores."""
        query = {"siglip": siglip, "dinov2": dinov2, "k": k, "where": where}
        try:
            return self._fan_out(query)
        except ShardGenerationError:
            # A lost shard came back with a newer generation than the others: they follow it now.
            self.refresh()
            return self._fan_out(query)

    def _fan_out(self, query: dict) -> list[SearchHit]:
        calls = [actor.search.remote(self.generation, **query) for actor in self.actors]
        return best_hits([hit for hits in self._ray.get(calls) for hit in hits], query["k"])

    def close(self) -> None:
        """End the shard actors (they end with this process anyway: it owns them)."""
        for actor in self.actors:
            self._ray.kill(actor)

    def __enter__(self) -> ShardedIndex:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def open_search_index(config: VigilConfig, store: ObjectStore) -> ClipIndex | ShardedIndex:
    """The index to search: in this process, or over `index.shards` actors (joining or starting Ray)."""
    if config.index.shards == 1:
        return ClipIndex.load(store, config.index)
    from actors.stages import start_ray

    start_ray()
    return ShardedIndex(store, config.index, config.index.shards)
