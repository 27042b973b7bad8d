"""`vigil monitor`: camera frames through Ray actor stages to clip embeddings, alerts and the index.

    decoders (Kafka partitions, or files / live URLs) -> extractors -> analyzer shards -> sink shards
        -> checkpoints -> commit
                       -> summarizer

Pixels never pass through the driver. A decoder's poll has two returns: its frames, which stay in Ray's object
store (the driver holds a reference and hands it on), and a `PollReceipt` the driver reads (how many frames, the
next offsets, each camera's latest pts, whether the source ended). The `monitor.decoders` Kafka decoders divide
the partitions (decoder i reads partitions i modulo their number); a camera's messages are on one partition,
so one decoder reads each camera, in order.

Each extractor (`extractors`, by default one per GPU) holds at most two micro-batches, one running and one
queued, so it never waits for the driver. A batch is gathered when an extractor has room, from the polls that
arrived meanwhile (several decoders' polls in one batch, up to `batch_frames`; `poll_timeout` is the wait for a
first frame), and goes to that extractor: light load gives small batches and low latency, heavy load full
batches and throughput. At most `monitor.in_flight` full batches' worth of frames are between the extractors
and the sinks at a time, and at most one poll of each decoder waits for an extractor, so a slow stage slows
intake instead of growing memory.

Cameras are sharded (`monitor.shards`): camera c belongs to shard `camera_shard(c)`, one analyzer and one sink
(and, with `track.live`, one tracker beside the analyzer, given the same batches). The extractor returns one batch
per shard, so a shard's analyzer sees its own cameras only, and its outputs go to its own sink. A shard's state
is its analyzer's and its tracker's, stored as one in its checkpoints.

Every `checkpoint_every` seconds each analyzer shard's state and the Kafka offsets of the batches handed over
so far go to the shard's sink, which stores them after those batches' outputs (and indexes the new clips); only
once every shard's checkpoint of that cycle is durable are the offsets committed. Nothing waits for a
checkpoint: actors run their calls in order, so a checkpoint always covers exactly what is durable. A restart
loads each shard's state from the checkpoints (shared out anew by camera when the shard count changed), reads
every partition again from the least offset the shards' checkpoints hold and replays: an analyzer skips the
frames it holds already and every write is keyed deterministically, so the replay yields no duplicate alert,
embedding or index entry.

A stage lost while running (`StageLost`: its actor died, or an object it needed was lost with its node) is
restarted by Ray; the driver waits for it, drops whatever was in flight and resumes as a restart would, in the
same process: the outputs are those of an undisturbed run. A stage that keeps failing ends the monitor once
Ray gives up restarting it (`max_restarts`).

With `summary_every` set, each durable checkpoint also tells the summarizer how far each camera's clip
windows reach in the store; it summarizes every period that became complete, in the background of the
next batches (one call in flight, its result always collected, so its errors stop the monitor).

Before Ray starts, `run_monitor` checks what it was given (`check_inputs`): every file source exists and its
first frame decodes, the Kafka brokers answer; a problem is a `MonitorError` of one line naming it. A stage
failing later is an `actors.stages.StageFailed`, one line as well.

The driver (`drive`) resumes, then runs a `StageRun` until the sources end or a stop, once more after each
loss. A run composes parts with one job each: `Intake` (the decoders and how far they have been read),
`ExtractorPool` (least busy extractor, two batches each), `FramesInFlight` (the in-flight bound) and
`CheckpointCycle` (save, then commit, then summarize). It is given the stages (`actors.stages.MonitorStages`)
and waits on their calls through `RemoteCalls`, so it runs on fakes without Ray as well. Given a
`StatusReporter` (jobs/monitor_status.py; `run_monitor` makes one), the run publishes the monitor's status
every period without waiting on the stages for it.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from actors.stages import MonitorStages, RayCalls, StageFailed, StageLost, make_monitor_stages, start_ray
from jobs.monitor_status import StatusReporter
from pipeline.config import DecodeConfig, MonitorConfig, StreamSource, VigilConfig
from pipeline.live.analyzer import PollReceipt, camera_shard
from pipeline.live.logs import structured_logs
from pipeline.live.sink import ResumePoint
from pipeline.media.decode import VideoDecodeError, decode_frames
from pipeline.media.kafka_clients import KafkaUnavailable, check_brokers
from pipeline.media.streams import is_live


class MonitorError(Exception):
    """The monitor cannot start with what it was given (a source, the brokers); one line naming the problem."""


@dataclass
class MonitorReport:
    frames: int = 0  # handed to the extractors (frames replayed after a loss count again)
    batches: int = 0  # extractor calls (frames / batches / monitor.batch_frames: batch occupancy)
    alerts: int = 0  # alert updates the sinks stored (a replay of a stored one is not stored again)
    checkpoints: int = 0
    dead_letters: int = 0
    summaries: int = 0
    recoveries: int = 0  # stages lost and recovered from by replay
    recovery_seconds: float = 0.0  # spent recovering: waiting for restarted actors, reloading, seeking


class RemoteCalls(Protocol):
    """How the driver waits on the calls it makes through stage handles (`handle.method.remote(...)`):
    actors.stages.RayCalls on Ray, fakes in the driver's tests."""

    def get(self, calls):
        """The result of a call, or the results of a list of calls; raises a call's error (`StageFailed`,
        `StageLost` for a loss)."""

    def done(self, call) -> bool:
        """Whether a call has finished, without waiting."""

    def wait_any(self, calls: list) -> None:
        """Wait until one of `calls` has finished."""

    def settle(self, calls: list) -> None:
        """Wait until every one of `calls` has finished, successfully or not."""

    def ready(self, handles: list) -> None:
        """Wait until every actor of `handles` is up, a lost one restarted; `StageFailed` for one gone for good."""


