"""Decoder actors: video in, sampled frames out.

`DecoderActor` streams one archive file's frame batches; `KafkaDecoderActor` reads camera messages from its
share of the `vigil.frames` partitions (decoder i of n: partitions i modulo n), a poll bounded in frames and
decoded pixels at a time (malformed ones go to the DLQ); `StreamDecoderActor` reads a file or live URL directly
(embedded mode, no Kafka). Every one sizes frames as the config's decode section says (Kafka frames are only
ever made smaller) and marks still frames, so the live paths skip the model runs the archive path skips.

A monitor's decoder polls with two returns (`poll.options(num_returns=2)`): the frames, which the driver hands
to an extractor by reference and never fetches, and a `PollReceipt` it reads. `seek` makes a decoder read again
from a checkpoint: its still-frame marks start afresh, so the first frame of each camera after it has features
of its own. No call is retried: a poll on a restarted decoder would read from elsewhere than the one lost, so a
lost one fails and the monitor replays from its checkpoints.

A monitor's decoder also tallies what it takes per camera (`look`: frames, frames/s, the newest frame's wall
clock; a Kafka decoder adds each partition's position and end offset, the consumer lag), which the driver asks
for each status period (pipeline/live/status.py), and records each poll's frames (pipeline/live/metrics.py).
"""

from __future__ import annotations

import logging
from itertools import islice

import ray

from pipeline.config import VigilConfig
from pipeline.live.analyzer import PollReceipt
from pipeline.live.logs import configure_logging
from pipeline.live.metrics import MonitorMetrics
from pipeline.live.status import IntakeLook, IntakeTally
from pipeline.media.kafka_clients import (
    DeadLetters,
    FrameConsumer,
    FrameReader,
    MessageProducer,
    named_partition,
    partition_name,
)
from pipeline.media.sampling import sampled_frames, sampling_rate, still_marker, tracker_only_marker
from pipeline.records import Frame
from pipeline.search.embed import sampled_batches

log = logging.getLogger(__name__)
LOOK_TIMEOUT_MS = 2000  # the most a look waits for the brokers: polls queue behind it


# No CPU slot held: the archive sizes its decoders to the CPUs beside the extractors, and an extractor restarted
# after its node is lost must find a slot (decoders holding every slot would leave it waiting forever).
@ray.remote(num_cpus=0, max_restarts=2)
class DecoderActor:
    def __init__(self, config: VigilConfig):
        self.config = config

    def batches(self, path: str):
        yield from sampled_batches(path, self.config)


