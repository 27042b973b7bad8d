"""Extractor actor: holds the encoders (on a GPU when the cluster has one) and embeds frame batches."""

from __future__ import annotations

import os

import ray

from pipeline.models import load_encoders
from pipeline.records import FrameBatch, ModelIds
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