@dataclass
class Polled:
    """A decoder's poll on hand: its frames by reference (the driver never fetches them) and its receipt."""

    decoder: int  # its number among the decoders
    frames: Any
    receipt: PollReceipt


class Intake:
    """Polls the decoders and keeps what each took, one poll of each at most, until it is handed to the stages;
    records how far the frames handed over reach: the next Kafka offsets and each camera's latest pts, which a
    checkpoint records."""

    def __init__(self, decoders: list, calls: RemoteCalls, offsets: dict[str, int]):
        self.decoders = decoders
        self.calls = calls
        self.running = set(range(len(decoders)))  # the decoders whose source has not ended
        self.polling: dict[int, tuple[Any, Any]] = {}  # decoder: its poll not answered yet (frames, receipt)
        self.on_hand: deque[Polled] = deque()  # oldest first
        self.offsets = dict(offsets)  # next offsets after every poll handed to the stages so far
        self.latest_pts: dict[str, float] = {}  # per camera, the latest frame handed to the stages

    def busy(self) -> bool:
        """Whether frames may come: a decoder is running or a poll is on hand."""
        return bool(self.running or self.on_hand)

    def poll(self, timeout: float, max_frames: int) -> None:
        """Poll the running decoders that have no poll on hand or under way, up to `max_frames` frames each
        (`timeout`: the wait for a first frame, none when a poll is on hand already); then, with nothing on
        hand, wait for the first answer only: a decoder whose partitions are quiet must not hold up the others.
        A decoder whose source ended is dropped."""
        holding = {polled.decoder for polled in self.on_hand}
        wait = 0.0 if self.on_hand else timeout
        for i in sorted(self.running - holding - set(self.polling)):
            self.polling[i] = tuple(self.decoders[i].poll.options(num_returns=2).remote(wait, max_frames))
        if not self.on_hand and self.polling:
            self.calls.wait_any([receipt for _, receipt in self.polling.values()])
        for i in sorted(self.polling):
            frames, receipt = self.polling[i]
            if not self.calls.done(receipt):
                continue
            del self.polling[i]
            receipt = self.calls.get(receipt)
            if receipt.frames:
                self.on_hand.append(Polled(i, frames, receipt))
            else:  # nothing, or dead letters only: their offsets move on at once
                self._hand_over(receipt)
            if receipt.finished:
                self.running.discard(i)

    def take(self, max_frames: int) -> list[Polled]:
        """The oldest polls on hand while their frames stay within `max_frames` together (the first one
        whatever its size), handed to the stages now."""
        taken: list[Polled] = []
        frames = 0
        while self.on_hand and (not taken or frames + self.on_hand[0].receipt.frames <= max_frames):
            polled = self.on_hand.popleft()
            frames += polled.receipt.frames
            self._hand_over(polled.receipt)
            taken.append(polled)
        return taken

    def _hand_over(self, receipt: PollReceipt) -> None:
        self.offsets.update(receipt.offsets)
        for camera, pts in receipt.latest_pts.items():
            self.latest_pts[camera] = max(pts, self.latest_pts.get(camera, pts))


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

    def extract(self, index: int, polls: list, shards: int) -> list:
        """Start extracting the frames of `polls` (references to decoders' frames) as one batch on extractor
        `index` (given by least_busy); returns its output for each of the `shards` shards."""
        call = self.extractors[index].extract_sharded.options(num_returns=shards).remote(shards, *polls)
        outputs = list(call) if shards > 1 else [call]
        self.in_hand[index].append(outputs[0])  # a call's returns are ready together
        return outputs


