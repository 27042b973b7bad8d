"""The monitor's driver and its parts on fake stages, without Ray: ordering, backpressure, decoders' frames
passed on by reference, camera shards, checkpoints, recovery; then a monitor's shard checkpoints read back
(`CheckpointSet`) with real analyzer states.

A fake call runs only when something needs it (a `get`, a later call of the same actor, a call that takes
it as an argument) or when the driver waits for any of several calls, and it runs as a Ray actor call
would: after its actor's earlier calls, once the calls among its arguments have run (their error becomes
its error). So the tests see what the driver asked for and when, not what a scheduler happened to do. A fake
actor can die as one of its calls is about to run: its calls waiting to run fail as lost (`StageLost`) and
it comes back afresh while it has restarts left, as Ray restarts an actor.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest

from actors.stages import MonitorStages, StageFailed, StageLost
from jobs.monitor import CheckpointCycle, ExtractorPool, drive, resume
from pipeline.config import MonitorConfig
from pipeline.live.analyzer import PollReceipt, StreamAnalyzer, camera_shard, shard_batches
from pipeline.live.queries import StandingQuery
from pipeline.live.sink import CheckpointSet, ResumePoint, ShardCheckpoint
from pipeline.live.sink import Sink as StoreSink
from pipeline.records import Frame, FrameBatch
from pipeline.search.index import ClipIndex
from pipeline.storage.layout import monitor_checkpoint_key, monitor_shard_checkpoint_key
from pipeline.storage.store import LocalStore
from tests.test_match import MODELS, RULES, matcher, raw_vector

IMAGE = np.zeros((2, 2, 3), dtype=np.uint8)


# --------------------------------------------------------------------------------------------- fake Ray


class Call:
    def __init__(self, actor: FakeActor, method: str, args: tuple, kwargs: dict | None = None):
        self.actor, self.method, self.args, self.kwargs = actor, method, args, kwargs or {}
        self.done = False
        self.result = self.error = None

    def run(self) -> None:
        while not self.done:  # an actor runs its calls in the order they were made
            self.actor.pending[0]._execute()

    def value(self):
        self.run()
        if self.error is not None:
            raise self.error
        return self.result

    def fail(self, error: Exception) -> None:
        self.error = error
        self._end("failed")

    def _execute(self) -> None:
        actor = self.actor
        actor.runs[self.method] += 1
        if actor.gone or actor.dies_at == (self.method, actor.runs[self.method]):
            actor.die()
            return
        try:
            args = [arg.value() if isinstance(arg, (Call, Return)) else arg for arg in self.args]
            kwargs = {k: v.value() if isinstance(v, (Call, Return)) else v for k, v in self.kwargs.items()}
            self.result = getattr(actor.target, self.method)(*args, **kwargs)
        except Exception as exc:
            self.error = exc
        self._end("ran")

    def _end(self, how: str) -> None:
        self.actor.pending.remove(self)
        self.done = True
        self.actor.log.append((how, self.actor.name, self.method, self))


class Return:
    """One of the returns of a call made with `num_returns` above one."""

    def __init__(self, call: Call, index: int):
        self.call, self.index = call, index

    @property
    def done(self) -> bool:
        return self.call.done

    def run(self) -> None:
        self.call.run()

    def value(self):
        return self.call.value()[self.index]


class FakeActor:
    """A stage handle: `handle.method.remote(*args)` returns a pending Call on its target (`make()`);
    `handle.method.options(num_returns=n).remote(*args)` n Returns of one."""

    def __init__(self, name: str, make: Callable[[], object], log: list, restarts: int = 2):
        self.name, self.make, self.log, self.restarts = name, make, log, restarts
        self.target = make()
        self.pending: list[Call] = []
        self.most_pending = 0  # the most calls it ever had waiting to run
        self.runs: Counter[str] = Counter()  # calls about to run, per method
        self.dies_at: tuple[str, int] | None = None  # (method, n): dies as that method's n-th call is to run
        self.gone = False  # died with no restart left

    def __getattr__(self, method: str):
        return _Method(self, method)

    def die(self) -> None:
        for call in list(self.pending):
            call.fail(StageLost(f"{self.name}.{call.method} failed: ActorDiedError"))
        self.dies_at = None
        if self.restarts:
            self.restarts -= 1
            self.target = self.make()
        else:
            self.gone = True


class _Method:
    def __init__(self, actor: FakeActor, name: str, returns: int = 1):
        self.actor, self.name, self.returns = actor, name, returns

    def options(self, num_returns: int) -> _Method:
        return _Method(self.actor, self.name, num_returns)

    def remote(self, *args, **kwargs):
        call = Call(self.actor, self.name, args, kwargs)
        self.actor.pending.append(call)
        self.actor.most_pending = max(self.actor.most_pending, len(self.actor.pending))
        self.actor.log.append(("issued", self.actor.name, self.name, call))
        return [Return(call, i) for i in range(self.returns)] if self.returns > 1 else call


def actor_of(call) -> str:
    """The name of the actor a Call or Return is for."""
    return getattr(call, "call", call).actor.name


class FakeCalls:
    """RemoteCalls on fake calls; `wait_any` runs the call `pick` chooses (by default the first given)."""

    def __init__(self, pick=lambda calls: calls[0]):
        self.pick = pick
        self.waited: list[list[Call]] = []
        self.fetched: list = []  # every result the driver fetched

    def get(self, calls):
        values = [call.value() for call in calls] if isinstance(calls, list) else calls.value()
        self.fetched.append(values)
        return values

    def done(self, call: Call) -> bool:
        return call.done

    def wait_any(self, calls: list[Call]) -> None:
        self.waited.append(list(calls))
        self.pick(calls).run()

    def settle(self, calls: list) -> None:
        for call in calls:
            call.run()

    def ready(self, handles: list[FakeActor]) -> None:
        for handle in handles:
            if handle.gone:
                raise StageFailed(f"{handle.name} failed: ActorDiedError: the actor died and will not restart")


# --------------------------------------------------------------------------------------------- fake stages


class FrameToken:
    """A decoder's frames as the driver must treat them: handed on, never looked into."""

    def __init__(self, frames: list[Frame]):
        self.frames = frames

    def __bool__(self):
        raise AssertionError("the driver looked into a decoder's frames")

    __len__ = __iter__ = __bool__


