"""Tracker actor (`track.live`): live tracking and the standing queries on tracks (pipeline.live.tracker) for the
cameras of one shard, fed the same frames as the shard's analyzer, beside it.

Its state is sections of its shard's checkpoint state, lost with it, so its calls are guarded like the
analyzer's (actors/call_order.py). It holds no model: the detections' crops go to an extractor actor's DINOv2,
a batch's in one call (`ExtractorAppearance`); a call lost with that extractor fails the batch, and the monitor
replays it from the checkpoints as for any lost stage.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import ray

from actors.call_order import CallOrder
from pipeline.config import VigilConfig
from pipeline.live.analyzer import StreamOutput
from pipeline.live.logs import configure_logging
from pipeline.live.metrics import MonitorMetrics, TimedOutput
from pipeline.live.queries import load_queries
from pipeline.live.tracker import StreamTracker
from pipeline.records import FrameBatch, ModelIds
from pipeline.storage.store import open_configured_store

log = logging.getLogger(__name__)


class ExtractorAppearance:
    """A tracker actor's crop encoder: an extractor actor's DINOv2 (`ExtractorActor.appearance`), so that the
    crops run where the frames do, on its device, and no tracker holds a model of its own."""

    def __init__(self, extractor, models: ModelIds):
        self.extractor = extractor
        self.model_id, self.untrained = models.dinov2, models.untrained
        self.dim = ray.get(extractor.appearance_dim.remote())

    def embed_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return ray.get(self.extractor.appearance.remote(list(images)))


@ray.remote(num_cpus=0, max_restarts=2, max_task_retries=0)
class TrackerActor:
    def __init__(self, config: VigilConfig, models: ModelIds, extractor):
        """`models`: the analyzers' (`StreamAnalyzerActor.models`), which the alerts of queries on tracks carry;
        `extractor`: the extractor actor whose DINOv2 embeds the detections' crops (`track.appearance`)."""
        configure_logging("tracker")
        self.store = open_configured_store(config)
        appearance = ExtractorAppearance(extractor, models) if config.track.appearance else None
        self.tracker = StreamTracker.from_config(config, models, encoder=appearance)
        self.order = CallOrder("tracker")
        self.metrics = MonitorMetrics()

    def load_state_dict(self, state: dict | None) -> None:
        """Go on from a shard's checkpoint state (None: there is none yet, every camera starts afresh)."""
        if state is None:
            self.tracker.forget_cameras()
        else:
            self.tracker.load_state_dict(state)
        self.order.load()
        log.info("state loaded: %d camera(s)", len(state.get("tracking", {})) if state else 0)

    def refresh_queries(self, step: int) -> StreamOutput:
        self.order.check_step(step)
        return self.tracker.sync_queries(load_queries(self.store))

    def process(self, step: int, batch: FrameBatch) -> StreamOutput:
        self.order.check_step(step)
        out = self.tracker.process(batch)
        self.metrics.frames("tracker", len(batch.frames))
        return TimedOutput.of(out, batch.frames) if out.alerts else out

    def flush(self, step: int) -> StreamOutput:
        """The end of the streams: nothing is open (a track alert is made at its event)."""
        self.order.check_step(step)
        return StreamOutput()

    def state_dict(self) -> dict:
        self.order.check_loaded()
        return self.tracker.state_dict()
