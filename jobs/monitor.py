"""`vigil monitor`: camera frames through Ray actor stages to clip embeddings, alerts and the index.

    decoder (Kafka partitions, or a file / live URL) -> extractor -> analyzer -> sink -> checkpoint -> commit
                                                                                      -> summarizer

Each extractor (`extractors`, by default one per GPU) holds at most two micro-batches, one running and one
queued, so it never waits for the driver. A batch is gathered when an extractor has room, from what has
arrived meanwhile (up to `batch_frames`; `poll_timeout` is the wait for a first frame), and goes to that
extractor: light load gives small batches and low latency, heavy load full batches and throughput. At most
`monitor.in_flight` full batches' worth of frames are between the decoder and the sink at a time, so a
slow stage slows intake instead of growing memory.

Every `checkpoint_every` seconds the analyzer's state and the Kafka offsets of the batches handed over so
far go to the sink, which stores them after those batches' outputs (and indexes the new clips); only once
that checkpoint is durable are the offsets committed. Nothing waits for a checkpoint: actors run their
calls in order, so a checkpoint always covers exactly what is durable. A restart loads the checkpoint,
seeks to its offsets and replays: the analyzer skips frames it has already seen and every write is keyed
deterministically, so the replay yields no duplicate alert, embedding or index entry.

With `summary_every` set, each durable checkpoint also tells the summarizer how far each camera's clip
windows reach in the store; it summarizes every period that became complete, in the background of the
next batches (one call in flight, its result always collected, so its errors stop the monitor).

Before Ray starts, `run_monitor` checks what it was given (`check_inputs`): every file source exists and its
first frame decodes, the Kafka brokers answer; a problem is a `MonitorError` of one line naming it. A stage
failing later is an `actors.stages.StageFailed`, one line as well.

The driver (`drive`) composes parts with one job each: `Intake` (the decoders and how far they have been
read), `ExtractorPool` (least busy extractor, two batches each), `FramesInFlight` (the in-flight bound) and
`CheckpointCycle` (save, then commit, then summarize). It is given the stages (`actors.stages.MonitorStages`)
and waits on their calls through `RemoteCalls`, so it runs on fakes without Ray as well.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from actors.stages import MonitorStages, RayCalls, make_monitor_stages, start_ray
from pipeline.config import DecodeConfig, MonitorConfig, StreamSource, VigilConfig
from pipeline.media.decode import VideoDecodeError, decode_frames
from pipeline.media.kafka_clients import KafkaUnavailable, check_brokers
from pipeline.media.streams import is_live
from pipeline.records import Frame, FrameBatch


class MonitorError(Exception):
    """The monitor cannot start with what it was given (a source, the brokers); one line naming the problem."""


@dataclass
class MonitorReport:
    frames: int = 0
    batches: int = 0  # extractor calls (frames / batches / monitor.batch_frames: batch occupancy)
    alerts: int = 0
    checkpoints: int = 0
    dead_letters: int = 0
    summaries: int = 0


class RemoteCalls(Protocol):
    """How the driver waits on the calls it makes through stage handles (`handle.method.remote(...)`):
    actors.stages.RayCalls on Ray, fakes in the driver's tests."""

    def get(self, calls):
        """The result of a call, or the results of a list of calls; raises a call's error."""

    def done(self, call) -> bool:
        """Whether a call has finished, without waiting."""

    def wait_any(self, calls: list) -> None:
        """Wait until one of `calls` has finished."""