def tokens_in(value) -> list[FrameToken]:
    if isinstance(value, FrameToken):
        return [value]
    if isinstance(value, (list, tuple)):
        return [token for item in value for token in tokens_in(item)]
    return []


class WriteFailed(Exception):
    pass


class ScriptedDecoder:
    """Hands out `sizes[i]` frames of camera "door" at its i-th poll (pts = frame number). Embedded: the
    source ends with the last batch, and a seek reads it again from the start. Kafka: one message per frame on
    partition frames:0; polls after the last batch find nothing."""

    def __init__(self, sizes: list[int], kafka: bool, polled: list):
        self.script, self.sizes, self.kafka, self.polled = list(sizes), list(sizes), kafka, polled
        self.handed = 0  # frames handed out so far (the next pts, and the next offset)
        self.on_poll = lambda: None
        self.seeks: list[dict] = []
        self.commits: list[dict] = []

    def poll(self, timeout: float, max_frames: int):
        self.on_poll()
        count = self.sizes.pop(0) if self.sizes else 0
        assert count <= max_frames
        frames = [Frame("door", float(self.handed + i), self.handed + i, IMAGE, camera="door") for i in range(count)]
        self.handed += count
        self.polled.append(FrameToken(frames))
        offsets = {"frames:0": self.handed} if self.kafka and count else {}
        return self.polled[-1], PollReceipt.of(frames, offsets, finished=not self.kafka and not self.sizes)

    def seek(self, offsets: dict) -> None:
        self.seeks.append(offsets)
        if self.kafka:
            self.handed = offsets.get("frames:0", 0)
        else:
            self.sizes, self.handed = list(self.script), 0

    def commit(self, offsets: dict) -> None:
        self.commits.append(offsets)

    def dead_letter_count(self) -> int:
        return 2


CAMERAS = {"gate": 0, "door": 0, "yard": 1, "dock": 1}  # partitions; shards of two: gate and yard 0, door and dock 1


class Topic:
    """A fake `vigil.frames`: each camera's frames (pts 0, 1, ...) on its partition, interleaved with the other
    cameras there, one message each; the group's commits."""

    def __init__(self, cameras: dict[str, int] = CAMERAS, frames_each: int = 12):
        self.messages: dict[int, list[tuple[str, float]]] = {}
        for pts in range(frames_each):
            for camera, partition in cameras.items():
                self.messages.setdefault(partition, []).append((camera, float(pts)))
        self.committed: dict[str, int] = {}


class KafkaDecoder:
    """Decoder `share[0]` of `share[1]` on a Topic: its partitions (the partition number modulo share[1]),
    read from their commits; a poll takes up to `per_poll` messages, its partitions in turn."""

    def __init__(self, topic: Topic, share: tuple[int, int], per_poll: int, polled: list):
        part, parts = share
        self.topic, self.per_poll, self.polled = topic, per_poll, polled
        self.next = {p: topic.committed.get(f"frames:{p}", 0) for p in sorted(topic.messages) if p % parts == part}

    def poll(self, timeout: float, max_frames: int):
        frames: list[Frame] = []
        offsets: dict[str, int] = {}
        for p in itertools.cycle(list(self.next)):
            waiting = [q for q in self.next if self.next[q] < len(self.topic.messages[q])]
            if len(frames) == min(self.per_poll, max_frames) or not waiting:
                break
            if p in waiting:
                camera, pts = self.topic.messages[p][self.next[p]]
                frames.append(Frame(camera, pts, int(pts), IMAGE, camera=camera))
                self.next[p] += 1
                offsets[f"frames:{p}"] = self.next[p]
        self.polled.append(FrameToken(frames))
        return self.polled[-1], PollReceipt.of(frames, offsets)

    def seek(self, offsets: dict) -> None:
        for p in self.next:
            self.next[p] = offsets.get(f"frames:{p}", self.topic.committed.get(f"frames:{p}", 0))

    def commit(self, offsets: dict) -> None:
        self.topic.committed.update(
            {f"frames:{p}": offsets[f"frames:{p}"] for p in self.next if f"frames:{p}" in offsets}
        )

    def dead_letter_count(self) -> int:
        return 0


class Extractor:
    def __init__(self, received: list):
        self.received = received

    def extract_sharded(self, shards: int, *tokens: FrameToken):
        """Features that name their frame (its pts), so an analyzer can tell whose features it got."""
        self.received.append(tokens)
        frames = [frame for token in tokens for frame in token.frames]
        pts = np.array([[frame.pts] for frame in frames], dtype=np.float32)
        batches = shard_batches(FrameBatch(frames, pts, pts), shards)
        return tuple(batches) if shards > 1 else batches[0]


@dataclass
class Output:
    """A fake analyzer's output, keyed as a real one's is."""

    frames: int = 0  # in the batch it was made from
    items: dict = field(default_factory=dict)  # (camera, pts): how many frames of the camera it has analysed
    alerts: list = field(default_factory=list)  # an alert id at every third frame of a camera


