"""The running monitor's status document and the driver's metrics (pipeline/live/status.py and metrics.py),
sampled without holding the driver up.

Every status period the reporter asks each decoder and each sink for a look (`look`, a call queued behind
their work) and goes on; once every answer is in, it composes the document from them, from the stages' actors
in Ray's actor table and from the calls the driver has in flight, and has a thread of its own write it, so a
slow or unavailable store holds no batch back (a document due while the last one is still being written is
skipped). Answers that fail because a stage was lost meanwhile are dropped: the next sample, after the
recovery, tells. As the monitor ends it writes a last document saying it stopped.

The driver (jobs.monitor) calls `step` each time round its loop, `lost` for each stage lost and `close` at
the end; the reporter reads the parts of the `StageRun` it is given (intake, extractor pool, frames in flight,
checkpoint cycle) for the calls in flight.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, replace
from typing import Any

from actors.actor_table import actor_id, actor_statuses
from actors.stages import MonitorStages, StageFailed
from pipeline.config import VigilConfig
from pipeline.live.analyzer import camera_shard
from pipeline.live.metrics import MonitorMetrics
from pipeline.live.status import (
    MIN_PERIOD,
    CameraStatus,
    IntakeLook,
    LastAlert,
    MonitorStatus,
    PartitionStatus,
    StageStatus,
)
from pipeline.storage.layout import monitor_status_key
from pipeline.storage.store import StoreError, open_configured_store

log = logging.getLogger(__name__)

# The stage of each actor class, as a failed call names it ("SinkActor.write failed: ...").
STAGE_OF_CLASS = {
    "KafkaDecoderActor": "decoder",
    "StreamDecoderActor": "decoder",
    "ExtractorActor": "extractor",
    "StreamAnalyzerActor": "analyzer",
    "TrackerActor": "tracker",
    "SinkActor": "sink",
    "SummarizerActor": "summarizer",
}


class StatusReporter:
    def __init__(self, config: VigilConfig, stages: MonitorStages, calls: Any):
        """`calls`: how the driver waits on the stages' calls (jobs.monitor.RemoteCalls)."""
        self.store = open_configured_store(config)
        self.name = config.monitor.name
        self.key = monitor_status_key(self.name)
        self.stages, self.calls = stages, calls
        self.period = max(config.monitor.checkpoint_every, MIN_PERIOD)
        self.started_at = time.time()
        self.asked_at: float | None = None  # when the last looks were asked for (the driver's clock)
        self.looks: tuple[list, list] | None = None  # the decoders' and the sinks' look calls in flight
        self.cameras: dict[str, CameraStatus] = {}
        self.last_alerts = self._stored_last_alerts()  # the previous run's, until newer ones come
        self.errors: Counter[str] = Counter()  # per stage, its calls lost
        self.last_errors: dict[str, str] = {}
        self.stage_of_actor = {
            actor_id(handle): stage for stage, handles in _stage_handles(stages) for handle in handles
        }
        self.metrics = MonitorMetrics()
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="vigil-status")
        self.writing: Future | None = None
        counts = len(stages.decoders), len(stages.extractors), len(stages.sinks)
        log.info("monitor %s: %d decoder(s), %d extractor(s), %d shard(s)", self.name, *counts)

    def step(self, now: float, run: Any, report: Any) -> None:
        """Ask for looks when a period has passed since the last were asked for; publish a document once every
        answer is in. `now` is the driver's clock."""
        if self.looks is None:
            if self.asked_at is None or now - self.asked_at >= self.period:
                self.looks = self._ask()
                self.asked_at = now
            return
        if all(self.calls.done(call) for call in [*self.looks[0], *self.looks[1]]):
            answers = self._answers()
            if answers is not None:
                self._publish(self._status("running", run, report, *answers))

    def lost(self, error: StageFailed) -> None:
        """A stage was lost (the driver replays from the checkpoints): counted against its stage, the one whose
        actor the error names (a call fails with the loss of an actor it waited on: "SinkActor.write failed:
        ... The actor {an analyzer's id} is unavailable"), else the one whose call failed."""
        text = str(error)
        named = [stage for actor, stage in self.stage_of_actor.items() if actor in text]
        stage = named[0] if named else STAGE_OF_CLASS.get(text.split(".", 1)[0])
        if stage is not None:
            self.errors[stage] += 1
            self.last_errors[stage] = text
        self.metrics.stage_lost()
        log.warning("stage lost, replaying from the checkpoints: %s", error, extra={"stage": stage or "driver"})

    def close(self, run: Any, report: Any) -> None:
        """The monitor ended: its last document, saying it stopped, written before this returns."""
        if self.looks is not None:
            self._answers()  # drop them: the last document takes fresh ones
        self.looks = self._ask()
        answers = self._answers() or ([], [])
        status = self._status("stopped", run, report, *answers)
        if self.writing is not None:
            self.writing.result()
        self._write(status)
        self.writer.shutdown()
        log.info("monitor %s stopped", self.name, extra=asdict(report))

    def _ask(self) -> tuple[list, list]:
        return [d.look.remote() for d in self.stages.decoders], [s.look.remote() for s in self.stages.sinks]

    def _answers(self) -> tuple[list[IntakeLook], list[dict[str, LastAlert]]] | None:
        """The looks asked for, or None when one failed (every one is collected, so no failure goes unseen)."""
        decoders, sinks = self.looks
        self.looks = None
        answers, failed = [], None
        for call in [*decoders, *sinks]:
            try:
                answers.append(self.calls.get(call))
            except StageFailed as exc:
                failed = exc
        if failed is not None:
            log.info("status sample dropped: %s", failed)
            return None
        return answers[: len(decoders)], answers[len(decoders) :]

    def _status(
        self, state: str, run: Any, report: Any, looks: list[IntakeLook], sinks: list[dict[str, LastAlert]]
    ) -> MonitorStatus:
        for alerts in sinks:
            for camera, alert in alerts.items():
                if camera not in self.last_alerts or alert.at >= self.last_alerts[camera].at:
                    self.last_alerts[camera] = alert
        shards = len(self.stages.sinks)
        # A camera no decoder took frames of this period (its decoder restarted) keeps its last entry, at 0 fps.
        cameras = {camera: replace(entry, fps=0.0) for camera, entry in self.cameras.items()}
        partitions = {}
        for decoder, look in enumerate(looks):
            for camera, intake in look.cameras.items():
                behind = look.seconds_behind(camera)
                cameras[camera] = CameraStatus(
                    frames=intake.frames,
                    fps=round(look.fps(camera), 3),
                    seconds_behind=None if behind is None else round(behind, 3),
                    last_alert=None,
                    shard=camera_shard(camera, shards),
                    decoder=decoder,
                )
            for name, (position, end) in look.partitions.items():
                partitions[name] = PartitionStatus.of(decoder, position, end)
        cameras = {camera: replace(entry, last_alert=self.last_alerts.get(camera)) for camera, entry in cameras.items()}
        self.cameras = cameras
        frames_in_flight = run.in_flight.frames()
        self.metrics.in_flight(frames_in_flight)
        return MonitorStatus(
            monitor=self.name,
            state=state,
            written_at=time.time(),
            started_at=self.started_at,
            period=self.period,
            mode="kafka" if self.stages.kafka else "embedded",
            report={**asdict(report), "dead_letters": sum(look.dead_letters for look in looks)},
            frames_in_flight=frames_in_flight,
            cameras=cameras,
            partitions=partitions,
            stages=self._stages(run),
        )

    def _stages(self, run: Any) -> dict[str, StageStatus]:
        """Each stage's actors and what the driver has queued for it: a decoder's poll waiting for an extractor,
        and the calls not finished yet (the driver holds finished ones until it next looks): a decoder's commits,
        an extractor's batches, the analyzers' (trackers') and sinks' writes (an analyzer call each) and the checkpoints
        being saved, the summary being made."""
        stages = self.stages

        def running(calls) -> int:
            return sum(not self.calls.done(call) for call in calls)

        on_hand = Counter(polled.decoder for polled in run.intake.on_hand)
        polls = [on_hand[i] for i in range(len(stages.decoders))]
        batches = [running(pending) for pending in run.pool.in_hand]
        writes = running([write for batch, _ in run.in_flight.writes for write in batch])
        cycle = run.checkpoints
        saving = running(cycle.saving.saved) if cycle.saving is not None else 0
        queued = {
            "decoder": (stages.decoders, polls, sum(polls) + running(cycle.committing)),
            "extractor": (stages.extractors, batches, sum(batches)),
            "analyzer": (stages.analyzers, None, writes),
            "sink": (stages.sinks, None, writes + saving),
        }
        if stages.trackers:
            queued["tracker"] = (stages.trackers, None, writes)
        if stages.summarizer is not None:
            summarizing = [cycle.summarizing] if cycle.summarizing is not None else []
            queued["summarizer"] = ([stages.summarizer], None, running(summarizing))
        return {
            stage: StageStatus(
                actors=actor_statuses(handles, per_actor),
                in_flight=in_flight,
                errors=self.errors[stage],
                last_error=self.last_errors.get(stage),
            )
            for stage, (handles, per_actor, in_flight) in queued.items()
        }

    def _publish(self, status: MonitorStatus) -> None:
        if self.writing is not None and not self.writing.done():
            return  # the store is slow: this one is skipped, the next period's comes
        self.writing = self.writer.submit(self._write, status)

    def _write(self, status: MonitorStatus) -> None:
        try:
            self.store.put_json(self.key, status.to_json())
        except StoreError as exc:  # the monitor goes on: its checkpoints tell whether the store is really gone
            log.warning("status not written: %s", exc)

    def _stored_last_alerts(self) -> dict[str, LastAlert]:
        """The last alerts of the monitor's previous run, from its last document (none without one)."""
        try:
            if not self.store.exists(self.key):
                return {}
            previous = MonitorStatus.from_json(self.store.get_json(self.key))
        except (StoreError, ValueError) as exc:
            log.warning("previous status unreadable: %s", exc)
            return {}
        return {camera: entry.last_alert for camera, entry in previous.cameras.items() if entry.last_alert}


def _stage_handles(stages: MonitorStages) -> list[tuple[str, list]]:
    summarizer = [stages.summarizer] if stages.summarizer is not None else []
    named = [("decoder", stages.decoders), ("extractor", stages.extractors), ("analyzer", stages.analyzers)]
    return [*named, ("tracker", stages.trackers), ("sink", stages.sinks), ("summarizer", summarizer)]
