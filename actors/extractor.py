"""Extractor actor: holds the encoders (on a GPU when the cluster has one) and embeds frame batches.

The monitor's batches (`extract_sharded`) come as the frames of one or more decoder polls, which Ray hands over
from the decoders' nodes (the driver holds them only by reference), and leave as one batch per analyzer shard.
Extraction has no state, so a call lost with its actor is run again on the restarted one.
"""

from __future__ import annotations

import os

import ray

from pipeline.live.analyzer import shard_batches
from pipeline.models import load_encoders
from pipeline.records import Frame, FrameBatch, ModelIds
from pipeline.search.embed import extract_features


@ray.remote(num_cpus=1, max_restarts=2, max_task_retries=2)
class ExtractorActor:
    def __init__(self, models: str, *, device: str, precision: str, batch_size: int, threads: int | None = None):
        import torch

        # Ray caps an actor's OpenMP threads at its num_cpus (1). The models are the stage that needs the
        # node's cores (the other stages mostly wait on them), so they get `threads` of them, all by default.
        cores = len(os.sched_getaffinity(0))
        torch.set_num_threads(min(threads or cores, cores))
        self.encoders = load_encoders(models, device=device, precision=precision, batch_size=batch_size)

    def model_ids(self) -> ModelIds:
        return self.encoders.ids

    def extract(self, batch: FrameBatch) -> FrameBatch:
        return extract_features(batch, self.encoders)

    def extract_sharded(self, shards: int, *polls: list[Frame]) -> FrameBatch | tuple[FrameBatch, ...]:
        """The frames of `polls`, in order, as one extracted batch split by the shards of their cameras: one batch
        per analyzer shard, an empty one for a shard none of whose cameras is there. Called with
        `num_returns=shards`: one return per shard, or the one batch itself (a single return is not a sequence)."""
        batches = shard_batches(self.extract(FrameBatch([frame for poll in polls for frame in poll])), shards)
        return tuple(batches) if shards > 1 else batches[0]
