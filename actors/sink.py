"""Sink actor: makes stream outputs durable in the store and the index, publishes alerts, keeps checkpoints.

The monitor runs one per analyzer shard, each with a clip index writer of its own (concurrent writers are
safe: ARCHITECTURE.md, the clip index). A restarted sink has lost the clips it wrote but has not indexed yet,
so it refuses writes and checkpoints (`StateLost`) until the monitor, having reloaded the analyzers, starts
it: a checkpoint stored there would claim clips no index holds.

Each alert update it stores is logged, counted and, for one that opens an event, timed from the wall clock of
the frame that opened it (pipeline/live/metrics.py); its last alert per camera goes into the monitor's status
(`look`).
"""

from __future__ import annotations

import logging
import time

import ray

from pipeline.config import VigilConfig
from pipeline.live.analyzer import StateLost, StreamOutput
from pipeline.live.logs import configure_logging
from pipeline.live.metrics import MonitorMetrics, TimedOutput
from pipeline.live.sink import AlertPublisher, ShardCheckpoint, Sink
from pipeline.live.status import AlertTally, LastAlert
from pipeline.search.index import ClipIndex
from pipeline.storage.store import open_configured_store

log = logging.getLogger(__name__)


@ray.remote(num_cpus=0, max_restarts=2, max_task_retries=0)
class SinkActor:
    def __init__(self, config: VigilConfig, publish_alerts: bool):
        configure_logging("sink")
        store = open_configured_store(config)
        index = ClipIndex.load(store, config.index)
        publish = None
        if publish_alerts:
            publish = AlertPublisher(config.kafka, config.kafka.topics.alerts)
        self.sink = Sink(store, index, publish)
        self.started = False
        self.metrics = MonitorMetrics()
        self.alerts = AlertTally()

    def start(self) -> None:
        """Take writes: the analyzers go on from the checkpoints."""
        self.started = True

    def write(self, out: StreamOutput) -> int:
        """Store an output; the alert updates it stored."""
        stored = self._started().write(out)
        if out.alerts:
            self._stored(out)
        return stored

    def checkpoint(
        self,
        name: str,
        shard: int,
        shards: int,
        sequence: int,
        analyzer: dict,
        offsets: dict[str, int],
        *writes: int,
        tracker: dict | None = None,
    ) -> None:
        """Store shard `shard`'s checkpoint once the writes it covers are durable. `analyzer` (the analyzer's
        state_dict call), `tracker` (the tracker's, with track.live: its sections join the analyzer's in one
        state) and `writes` (the write calls the checkpoint covers) are arguments of their own so that Ray
        resolves them first: a failed one fails the checkpoint."""
        state = analyzer if tracker is None else {**analyzer, **tracker}
        checkpoint = ShardCheckpoint(shard, shards, sequence, state, offsets)
        self._started().checkpoint(name, checkpoint.to_json(), shard, shards)

    def resume(self, name: str, shards: int) -> tuple:
        """Where the monitor goes on from, then the state of each of its `shards` analyzer shards (called with
        `num_returns=shards + 1`, so that each state goes to its analyzer without passing through the driver)."""
        point, states = self.sink.resume(name, shards)
        return (point, *states)

    def look(self) -> dict[str, LastAlert]:
        """The last alert update this sink stored of each of its cameras."""
        return dict(self.alerts.last)

    def _stored(self, out: StreamOutput) -> None:
        """Log, count and time the alert updates of an output just stored (replays of stored ones included: the
        sink tells them apart only by reading each back)."""
        now = time.time()
        opened_at = out.opened_at if isinstance(out, TimedOutput) else {}
        for alert in out.alerts:
            latency = now - opened_at[alert.id] if alert.id in opened_at else None
            self.metrics.alert_stored(alert.status, latency)
            log.info(
                "alert %s",
                alert.status,
                extra={"camera": alert.camera, "query": alert.query_id, "alert": alert.id, "latency": latency},
            )
        self.alerts.add(out.alerts)

    def _started(self) -> Sink:
        if not self.started:
            raise StateLost("the sink was restarted and has not been started again")
        return self.sink
