"""The stages on Ray, made in one place for the monitor and the archive job.

One way to start Ray (`start_ray`) and to make extractors (`make_extractors`: one per GPU by default, spread
over the nodes, a CPU node's cores shared between the extractors on it). `make_monitor_stages` makes the
monitor's actors as a `MonitorStages`, which the monitor's driver (jobs.monitor) is given together with
`RayCalls`, its way of waiting on their calls. Ray and the actor modules are imported where the actors are
made, so the driver and its Ray-free tests can use `MonitorStages` without loading Ray or the models.

A stage that raises or dies reaches the driver as `StageFailed`: one line naming the failed call and its
cause, not Ray's remote traceback with its terminal colour codes. A loss the monitor recovers from by replay
(an actor died, an object was lost with its node, a restarted actor refused calls made for its predecessor) is
a `StageLost`, a kind of `StageFailed`.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.config import VigilConfig


class StageFailed(RuntimeError):
    """A stage (a Ray actor) raised an error or died; the message is one line: the call and its cause."""


class StageLost(StageFailed):
    """A stage's actor died (Ray restarts it, up to its `max_restarts`), or an object a call needed was lost:
    nothing is wrong with the stage's input, so the monitor replays it from its checkpoints."""


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # the terminal colours of Ray's error texts
_CALL = re.compile(r"ray::([\w.]+)\(")  # "ray::StreamDecoderActor.poll()": the call an error text is about
_FRAME = re.compile(r"^\s+File ")  # a traceback line naming a source line
_EXCEPTION = re.compile(r"^(?:[A-Za-z_][\w]*\.)*([A-Za-z_]\w*): ")  # "package.module.Error: message"


def _one_line(text: str) -> str:
    return " ".join(_ANSI.sub("", text).split())


def stage_failure(error: Exception) -> StageFailed:
    """The `StageFailed` a Ray error stands for: the innermost failed call (an error passed on from a stage's
    input names the stage that raised it) and the cause, on one line without colour codes."""
    from ray.exceptions import ObjectLostError, RayActorError, RayTaskError

    from pipeline.live.analyzer import StateLost

    text = _ANSI.sub("", str(error))
    calls = _CALL.findall(text)
    stage = calls[-1] if calls else type(error).__name__
    cause = error
    while isinstance(cause, RayTaskError):  # an error passed on from a call's input is the input's
        cause = cause.cause
    starting = isinstance(cause, RayActorError) and cause.actor_init_failed
    kind = StageLost if isinstance(cause, (RayActorError, ObjectLostError, StateLost)) and not starting else StageFailed
    if isinstance(error, RayTaskError):
        detail = _one_line(str(cause))
        return kind(f"{stage} failed: {type(cause).__name__}" + (f": {detail}" if detail else ""))
    if starting:
        # Only the text of the constructor's error crosses over: its traceback ends with "module.Error: message".
        lines = text.splitlines()
        frames = [i for i, line in enumerate(lines) if _FRAME.match(line)]
        after = lines[frames[-1] + 1 :] if frames else lines
        message = [line for line in after if line and not line[0].isspace()]
        cause = _EXCEPTION.sub(r"\1: ", message[0]) if message else ""
        return StageFailed(f"{stage} failed to start: {_one_line(' '.join([cause, *message[1:]]))}")
    return kind(f"{stage} failed: {_one_line(text)}")


def ray_get(calls):
    """`ray.get(calls)`, a stage's error raised as `StageFailed`."""
    import ray
    from ray.exceptions import RayError

    try:
        return ray.get(calls)
    except RayError as error:
        raise stage_failure(error) from None


def start_ray() -> None:
    """Join the cluster RAY_ADDRESS names (a new local one without it), once per process."""
    import ray

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False)


def threads_per_extractor(node_cpus: list[int], extractors: int) -> int:
    """Torch threads for each of `extractors` CPU extractors spread over nodes with `node_cpus` CPUs: the
    smallest node's cores shared by the extractors it gets. Several one-thread extractors on a small node
    get more images/s from its cores than one extractor with all of them (no thread waits for another)."""
    per_node = math.ceil(extractors / max(1, len(node_cpus)))
    return max(1, min(node_cpus, default=1) // per_node)


def cpu_shortfall(extractors: int, embedded_decoders: int, node_cpus: list[int]) -> str | None:
    """What to tell the user when the actors that hold a CPU slot each (extractors, embedded-mode decoders)
    outnumber the cluster's slots: Ray then keeps the rest waiting (an autoscaler may add nodes) and the
    monitor would seem to hang."""
    slots = extractors + embedded_decoders
    if slots <= sum(node_cpus):
        return None
    return (
        f"{extractors} extractor(s) and {embedded_decoders} embedded decoder(s) need {slots} CPU slots and the "
        f"Ray cluster has {sum(node_cpus)}: they wait until Ray has room (more workers, or fewer "
        "monitor.extractors)"
    )


def node_cpus() -> list[int]:
    """The CPUs of each live node of the cluster that has at least one."""
    import ray

    return [int(n["Resources"]["CPU"]) for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) >= 1]