class FramesInFlight:
    """The sinks' writes in flight, oldest batch first, with the frames each batch covers: at most `limit` frames
    are on their way from the decoders to the sinks once `settle` returns, so a slow stage slows intake instead
    of growing memory. Counted in frames, not batches: adaptive batches differ in size, and small ones
    finished behind a large one must not stop intake."""

    def __init__(self, sinks: list, calls: RemoteCalls, limit: int):
        self.sinks = sinks
        self.calls = calls
        self.limit = limit
        self.writes: deque[tuple[list, int]] = deque()  # each batch's writes, and its frames

    def frames(self) -> int:
        return sum(frames for _, frames in self.writes)

    def write(self, outputs: dict[int, Any], frames: int = 0) -> dict[int, Any]:
        """Have each shard's sink write a stream output of its analyzer (`outputs`: an analyzer call per shard)
        made from `frames` frames; returns the write calls per shard."""
        writes = {shard: self.sinks[shard].write.remote(output) for shard, output in outputs.items()}
        self.writes.append((list(writes.values()), frames))
        return writes

    def settle(self) -> int:
        """Wait for the oldest writes until at most `limit` frames are in flight; the alerts they stored."""
        alerts = 0
        while self.writes and self.frames() > self.limit:
            alerts += self._finish_oldest()
        return alerts

    def drain(self) -> int:
        """Wait for every write; the alerts they stored."""
        alerts = 0
        while self.writes:
            alerts += self._finish_oldest()
        return alerts

    def _finish_oldest(self) -> int:
        alerts = sum(self.calls.get(self.writes[0][0]))  # kept in flight until every write succeeded: see drop
        self.writes.popleft()
        return alerts

    def drop(self) -> int:
        """Forget every write once it has finished, successfully or not (a stage was lost); the alerts the
        successful ones stored, which their replay will not store again."""
        writes = [write for batch, _ in self.writes for write in batch]
        self.writes.clear()
        self.calls.settle(writes)
        alerts = 0
        for write in writes:
            with contextlib.suppress(StageFailed):
                alerts += self.calls.get(write)
        return alerts


@dataclass
class _Checkpoint:
    """A checkpoint cycle being written: durable once every shard's save resolves, then its offsets may be
    committed."""

    saved: list  # each shard's sink's checkpoint call
    offsets: dict[str, int]
    latest_pts: dict[str, float]  # per camera, the latest frame it covers


