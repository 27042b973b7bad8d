"""Decoder actors: video in, sampled frames out.

`DecoderActor` streams one archive file's frame batches; `KafkaDecoderActor` reads camera messages from
assigned `vigil.frames` partitions, a poll bounded in frames and decoded pixels at a time (malformed ones go
to the DLQ); `StreamDecoderActor` reads a file or live URL directly (embedded mode, no Kafka). Every one
sizes frames as the config's decode section says (Kafka frames are only ever made smaller) and marks still
frames, so the live paths skip the model runs the archive path skips.
"""

from __future__ import annotations

from itertools import islice

import ray

from pipeline.config import VigilConfig
from pipeline.media.kafka_clients import DeadLetters, FrameConsumer, FrameReader, MessageProducer
from pipeline.media.sampling import sampled_frames, still_marker
from pipeline.records import Frame
from pipeline.search.embed import sampled_batches


@ray.remote(num_cpus=1, max_restarts=2)
class DecoderActor:
    def __init__(self, config: VigilConfig):
        self.config = config

    def batches(self, path: str):
        yield from sampled_batches(path, self.config)


# No CPU slot: turning sampled JPEG frames into arrays costs a few percent of a core, and a slot held here
# would be one an extractor could not have on a small node.
@ray.remote(num_cpus=0, max_restarts=2, max_task_retries=2)
class KafkaDecoderActor:
    def __init__(self, config: VigilConfig):
        settings = config.kafka
        consumer = FrameConsumer(settings, settings.topics.frames, group_id=settings.group, assign=True)
        dead_letters = DeadLetters(MessageProducer(settings), settings.topics.dlq)
        self.reader = FrameReader(consumer, dead_letters, short_side=config.decode.short_side or None)
        self.still = still_marker(config.decode)  # per camera, across polls

    def seek(self, offsets: dict[str, int]) -> None:
        """Resume from a checkpoint's offsets ({"topic:partition": next offset})."""
        from kafka import TopicPartition

        for name, offset in offsets.items():
            topic, partition = name.rsplit(":", 1)
            self.reader.consumer.kafka.seek(TopicPartition(topic, int(partition)), offset)

    def poll(self, timeout: float, max_frames: int) -> tuple[list[Frame], dict[str, int], bool]:
        """The frames of the messages one poll takes (at most `max_frames` of them unless one message holds
        more, and at most `kafka.max_poll_pixels` decoded pixels), the next offsets after those messages, and
        False: Kafka never ends."""
        frames, offsets = self.reader.poll(timeout, max_frames)
        if self.still is not None:
            frames = [self.still.mark(frame) for frame in frames]
        return frames, {f"{t}:{p}": o for (t, p), o in offsets.items()}, False

    def commit(self, offsets: dict[str, int]) -> None:
        self.reader.consumer.commit(
            {tuple((name.rsplit(":", 1)[0], int(name.rsplit(":", 1)[1]))): o for name, o in offsets.items()}
        )

    def dead_letter_count(self) -> int:
        return self.reader.dead_letters.count


@ray.remote(num_cpus=1, max_restarts=2)
class StreamDecoderActor:
    def __init__(self, url: str, camera: str, config: VigilConfig):
        self.frames = sampled_frames(url, config.decode, camera=camera)

    def poll(self, timeout: float, max_frames: int) -> tuple[list[Frame], dict[str, int], bool]:
        frames = list(islice(self.frames, max_frames))
        return frames, {}, len(frames) < max_frames