def make_extractors(config: VigilConfig, count: int | Literal["auto"] = "auto") -> list:
    """`count` extractor actors ("auto": one per GPU in the cluster, else one), a GPU each when the cluster
    has them. On CPU nodes they share each node's cores (SPREAD: as few per node as there can be)."""
    import ray

    from actors.extractor import ExtractorActor

    gpus = int(ray.cluster_resources().get("GPU", 0))
    count = max(1, gpus) if count == "auto" else count
    threads = None if gpus else threads_per_extractor(node_cpus(), count)
    return [
        ExtractorActor.options(num_gpus=1 if gpus else 0, scheduling_strategy="SPREAD").remote(
            config.models,
            device=config.device,
            precision=config.precision,
            batch_size=config.batch_size,
            threads=threads,
            null=config.monitor.extractor == "null",
        )
        for _ in range(count)
    ]


@dataclass
class MonitorStages:
    """The monitor's stage handles: Ray actors from make_monitor_stages, fakes in the driver's tests (any
    objects whose methods have `.remote()` and `.options(num_returns=n).remote()`)."""

    extractors: list
    decoders: list  # one per embedded source, or `monitor.decoders` Kafka decoders dividing the partitions
    analyzers: list  # one per shard (`monitor.shards`), holding the cameras `camera_shard` gives it
    sinks: list  # one per shard, writing its analyzer's (and tracker's) outputs and storing its checkpoints
    summarizer: Any | None = None  # with monitor.summary_every set
    kafka: bool = False  # the decoders read Kafka: they commit the checkpointed offsets and count dead letters
    trackers: list = field(default_factory=list)  # with track.live, one per shard beside its analyzer

    def handles(self) -> list:
        return [
            *self.extractors,
            *self.decoders,
            *self.analyzers,
            *self.trackers,
            *self.sinks,
            *([self.summarizer] if self.summarizer is not None else []),
        ]


class WorkerNodes:
    """Places actors that ask for no CPU on the nodes that have CPUs, in turn: Ray may otherwise put them on
    a head node kept free of work. Soft: an actor restarted after its node is lost goes wherever Ray can.
    Each also asks for one byte of Ray's `memory` resource: Ray places an actor whose request is empty on a
    random node, whatever its soft node affinity says."""

    def __init__(self):
        import ray

        self._nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) >= 1]
        self._turn = 0

    def next(self) -> dict:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        if not self._nodes:
            return {}
        node = self._nodes[self._turn % len(self._nodes)]
        self._turn += 1
        return {"scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=node, soft=True), "memory": 1}


def make_monitor_stages(config: VigilConfig) -> MonitorStages:
    """The monitor's actors on the cluster (start_ray first), every one up when this returns: starting
    workers and loading models can take longer than `idle_exit` on a busy machine, and the driver's clocks
    start after. Each is restarted when lost (its `max_restarts`); the driver then replays from the checkpoints."""
    from actors.analyzer import StreamAnalyzerActor
    from actors.decoder import KafkaDecoderActor, StreamDecoderActor
    from actors.sink import SinkActor
    from actors.summarizer import SummarizerActor

    m = config.monitor
    kafka_mode = not m.sources
    extractors = make_extractors(config, m.extractors)
    if shortfall := cpu_shortfall(len(extractors), len(m.sources), node_cpus()):
        print(f"monitor {m.name}: {shortfall}", file=sys.stderr, flush=True)
    place = WorkerNodes()
    analyzers = [StreamAnalyzerActor.options(**place.next()).remote(config) for _ in range(m.shards)]
    trackers = []
    if config.track.live:
        from actors.tracker import TrackerActor

        models = analyzers[0].models.remote()  # resolved by Ray before each tracker starts
        # shard k's crops go to extractor k modulo their count
        trackers = [
            TrackerActor.options(**place.next()).remote(config, models, extractors[k % len(extractors)])
            for k in range(m.shards)
        ]
    sinks = [SinkActor.options(**place.next()).remote(config, publish_alerts=kafka_mode) for _ in range(m.shards)]
    if kafka_mode:
        decoders = [
            KafkaDecoderActor.options(**place.next()).remote(config, (i, m.decoders)) for i in range(m.decoders)
        ]
    else:
        decoders = [StreamDecoderActor.remote(s.url, s.camera, config) for s in m.sources]
    summarizer = SummarizerActor.options(**place.next()).remote(config) if m.summary_every else None
    stages = MonitorStages(extractors, decoders, analyzers, sinks, summarizer, kafka_mode, trackers)
    ray_get([stage.__ray_ready__.remote() for stage in stages.handles()])
    return stages


class RayCalls:
    """How the monitor's driver waits on its stages' calls (ObjectRefs) on Ray, never fetching a result to
    this node only to see whether it is ready."""

    def __init__(self):
        import ray

        self._ray = ray

    def get(self, calls):
        return ray_get(calls)

    def done(self, call) -> bool:
        return bool(self._ray.wait([call], timeout=0, fetch_local=False)[0])

    def wait_any(self, calls: list) -> None:
        self._ray.wait(calls, num_returns=1, fetch_local=False)

    def settle(self, calls: list) -> None:
        if calls:
            self._ray.wait(calls, num_returns=len(calls), fetch_local=False)

    def ready(self, handles: list) -> None:
        """Wait until every actor is up, a lost one restarted; `StageFailed` for one Ray gave up on."""
        from ray.exceptions import ActorUnavailableError, RayError

        while True:
            try:
                self._ray.get([handle.__ray_ready__.remote() for handle in handles])
                return
            except ActorUnavailableError:  # still restarting
                time.sleep(0.1)
            except RayError as error:
                raise StageFailed(str(stage_failure(error))) from None