class Analyzer:
    """Counts each camera's frames (its state): a state lost or reloaded wrong shows in the items it makes.
    Refuses calls until loaded, as a restarted one does, and, as the real one does, a call that does not follow
    its last one (then every call until the next load). Asserts that no camera's frames skip ahead."""

    def __init__(self):
        self.cameras: dict[str, list] = {}  # camera: [frames analysed, last pts]
        self.loaded = False
        self.loads: list = []
        self.batches: list[list[float]] = []  # the pts of each batch, in the order it got them
        self.seen: list[tuple[str, float]] = []  # (camera, pts) of every frame it got, replays included
        self.flushed = False

    section = None  # the key of its part of a shard's state; None: its cameras are the state's keys

    def load_state_dict(self, state: dict | None) -> None:
        mine = (state or {}).get(self.section, {}) if self.section else (state or {})
        self.loads.append(mine)
        # a shard's state holds its tracker's section too, which is not a camera
        self.cameras = {camera: list(value) for camera, value in mine.items() if camera != Tracker.section}
        self.loaded, self.next_step = True, 0

    def process(self, step: int, batch: FrameBatch) -> Output:
        self._check(step)
        assert [row[0] for row in batch.siglip] == [frame.pts for frame in batch.frames]
        self.batches.append([frame.pts for frame in batch.frames])
        out = Output(frames=len(batch.frames))
        for frame in batch.frames:
            self.seen.append((frame.camera, frame.pts))
            count, last = self.cameras.get(frame.camera, [0, -1.0])
            if frame.pts <= last:
                continue  # a replay
            assert frame.pts == last + 1, f"{frame.camera} skipped from {last} to {frame.pts}: frames lost in between"
            self.cameras[frame.camera] = [count + 1, frame.pts]
            out.items[(frame.camera, frame.pts)] = count + 1
            if (count + 1) % 3 == 0:
                out.alerts.append(f"{frame.camera}-{(count + 1) // 3}")
        return out

    def refresh_queries(self, step: int) -> Output:
        self._check(step)
        return Output()

    def flush(self, step: int) -> Output:
        self._check(step)
        self.flushed = True
        return Output()

    def state_dict(self) -> dict:
        self._check()
        cameras = {camera: list(value) for camera, value in self.cameras.items()}
        return {self.section: cameras} if self.section else cameras

    def _check(self, step: int | None = None) -> None:
        if not self.loaded:
            raise StageLost("analyzer failed: StateLost: the analyzer was restarted and holds no state yet")
        if step is not None:
            if step != self.next_step:
                self.loaded = False
                raise StageLost(f"analyzer failed: StateLost: call {step} came where {self.next_step} was due")
            self.next_step += 1


class Tracker(Analyzer):
    """A shard's tracker: as the fake analyzer, its state a section of the shard's, its items and alerts its own."""

    section = "tracking"

    def process(self, step: int, batch: FrameBatch) -> Output:
        out = super().process(step, batch)
        return Output(0, {("tracked", *key): count for key, count in out.items.items()}, [f"t-{a}" for a in out.alerts])


class Store:
    """What the fake sinks made durable: shared by the shards."""

    def __init__(self, checkpoints: dict | None = None):
        self.items: dict = {}
        self.alerts: set[str] = set()
        self.checkpoints: dict[tuple[int, int], dict] = dict(checkpoints or {})  # (shard, shards): checkpoint


class Sink:
    def __init__(self, store: Store, fail_batch: int | None = None):
        self.store = store
        self.fail_batch = fail_batch  # the write of this batch (1: the first) fails
        self.started = False
        self.batches = 0
        self.frames_written = 0
        self.checkpoints: list[dict] = []  # each checkpoint it stored, with the frames written before it

    def start(self) -> None:
        self.started = True

    def write(self, output: Output) -> int:
        self._check()
        if output.frames:
            self.batches += 1
            if self.batches == self.fail_batch:
                raise WriteFailed(f"batch {self.batches}")
        self.frames_written += output.frames
        self.store.items.update(output.items)
        new = set(output.alerts) - self.store.alerts
        self.store.alerts |= new
        return len(new)

    def checkpoint(
        self, name: str, shard: int, shards: int, sequence: int, analyzer, offsets, *writes, tracker=None
    ) -> None:
        self._check()
        state = analyzer if tracker is None else {**analyzer, **tracker}
        self.store.checkpoints[(shard, shards)] = {"sequence": sequence, "analyzer": state, "offsets": offsets}
        self.checkpoints.append({**self.store.checkpoints[(shard, shards)], "frames_written": self.frames_written})

    def resume(self, name: str, shards: int) -> tuple:
        """As the real sink's, for checkpoints of one shard count: the least offset per partition."""
        stored = [self.store.checkpoints.get((shard, shards)) for shard in range(shards)]
        held = [checkpoint for checkpoint in stored if checkpoint is not None]
        offsets = {}
        if held and len(held) == shards:
            partitions = set.intersection(*(set(checkpoint["offsets"]) for checkpoint in held))
            offsets = {p: min(checkpoint["offsets"][p] for checkpoint in held) for p in partitions}
        point = ResumePoint(offsets, max((checkpoint["sequence"] for checkpoint in held), default=-1) + 1)
        return (point, *(None if checkpoint is None else checkpoint["analyzer"] for checkpoint in stored))

    def _check(self) -> None:
        if not self.started:
            raise StageLost("sink failed: StateLost: the sink was restarted and has not been started again")


class Summarizer:
    def advance(self, latest_pts: dict, ended: bool) -> int:
        return 1


