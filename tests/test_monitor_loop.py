"""The monitor's driver and its parts on fake stages, without Ray: ordering, backpressure, checkpoints.

A fake call runs only when something needs it (a `get`, a later call of the same actor, a call that takes
it as an argument) or when the driver waits for any of several calls, and it runs as a Ray actor call
would: after its actor's earlier calls, once the calls among its arguments have run (their error becomes
its error). So the tests see what the driver asked for and when, not what a scheduler happened to do.
"""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest

from actors.stages import MonitorStages
from jobs.monitor import CheckpointCycle, ExtractorPool, drive
from pipeline.config import MonitorConfig
from pipeline.records import Frame, FrameBatch

IMAGE = np.zeros((2, 2, 3), dtype=np.uint8)


class Call:
    def __init__(self, actor: FakeActor, method: str, args: tuple):
        self.actor, self.method, self.args = actor, method, args
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

    def _execute(self) -> None:
        try:
            args = [arg.value() if isinstance(arg, Call) else arg for arg in self.args]
            self.result = getattr(self.actor.target, self.method)(*args)
        except Exception as exc:
            self.error = exc
        self.actor.pending.remove(self)
        self.done = True
        self.actor.log.append(("ran", self.actor.name, self.method, self))


class FakeActor:
    """A stage handle: `handle.method.remote(*args)` returns a pending Call on `target`."""

    def __init__(self, name: str, target, log: list):
        self.name, self.target, self.log = name, target, log
        self.pending: list[Call] = []
        self.most_pending = 0  # the most calls it ever had waiting to run

    def __getattr__(self, method: str):
        return _Method(self, method)


class _Method:
    def __init__(self, actor: FakeActor, name: str):
        self.actor, self.name = actor, name

    def remote(self, *args) -> Call:
        call = Call(self.actor, self.name, args)
        self.actor.pending.append(call)
        self.actor.most_pending = max(self.actor.most_pending, len(self.actor.pending))
        self.actor.log.append(("issued", self.actor.name, self.name, call))
        return call


class FakeCalls:
    """RemoteCalls on fake calls; `wait_any` runs the call `pick` chooses (by default the first given)."""

    def __init__(self, pick=lambda calls: calls[0]):
        self.pick = pick
        self.waited: list[list[Call]] = []

    def get(self, calls):
        return [call.value() for call in calls] if isinstance(calls, list) else calls.value()

    def done(self, call: Call) -> bool:
        return call.done

    def wait_any(self, calls: list[Call]) -> None:
        self.waited.append(list(calls))
        self.pick(calls).run()


class WriteFailed(Exception):
    pass


class Decoder:
    """Hands out `sizes[i]` frames of camera "door" at its i-th poll. Embedded: the source ends with the last
    batch. Kafka: one message per frame on partition frames:0; polls after the last batch find nothing."""

    def __init__(self, sizes: list[int], kafka: bool):
        self.sizes, self.kafka = list(sizes), kafka
        self.handed = 0  # frames handed out so far (the next pts, and the next offset)
        self.on_poll = lambda: None
        self.seeks: list[dict] = []
        self.commits: list[dict] = []

    def poll(self, timeout: float, max_frames: int):
        self.on_poll()
        if not self.sizes:
            return [], {}, not self.kafka
        count = self.sizes.pop(0)
        assert count <= max_frames
        frames = [Frame("door", float(self.handed + i), self.handed + i, IMAGE, camera="door") for i in range(count)]
        self.handed += count
        return frames, {"frames:0": self.handed} if self.kafka else {}, not self.kafka and not self.sizes

    def seek(self, offsets: dict) -> None:
        self.seeks.append(offsets)

    def commit(self, offsets: dict) -> None:
        self.commits.append(offsets)

    def dead_letter_count(self) -> int:
        return 2


class Extractor:
    def extract(self, batch: FrameBatch) -> FrameBatch:
        """Features that name their frame (its pts), so the analyzer can tell whose features it got."""
        pts = np.array([[frame.pts] for frame in batch.frames], dtype=np.float32)
        return FrameBatch(batch.frames, pts, pts)


