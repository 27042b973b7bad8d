"""`vigil monitor`: camera frames through Ray actor stages to clip embeddings, alerts and the index.

    decoder (Kafka partitions, or a file / live URL) -> extractor -> matcher -> sink -> checkpoint -> commit
                                                                                     -> summarizer

Each extractor (`extractors`, by default one per GPU) holds at most two micro-batches, one running and one
queued, so it never waits for the driver. A batch is gathered when an extractor has room, from what has
arrived meanwhile (up to `batch_frames`; `poll_timeout` is the wait for a first frame), and goes to that
extractor: light load gives small batches and low latency, heavy load full batches and throughput. At most
`monitor.in_flight` full batches' worth of frames are between the decoder and the sink at a time, so a
slow stage slows intake instead of growing memory.

Every `checkpoint_every` seconds the matcher's state and the Kafka offsets of the batches handed over so
far go to the sink, which stores them after those batches' outputs (and indexes the new clips); only once
that checkpoint is durable are the offsets committed. Nothing waits for a checkpoint: actors run their
calls in order, so a checkpoint always covers exactly what is durable. A restart loads the checkpoint,
seeks to its offsets and replays: the analyzer skips frames it has already seen and every write is keyed
deterministically, so the replay yields no duplicate alert, embedding or index entry.

With `summary_every` set, each durable checkpoint also tells the summarizer how far each camera's clip
windows reach in the store; it summarizes every period that became complete, in the background of the
next batches (one call in flight, its result always collected, so its errors stop the monitor).
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass

from pipeline.config import VigilConfig


@dataclass
class MonitorReport:
    frames: int = 0
    batches: int = 0  # extractor calls (frames / batches / monitor.batch_frames: batch occupancy)
    alerts: int = 0
    checkpoints: int = 0
    dead_letters: int = 0
    summaries: int = 0


@dataclass
class _Checkpoint:
    """A checkpoint being written: durable once `saved` resolves, then its offsets may be committed."""

    saved: object  # the sink's checkpoint call (an ObjectRef)
    offsets: dict[str, int]
    latest_pts: dict[str, float]  # per camera, the latest frame it covers


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
    return (f"{extractors} extractor(s) and {embedded_decoders} embedded decoder(s) need {slots} CPU slots and the "
            f"Ray cluster has {sum(node_cpus)}: they wait until Ray has room (more workers, or fewer "
            "monitor.extractors)")


def _start_ray() -> None:
    import ray

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False)


def run_monitor(config: VigilConfig, *, idle_exit: float | None = None, max_frames: int | None = None) -> MonitorReport:
    """Run until the sources end (embedded files), `idle_exit` seconds pass without frames, or SIGTERM."""
    import ray

    from actors.decoder import KafkaDecoderActor, StreamDecoderActor
    from actors.extractor import ExtractorActor
    from actors.analyzer import StreamAnalyzerActor
    from actors.sink import SinkActor
    from actors.summarizer import SummarizerActor

    _start_ray()
    m = config.monitor
    kafka_mode = not m.sources
    gpus = int(ray.cluster_resources().get("GPU", 0))
    count = max(1, gpus) if m.extractors == "auto" else m.extractors
    # On CPU nodes the extractors share each node's cores (SPREAD: as few per node as there can be).
    node_cpus = [int(n["Resources"]["CPU"]) for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) >= 1]
    threads = None if gpus else threads_per_extractor(node_cpus, count)
    if shortfall := cpu_shortfall(count, len(m.sources), node_cpus):
        print(f"monitor {m.name}: {shortfall}", file=sys.stderr, flush=True)
    extractors = [
        ExtractorActor.options(num_gpus=1 if gpus else 0, scheduling_strategy="SPREAD").remote(
            config.models, device=config.device, precision=config.precision, batch_size=config.batch_size,
            threads=threads,
        )
        for _ in range(count)
    ]
    # Room for every extractor's two batches (in_flight counts full batches' worth of frames).
    in_flight = max(m.in_flight, 2 * count)
    matcher = StreamAnalyzerActor.remote(config)
    sink = SinkActor.remote(config, publish_alerts=kafka_mode)
    if kafka_mode:
        decoders = [KafkaDecoderActor.remote(config)]
    else:
        decoders = [StreamDecoderActor.remote(s.url, s.camera, config) for s in m.sources]
    summarizer = SummarizerActor.remote(config) if m.summary_every else None

    offsets: dict[str, int] = {}  # next offsets after every batch handed to the stages so far
    checkpoint = ray.get(sink.load_checkpoint.remote(m.name))
    if checkpoint is not None:
        ray.get(matcher.load_state_dict.remote(checkpoint["analyzer"]))
        offsets = dict(checkpoint["offsets"])
        if kafka_mode and offsets:
            ray.get(decoders[0].seek.remote(offsets))

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    report = MonitorReport()
    live = list(decoders)
    latest_pts: dict[str, float] = {}  # per camera, the latest frame handed to the stages
    writes: deque = deque()  # the sink's writes in flight, oldest first, with the frames each covers
    extracting = [deque() for _ in extractors]  # each extractor's batches (extract calls) not known done
    uncovered: list = []  # the sink's writes since the last checkpoint began
    saving: _Checkpoint | None = None
    committing = summarizing = None  # the calls of those kinds in flight
    # Clocks start once every stage is up: starting workers and loading models can take longer than
    # `idle_exit` on a busy machine.
    stages = [*extractors, *decoders, matcher, sink, *([summarizer] if summarizer is not None else [])]
    ray.get([stage.__ray_ready__.remote() for stage in stages])
    ray.get(sink.write.remote(matcher.refresh_queries.remote()))
    last_frame = last_checkpoint = last_refresh = time.monotonic()

    def collect(ref):
        """The result of a call started earlier (raising its error), 0 for none."""
        return 0 if ref is None else ray.get(ref)

    def write(output, frames: int = 0) -> None:
        """Have the sink write a stream output (an ObjectRef) made from `frames` frames; the next checkpoint
        covers it."""
        writes.append((sink.write.remote(output), frames))
        uncovered.append(writes[-1][0])

    def settle(keep_frames: int) -> None:
        """Wait for the oldest writes until at most `keep_frames` frames are on their way from the decoder
        to the sink (0: until every write is done). Counted in frames, not batches: adaptive batches differ
        in size, and small ones finished behind a large one must not stop intake."""
        while writes and (keep_frames == 0 or sum(frames for _, frames in writes) > keep_frames):
            report.alerts += ray.get(writes.popleft()[0])

    def next_extractor() -> int:
        """The extractor with the fewest batches in hand, once one has fewer than two (running and queued),
        waiting for a batch to finish if none has. Not turn by turn: adaptive batches differ in size, and
        an extractor that got a small one would then wait for the driver, which waits for the oldest."""
        while True:
            for calls in extracting:  # an actor runs its calls in order: only the oldest can be done
                while calls and ray.wait([calls[0]], timeout=0, fetch_local=False)[0]:
                    calls.popleft()
            index = min(range(count), key=lambda i: len(extracting[i]))
            if len(extracting[index]) < 2:
                return index
            ray.wait([calls[0] for calls in extracting], num_returns=1, fetch_local=False)

    def start_checkpoint() -> None:
        """Record the analyzer state and the offsets of every batch handed over so far. No waiting: the
        matcher takes the state after those batches and the sink stores it after writing their outputs
        (an actor runs one caller's calls in order), and only if every one of those writes succeeded, so
        a checkpoint never covers anything not durable."""
        nonlocal saving
        saved = sink.checkpoint.remote(m.name, matcher.state_dict.remote(), dict(offsets), *uncovered)
        uncovered.clear()
        saving = _Checkpoint(saved, dict(offsets), dict(latest_pts))

    def finish_checkpoint(final: bool = False) -> None:
        """Once the checkpoint is durable: commit its offsets and summarize the periods it completed."""
        nonlocal saving, committing, summarizing
        ray.get(saving.saved)
        report.checkpoints += 1
        if kafka_mode and saving.offsets:
            collect(committing)
            committing = decoders[0].commit.remote(saving.offsets)
        if summarizer is not None:
            report.summaries += collect(summarizing)
            summarizing = summarizer.advance.remote(saving.latest_pts, final and not live)
        saving = None

    while live and not stopping:
        index = next_extractor()
        polled = ray.get([d.poll.remote(m.poll_timeout, m.batch_frames) for d in live])
        frames = [frame for batch, _, _ in polled for frame in batch]
        for (_, moved, finished), decoder in zip(polled, list(live)):
            offsets.update(moved)
            if finished:
                live.remove(decoder)
        now = time.monotonic()
        if frames:
            last_frame = now
            # The matcher gets the batches in order, whichever extractor finishes first: an actor runs one
            # caller's calls in the order they were made.
            extracting[index].append(extractors[index].extract.remote(frames))
            write(matcher.process.remote(frames, extracting[index][-1]), len(frames))
            report.batches += 1
            report.frames += len(frames)
            for frame in frames:
                camera = frame.camera or frame.source
                latest_pts[camera] = max(frame.pts, latest_pts.get(camera, frame.pts))
            settle((in_flight - 1) * m.batch_frames)
        elif idle_exit is not None and now - last_frame >= idle_exit:
            break
        if saving is not None and ray.wait([saving.saved], timeout=0)[0]:
            finish_checkpoint()
        if saving is None and now - last_checkpoint >= m.checkpoint_every:
            start_checkpoint()
            last_checkpoint = now
        if now - last_refresh >= m.query_refresh:
            write(matcher.refresh_queries.remote())
            last_refresh = now
        if max_frames is not None and report.frames >= max_frames:
            break
    if saving is not None:
        finish_checkpoint()
    if not live:  # the embedded sources ended: close the last windows and events
        write(matcher.flush.remote())
    settle(0)
    start_checkpoint()
    finish_checkpoint(final=True)
    collect(committing)
    report.summaries += collect(summarizing)
    if kafka_mode:
        report.dead_letters = ray.get(decoders[0].dead_letter_count.remote())
    return report