class Fakes:
    """A monitor's fake stages and the targets behind them. Each decoder is made by one of `decoders`, given
    the list its frame tokens go to."""

    def __init__(
        self,
        decoders: list[Callable[[list], object]],
        *,
        kafka: bool,
        extractors: int = 1,
        shards: int = 1,
        summaries: bool = False,
        store: Store | None = None,
        fail_batch: int | None = None,
        trackers: bool = False,
    ):
        self.log: list[tuple] = []  # ("issued" | "ran" | "failed", actor, method, call), in order
        self.store = store or Store()
        self.polled: list[FrameToken] = []  # every decoder poll's frames, in order
        self.received: list[tuple] = []  # the frame tokens each extractor call got
        self.stages = MonitorStages(
            extractors=[self._handle(f"extractor{i}", lambda: Extractor(self.received)) for i in range(extractors)],
            decoders=[
                self._handle(f"decoder{i}", lambda make=make: make(self.polled)) for i, make in enumerate(decoders)
            ],
            analyzers=[self._handle(f"analyzer{k}", Analyzer) for k in range(shards)],
            sinks=[self._handle(f"sink{k}", lambda: Sink(self.store, fail_batch)) for k in range(shards)],
            summarizer=self._handle("summarizer", Summarizer) if summaries else None,
            kafka=kafka,
            trackers=[self._handle(f"tracker{k}", Tracker) for k in range(shards)] if trackers else [],
        )

    def _handle(self, name: str, make) -> FakeActor:
        return FakeActor(name, make, self.log)

    def actor(self, name: str) -> FakeActor:
        (handle,) = [handle for handle in self.stages.handles() if handle.name == name]
        return handle

    @property
    def decoder(self):
        return self.stages.decoders[0].target

    @property
    def analyzer(self) -> Analyzer:
        return self.stages.analyzers[0].target

    @property
    def sink(self) -> Sink:
        return self.stages.sinks[0].target

    def events(self, kind: str, actor: str, method: str) -> list[tuple[int, Call]]:
        """(position in the log, call) of each such event."""
        return [(i, e[3]) for i, e in enumerate(self.log) if e[:3] == (kind, actor, method)]

    def in_order(self, kind: str, method: str) -> list[Call]:
        """The calls of `method` (of any actor) in the order they were issued or ran."""
        return [e[3] for e in self.log if e[0] == kind and e[2] == method]

    def run(
        self,
        calls: FakeCalls | None = None,
        *,
        stop: threading.Event | None = None,
        idle_exit=None,
        max_frames=None,
        **settings,
    ):
        """drive() on these stages, with a clock that ticks one second per reading."""
        settings = MonitorConfig(
            **{"name": "cam", "batch_frames": 4, "in_flight": 2, "checkpoint_every": 1.0, **settings}
        )
        ticks = itertools.count()
        return drive(
            self.stages,
            settings,
            calls or FakeCalls(),
            stop=stop or threading.Event(),
            idle_exit=idle_exit,
            max_frames=max_frames,
            clock=lambda: float(next(ticks)),
        )


def scripted(sizes: list[int], *, kafka: bool = False, **options) -> Fakes:
    """Fakes of one scripted decoder."""
    return Fakes([lambda polled: ScriptedDecoder(sizes, kafka, polled)], kafka=kafka, **options)


def on_topic(topic: Topic, *, decoders: int = 2, per_poll: int = 3, **options) -> Fakes:
    """Fakes of `decoders` Kafka decoders dividing `topic`'s partitions."""
    makers = [lambda polled, i=i: KafkaDecoder(topic, (i, decoders), per_poll, polled) for i in range(decoders)]
    return Fakes(makers, kafka=True, **options)


def handed_batches(sizes: list[int]) -> list[list[float]]:
    starts = itertools.accumulate([0, *sizes])
    return [[float(pts) for pts in range(start, start + size)] for start, size in zip(starts, sizes)]


# --------------------------------------------------------------------------------------------- one decoder


