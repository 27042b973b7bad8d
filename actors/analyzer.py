"""Stream analyzer actor: clip windows and standing queries (pipeline.live.analyzer) for the cameras it is fed.

The monitor runs one per shard (`monitor.shards`), each fed the frames of its cameras only. Its state is lost
with it, so its calls are guarded (actors/call_order.py). An output with open alerts carries the wall clock of the
frames that opened them (`TimedOutput`), from which the sink measures frame-to-alert latency.
"""

from __future__ import annotations

import logging

import ray

from actors.call_order import CallOrder
from pipeline.config import VigilConfig
from pipeline.live.analyzer import StreamAnalyzer, StreamOutput
from pipeline.live.logs import configure_logging
from pipeline.live.match import Matcher
from pipeline.live.metrics import MonitorMetrics, TimedOutput
from pipeline.live.queries import load_queries
from pipeline.models import load_encoders
from pipeline.records import FrameBatch
from pipeline.storage.store import open_configured_store

log = logging.getLogger(__name__)


@ray.remote(num_cpus=0, max_restarts=2, max_task_retries=0)
class StreamAnalyzerActor:
    def __init__(self, config: VigilConfig):
        configure_logging("analyzer")
        # The text tower encodes queries added while the monitor runs.
        encoders = load_encoders(config.models, device="cpu", precision=config.precision, batch_size=config.batch_size)
        self.store = open_configured_store(config)
        self.analyzer = StreamAnalyzer(
            Matcher.from_encoders(encoders, settings=config.match),
            window=config.embed.window,
            models=encoders.ids,
            tracked=config.track.live,
        )
        self.order = CallOrder("analyzer")
        self.metrics = MonitorMetrics()

    def load_state_dict(self, state: dict | None) -> None:
        """Go on from a checkpoint's state (None: there is none yet, every camera starts afresh)."""
        if state is None:
            self.analyzer.forget_cameras()
        else:
            self.analyzer.load_state_dict(state)
        self.order.load()
        log.info("state loaded: %d camera(s)", len(state["last_pts"]) if state else 0)

    def refresh_queries(self, step: int) -> StreamOutput:
        """Follow the store's queries/ folder; the alerts of events closed by a removed query come back."""
        return self._step(step).sync_queries(load_queries(self.store))

    def process(self, step: int, batch: FrameBatch) -> StreamOutput:
        out = self._step(step).process(batch)
        self.metrics.frames("analyzer", len(batch.frames))
        return TimedOutput.of(out, batch.frames) if out.alerts else out

    def flush(self, step: int) -> StreamOutput:
        return self._step(step).flush()

    def state_dict(self) -> dict:
        self.order.check_loaded()
        return self.analyzer.state_dict()

    def models(self):
        """The models of the frames' features (`ModelIds`): the tracker's alerts carry them too."""
        return self.analyzer.models

    def _step(self, step: int) -> StreamAnalyzer:
        self.order.check_step(step)
        return self.analyzer
