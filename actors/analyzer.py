"""Stream analyzer actor: clip windows and standing queries (pipeline.live.analyzer) for the cameras it is fed."""

from __future__ import annotations

import ray

from pipeline.config import VigilConfig
from pipeline.live.analyzer import StreamAnalyzer, StreamOutput
from pipeline.live.match import Matcher
from pipeline.live.queries import load_queries
from pipeline.models import load_encoders
from pipeline.records import FrameBatch
from pipeline.storage.store import open_configured_store


@ray.remote(num_cpus=0, max_restarts=2)
class StreamAnalyzerActor:
    def __init__(self, config: VigilConfig):
        # The text tower encodes queries added while the monitor runs.
        encoders = load_encoders(config.models, device="cpu", precision=config.precision, batch_size=config.batch_size)
        self.store = open_configured_store(config)
        self.analyzer = StreamAnalyzer(
            Matcher.from_encoders(encoders, settings=config.match), window=config.embed.window, models=encoders.ids
        )

    def refresh_queries(self) -> StreamOutput:
        """Follow the store's queries/ folder; the alerts of events closed by a removed query come back."""
        return self.analyzer.sync_queries(load_queries(self.store))

    def process(self, batch: FrameBatch) -> StreamOutput:
        return self.analyzer.process(batch)

    def flush(self) -> StreamOutput:
        return self.analyzer.flush()

    def state_dict(self) -> dict:
        return self.analyzer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.analyzer.load_state_dict(state)