class CheckpointCycle:
    """Every `every` seconds: save (each shard's sink stores its analyzer's state and the offsets after the
    writes the checkpoint covers), then, once every shard's save is durable, commit those offsets (Kafka mode),
    then summarize the periods the saved writes completed. One call of each kind in flight; each one's result is
    collected, so its errors stop the monitor."""

    def __init__(
        self, name: str, stages: MonitorStages, calls: RemoteCalls, *, every: float, started: float, sequence: int = 0
    ):
        self.name = name
        self.stages = stages
        self.calls = calls
        self.every = every
        self.last_started = started
        self.sequence = sequence  # the next cycle's number, stored with its checkpoints
        self.uncovered: list[list] = [[] for _ in stages.sinks]  # per shard, its sink's writes since the last save
        self.saving: _Checkpoint | None = None
        self.committing: list = []  # the commit calls in flight, one per decoder
        self.summarizing = None  # the summary call in flight
        self.checkpoints = self.summaries = 0

    def cover(self, writes: dict[int, Any]) -> None:
        """The next checkpoint covers these write calls (per shard) of the sinks'."""
        for shard, write in writes.items():
            self.uncovered[shard].append(write)

    def step(self, now: float, offsets: dict[str, int], latest_pts: dict[str, float]) -> None:
        """Finish the checkpoint being saved once it is durable; start the next when it is due and none is
        being saved."""
        if self.saving is not None and all(self.calls.done(saved) for saved in self.saving.saved):
            self.finish()
        if self.saving is None and now - self.last_started >= self.every:
            self.start(offsets, latest_pts)
            self.last_started = now

    def start(self, offsets: dict[str, int], latest_pts: dict[str, float]) -> None:
        """Record each analyzer shard's state and the offsets of every batch handed over so far. No waiting: an
        analyzer takes the state after those batches and its sink stores it after writing their outputs (an
        actor runs one caller's calls in order), and only if every one of those writes succeeded, so a
        checkpoint never covers anything not durable."""
        stages, shards = self.stages, len(self.stages.sinks)
        saved = []
        for shard, (analyzer, sink, uncovered) in enumerate(zip(stages.analyzers, stages.sinks, self.uncovered)):
            # a tracker's state joins its shard's (a keyword argument: Ray resolves it first too)
            tracker = {"tracker": stages.trackers[shard].state_dict.remote()} if stages.trackers else {}
            state = analyzer.state_dict.remote()
            saved.append(
                sink.checkpoint.remote(
                    self.name, shard, shards, self.sequence, state, dict(offsets), *uncovered, **tracker
                )
            )
        self.sequence += 1
        self.uncovered = [[] for _ in stages.sinks]
        self.saving = _Checkpoint(saved, dict(offsets), dict(latest_pts))

    def finish(self, ended: bool = False) -> None:
        """Once the checkpoint being saved (if any) is durable in every shard: commit its offsets and summarize
        the periods it completed (`ended`: the sources ended, so the last periods are complete too)."""
        if self.saving is None:
            return
        self.calls.get(self.saving.saved)
        self.checkpoints += 1
        if self.stages.kafka and self.saving.offsets:
            self.calls.get(self.committing)
            self.committing = [decoder.commit.remote(self.saving.offsets) for decoder in self.stages.decoders]
        if self.stages.summarizer is not None:
            self.summaries += self._collect(self.summarizing)
            self.summarizing = self.stages.summarizer.advance.remote(self.saving.latest_pts, ended)
        self.saving = None

    def close(self, offsets: dict[str, int], latest_pts: dict[str, float], ended: bool) -> None:
        """A last checkpoint of everything handed over, then the last commits and summaries collected."""
        self.start(offsets, latest_pts)
        self.finish(ended)
        self.calls.get(self.committing)
        self.summaries += self._collect(self.summarizing)

    def pending(self) -> list:
        """The calls in flight: the checkpoint being saved, the commits, the summary."""
        saving = self.saving.saved if self.saving is not None else []
        return [*saving, *self.committing, *([self.summarizing] if self.summarizing is not None else [])]

    def _collect(self, call) -> int:
        """The result of a call started earlier (raising its error), 0 for none."""
        return 0 if call is None else self.calls.get(call)


class StateSteps:
    """The calls that change the state of one kind of a shard's stateful stages (its analyzer, or its tracker),
    numbered from their last load. Such a stage refuses a call that does not follow its last one (`StateLost`):
    when a batch's features are lost with a node, the later batches its extractors finished are not analysed
    over the gap (their windows written as if whole); the monitor replays from the checkpoints instead."""

    def __init__(self, actors: list):
        self.actors = actors
        self.steps = [0] * len(actors)

    def call(self, shard: int, method: str, *args):
        step = self.steps[shard]
        self.steps[shard] += 1
        return getattr(self.actors[shard], method).remote(step, *args)

    def every_shard(self, method: str) -> dict[int, Any]:
        return {shard: self.call(shard, method) for shard in range(len(self.actors))}


