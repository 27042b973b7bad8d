"""Summarizer actor: rolling summaries per camera, every `monitor.summary_every` seconds of media time."""

from __future__ import annotations

import ray

from pipeline.config import VigilConfig
from pipeline.storage.store import open_configured_store
from pipeline.summaries import RollingSummaries


@ray.remote(num_cpus=0, max_restarts=2)
class SummarizerActor:
    def __init__(self, config: VigilConfig):
        # The text tower is loaded only to embed the concept vocabulary once per model (then cached in the
        # store), on the CPU: the extractor holds the GPU.
        cpu = config.model_copy(update={"device": "cpu"})
        self.rolling = RollingSummaries(
            open_configured_store(config), every=config.monitor.summary_every, window=config.embed.window, config=cpu
        )

    def advance(self, latest_pts: dict[str, float], ended: bool) -> int:
        """Summarize the periods complete in the store; returns how many summaries were written."""
        return len(self.rolling.advance(latest_pts, ended=ended))