class Analyzer:
    def __init__(self):
        self.batches: list[list[float]] = []  # the pts of each batch, in the order it got them
        self.flushed = False
        self.loaded = None

    def process(self, batch: FrameBatch) -> dict:
        assert [row[0] for row in batch.siglip] == [frame.pts for frame in batch.frames]
        self.batches.append([frame.pts for frame in batch.frames])
        return {"frames": len(batch.frames), "alerts": 1}

    def refresh_queries(self) -> dict:
        return {"frames": 0, "alerts": 0}

    def flush(self) -> dict:
        self.flushed = True
        return {"frames": 0, "alerts": 0}

    def state_dict(self) -> dict:
        return {"batches": len(self.batches)}

    def load_state_dict(self, state: dict) -> None:
        self.loaded = state


class Sink:
    def __init__(self, stored: dict | None = None, fail_batch: int | None = None):
        self.stored = stored  # the durable checkpoint
        self.fail_batch = fail_batch  # the write of this batch (1: the first) fails
        self.batches = 0
        self.frames_written = 0
        self.checkpoints: list[dict] = []  # each durable checkpoint, with the frames written before it

    def write(self, output: dict) -> int:
        if output["frames"]:
            self.batches += 1
            if self.batches == self.fail_batch:
                raise WriteFailed(f"batch {self.batches}")
        self.frames_written += output["frames"]
        return output["alerts"]

    def checkpoint(self, name: str, analyzer: dict, offsets: dict, *writes: int) -> None:
        self.stored = {"analyzer": analyzer, "offsets": offsets}
        self.checkpoints.append({**self.stored, "frames_written": self.frames_written})

    def load_checkpoint(self, name: str) -> dict | None:
        return self.stored


class Summarizer:
    def advance(self, latest_pts: dict, ended: bool) -> int:
        return 1


class Fakes:
    """A monitor's fake stages (one decoder) and the targets behind them."""

    def __init__(
        self,
        sizes: list[int],
        *,
        extractors: int = 1,
        kafka: bool = False,
        summaries: bool = False,
        sink: Sink | None = None,
    ):
        self.log: list[tuple] = []  # ("issued" | "ran", actor, method, call), in order
        self.decoder = Decoder(sizes, kafka)
        self.analyzer = Analyzer()
        self.sink = sink or Sink()
        decoder = self._handle("decoder", self.decoder)
        self.stages = MonitorStages(
            extractors=[self._handle(f"extractor{i}", Extractor()) for i in range(extractors)],
            decoders=[decoder],
            analyzer=self._handle("analyzer", self.analyzer),
            sink=self._handle("sink", self.sink),
            summarizer=self._handle("summarizer", Summarizer()) if summaries else None,
            consumer=decoder if kafka else None,
        )

    def _handle(self, name: str, target) -> FakeActor:
        return FakeActor(name, target, self.log)

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


def handed_batches(sizes: list[int]) -> list[list[float]]:
    starts = itertools.accumulate([0, *sizes])
    return [[float(pts) for pts in range(start, start + size)] for start, size in zip(starts, sizes)]


def test_batches_reach_the_analyzer_in_submission_order_whichever_extractor_finishes_first():
    sizes = [4, 3, 4, 2, 4, 1, 4, 4]
    fakes = Fakes(sizes, extractors=2)
    calls = FakeCalls(pick=lambda calls: calls[-1])  # when the driver waits, the last extractor finishes first
    report = fakes.run(calls, in_flight=16)
    assert fakes.in_order("ran", "extract") != fakes.in_order("issued", "extract")  # they finished out of order
    assert fakes.analyzer.batches == handed_batches(sizes)
    assert (report.frames, report.batches, report.alerts) == (sum(sizes), len(sizes), len(sizes))


def test_the_pool_gives_a_batch_to_the_least_busy_extractor_and_none_a_third():
    log: list[tuple] = []
    calls = FakeCalls()
    pool = ExtractorPool([FakeActor(f"extractor{i}", Extractor(), log) for i in range(3)], calls)
    batch = FrameBatch([Frame("door", 0.0, 0, IMAGE)])
    chosen, handed = [], []
    for finish_first in (None, None, None, 1, None, None, None):
        if finish_first is not None:
            handed[finish_first].run()  # extractor 1 finished its batch: it is the least busy now
        chosen.append(pool.least_busy())
        handed.append(pool.extract(chosen[-1], batch))
    assert chosen == [0, 1, 2, 1, 0, 1, 2]  # least busy (ties: the first), not turn by turn
    assert not calls.waited and [len(pending) for pending in pool.in_hand] == [2, 2, 2]

    calls.pick = lambda oldest: oldest[2]  # each extractor holds two: the next batch waits for one to finish
    assert pool.least_busy() == 2
    assert calls.waited == [[pending[0] for pending in pool.in_hand[:2]] + [handed[2]]]