class ShardSteps:
    """The stateful stages of every shard, each kind's calls numbered (`StateSteps`): the analyzers and, with
    `track.live`, the trackers beside them. Both kinds take the same calls (a shard's frames, the stored queries,
    the end of the streams); each call returns one dict of calls per kind, by shard, whose outputs go to the
    shard's sink."""

    def __init__(self, stages: MonitorStages):
        self.kinds = [StateSteps(stages.analyzers)] + ([StateSteps(stages.trackers)] if stages.trackers else [])

    def call(self, shards: list[int], method: str, args: dict[int, Any]) -> list[dict[int, Any]]:
        """`method` with each shard's argument, on the given shards."""
        return [{shard: kind.call(shard, method, args[shard]) for shard in shards} for kind in self.kinds]

    def every_shard(self, method: str) -> list[dict[int, Any]]:
        return [kind.every_shard(method) for kind in self.kinds]


def resume(stages: MonitorStages, name: str, calls: RemoteCalls) -> tuple[ResumePoint, ShardSteps]:
    """Go on from the checkpoints: each shard's analyzer (and tracker) loads its state (the checkpoints shared
    out anew by camera when the shard count changed; the states go from the sink to them, not through here), the
    sinks take writes again, every decoder reads again from where the checkpoints leave off, and the analyzers
    and trackers follow the stored queries. Returns where the decoders read from, and their calls from there."""
    shards = len(stages.analyzers)
    point, *states = stages.sinks[0].resume.options(num_returns=shards + 1).remote(name, shards)
    stateful = [*stages.analyzers, *stages.trackers]
    loaded = [stage.load_state_dict.remote(state) for stage, state in zip(stateful, states * 2)]
    started = [sink.start.remote() for sink in stages.sinks]
    point = calls.get(point)
    calls.get([*loaded, *started, *(decoder.seek.remote(point.offsets) for decoder in stages.decoders)])
    steps = ShardSteps(stages)
    for refreshed in steps.every_shard("refresh_queries"):
        calls.get([sink.write.remote(refreshed[shard]) for shard, sink in enumerate(stages.sinks)])
    return point, steps