# No CPU slot: turning sampled JPEG frames into arrays costs a few percent of a core, and a slot held here
# would be one an extractor could not have on a small node.
@ray.remote(num_cpus=0, max_restarts=2, max_task_retries=0)
class KafkaDecoderActor:
    def __init__(self, config: VigilConfig, share: tuple[int, int] = (0, 1)):
        configure_logging("decoder")
        settings = config.kafka
        consumer = FrameConsumer(settings, settings.topics.frames, group_id=settings.group, assign=True, share=share)
        dead_letters = DeadLetters(MessageProducer(settings), settings.topics.dlq)
        self.reader = FrameReader(consumer, dead_letters, short_side=config.decode.short_side or None)
        self.config = config
        self.still = still_marker(config.decode)  # per camera, across polls
        # a live tracker's detector may take more frames a second than the models: those between theirs are its
        self.tracker_only = tracker_only_marker(config)
        self.tally = IntakeTally()
        self.metrics = MonitorMetrics()
        assigned = sorted(partition_name(tp.topic, tp.partition) for tp in consumer.kafka.assignment())
        log.info("reading partitions %s", ", ".join(assigned))

    def seek(self, offsets: dict[str, int]) -> None:
        """Read this decoder's partitions again from a checkpoint's offsets ({"topic:partition": next offset};
        a partition not among them from its commit)."""
        self.reader.consumer.seek({named_partition(name): offset for name, offset in offsets.items()})
        self.still = still_marker(self.config.decode)
        self.tracker_only = tracker_only_marker(self.config)
        log.info("reading again from offsets %s (the others from their commits)", offsets)

    def poll(self, timeout: float, max_frames: int) -> tuple[list[Frame], PollReceipt]:
        """The frames of the messages one poll takes (at most `max_frames` of them unless one message holds
        more, and at most `kafka.max_poll_pixels` decoded pixels) and their receipt: Kafka never ends."""
        dead_letters = self.reader.dead_letters.count
        frames, offsets = self.reader.poll(timeout, max_frames)
        if self.tracker_only is not None:
            frames = [self.tracker_only.mark(frame) for frame in frames]
        if self.still is not None:
            frames = [self.still.mark(frame) for frame in frames]
        if self.reader.dead_letters.count > dead_letters:
            log.warning("%d malformed message(s) sent to the DLQ", self.reader.dead_letters.count - dead_letters)
        self.tally.add(frames)
        self.metrics.batch("decoder", len(frames))
        return frames, PollReceipt.of(frames, {partition_name(*tp): offset for tp, offset in offsets.items()})

    def commit(self, offsets: dict[str, int]) -> None:
        """Commit this decoder's partitions among `offsets` (the others are other decoders')."""
        assigned = self.reader.consumer.kafka.assignment()
        partitions = {(tp.topic, tp.partition) for tp in assigned}
        named = {named_partition(name): offset for name, offset in offsets.items()}
        self.reader.consumer.commit({tp: offset for tp, offset in named.items() if tp in partitions})

    def dead_letter_count(self) -> int:
        return self.reader.dead_letters.count

    def look(self) -> IntakeLook:
        """What this decoder took per camera, and each of its partitions' position and end offset (their
        difference is the consumer lag, also recorded as a metric)."""
        from kafka.errors import KafkaError

        kafka = self.reader.consumer.kafka
        assigned = list(kafka.assignment())
        try:
            ends = kafka.end_offsets(assigned, timeout_ms=LOOK_TIMEOUT_MS)
            positions = {tp: kafka.position(tp, timeout_ms=LOOK_TIMEOUT_MS) for tp in assigned}
        except KafkaError as exc:  # brokers away: the lag is unknown this period (the polls wait for them anyway)
            log.warning("consumer lag unknown: %s", exc)
            ends = positions = {}
        partitions = {partition_name(tp.topic, tp.partition): (positions[tp], ends[tp]) for tp in positions}
        self.metrics.consumer_lag(partitions)
        return self.tally.look(partitions=partitions, dead_letters=self.reader.dead_letters.count)


@ray.remote(num_cpus=1, max_restarts=2, max_task_retries=0)
class StreamDecoderActor:
    def __init__(self, url: str, camera: str, config: VigilConfig):
        configure_logging("decoder")
        self.url, self.camera, self.decode = url, camera, config.decode
        # a live tracker's detector may take more frames a second than the models
        self.rate = sampling_rate(config)
        self.frames = self._read()
        self.tally = IntakeTally()
        self.metrics = MonitorMetrics()
        log.info("reading %s", url, extra={"camera": camera})

    def seek(self, offsets: dict[str, int]) -> None:
        """Read the source again: a file from its start (the analyzer skips the frames it holds), a live URL
        from now. A file or URL has no offsets."""
        self.frames = self._read()

    def _read(self):
        return sampled_frames(self.url, self.decode, camera=self.camera, tracker_rate=self.rate)

    def poll(self, timeout: float, max_frames: int) -> tuple[list[Frame], PollReceipt]:
        frames = list(islice(self.frames, max_frames))
        self.tally.add(frames)
        self.metrics.batch("decoder", len(frames))
        if len(frames) < max_frames:
            log.info("source ended", extra={"camera": self.camera})
        return frames, PollReceipt.of(frames, {}, finished=len(frames) < max_frames)

    def look(self) -> IntakeLook:
        """What this decoder took of its camera (a file or URL has no partitions)."""
        return self.tally.look()
