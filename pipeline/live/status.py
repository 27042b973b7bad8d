"""The live monitor's status document: what `vigil status` prints, published by the running monitor.

The monitor's driver samples its stages every status period (its checkpoint period, at least
`MIN_PERIOD`) and writes one `MonitorStatus` to the store (`monitor_status_key`), replacing the last one:

- per camera: frames taken and frames/s over the last period, how far the monitor is behind the camera's wall
  clock, its last alert (when stored, which query, open or closed), its shard and decoder;
- per Kafka partition: the consumer lag in messages (the partition's end offset less its decoder's position);
- per stage (decoder, extractor, analyzer, sink, summarizer): its actors with their node, address, process,
  state and restarts, the calls the driver has in flight to it, and the calls of it that failed;
- the monitor's counts so far (its report) and when the document was written.

A monitor writes a last one as it stops (`state` "stopped"); one killed leaves its last "running" one, which
goes stale after `STALE_PERIODS` periods (and `STALE_SECONDS`). The stages feed it through `IntakeTally` (a
decoder's frames per camera) and `AlertTally` (a sink's last alert per camera), which the driver asks for each
period.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from pipeline.live.analyzer import camera_of
from pipeline.records import Alert, Frame

STATUS_VERSION = 1
MIN_PERIOD = 1.0  # seconds: a short checkpoint period must not make the driver write a document each batch
# A running monitor's document this many periods old, and at least STALE_SECONDS, means it stopped reporting:
# a document waits for the stages' answers, which a busy machine can hold back a few seconds.
STALE_PERIODS = 3
STALE_SECONDS = 15.0
STAGES = ("decoder", "extractor", "analyzer", "tracker", "sink", "summarizer")


@dataclass(frozen=True)
class LastAlert:
    at: float  # when the sink stored it, Unix seconds
    query: str
    status: str  # open or closed
    id: str


@dataclass(frozen=True)
class CameraStatus:
    frames: int  # taken from the camera by its decoder since the decoder started
    fps: float  # frames taken per second over the last period
    seconds_behind: float | None  # now less the wall clock of its newest frame taken; None: its frames carry none
    last_alert: LastAlert | None
    shard: int  # the analyzer and sink holding it
    decoder: int  # the decoder reading it


@dataclass(frozen=True)
class PartitionStatus:
    decoder: int
    position: int  # the next offset its decoder reads
    end: int  # the offset of the partition's next message
    lag: int  # messages not read yet

    @classmethod
    def of(cls, decoder: int, position: int, end: int) -> PartitionStatus:
        return cls(decoder, position, end, max(0, end - position))


@dataclass(frozen=True)
class ActorStatus:
    actor_id: str
    node_id: str
    address: str  # the node's IP address
    pid: int
    state: str  # Ray's actor state: ALIVE, RESTARTING, DEAD, ...
    restarts: int
    in_flight: int | None = None  # as the stage's, for this actor: where the driver tells them apart by actor


@dataclass(frozen=True)
class StageStatus:
    actors: list[ActorStatus]
    in_flight: int  # the driver's calls to the stage not finished yet, and a decoder's polls awaiting an extractor
    errors: int = 0  # calls of the stage that failed (a lost actor, an object lost with its node)
    last_error: str | None = None


@dataclass(frozen=True)
class MonitorStatus:
    monitor: str
    state: str  # running or stopped
    written_at: float  # Unix seconds
    started_at: float
    period: float  # seconds between documents while running
    mode: str  # kafka or embedded
    report: dict[str, float]  # the monitor's counts so far: frames, batches, alerts, checkpoints, recoveries, ...
    frames_in_flight: int  # between the extractors and the sinks
    cameras: dict[str, CameraStatus] = field(default_factory=dict)
    partitions: dict[str, PartitionStatus] = field(default_factory=dict)
    stages: dict[str, StageStatus] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"version": STATUS_VERSION, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict) -> MonitorStatus:
        """A stored document; ValueError naming what is wrong with one that is not."""
        if not isinstance(data, dict) or data.get("version") != STATUS_VERSION:
            version = data.get("version") if isinstance(data, dict) else None
            raise ValueError(f"status document version {version!r} is not {STATUS_VERSION}")
        try:
            cameras = {
                camera: CameraStatus(
                    **{**entry, "last_alert": LastAlert(**entry["last_alert"]) if entry["last_alert"] else None}
                )
                for camera, entry in data["cameras"].items()
            }
            stages = {
                stage: StageStatus(**{**entry, "actors": [ActorStatus(**actor) for actor in entry["actors"]]})
                for stage, entry in data["stages"].items()
            }
            partitions = {name: PartitionStatus(**entry) for name, entry in data["partitions"].items()}
            fields = {key: value for key, value in data.items() if key not in ("version", "cameras", "stages")}
            return cls(**{**fields, "cameras": cameras, "stages": stages, "partitions": partitions})
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed status document: {type(exc).__name__}: {exc}") from None

    def age(self, now: float) -> float:
        return max(0.0, now - self.written_at)

    def stale(self, now: float) -> bool:
        """A running monitor's document it should have replaced by now."""
        return self.state == "running" and self.age(now) > max(STALE_PERIODS * self.period, STALE_SECONDS)

    @property
    def fps(self) -> float:
        return sum(camera.fps for camera in self.cameras.values())


