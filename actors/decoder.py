"""Decoder actor: one video file in, a stream of sampled, still-marked frame batches out."""

from __future__ import annotations

import ray

from pipeline.config import VigilConfig
from pipeline.embed import sampled_batches


@ray.remote(num_cpus=1, max_restarts=2)
class DecoderActor:
    def __init__(self, config: VigilConfig):
        self.config = config

    def batches(self, path: str):
        yield from sampled_batches(path, self.config)