class StageRun:
    """The stages run from one resume point until the sources end (embedded files), `idle_exit` seconds pass
    without frames, `stop` is set or `max_frames` frames were handed over; or until a stage is lost."""

    def __init__(
        self,
        stages: MonitorStages,
        settings: MonitorConfig,
        calls: RemoteCalls,
        point: ResumePoint,
        steps: ShardSteps,
        *,
        sequence: int,
        clock: Callable[[], float],
        status: StatusReporter | None = None,
    ):
        s = settings
        self.stages, self.settings, self.calls, self.clock = stages, settings, calls, clock
        self.status = status
        self.steps = steps
        self.intake = Intake(stages.decoders, calls, point.offsets)
        self.pool = ExtractorPool(stages.extractors, calls)
        # Room for every extractor's two batches (in_flight counts full batches' worth of frames).
        batches_in_flight = max(s.in_flight, 2 * len(stages.extractors))
        self.in_flight = FramesInFlight(stages.sinks, calls, limit=(batches_in_flight - 1) * s.batch_frames)
        self.started = clock()
        self.checkpoints = CheckpointCycle(
            s.name, stages, calls, every=s.checkpoint_every, started=self.started, sequence=sequence
        )

    def run(
        self, report: MonitorReport, *, stop: threading.Event, idle_exit: float | None, max_frames: int | None
    ) -> None:
        """Hand the decoders' frames to the stages until the run ends; then close the last windows (when the
        sources ended), wait for every write and save a last checkpoint."""
        s, stages, clock = self.settings, self.stages, self.clock
        intake, pool, in_flight, checkpoints = self.intake, self.pool, self.in_flight, self.checkpoints
        shards = len(stages.analyzers)
        last_frame = last_refresh = self.started
        while intake.busy() and not stop.is_set():
            index = pool.least_busy()
            intake.poll(s.poll_timeout, s.batch_frames)
            polls = intake.take(s.batch_frames)
            now = clock()
            if polls:
                last_frame = now
                frames = sum(polled.receipt.frames for polled in polls)
                outputs = pool.extract(index, [polled.frames for polled in polls], shards)
                # Only the shards whose cameras are in the batch analyse it. Each gets its batches in order,
                # whichever extractor finishes first: an actor runs one caller's calls in the order they were made.
                fed = sorted({camera_shard(camera, shards) for polled in polls for camera in polled.receipt.latest_pts})
                for kind, analysed in enumerate(self.steps.call(fed, "process", outputs)):
                    checkpoints.cover(in_flight.write(analysed, frames if kind == 0 else 0))  # frames counted once
                report.batches += 1
                report.frames += frames
                report.alerts += in_flight.settle()
            elif idle_exit is not None and now - last_frame >= idle_exit:
                break
            checkpoints.step(now, intake.offsets, intake.latest_pts)
            if self.status is not None:
                self.status.step(now, self, report)
            if now - last_refresh >= s.query_refresh:
                for refreshed in self.steps.every_shard("refresh_queries"):
                    checkpoints.cover(in_flight.write(refreshed))
                last_refresh = now
            if max_frames is not None and report.frames >= max_frames:
                break
        checkpoints.finish()
        if not intake.busy():  # the embedded sources ended: close the last windows and events
            for flushed in self.steps.every_shard("flush"):
                checkpoints.cover(in_flight.write(flushed))
        report.alerts += in_flight.drain()
        checkpoints.close(intake.offsets, intake.latest_pts, ended=not intake.busy())

    def drop(self) -> int:
        """A stage was lost: wait until every call in flight has finished, one way or the other, and forget it;
        the alerts the writes among them stored."""
        alerts = self.in_flight.drop()
        self.calls.settle(self.checkpoints.pending())
        return alerts


def drive(
    stages: MonitorStages,
    settings: MonitorConfig,
    calls: RemoteCalls,
    *,
    stop: threading.Event,
    idle_exit: float | None = None,
    max_frames: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    status: StatusReporter | None = None,
) -> MonitorReport:
    """Resume, then run the stages (see `StageRun`); after a lost stage, once Ray has restarted it, resume from
    the checkpoints and run again (one line on stderr for each recovery). `status` publishes the monitor's
    status as it runs, and a last one as it ends."""
    report = MonitorReport()
    point, steps = resume(stages, settings.name, calls)
    sequence = 0  # the next checkpoint cycle's number, never one of an earlier cycle (the stored ones lag after a loss)
    while True:
        sequence = max(sequence, point.sequence)
        run = StageRun(stages, settings, calls, point, steps, sequence=sequence, clock=clock, status=status)
        try:
            run.run(report, stop=stop, idle_exit=idle_exit, max_frames=max_frames)
        except StageLost as lost:
            if status is not None:
                status.lost(lost)
            began = clock()
            report.alerts += run.drop()
            calls.ready(stages.handles())
            point, steps = resume(stages, settings.name, calls)
            spent = clock() - began
            report.recoveries += 1
            report.recovery_seconds += spent
            print(f"monitor {settings.name}: recovered in {spent:.1f} s from {lost}", file=sys.stderr, flush=True)
        else:
            break
        finally:
            report.checkpoints += run.checkpoints.checkpoints
            report.summaries += run.checkpoints.summaries
            sequence = run.checkpoints.sequence
    if stages.kafka:
        report.dead_letters = sum(calls.get([decoder.dead_letter_count.remote() for decoder in stages.decoders]))
    if status is not None:
        status.close(run, report)
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
    with structured_logs("driver"):
        start_ray()
        stages = make_monitor_stages(config)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        calls = RayCalls()
        status = StatusReporter(config, stages, calls)
        return drive(
            stages, config.monitor, calls, stop=stop, idle_exit=idle_exit, max_frames=max_frames, status=status
        )