def test_no_extractor_is_given_a_third_batch_by_the_driver():
    fakes = Fakes([4] * 9, extractors=2)
    calls = FakeCalls()
    fakes.run(calls, in_flight=16)  # a bound this loose never waits for writes: only the extractors' room counts
    assert [extractor.most_pending for extractor in fakes.stages.extractors] == [2, 2]
    assert calls.waited


@pytest.mark.parametrize(("in_flight", "seen"), [(2, [0, 4, 1, 2, 4, 2]), (8, [0, 4, 5, 6, 10, 12])])
def test_intake_waits_while_more_frames_than_the_bound_are_in_flight(in_flight, seen):
    """One extractor: `in_flight` batches of 4 frames leave room for (in_flight - 1) * 4 frames between polls.
    Writes finish only when the driver waits for them, so what is in flight at a poll is what it let be."""
    sizes = [4, 1, 1, 4, 2, 3]
    fakes = Fakes(sizes)
    in_flight_at_poll = []
    fakes.decoder.on_poll = lambda: in_flight_at_poll.append(fakes.decoder.handed - fakes.sink.frames_written)
    report = fakes.run(in_flight=in_flight)
    assert in_flight_at_poll == seen  # with 4: every poll after the writes that took it over 4 frames finished
    assert report.frames == fakes.sink.frames_written == sum(sizes)


def test_offsets_are_committed_and_summarized_only_once_the_checkpoint_covering_them_is_durable():
    fakes = Fakes([], kafka=True, summaries=True)
    sink = fakes.stages.sink
    cycle = CheckpointCycle("cam", fakes.stages, FakeCalls(), every=1.0, started=0.0)
    writes = [sink.write.remote({"frames": 4, "alerts": 0}) for _ in range(2)]
    for write in writes:
        cycle.cover(write)
    cycle.step(0.5, {"frames:0": 8}, {"door": 7.0})
    assert cycle.saving is None  # not due yet
    cycle.step(1.0, {"frames:0": 8}, {"door": 7.0})
    assert cycle.saving is not None and not any(write.done for write in writes)  # nothing waits for a save
    cycle.step(2.0, {"frames:0": 12}, {"door": 11.0})
    assert not fakes.events("issued", "decoder", "commit") and not fakes.events("issued", "summarizer", "advance")
    assert len(fakes.events("issued", "sink", "checkpoint")) == 1  # one save at a time

    cycle.saving.saved.run()
    assert fakes.sink.checkpoints == [{"analyzer": {"batches": 0}, "offsets": {"frames:0": 8}, "frames_written": 8}]
    cycle.step(3.0, {"frames:0": 12}, {"door": 11.0})
    assert [call.args for _, call in fakes.events("issued", "decoder", "commit")] == [({"frames:0": 8},)]
    assert [call.args for _, call in fakes.events("issued", "summarizer", "advance")] == [({"door": 7.0}, False)]
    assert cycle.checkpoints == 1 and cycle.saving.offsets == {"frames:0": 12}  # and the next save began


def test_a_failed_write_fails_its_checkpoint_and_nothing_is_committed():
    fakes = Fakes([], kafka=True, summaries=True, sink=Sink(fail_batch=2))
    sink = fakes.stages.sink
    cycle = CheckpointCycle("cam", fakes.stages, FakeCalls(), every=1.0, started=0.0)
    for _ in range(2):
        cycle.cover(sink.write.remote({"frames": 4, "alerts": 0}))
    cycle.start({"frames:0": 8}, {"door": 7.0})
    with pytest.raises(WriteFailed):
        cycle.finish()
    assert fakes.sink.stored is None and cycle.checkpoints == 0
    assert not fakes.events("issued", "decoder", "commit") and not fakes.events("issued", "summarizer", "advance")


