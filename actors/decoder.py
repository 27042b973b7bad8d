"""Decoder actors: video in, sampled frames out.

`DecoderActor` streams one archive file's frame batches; `KafkaDecoderActor` reads camera messages from
assigned `vigil.frames` partitions (malformed ones go to the DLQ); `StreamDecoderActor` reads a file or
live URL directly (embedded mode, no Kafka). Every one samples as the config's decode section says and
marks still frames, so the live paths skip the model runs the archive path skips.
"""

from __future__ import annotations

from itertools import islice

import ray

from pipeline.config import VigilConfig
from pipeline.media.kafka_clients import DeadLetters, FrameConsumer, MessageProducer, decode_record, next_offsets
from pipeline.media.kafka_messages import MalformedMessage
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
        self.topic = config.kafka.topics.frames
        self.consumer = FrameConsumer(settings, self.topic, group_id=config.kafka.group, assign=True)
        self.dead_letters = DeadLetters(MessageProducer(settings), config.kafka.topics.dlq)
        self.max_bytes = config.kafka.max_message_bytes
        self.still = still_marker(config.decode)  # per camera, across polls

    def seek(self, offsets: dict[str, int]) -> None:
        """Resume from a checkpoint's offsets ({"topic:partition": next offset})."""
        from kafka import TopicPartition

        for name, offset in offsets.items():
            topic, partition = name.rsplit(":", 1)
            self.consumer.kafka.seek(TopicPartition(topic, int(partition)), offset)

    def poll(self, timeout: float, max_frames: int) -> tuple[list[Frame], dict[str, int], bool]:
        records = self.consumer.gather(max_frames, timeout)
        frames = []
        for record in records:
            try:
                frames += decode_record(record, max_bytes=self.max_bytes)
            except MalformedMessage as exc:
                self.dead_letters.publish(record, exc.reason)
        self.dead_letters.flush()  # dead letters are durable before their offsets can be committed
        if self.still is not None:
            frames = [self.still.mark(frame) for frame in frames]
        return frames, {f"{t}:{p}": o for (t, p), o in next_offsets(records).items()}, False

    def commit(self, offsets: dict[str, int]) -> None:
        self.consumer.commit(
            {tuple((name.rsplit(":", 1)[0], int(name.rsplit(":", 1)[1]))): o for name, o in offsets.items()}
        )

    def dead_letter_count(self) -> int:
        return self.dead_letters.count


@ray.remote(num_cpus=1, max_restarts=2)
class StreamDecoderActor:
    def __init__(self, url: str, camera: str, config: VigilConfig):
        self.frames = sampled_frames(url, config.decode, camera=camera)

    def poll(self, timeout: float, max_frames: int) -> tuple[list[Frame], dict[str, int], bool]:
        frames = list(islice(self.frames, max_frames))
        return frames, {}, len(frames) < max_frames
