"""`vigil track --kafka`: a detector of the user's own feeds the tracker through Kafka (`vigil.detections`,
docs/DETECTIONS.md).

Per camera a tracker, zone and line events and the standing queries on tracks, as the monitor's tracker actors
run them on the motion detector's boxes (`pipeline.live.tracker.StreamTracker.process_detections`); the track
events and the alerts go to the store as the monitor's do, the alerts to `vigil.alerts` too. The messages carry
no picture, so these alerts have no keyframe.

Nothing is lost or done twice across a restart: every `monitor.checkpoint_every` seconds the trackers' state and
the offsets after the messages handled go to the store (`monitor/{name}/checkpoint.json`, `name` being
`monitor.name` + "-detections"), once their outputs are stored, and then the offsets are committed. A restart
resumes as a monitor of one shard does (`Sink.resume`): it reads again from the checkpoint's offsets and the
trackers skip the frames they hold, whose outputs are keyed deterministically.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from pipeline.config import VigilConfig
from pipeline.live.queries import load_queries
from pipeline.live.sink import AlertPublisher, ShardCheckpoint, Sink
from pipeline.live.tracker import StreamTracker
from pipeline.media.detection_messages import DetectionReader
from pipeline.media.kafka_clients import DeadLetters, FrameConsumer, MessageProducer, named_partition, partition_name
from pipeline.records import ModelIds
from pipeline.search.index import ClipIndex
from pipeline.storage.store import open_configured_store

# The models of these alerts' records: the detections are the user's detector's, not vigil's models'.
EXTERNAL = ModelIds("external detector", "external detector")


@dataclass
class DetectionsReport:
    messages: int = 0
    malformed: int = 0
    frames: int = 0
    track_events: int = 0
    alerts: int = 0
    checkpoints: int = 0


def checkpoint_name(config: VigilConfig) -> str:
    return f"{config.monitor.name}-detections"


def track_detections(
    config: VigilConfig, *, idle_exit: float | None = None, stop=lambda: False, poll_timeout: float = 0.5
) -> DetectionsReport:
    """Track `kafka.topics.detections` until `idle_exit` seconds pass without a message, or `stop()` is true."""
    store = open_configured_store(config)
    name = checkpoint_name(config)
    tracker = StreamTracker(EXTERNAL, config.track, config.detect, config.events)
    report = DetectionsReport()
    with MessageProducer(config.kafka) as producer:
        sink = Sink(
            store, ClipIndex.load(store, config.index), AlertPublisher(config.kafka, config.kafka.topics.alerts)
        )
        consumer = FrameConsumer(
            config.kafka, config.kafka.topics.detections, group_id=f"{config.kafka.group}-detections", assign=True
        )
        with consumer:
            reader = DetectionReader(consumer, DeadLetters(producer, config.kafka.topics.dlq))
            sequence, offsets = _resume(sink, name, tracker)
            consumer.seek(offsets)
            last_message = last_checkpoint = time.monotonic()
            last_refresh = -float("inf")
            while not stop():
                if time.monotonic() - last_refresh >= config.monitor.query_refresh:  # queries added meanwhile
                    tracker.sync_queries(load_queries(store))
                    last_refresh = time.monotonic()
                frames, polled = reader.poll(poll_timeout)
                now = time.monotonic()
                if polled:
                    last_message = now
                    out = tracker.process_detections(frames)
                    report.alerts += sink.write(out)
                    report.frames += len(frames)
                    report.track_events += len(out.track_events)
                    offsets.update(polled)
                elif idle_exit is not None and now - last_message >= idle_exit:
                    break
                if now - last_checkpoint >= config.monitor.checkpoint_every:
                    sequence = _checkpoint(sink, consumer, tracker, name, sequence, offsets)
                    report.checkpoints += 1
                    last_checkpoint = now
            _checkpoint(sink, consumer, tracker, name, sequence, offsets)
            report.checkpoints += 1
            report.messages, report.malformed = reader.messages, reader.malformed
    return report


def _resume(sink: Sink, name: str, tracker: StreamTracker) -> tuple[int, dict]:
    """Load the trackers' state from the checkpoints, as a monitor of one shard does; the next checkpoint's number,
    and the offsets to read from (none: from the commits)."""
    point, (state,) = sink.resume(name, 1)
    if state is not None:
        tracker.load_state_dict(state)
    return point.sequence, {named_partition(p): offset for p, offset in point.offsets.items()}


def _checkpoint(sink: Sink, consumer: FrameConsumer, tracker: StreamTracker, name: str, sequence: int, offsets) -> int:
    """Store the trackers' state with the offsets after what they hold (their outputs are stored), then commit
    those offsets; the next checkpoint's number."""
    stored = {partition_name(*tp): offset for tp, offset in offsets.items()}
    sink.checkpoint(name, ShardCheckpoint(0, 1, sequence, tracker.state_dict(), stored).to_json())
    if offsets:
        consumer.commit(offsets)
    return sequence + 1