class Intake:
    """Polls the decoders still running and records how far the frames handed over reach: the next Kafka
    offsets and each camera's latest pts, which a checkpoint records."""

    def __init__(self, decoders: list, calls: RemoteCalls, offsets: dict[str, int]):
        self.calls = calls
        self.live = list(decoders)
        self.offsets = dict(offsets)  # next offsets after every batch handed to the stages so far
        self.latest_pts: dict[str, float] = {}  # per camera, the latest frame handed to the stages

    def poll(self, timeout: float, max_frames: int) -> list[Frame]:
        """What the running decoders have (up to `max_frames` each; `timeout` is the wait for a first frame),
        to be handed to the stages; a decoder whose source ended is dropped."""
        polled = self.calls.get([decoder.poll.remote(timeout, max_frames) for decoder in self.live])
        frames = [frame for batch, _, _ in polled for frame in batch]
        for (_, moved, finished), decoder in zip(polled, list(self.live)):
            self.offsets.update(moved)
            if finished:
                self.live.remove(decoder)
        for frame in frames:
            camera = frame.camera or frame.source
            self.latest_pts[camera] = max(frame.pts, self.latest_pts.get(camera, frame.pts))
        return frames


class ExtractorPool:
    """Hands batches to the extractors (Ray Data's actor pool is the model): each holds at most two, one
    running and one queued, so it never waits for the driver."""

    def __init__(self, extractors: list, calls: RemoteCalls):
        self.extractors = extractors
        self.calls = calls
        self.in_hand: list[deque] = [deque() for _ in extractors]  # each one's extract calls not known done

    def least_busy(self) -> int:
        """The extractor with the fewest batches in hand, once one has fewer than two (running and queued),
        waiting for a batch to finish if none has. Not turn by turn: adaptive batches differ in size, and
        an extractor that got a small one would then wait for the driver, which waits for the oldest."""
        while True:
            for pending in self.in_hand:  # an actor runs its calls in order: only the oldest can be done
                while pending and self.calls.done(pending[0]):
                    pending.popleft()
            index = min(range(len(self.in_hand)), key=lambda i: len(self.in_hand[i]))
            if len(self.in_hand[index]) < 2:
                return index
            self.calls.wait_any([pending[0] for pending in self.in_hand])

    def extract(self, index: int, batch) -> object:
        """Start extracting `batch` on extractor `index` (given by least_busy); returns the call."""
        call = self.extractors[index].extract.remote(batch)
        self.in_hand[index].append(call)
        return call


class FramesInFlight:
    """The sink's writes in flight, oldest first, with the frames each covers: at most `limit` frames are on
    their way from the decoder to the sink once `settle` returns, so a slow stage slows intake instead of
    growing memory. Counted in frames, not batches: adaptive batches differ in size, and small ones
    finished behind a large one must not stop intake."""

    def __init__(self, sink, calls: RemoteCalls, limit: int):
        self.sink = sink
        self.calls = calls
        self.limit = limit
        self.writes: deque[tuple[object, int]] = deque()

    def frames(self) -> int:
        return sum(frames for _, frames in self.writes)

    def write(self, output, frames: int = 0) -> object:
        """Have the sink write a stream output (an analyzer call) made from `frames` frames; returns the call."""
        self.writes.append((self.sink.write.remote(output), frames))
        return self.writes[-1][0]

    def settle(self) -> int:
        """Wait for the oldest writes until at most `limit` frames are in flight; the alerts they stored."""
        alerts = 0
        while self.writes and self.frames() > self.limit:
            alerts += self.calls.get(self.writes.popleft()[0])
        return alerts

    def drain(self) -> int:
        """Wait for every write; the alerts they stored."""
        alerts = 0
        while self.writes:
            alerts += self.calls.get(self.writes.popleft()[0])
        return alerts


@dataclass
class _Checkpoint:
    """A checkpoint being written: durable once `saved` resolves, then its offsets may be committed."""

    saved: object  # the sink's checkpoint call
    offsets: dict[str, int]
    latest_pts: dict[str, float]  # per camera, the latest frame it covers