def test_every_commit_and_summary_follows_the_durable_checkpoint_that_covers_it():
    sizes = [4, 3, 4, 4, 2, 4, 4, 1]
    fakes = Fakes(sizes, extractors=2, kafka=True, summaries=True)
    report = fakes.run(idle_exit=3)
    # Each checkpoint was stored after the writes of every batch whose offsets it holds.
    assert all(c["frames_written"] == c["offsets"].get("frames:0", 0) for c in fakes.sink.checkpoints)
    saved = fakes.events("ran", "sink", "checkpoint")
    commits, advances = fakes.events("issued", "decoder", "commit"), fakes.events("issued", "summarizer", "advance")
    assert len(commits) > 1 and len(advances) > 1
    for n, (position, commit) in enumerate(commits):
        durable = [call for p, call in saved if p < position]
        assert len(durable) > n  # a durable checkpoint of its own before each commit
        assert commit.args == (durable[-1].args[2],)  # the latest durable checkpoint's offsets
    for n, (position, advance) in enumerate(advances):
        durable = [call for p, call in saved if p < position]
        assert len(durable) > n
        covered = durable[-1].args[2].get("frames:0", 0)  # frames 0..covered-1 (pts = offset)
        assert advance.args == ({"door": covered - 1.0} if covered else {}, False)
    assert fakes.decoder.commits[-1] == fakes.sink.stored["offsets"] == {"frames:0": sum(sizes)}
    assert report.checkpoints == len(fakes.sink.checkpoints)
    assert report.summaries == len(fakes.events("issued", "summarizer", "advance"))
    assert (report.frames, report.alerts, report.dead_letters) == (sum(sizes), len(sizes), 2)
    assert not fakes.analyzer.flushed  # Kafka never ends: no window is closed early


def test_the_driver_stops_on_a_failed_write_without_committing_past_it():
    fakes = Fakes([4] * 6, kafka=True, sink=Sink(fail_batch=3))
    with pytest.raises(WriteFailed):
        fakes.run(idle_exit=3)
    assert fakes.decoder.commits and all(offsets["frames:0"] <= 8 for offsets in fakes.decoder.commits)


def test_a_restart_loads_the_checkpoint_and_seeks_to_its_offsets():
    fakes = Fakes([4], kafka=True, sink=Sink(stored={"analyzer": {"batches": 7}, "offsets": {"frames:0": 40}}))
    fakes.decoder.handed = 40
    fakes.run(idle_exit=2)
    assert fakes.analyzer.loaded == {"batches": 7} and fakes.decoder.seeks == [{"frames:0": 40}]
    assert fakes.sink.stored["offsets"] == {"frames:0": 44}


def test_ended_sources_are_flushed_and_summarized_to_the_end():
    fakes = Fakes([4, 4, 2], summaries=True)
    report = fakes.run()
    assert fakes.analyzer.flushed and report.frames == 10
    last_write = fakes.events("issued", "sink", "write")[-1][1]
    assert last_write.args[0].method == "flush"
    assert last_write in fakes.events("issued", "sink", "checkpoint")[-1][1].args[3:]  # the last checkpoint covers it
    assert fakes.events("issued", "summarizer", "advance")[-1][1].args == ({"door": 9.0}, True)
    assert fakes.sink.checkpoints[-1]["frames_written"] == 10


@pytest.mark.parametrize("how", ["max_frames", "stop", "idle"])
def test_the_driver_stops_early_without_closing_windows(how):
    fakes = Fakes([4] * 5 if how != "idle" else [], kafka=how == "idle", summaries=True)
    stop = threading.Event()
    if how == "stop":  # SIGTERM while the third batch is read
        fakes.decoder.on_poll = lambda: fakes.decoder.handed == 8 and stop.set()
    report = fakes.run(stop=stop, max_frames=8 if how == "max_frames" else None, idle_exit=2 if how == "idle" else None)
    assert report.frames == {"max_frames": 8, "stop": 12, "idle": 0}[how]
    assert not fakes.analyzer.flushed
    assert fakes.sink.checkpoints[-1]["frames_written"] == report.frames  # a last checkpoint covers them all
    assert fakes.events("issued", "summarizer", "advance")[-1][1].args[1] is False
