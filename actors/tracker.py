"""Tracker actor (`track.live`): live tracking and the standing queries on tracks (pipeline.live.tracker) for the
cameras of one shard, fed the same frames as the shard's analyzer, beside it.

Its state is sections of its shard's checkpoint state, lost with it, so its calls are guarded like the
analyzer's (actors/call_order.py).
"""

from __future__ import annotations

import logging

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


@ray.remote(num_cpus=0, max_restarts=2, max_task_retries=0)
class TrackerActor:
    def __init__(self, config: VigilConfig, models: ModelIds):
        """`models`: the analyzers' (`StreamAnalyzerActor.models`), which the alerts of queries on tracks carry."""
        configure_logging("tracker")
        self.store = open_configured_store(config)
        self.tracker = StreamTracker.from_config(config, models)
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