class CheckpointCycle:
    """Every `every` seconds: save (the sink stores the analyzer's state and the offsets after the writes the
    checkpoint covers), then commit those offsets (Kafka mode), then summarize the periods the saved writes
    completed. One call of each kind in flight; each one's result is collected, so its errors stop the monitor."""

    def __init__(self, name: str, stages: MonitorStages, calls: RemoteCalls, *, every: float, started: float):
        self.name = name
        self.stages = stages
        self.calls = calls
        self.every = every
        self.last_started = started
        self.uncovered: list = []  # the sink's writes since the last checkpoint began
        self.saving: _Checkpoint | None = None
        self.committing = self.summarizing = None  # the calls of those kinds in flight
        self.checkpoints = self.summaries = 0

    def cover(self, write) -> None:
        """The next checkpoint covers this write call of the sink's."""
        self.uncovered.append(write)

    def step(self, now: float, offsets: dict[str, int], latest_pts: dict[str, float]) -> None:
        """Finish the checkpoint being saved once it is durable; start the next when it is due and none is
        being saved."""
        if self.saving is not None and self.calls.done(self.saving.saved):
            self.finish()
        if self.saving is None and now - self.last_started >= self.every:
            self.start(offsets, latest_pts)
            self.last_started = now

    def start(self, offsets: dict[str, int], latest_pts: dict[str, float]) -> None:
        """Record the analyzer state and the offsets of every batch handed over so far. No waiting: the
        analyzer takes the state after those batches and the sink stores it after writing their outputs
        (an actor runs one caller's calls in order), and only if every one of those writes succeeded, so
        a checkpoint never covers anything not durable."""
        stages = self.stages
        saved = stages.sink.checkpoint.remote(
            self.name, stages.analyzer.state_dict.remote(), dict(offsets), *self.uncovered
        )
        self.uncovered = []
        self.saving = _Checkpoint(saved, dict(offsets), dict(latest_pts))

    def finish(self, ended: bool = False) -> None:
        """Once the checkpoint being saved (if any) is durable: commit its offsets and summarize the periods
        it completed (`ended`: the sources ended, so the last periods are complete too)."""
        if self.saving is None:
            return
        self.calls.get(self.saving.saved)
        self.checkpoints += 1
        if self.stages.consumer is not None and self.saving.offsets:
            self._collect(self.committing)
            self.committing = self.stages.consumer.commit.remote(self.saving.offsets)
        if self.stages.summarizer is not None:
            self.summaries += self._collect(self.summarizing)
            self.summarizing = self.stages.summarizer.advance.remote(self.saving.latest_pts, ended)
        self.saving = None

    def close(self, offsets: dict[str, int], latest_pts: dict[str, float], ended: bool) -> None:
        """A last checkpoint of everything handed over, then the last commit and summaries collected."""
        self.start(offsets, latest_pts)
        self.finish(ended)
        self._collect(self.committing)
        self.summaries += self._collect(self.summarizing)

    def _collect(self, call) -> int:
        """The result of a call started earlier (raising its error), 0 for none."""
        return 0 if call is None else self.calls.get(call)


def resume(stages: MonitorStages, name: str, calls: RemoteCalls) -> dict[str, int]:
    """Load the monitor's checkpoint, if any, into the analyzer and seek the Kafka consumer to its offsets;
    returns them."""
    checkpoint = calls.get(stages.sink.load_checkpoint.remote(name))
    if checkpoint is None:
        return {}
    calls.get(stages.analyzer.load_state_dict.remote(checkpoint["analyzer"]))
    if stages.consumer is not None and checkpoint["offsets"]:
        calls.get(stages.consumer.seek.remote(checkpoint["offsets"]))
    return dict(checkpoint["offsets"])


