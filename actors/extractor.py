"""Extractor actor: holds the encoders (on a GPU when the cluster has one) and embeds frame batches.

The monitor's batches (`extract_sharded`) come as the frames of one or more decoder polls, which Ray hands over
from the decoders' nodes (the driver holds them only by reference), and leave as one batch per analyzer shard.
A tracker actor's detection crops (`appearance`) run on its DINOv2 too, between the batches.
Extraction has no state, so a call lost with its actor is run again on the restarted one. Each monitor batch is
counted and its size observed (pipeline/live/metrics.py).

With `null` (`monitor.extractor: null`, benchmarking the data plane only) no model is loaded or run:
`pipeline.models.null_encoders.NullEncoders` stands in for the encoders.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import ray

from pipeline.live.analyzer import shard_batches
from pipeline.live.logs import configure_logging
from pipeline.live.metrics import MonitorMetrics
from pipeline.models import load_encoders
from pipeline.models.null_encoders import NullEncoders
from pipeline.records import Frame, FrameBatch, ModelIds
from pipeline.search.embed import extract_features

log = logging.getLogger(__name__)


@ray.remote(num_cpus=1, max_restarts=2, max_task_retries=2)
class ExtractorActor:
    def __init__(
        self,
        models: str,
        *,
        device: str,
        precision: str,
        batch_size: int,
        threads: int | None = None,
        null: bool = False,
    ):
        import torch

        configure_logging("extractor")
        if null:
            self.encoders = NullEncoders.from_models(models)
            self.metrics = MonitorMetrics()
            log.info("null extractor (no model; benchmarking the data plane only) beside %s", models)
            return
        # Ray caps an actor's OpenMP threads at its num_cpus (1). The models are the stage that needs the
        # node's cores (the other stages mostly wait on them), so they get `threads` of them, all by default.
        cores = len(os.sched_getaffinity(0))
        torch.set_num_threads(min(threads or cores, cores))
        self.encoders = load_encoders(models, device=device, precision=precision, batch_size=batch_size)
        self.metrics = MonitorMetrics()
        log.info("encoders %s on %s, %d threads", models, device, torch.get_num_threads())

    def model_ids(self) -> ModelIds:
        return self.encoders.ids

    def precisions(self) -> dict[str, str]:
        """The precision each encoder runs at, for the records; none with the null extractor (no model runs)."""
        return {} if isinstance(self.encoders, NullEncoders) else self.encoders.precisions

    def extract(self, batch: FrameBatch) -> FrameBatch:
        return extract_features(batch, self.encoders)

    def appearance_dim(self) -> int:
        return self.encoders.appearance_dim

    def appearance(self, crops: list[np.ndarray]) -> np.ndarray:
        """The DINOv2 vectors of a tracker actor's detection crops (a batch's, in one call): trackers hold no
        model of their own, and the crops run where the frames do (a GPU when the cluster has one)."""
        return self.encoders.appearance(crops)

    def extract_sharded(self, shards: int, *polls: list[Frame]) -> FrameBatch | tuple[FrameBatch, ...]:
        """The frames of `polls`, in order, as one extracted batch split by the shards of their cameras: one batch
        per analyzer shard, an empty one for a shard none of whose cameras is there. Called with
        `num_returns=shards`: one return per shard, or the one batch itself (a single return is not a sequence)."""
        batch = FrameBatch([frame for poll in polls for frame in poll])
        batches = shard_batches(self.extract(batch), shards)
        self.metrics.batch("extractor", len(batch.frames))
        return tuple(batches) if shards > 1 else batches[0]