def test_batches_reach_the_analyzer_in_submission_order_whichever_extractor_finishes_first():
    sizes = [4, 3, 4, 2, 4, 1, 4, 4]
    fakes = scripted(sizes, extractors=2)
    calls = FakeCalls(pick=lambda calls: calls[-1])  # when the driver waits, the last extractor finishes first
    report = fakes.run(calls, in_flight=16)
    assert fakes.in_order("ran", "extract_sharded") != fakes.in_order("issued", "extract_sharded")  # out of order
    assert fakes.analyzer.batches == handed_batches(sizes)
    assert (report.frames, report.batches, report.alerts) == (sum(sizes), len(sizes), sum(sizes) // 3)


def test_the_pool_gives_a_batch_to_the_least_busy_extractor_and_none_a_third():
    log: list[tuple] = []
    calls = FakeCalls()
    pool = ExtractorPool([FakeActor(f"extractor{i}", lambda: Extractor([]), log) for i in range(3)], calls)
    frames = FrameToken([Frame("door", 0.0, 0, IMAGE, camera="door")])
    chosen, handed = [], []
    for finish_first in (None, None, None, 1, None, None, None):
        if finish_first is not None:
            handed[finish_first].run()  # extractor 1 finished its batch: it is the least busy now
        chosen.append(pool.least_busy())
        handed += pool.extract(chosen[-1], [frames], 1)
    assert chosen == [0, 1, 2, 1, 0, 1, 2]  # least busy (ties: the first), not turn by turn
    assert not calls.waited and [len(pending) for pending in pool.in_hand] == [2, 2, 2]

    calls.pick = lambda oldest: oldest[2]  # each extractor holds two: the next batch waits for one to finish
    assert pool.least_busy() == 2
    assert calls.waited == [[pending[0] for pending in pool.in_hand[:2]] + [handed[2]]]


def test_no_extractor_is_given_a_third_batch_by_the_driver():
    fakes = scripted([4] * 9, extractors=2)
    calls = FakeCalls()
    fakes.run(calls, in_flight=16)  # a bound this loose never waits for writes: only the extractors' room counts
    assert [extractor.most_pending for extractor in fakes.stages.extractors] == [2, 2]
    assert calls.waited


@pytest.mark.parametrize(("in_flight", "seen"), [(2, [0, 4, 1, 2, 4, 2]), (8, [0, 4, 5, 6, 10, 12])])
def test_intake_waits_while_more_frames_than_the_bound_are_in_flight(in_flight, seen):
    """One extractor: `in_flight` batches of 4 frames leave room for (in_flight - 1) * 4 frames between polls.
    Writes finish only when the driver waits for them, so what is in flight at a poll is what it let be."""
    sizes = [4, 1, 1, 4, 2, 3]
    fakes = scripted(sizes)
    in_flight_at_poll = []
    fakes.decoder.on_poll = lambda: in_flight_at_poll.append(fakes.decoder.handed - fakes.sink.frames_written)
    report = fakes.run(in_flight=in_flight)
    assert in_flight_at_poll == seen  # with 4: every poll after the writes that took it over 4 frames finished
    assert report.frames == fakes.sink.frames_written == sum(sizes)


def test_offsets_are_committed_and_summarized_only_once_the_checkpoint_covering_them_is_durable():
    fakes = scripted([], kafka=True, summaries=True)
    calls = FakeCalls()
    resume(fakes.stages, "cam", calls)
    sink = fakes.stages.sinks[0]
    cycle = CheckpointCycle("cam", fakes.stages, calls, every=1.0, started=0.0)
    writes = [sink.write.remote(Output(frames=4)) for _ in range(2)]
    for write in writes:
        cycle.cover({0: write})
    cycle.step(0.5, {"frames:0": 8}, {"door": 7.0})
    assert cycle.saving is None  # not due yet
    cycle.step(1.0, {"frames:0": 8}, {"door": 7.0})
    assert cycle.saving is not None and not any(write.done for write in writes)  # nothing waits for a save
    cycle.step(2.0, {"frames:0": 12}, {"door": 11.0})
    assert not fakes.events("issued", "decoder0", "commit") and not fakes.events("issued", "summarizer", "advance")
    assert len(fakes.events("issued", "sink0", "checkpoint")) == 1  # one save at a time

    cycle.saving.saved[0].run()
    assert fakes.sink.checkpoints == [{"sequence": 0, "analyzer": {}, "offsets": {"frames:0": 8}, "frames_written": 8}]
    cycle.step(3.0, {"frames:0": 12}, {"door": 11.0})
    assert [call.args for _, call in fakes.events("issued", "decoder0", "commit")] == [({"frames:0": 8},)]
    assert [call.args for _, call in fakes.events("issued", "summarizer", "advance")] == [({"door": 7.0}, False)]
    assert cycle.checkpoints == 1 and cycle.saving.offsets == {"frames:0": 12}  # and the next save began


def test_a_failed_write_fails_its_checkpoint_and_nothing_is_committed():
    fakes = scripted([], kafka=True, summaries=True, fail_batch=2)
    calls = FakeCalls()
    resume(fakes.stages, "cam", calls)
    sink = fakes.stages.sinks[0]
    cycle = CheckpointCycle("cam", fakes.stages, calls, every=1.0, started=0.0)
    for _ in range(2):
        cycle.cover({0: sink.write.remote(Output(frames=4))})
    cycle.start({"frames:0": 8}, {"door": 7.0})
    with pytest.raises(WriteFailed):
        cycle.finish()
    assert fakes.store.checkpoints == {} and cycle.checkpoints == 0
    assert not fakes.events("issued", "decoder0", "commit") and not fakes.events("issued", "summarizer", "advance")


def test_every_commit_and_summary_follows_the_durable_checkpoint_that_covers_it():
    sizes = [4, 3, 4, 4, 2, 4, 4, 1]
    fakes = scripted(sizes, extractors=2, kafka=True, summaries=True)
    report = fakes.run(idle_exit=3)
    # Each checkpoint was stored after the writes of every batch whose offsets it holds.
    assert all(c["frames_written"] == c["offsets"].get("frames:0", 0) for c in fakes.sink.checkpoints)
    saved = fakes.events("ran", "sink0", "checkpoint")
    commits, advances = fakes.events("issued", "decoder0", "commit"), fakes.events("issued", "summarizer", "advance")
    assert len(commits) > 1 and len(advances) > 1
    for n, (position, commit) in enumerate(commits):
        durable = [call for p, call in saved if p < position]
        assert len(durable) > n  # a durable checkpoint of its own before each commit
        assert commit.args == (durable[-1].args[5],)  # the latest durable checkpoint's offsets
    for n, (position, advance) in enumerate(advances):
        durable = [call for p, call in saved if p < position]
        assert len(durable) > n
        covered = durable[-1].args[5].get("frames:0", 0)  # frames 0..covered-1 (pts = offset)
        assert advance.args == ({"door": covered - 1.0} if covered else {}, False)
    assert fakes.decoder.commits[-1] == fakes.store.checkpoints[(0, 1)]["offsets"] == {"frames:0": sum(sizes)}
    assert report.checkpoints == len(fakes.sink.checkpoints)
    assert report.summaries == len(fakes.events("issued", "summarizer", "advance"))
    assert (report.frames, report.alerts, report.dead_letters) == (sum(sizes), sum(sizes) // 3, 2)
    assert not fakes.analyzer.flushed  # Kafka never ends: no window is closed early


def test_the_driver_stops_on_a_failed_write_without_committing_past_it():
    fakes = scripted([4] * 6, kafka=True, fail_batch=3)
    with pytest.raises(WriteFailed):
        fakes.run(idle_exit=3)
    assert fakes.decoder.commits and all(offsets["frames:0"] <= 8 for offsets in fakes.decoder.commits)


def test_a_restart_loads_the_checkpoint_and_seeks_to_its_offsets():
    stored = {(0, 1): {"sequence": 4, "analyzer": {"door": [13, 39.0]}, "offsets": {"frames:0": 40}}}
    fakes = scripted([4], kafka=True, store=Store(stored))
    fakes.run(idle_exit=2)
    assert fakes.analyzer.loads == [{"door": [13, 39.0]}] and fakes.decoder.seeks == [{"frames:0": 40}]
    assert [checkpoint["sequence"] for checkpoint in fakes.sink.checkpoints] == [5, 6]  # numbered on from 4
    assert fakes.sink.checkpoints[-1] | {"frames_written": None} == {
        "sequence": 6,
        "analyzer": {"door": [17, 43.0]},
        "offsets": {"frames:0": 44},
        "frames_written": None,
    }
    assert fakes.store.items[("door", 40.0)] == 14 and fakes.store.alerts == {"door-5"}


def test_ended_sources_are_flushed_and_summarized_to_the_end():
    fakes = scripted([4, 4, 2], summaries=True)
    report = fakes.run()
    assert fakes.analyzer.flushed and report.frames == 10
    last_write = fakes.events("issued", "sink0", "write")[-1][1]
    assert last_write.args[0].method == "flush"
    assert last_write in fakes.events("issued", "sink0", "checkpoint")[-1][1].args[6:]  # the last one covers it
    assert fakes.events("issued", "summarizer", "advance")[-1][1].args == ({"door": 9.0}, True)
    assert fakes.sink.checkpoints[-1]["frames_written"] == 10


@pytest.mark.parametrize("how", ["max_frames", "stop", "idle"])
def test_the_driver_stops_early_without_closing_windows(how):
    fakes = scripted([4] * 5 if how != "idle" else [], kafka=how == "idle", summaries=True)
    stop = threading.Event()
    if how == "stop":  # SIGTERM while the third batch is read
        fakes.decoder.on_poll = lambda: fakes.decoder.handed == 8 and stop.set()
    report = fakes.run(stop=stop, max_frames=8 if how == "max_frames" else None, idle_exit=2 if how == "idle" else None)
    assert report.frames == {"max_frames": 8, "stop": 12, "idle": 0}[how]
    assert not fakes.analyzer.flushed
    assert fakes.sink.checkpoints[-1]["frames_written"] == report.frames  # a last checkpoint covers them all
    assert fakes.events("issued", "summarizer", "advance")[-1][1].args[1] is False


# --------------------------------------------------------------------------------------------- decoders, shards


class AllAnswer(FakeCalls):
    """Every call waited on answers at once (decoders polled together all have frames)."""

    def wait_any(self, calls: list) -> None:
        self.waited.append(list(calls))
        for call in calls:
            call.run()


def test_several_decoders_polls_go_to_one_extractor_call_by_reference_and_the_driver_never_fetches_frames():
    fakes = on_topic(Topic(), per_poll=2, shards=1)
    calls = AllAnswer()
    report = fakes.run(calls, idle_exit=3, batch_frames=4)
    assert report.frames == 48 and max(len(tokens) for tokens in fakes.received) == 2  # two decoders' polls at once
    handed = [token for tokens in fakes.received for token in tokens]
    assert [id(token) for token in handed] == [id(token) for token in fakes.polled if token.frames]  # as they came
    assert tokens_in(calls.fetched) == []  # only receipts were fetched
    assert all(len(token.frames) <= 2 for token in handed)


def test_a_quiet_decoder_does_not_hold_up_the_others():
    """Decoder 0's partitions carry nothing and its poll does not answer: the driver goes on with decoder 1's
    polls instead of waiting for it at every turn (a poll stays under way until it answers)."""
    topic = Topic(cameras={"gate": 1, "yard": 1})
    fakes = on_topic(topic, per_poll=2, shards=1)
    calls = FakeCalls(pick=lambda waited: next((c for c in waited if actor_of(c) == "decoder1"), waited[0]))
    report = fakes.run(calls, idle_exit=3, batch_frames=4)
    assert report.frames == 24  # every frame of decoder 1's partition
    # Decoder 0's poll is answered only when another of its calls (a commit) runs after it, never waited for.
    quiet, busy = (len(fakes.events("issued", f"decoder{i}", "poll")) for i in (0, 1))
    assert busy >= 12 and quiet * 4 <= busy, (quiet, busy)


@pytest.mark.parametrize("shards", [2, 3])
def test_each_shard_analyses_its_own_cameras_only_each_in_order(shards):
    fakes = on_topic(Topic(), shards=shards)
    fakes.run(idle_exit=3, batch_frames=6)
    for shard, analyzer in enumerate(handle.target for handle in fakes.stages.analyzers):
        assert {camera_shard(camera, shards) for camera, _ in analyzer.seen} <= {shard}
        for camera in {camera for camera, _ in analyzer.seen}:
            assert [pts for seen, pts in analyzer.seen if seen == camera] == [float(pts) for pts in range(12)]
    assert fakes.store.items == {(camera, float(pts)): pts + 1 for camera in CAMERAS for pts in range(12)}


def test_offsets_are_committed_only_once_every_shards_checkpoint_is_durable():
    topic = Topic()
    fakes = on_topic(topic, shards=2)
    calls = FakeCalls()
    resume(fakes.stages, "cam", calls)
    cycle = CheckpointCycle("cam", fakes.stages, calls, every=1.0, started=0.0)
    cycle.start({"frames:0": 6, "frames:1": 4}, {})
    first, second = cycle.saving.saved
    first.run()
    cycle.step(0.5, {}, {})
    assert cycle.saving is not None and not fakes.events("issued", "decoder0", "commit")
    second.run()
    cycle.step(0.6, {}, {})
    assert cycle.saving is None and cycle.checkpoints == 1
    calls.settle(cycle.committing)
    assert topic.committed == {"frames:0": 6, "frames:1": 4}  # each decoder its own partition
    assert [call.args for _, call in fakes.events("issued", "decoder1", "commit")] == [
        ({"frames:0": 6, "frames:1": 4},)
    ]


def test_a_resume_reads_each_partition_again_from_the_least_offset_of_the_shards_checkpoints():
    # Partition 0 holds gate, door, gate, door, ... (offset 2n: gate at pts n); partition 1 yard, dock, ...
    stored = {
        (0, 2): {
            "sequence": 3,
            "analyzer": {"gate": [3, 2.0], "yard": [3, 2.0]},
            "offsets": {"frames:0": 6, "frames:1": 6},
        },
        (1, 2): {
            "sequence": 2,
            "analyzer": {"door": [2, 1.0], "dock": [4, 3.0]},
            "offsets": {"frames:0": 4, "frames:1": 8},
        },
    }
    fakes = on_topic(Topic(), shards=2, store=Store(stored))
    fakes.run(idle_exit=3, batch_frames=6)
    assert [handle.target.next for handle in fakes.stages.decoders] == [{0: 24}, {1: 24}]
    assert [handle.target.loads for handle in fakes.stages.analyzers] == [
        [stored[(0, 2)]["analyzer"]],
        [stored[(1, 2)]["analyzer"]],
    ]
    # Read again from offsets 4 (gate at 2 s, which shard 0 skips) and 6 (yard at 3 s; dock at 3 s next, which
    # shard 1 skips).
    first_seen: dict[str, float] = {}
    for handle in fakes.stages.analyzers:
        for camera, pts in handle.target.seen:
            first_seen.setdefault(camera, pts)
    assert first_seen == {"gate": 2.0, "door": 2.0, "yard": 3.0, "dock": 3.0}
    # Every camera goes on from its own count: nothing analysed twice, nothing missed.
    assert fakes.store.items == {
        (camera, float(pts)): pts + 1
        for camera in CAMERAS
        for pts in range(12)
        if pts > dict(gate=2, yard=2, door=1, dock=3)[camera]
    }
    assert fakes.store.checkpoints[(0, 2)]["sequence"] >= 4


# --------------------------------------------------------------------------------------------- recovery


def outputs(fakes: Fakes) -> tuple:
    """What a run leaves: the items and alerts stored, the last checkpoints (but their numbers), the commits."""
    checkpoints = {key: {**value, "sequence": None} for key, value in fakes.store.checkpoints.items()}
    return fakes.store.items, fakes.store.alerts, checkpoints, fakes.stages.decoders[0].target.topic.committed


@pytest.mark.parametrize(
    ("actor", "method", "nth"),
    [
        ("analyzer1", "process", 3),
        ("decoder0", "poll", 4),
        ("extractor0", "extract_sharded", 3),
        ("sink0", "write", 5),
        ("sink1", "checkpoint", 2),
    ],
)
def test_a_stage_lost_mid_stream_is_replayed_to_the_outputs_of_an_undisturbed_run(actor, method, nth, capsys):
    undisturbed = on_topic(Topic(), shards=2)
    expected = undisturbed.run(idle_exit=3, batch_frames=6)
    assert expected.recoveries == 0 and len(undisturbed.store.alerts) == 16

    fakes = on_topic(Topic(), shards=2)
    fakes.actor(actor).dies_at = (method, nth)
    report = fakes.run(idle_exit=3, batch_frames=6)
    assert fakes.actor(actor).restarts == 1  # it died once, and Ray restarted it
    assert outputs(fakes) == outputs(undisturbed)
    assert report.alerts == expected.alerts  # no alert counted twice
    assert report.recoveries == 1 and report.recovery_seconds > 0
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("monitor cam: recovered in ") and f"from {actor}." in line and "ActorDiedError" in line


def test_a_batch_lost_with_its_extractor_is_never_skipped_by_later_batches_of_another():
    """Extractor 0 dies holding an earlier batch while extractor 1 finishes a later one: the analyzer refuses
    the later batch (it does not follow the last call) instead of analysing over the gap, and the monitor
    replays to the undisturbed outputs."""
    undisturbed = on_topic(Topic(), extractors=2)
    undisturbed.run(idle_exit=3, batch_frames=3)

    fakes = on_topic(Topic(), extractors=2)
    fakes.actor("extractor0").dies_at = ("extract_sharded", 2)
    # Extractor 1's batches run first: when extractor 0 dies, a later batch of extractor 1 is already done.
    calls = FakeCalls(pick=lambda pending: next((c for c in pending if actor_of(c) == "extractor1"), pending[0]))
    report = fakes.run(calls, idle_exit=3, batch_frames=3)
    refused = [
        call
        for kind, actor, method, call in fakes.log
        if (kind, actor, method) == ("ran", "analyzer0", "process") and "was due" in str(call.error or "")
    ]
    assert refused, "no analyzer call was refused after the lost batch"
    assert report.recoveries >= 1
    assert outputs(fakes) == outputs(undisturbed)


def test_trackers_get_their_shards_batches_beside_the_analyzers_and_checkpoint_with_them():
    fakes = on_topic(Topic(), shards=2, trackers=True)
    fakes.run(idle_exit=3, batch_frames=6)
    for analyzer, tracker in zip(fakes.stages.analyzers, fakes.stages.trackers):
        assert tracker.target.seen == analyzer.target.seen and tracker.target.seen
    analysed = {(camera, float(pts)): pts + 1 for camera in CAMERAS for pts in range(12)}
    assert fakes.store.items == {**analysed, **{("tracked", *key): count for key, count in analysed.items()}}
    alerts = {f"{camera}-{n}" for camera in CAMERAS for n in (1, 2, 3, 4)}
    assert fakes.store.alerts == alerts | {f"t-{alert}" for alert in alerts}
    for (shard, _), checkpoint in fakes.store.checkpoints.items():
        state = checkpoint["analyzer"]  # the analyzer's cameras and the tracker's section, in one state
        tracked = fakes.stages.trackers[shard].target.cameras
        assert state == {**fakes.stages.analyzers[shard].target.cameras, "tracking": tracked} and tracked


@pytest.mark.parametrize(("actor", "method", "nth"), [("tracker1", "process", 3), ("tracker0", "state_dict", 1)])
def test_a_tracker_lost_mid_stream_is_replayed_to_the_outputs_of_an_undisturbed_run(actor, method, nth):
    undisturbed = on_topic(Topic(), shards=2, trackers=True)
    undisturbed.run(idle_exit=3, batch_frames=6)
    fakes = on_topic(Topic(), shards=2, trackers=True)
    fakes.actor(actor).dies_at = (method, nth)
    report = fakes.run(idle_exit=3, batch_frames=6)
    assert fakes.actor(actor).restarts == 1 and report.recoveries == 1
    # the fake tracker counts its cameras' frames: gone on from anything but its checkpoint, its items would differ
    assert outputs(fakes) == outputs(undisturbed)


def test_a_stage_that_dies_for_good_ends_the_monitor():
    fakes = on_topic(Topic(), shards=2)
    fakes.actor("analyzer1").restarts = 0
    fakes.actor("analyzer1").dies_at = ("process", 2)
    with pytest.raises(StageFailed) as caught:
        fakes.run(idle_exit=3, batch_frames=6)
    assert type(caught.value) is StageFailed and str(caught.value).startswith("analyzer1 failed: ActorDiedError")


# --------------------------------------------------------------------------------------------- shard checkpoints


PARTITION_OF = {"gate": 0, "door": 0, "yard": 1, "dock": 1}
THING = StandingQuery(id="thing", text="thing", **RULES)


def level(camera: str, pts: int) -> float:
    """Each camera sees the query's scene for a while of its own, so events open and close at different times."""
    start = 4 + 3 * list(PARTITION_OF).index(camera)
    return 0.9 if start <= pts < start + 6 else 0.1


def messages(frames_each: int = 30) -> dict[str, list[tuple[str, int]]]:
    """Per "topic:partition", its messages (camera, pts) in offset order."""
    out: dict[str, list[tuple[str, int]]] = {}
    for pts in range(frames_each):
        for camera, partition in PARTITION_OF.items():
            out.setdefault(f"frames:{partition}", []).append((camera, pts))
    return out


def batch(camera: str, pts: int) -> FrameBatch:
    siglip = raw_vector(level(camera, pts))[None]
    return FrameBatch([Frame(camera, float(pts), pts, IMAGE, camera=camera)], siglip, np.eye(4, dtype=np.float32)[:1])


def new_analyzer() -> StreamAnalyzer:
    analyzer = StreamAnalyzer(matcher(), window=2.0, models=MODELS)
    analyzer.sync_queries([(THING, None)])
    return analyzer


def feed(analyzers: list[StreamAnalyzer], start: dict[str, int], end: dict[str, int] | None = None) -> dict:
    """Each partition's messages from `start` to `end` (offsets), each frame to the analyzer of its camera's
    shard; the outputs, keyed as the sink stores them."""
    stored: dict = {}
    for partition, taken in messages().items():
        for camera, pts in taken[start.get(partition, 0) : (end or {}).get(partition)]:
            out = analyzers[camera_shard(camera, len(analyzers))].process(batch(camera, pts))
            stored.update({("clip", clip.source, clip.start): clip.siglip.tobytes() for clip, _ in out.clips})
            stored.update({("alert", alert.id): alert.to_json() for alert in out.alerts})
            stored.update({("thumbnail", key): True for key, _ in out.thumbnails})
    return stored


def comparable(state: dict) -> str:
    state = {**state, "matcher": {**state["matcher"], "pairs": sorted(state["matcher"]["pairs"], key=json.dumps)}}
    return json.dumps(state, sort_keys=True)


@pytest.mark.parametrize("then", [3, 1])
def test_two_shards_checkpoints_taken_apart_resume_on_another_shard_count_as_one_undisturbed_analyzer(then):
    whole = new_analyzer()
    expected = feed([whole], {})
    assert len([key for key in expected if key[0] == "alert"]) == 4

    before = [new_analyzer(), new_analyzer()]
    stored = feed(before, {}, {"frames:0": 30, "frames:1": 24})
    checkpoints = [ShardCheckpoint(0, 2, 7, before[0].state_dict(), {"frames:0": 30, "frames:1": 24})]
    stored.update(feed(before, {"frames:0": 30, "frames:1": 24}, {"frames:0": 40, "frames:1": 40}))
    checkpoints.append(ShardCheckpoint(1, 2, 7, before[1].state_dict(), {"frames:0": 40, "frames:1": 40}))
    stored.update(feed(before, {"frames:0": 40, "frames:1": 40}, {"frames:0": 46, "frames:1": 50}))  # then lost

    found = CheckpointSet(checkpoints)
    point = found.resume_point()
    assert point == ResumePoint({"frames:0": 30, "frames:1": 24}, 8)  # per partition, the least offset
    after = [new_analyzer() for _ in range(then)]
    for analyzer, state in zip(after, json.loads(json.dumps(found.states(then)))):
        analyzer.load_state_dict(state)
    stored.update(feed(after, point.offsets))
    assert stored == expected
    merged = CheckpointSet([ShardCheckpoint(k, then, 9, a.state_dict(), {}) for k, a in enumerate(after)])
    assert comparable(merged.states(1)[0]) == comparable(whole.state_dict())


def test_an_interrupted_change_of_shard_count_takes_each_camera_from_its_newest_checkpoint():
    two = [ShardCheckpoint(k, 2, 5, {}, {"frames:0": 10 + k, "frames:1": 20}) for k in range(2)]
    three = ShardCheckpoint(0, 3, 6, {}, {"frames:0": 15, "frames:1": 12})  # shards 1 and 2 of 3 not saved yet
    found = CheckpointSet([*two, three])
    assert found.period == 6 and found.superseded == []
    assert [found.newest[residue] for residue in range(6)] == [three, two[1], two[0], three, two[0], two[1]]
    assert found.resume_point() == ResumePoint({"frames:0": 10, "frames:1": 12}, 7)
    done = [ShardCheckpoint(k, 3, 6, {}, {"frames:0": 15, "frames:1": 12}) for k in range(1, 3)]
    assert CheckpointSet([*two, three, *done]).superseded == two
    lacking = CheckpointSet([three])  # the cameras of other residues were never checkpointed: from the commits
    assert lacking.resume_point() == ResumePoint({}, 7)


def test_a_checkpoint_of_before_shards_is_read_as_one_shard_and_deleted_once_superseded(tmp_path):
    store = LocalStore(tmp_path)
    whole = new_analyzer()
    feed([whole], {}, {"frames:0": 20, "frames:1": 20})
    store.put_json(monitor_checkpoint_key("cam"), {"analyzer": whole.state_dict(), "offsets": {"frames:0": 20}})
    sink = StoreSink(store, ClipIndex.load(store), None)
    point, states = sink.resume("cam", 2)
    assert point == ResumePoint({"frames:0": 20}, 0)
    assert [sorted(state["last_pts"]) for state in states] == [["gate", "yard"], ["dock", "door"]]
    for shard, state in enumerate(states):
        sink.checkpoint("cam", ShardCheckpoint(shard, 2, 0, state, {"frames:0": 20}).to_json(), shard, 2)
    assert store.exists(monitor_checkpoint_key("cam"))
    point, again = sink.resume("cam", 2)
    assert point == ResumePoint({"frames:0": 20}, 1) and again == states
    assert not store.exists(monitor_checkpoint_key("cam"))
    assert all(store.exists(monitor_shard_checkpoint_key("cam", shard, 2)) for shard in range(2))