def freshness_line(status: MonitorStatus, now: float) -> str | None:
    """One line telling that the document does not show a running monitor (stopped, or stale), else None."""
    if status.state != "running":
        return f"monitor {status.monitor} {status.state} at {iso(status.written_at)} ({duration(status.age(now))} ago)"
    if status.stale(now):
        return (
            f"monitor {status.monitor}: its status is {duration(status.age(now))} old (written every "
            f"{status.period:g} s): not running, or stuck"
        )
    return None


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def duration(seconds: float) -> str:
    """A span as people read it: 4.2 s, 3m12s, 2h05m."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Columns as wide as their widest cell, to the right where the header starts with a space (numbers)."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    right = [name.startswith(" ") for name in header]
    lines = []
    for row in [header, *rows]:
        cells = [cell.rjust(w) if r else cell.ljust(w) for cell, w, r in zip(row, widths, right)]
        lines.append("  ".join(cells).rstrip())
    return lines


def render(status: MonitorStatus, now: float) -> str:
    """The document as tables people read: the monitor, its cameras, its partitions, its stages' actors."""
    r = status.report
    lines = [
        f"monitor {status.monitor} ({status.mode}): {status.state}, up {duration(now - status.started_at)}, "
        f"status written {duration(status.age(now))} ago (every {status.period:g} s)",
        f"{status.fps:.1f} frames/s; {r['frames']:.0f} frames in {r['batches']:.0f} batches, "
        f"{status.frames_in_flight} in flight; {r['alerts']:.0f} alert updates, {r['checkpoints']:.0f} checkpoints, "
        f"{r['recoveries']:.0f} recoveries, {r['dead_letters']:.0f} dead letters",
        "",
    ]
    cameras = []
    for name, camera in sorted(status.cameras.items()):
        alert = camera.last_alert
        last = f"{alert.query} {alert.status}, {duration(now - alert.at)} ago" if alert else "-"
        behind = "-" if camera.seconds_behind is None else duration(camera.seconds_behind)
        cameras.append([name, f"{camera.fps:.1f}", str(camera.frames), behind, str(camera.shard), last])
    lines += _table(["camera", " frames/s", " frames", " behind", " shard", "last alert"], cameras)
    if status.partitions:
        partitions = [
            [name, str(p.decoder), str(p.position), str(p.end), str(p.lag)]
            for name, p in sorted(status.partitions.items())
        ]
        lines += ["", *_table(["partition", " decoder", " position", " end", " lag"], partitions)]
    actors, errors = [], []
    for stage in STAGES:
        if stage not in status.stages:
            continue
        entry = status.stages[stage]
        for i, actor in enumerate(entry.actors):
            head = [stage, str(entry.in_flight), str(entry.errors)] if i == 0 else ["", "", ""]
            queued = "-" if actor.in_flight is None else str(actor.in_flight)
            where = [actor.actor_id[:8], actor.node_id[:8], actor.address, str(actor.pid)]
            actors.append([*head, *where, actor.state, str(actor.restarts), queued])
        if entry.last_error:
            errors.append(f"{stage}: last error: {entry.last_error}")
    header = ["stage", " in flight", " errors", "actor", "node", "address", " pid", "state", " restarts", " queued"]
    lines += ["", *_table(header, actors), *errors]
    return "\n".join(lines)


@dataclass(frozen=True)
class CameraIntake:
    frames: int  # since the decoder started
    recent: int  # since the last look
    newest_wallclock: float | None  # of the newest frame taken


@dataclass(frozen=True)
class IntakeLook:
    """What a decoder took, as the driver asks for it each status period."""

    at: float  # Unix seconds
    interval: float  # seconds since the previous look (or the decoder's start)
    cameras: dict[str, CameraIntake]
    partitions: dict[str, tuple[int, int]] = field(default_factory=dict)  # per "topic:partition": position, end
    dead_letters: int = 0

    def fps(self, camera: str) -> float:
        return self.cameras[camera].recent / self.interval if self.interval > 0 else 0.0

    def seconds_behind(self, camera: str) -> float | None:
        newest = self.cameras[camera].newest_wallclock
        return None if newest is None else max(0.0, self.at - newest)


class IntakeTally:
    """A decoder's frames per camera, and the wall clock of each camera's newest one."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self.since = clock()
        self.frames: Counter[str] = Counter()
        self.recent: Counter[str] = Counter()
        self.newest: dict[str, float] = {}

    def add(self, frames: Iterable[Frame]) -> None:
        for frame in frames:
            camera = camera_of(frame)
            self.recent[camera] += 1
            if frame.wallclock is not None and frame.wallclock > self.newest.get(camera, float("-inf")):
                self.newest[camera] = frame.wallclock

    def look(self, **extra) -> IntakeLook:
        """What was taken so far, frames/s since the last look; `extra`: the rest of the `IntakeLook`."""
        now = self.clock()
        self.frames.update(self.recent)
        cameras = {
            camera: CameraIntake(frames, self.recent[camera], self.newest.get(camera))
            for camera, frames in self.frames.items()
        }
        look = IntakeLook(now, now - self.since, cameras, **extra)
        self.since, self.recent = now, Counter()
        return look


class AlertTally:
    """A sink's last alert per camera."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self.last: dict[str, LastAlert] = {}

    def add(self, alerts: Iterable[Alert]) -> None:
        now = self.clock()
        for alert in alerts:
            self.last[alert.camera] = LastAlert(now, alert.query_id, alert.status, alert.id)
