"""Sink actor: makes stream outputs durable in the store and the index, publishes alerts, keeps checkpoints."""

from __future__ import annotations

import ray

from pipeline.config import VigilConfig
from pipeline.live.analyzer import StreamOutput
from pipeline.live.sink import AlertPublisher, Sink
from pipeline.search.index import ClipIndex
from pipeline.storage.store import open_configured_store


@ray.remote(num_cpus=0, max_restarts=2)
class SinkActor:
    def __init__(self, config: VigilConfig, publish_alerts: bool):
        store = open_configured_store(config)
        index = ClipIndex.load(store, config.index)
        publish = None
        if publish_alerts:
            publish = AlertPublisher(config.kafka, config.kafka.topics.alerts)
        self.sink = Sink(store, index, publish)

    def write(self, out: StreamOutput) -> int:
        self.sink.write(out)
        return len(out.alerts)

    def checkpoint(self, name: str, analyzer: dict, offsets: dict[str, int], *writes: int) -> None:
        """`analyzer` (the analyzer's state_dict call) and `writes` (the write calls the checkpoint covers)
        are arguments of their own so that Ray resolves them first: a failed one fails the checkpoint."""
        self.sink.checkpoint(name, {"analyzer": analyzer, "offsets": offsets})

    def load_checkpoint(self, name: str) -> dict | None:
        return self.sink.load_checkpoint(name)