def drive(
    stages: MonitorStages,
    settings: MonitorConfig,
    calls: RemoteCalls,
    *,
    stop: threading.Event,
    idle_exit: float | None = None,
    max_frames: int | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> MonitorReport:
    """Run the stages until the sources end (embedded files), `idle_exit` seconds pass without frames, `stop`
    is set or `max_frames` frames were handed over; then close the last windows (when the sources ended),
    wait for every write and save a last checkpoint."""
    s = settings
    report = MonitorReport()
    intake = Intake(stages.decoders, calls, resume(stages, s.name, calls))
    pool = ExtractorPool(stages.extractors, calls)
    # Room for every extractor's two batches (in_flight counts full batches' worth of frames).
    batches_in_flight = max(s.in_flight, 2 * len(stages.extractors))
    in_flight = FramesInFlight(stages.sink, calls, limit=(batches_in_flight - 1) * s.batch_frames)
    calls.get(stages.sink.write.remote(stages.analyzer.refresh_queries.remote()))
    last_frame = last_refresh = clock()
    checkpoints = CheckpointCycle(s.name, stages, calls, every=s.checkpoint_every, started=last_frame)
    while intake.live and not stop.is_set():
        index = pool.least_busy()
        frames = intake.poll(s.poll_timeout, s.batch_frames)
        now = clock()
        if frames:
            last_frame = now
            # The analyzer gets the batches in order, whichever extractor finishes first: an actor runs one
            # caller's calls in the order they were made.
            extracted = pool.extract(index, FrameBatch(frames))
            checkpoints.cover(in_flight.write(stages.analyzer.process.remote(extracted), len(frames)))
            report.batches += 1
            report.frames += len(frames)
            report.alerts += in_flight.settle()
        elif idle_exit is not None and now - last_frame >= idle_exit:
            break
        checkpoints.step(now, intake.offsets, intake.latest_pts)
        if now - last_refresh >= s.query_refresh:
            checkpoints.cover(in_flight.write(stages.analyzer.refresh_queries.remote()))
            last_refresh = now
        if max_frames is not None and report.frames >= max_frames:
            break
    checkpoints.finish()
    if not intake.live:  # the embedded sources ended: close the last windows and events
        checkpoints.cover(in_flight.write(stages.analyzer.flush.remote()))
    report.alerts += in_flight.drain()
    checkpoints.close(intake.offsets, intake.latest_pts, ended=not intake.live)
    report.checkpoints, report.summaries = checkpoints.checkpoints, checkpoints.summaries
    if stages.consumer is not None:
        report.dead_letters = calls.get(stages.consumer.dead_letter_count.remote())
    return report


def check_sources(sources: list[StreamSource], decode: DecodeConfig) -> None:
    """Every file source exists and its first frame decodes, else `MonitorError` naming the camera and the
    file. Live URLs are not tried: their decoders reconnect until the stream comes."""
    for source in sources:
        if is_live(source.url):
            continue
        where = f"source of camera {source.camera!r}"
        if not Path(source.url).is_file():
            raise MonitorError(f"{where}: no such file: {source.url} (live sources are URLs such as rtsp://host/path)")
        try:
            with decode_frames(source.url, fps=decode.fps, short_side=None, keyframes_only=True, threads=1) as frames:
                next(frames)
        except VideoDecodeError as exc:
            raise MonitorError(f"{where}: {exc}") from None
        except StopIteration:
            raise MonitorError(f"{where}: {source.url} holds no video frame") from None


def check_inputs(config: VigilConfig) -> None:
    """What the monitor reads is there: the embedded sources, else the Kafka brokers; `MonitorError` if not."""
    if config.monitor.sources:
        check_sources(config.monitor.sources, config.decode)
        return
    try:
        check_brokers(config.kafka, "monitor")
    except KafkaUnavailable as exc:
        raise MonitorError(str(exc)) from None


def run_monitor(config: VigilConfig, *, idle_exit: float | None = None, max_frames: int | None = None) -> MonitorReport:
    """Run until the sources end (embedded files), `idle_exit` seconds pass without frames, or SIGTERM. Raises
    `MonitorError` before starting when a source or the brokers cannot be used, `StageFailed` when a stage fails."""
    check_inputs(config)
    start_ray()
    stages = make_monitor_stages(config)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return drive(stages, config.monitor, RayCalls(), stop=stop, idle_exit=idle_exit, max_frames=max_frames)
