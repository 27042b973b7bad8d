"""The monitor's Prometheus metrics, recorded through Ray's metrics export (`ray.util.metrics`).

Each process records its own (the actors and the driver, each with a `MonitorMetrics` of its own) and Ray's
metrics agent on every node serves them on the node's metrics export port (`ray start --metrics-export-port`;
`MetricsExportPort` in `ray.nodes()`), where Prometheus scrapes them, named `ray_` + the name below (a counter
also + `_total`), labelled with the node, the worker and the session. Names start with `vigil_`:

    vigil_frames{stage}                  counter    frames through a stage: decoder, extractor, analyzer
    vigil_batch_frames{stage}            histogram  frames per decoder poll and per extractor batch
    vigil_consumer_lag_messages{partition}  gauge   messages of a Kafka partition its decoder has not read yet
    vigil_frame_to_alert_seconds         histogram  from the wall clock of the frame that opened an event to its
                                                    alert stored
    vigil_alerts{status}                 counter    alert updates stored, open or closed
    vigil_frames_in_flight               gauge      frames between the extractors and the sinks (the driver's)
    vigil_recoveries                     counter    stages lost (the monitor replays from its checkpoints)

Cheap by design: a stage records once per batch (one counter increment, one histogram observation), the lag
once per status period, an alert once. Ray is imported when a `MonitorMetrics` is made, in a process where
Ray runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.live.analyzer import StreamOutput, camera_of
from pipeline.records import Frame

BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]  # monitor.batch_frames is at most 4096
LATENCY_BOUNDARIES = [0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300]  # seconds


class MonitorMetrics:
    def __init__(self):
        from ray.util.metrics import Counter, Gauge, Histogram

        stage = ("stage",)
        self._frames = Counter("vigil_frames", "Frames through a stage of the monitor", tag_keys=stage)
        self._batches = Histogram(
            "vigil_batch_frames", "Frames per decoder poll or extractor batch", BATCH_BOUNDARIES, tag_keys=stage
        )
        self._lag = Gauge(
            "vigil_consumer_lag_messages", "Messages of a Kafka partition not read yet", tag_keys=("partition",)
        )
        self._latency = Histogram(
            "vigil_frame_to_alert_seconds",
            "From the wall clock of the frame that opened an event to its alert stored",
            LATENCY_BOUNDARIES,
        )
        self._alerts = Counter("vigil_alerts", "Alert updates stored", tag_keys=("status",))
        self._in_flight = Gauge("vigil_frames_in_flight", "Frames between the extractors and the sinks")
        self._recoveries = Counter("vigil_recoveries", "Stages lost (the monitor replays from its checkpoints)")

    def frames(self, stage: str, count: int) -> None:
        if count:  # a Ray counter takes positive increments only
            self._frames.inc(count, {"stage": stage})

    def batch(self, stage: str, count: int) -> None:
        """A batch of `count` frames through `stage`: counted, and its size observed."""
        if count:
            self._frames.inc(count, {"stage": stage})
            self._batches.observe(count, {"stage": stage})

    def consumer_lag(self, partitions: dict[str, tuple[int, int]]) -> None:
        """Per "topic:partition", its position and end offset."""
        for name, (position, end) in partitions.items():
            self._lag.set(max(0, end - position), {"partition": name})

    def alert_stored(self, status: str, latency: float | None) -> None:
        self._alerts.inc(1, {"status": status})
        if latency is not None:
            self._latency.observe(max(0.0, latency))

    def in_flight(self, frames: int) -> None:
        self._in_flight.set(frames)

    def stage_lost(self) -> None:
        self._recoveries.inc(1)


@dataclass
class TimedOutput(StreamOutput):
    """A stream output with, for each open alert in it, the wall clock of the frame that opened it (by alert id),
    from which its sink measures frame-to-alert latency. It is a `StreamOutput`, so a sink stores it as one."""

    opened_at: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, out: StreamOutput, frames: list[Frame]) -> StreamOutput:
        """`out` made from `frames`, with the opening frames' wall clocks. An alert opens at the frame that
        confirms its event, whose pts is the alert's `end` then. Called only for outputs with alerts, so the
        frames are looked through only then."""
        opening = {(alert.camera, alert.end): alert.id for alert in out.alerts if alert.status == "open"}
        opened_at = {
            opening[(camera_of(frame), frame.pts)]: frame.wallclock
            for frame in frames
            if frame.wallclock is not None and (camera_of(frame), frame.pts) in opening
        }
        return cls(out.clips, out.alerts, out.thumbnails, out.track_events, opened_at=opened_at)
