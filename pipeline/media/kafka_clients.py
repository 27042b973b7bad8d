"""Kafka clients of live monitoring: producer, consumer and dead letters, for the messages of
`pipeline.media.kafka_messages`.

`decode_record` reads one consumed record's frames, dated by its `wallclock` header or else its CreateTime;
`consume_frames` and `FrameReader` send malformed messages to `vigil.dlq` (original key, value and headers
plus `reason`) and go on. `FrameReader` polls within bounds of frames and decoded pixels, leaving the rest in
Kafka for its next poll. Several consumers can share a topic's partitions without a group (`FrameConsumer`'s
`share`). Offsets are committed only after the caller's outputs are durable (ARCHITECTURE.md, delivery
invariant 2). kafka-python is imported inside the functions and classes that need it (ARCHITECTURE.md,
layering).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.config import KafkaConfig
from pipeline.media.kafka_messages import (
    DEFAULT_MAX_MESSAGE_PIXELS,
    H_REASON,
    MalformedMessage,
    Message,
    decode_message,
    parse_headers,
)
from pipeline.records import Frame

log = logging.getLogger(__name__)

DEFAULT_BROKERS = KafkaConfig.model_fields["brokers"].default
BROKERS_ENV = "VIGIL_KAFKA_BROKERS"
# Room for headers and record framing on top of the value.
OVERHEAD_BYTES = 64 * 1024


class KafkaUnavailable(ConnectionError):
    """The brokers could not be reached after the configured attempts."""


def partition_name(topic: str, partition: int) -> str:
    """How a partition is named where offsets are keyed by text (checkpoints, the monitor's stages)."""
    return f"{topic}:{partition}"


def named_partition(name: str) -> tuple[str, int]:
    """The (topic, partition) `partition_name` named."""
    topic, partition = name.rsplit(":", 1)
    return topic, int(partition)


def resolve_brokers(brokers: str | None = None) -> str:
    """`brokers` if given, else env VIGIL_KAFKA_BROKERS, else 127.0.0.1:9092. (load_config applies the
    same order to `kafka.brokers`: flags > environment > config file > defaults.)"""
    return brokers or os.environ.get(BROKERS_ENV) or DEFAULT_BROKERS


def _connect(settings: KafkaConfig, what: str, factory: Callable[[], Any]):
    """`factory()` until it reaches the brokers, with exponential backoff between attempts."""
    from kafka import errors

    # kafka-python 3 raises KafkaTimeoutError("Unable to bootstrap ..."); 2.x raised NoBrokersAvailable.
    unreachable = (errors.KafkaTimeoutError, errors.KafkaConnectionError, OSError) + tuple(
        getattr(errors, name) for name in ("NoBrokersAvailable",) if hasattr(errors, name)
    )
    started = time.monotonic()
    last: Exception | None = None
    for attempt in range(1, settings.connect_attempts + 1):
        try:
            return factory()
        except unreachable as exc:
            last = exc
            if attempt < settings.connect_attempts:
                delay = settings.delay(attempt)
                log.warning(
                    "Kafka %s: brokers %s unreachable (%s); retrying in %.1f s", what, settings.brokers, exc, delay
                )
                time.sleep(delay)
    raise KafkaUnavailable(
        f"cannot reach Kafka brokers {settings.brokers} ({what}) after {settings.connect_attempts} attempt(s) "
        f"over {time.monotonic() - started:.1f} s: {last}"
    )


def check_brokers(settings: KafkaConfig, what: str) -> None:
    """Reach the brokers once (with the configured attempts and backoff) or raise `KafkaUnavailable` naming
    them and `what` wanted them: a service that starts Kafka clients in several processes says once, up
    front, that it cannot."""
    from kafka import KafkaConsumer

    _connect(
        settings,
        what,
        lambda: KafkaConsumer(
            bootstrap_servers=settings.servers,
            client_id="vigil-check",
            enable_auto_commit=False,
            bootstrap_timeout_ms=_ms(settings.connect_timeout),
            retry_backoff_ms=_ms(min(settings.backoff, 1.0)),
            reconnect_backoff_max_ms=_ms(max(settings.backoff_max, 0.05)),
        ),
    ).close()


def _ms(seconds: float) -> int:
    return max(1, int(round(seconds * 1000)))


class MessageProducer:
    """A KafkaProducer with acks=all (idempotent where the broker supports it: kafka-python enables it
    by default and turns it off, with a warning, for brokers too old for it), bounded blocking, and
    delivery accounting: `sent`/`bytes` count acknowledged messages, `errors` failed deliveries."""

    def __init__(self, settings: KafkaConfig | None = None, *, client_id: str = "vigil"):
        from kafka import KafkaProducer

        self.settings = settings = settings or KafkaConfig(brokers=resolve_brokers())
        delivery = _ms(settings.delivery_timeout)
        linger = 5
        self._producer = _connect(
            settings,
            "producer",
            lambda: KafkaProducer(
                bootstrap_servers=settings.servers,
                client_id=client_id,
                acks="all",
                linger_ms=linger,
                max_request_size=settings.max_message_bytes + OVERHEAD_BYTES,
                bootstrap_timeout_ms=_ms(settings.connect_timeout),
                request_timeout_ms=max(1, min(30000, delivery - linger)),
                delivery_timeout_ms=delivery,
                max_block_ms=delivery,
                retry_backoff_ms=_ms(min(settings.backoff, 1.0)),
                reconnect_backoff_max_ms=_ms(max(settings.backoff_max, 0.05)),
            ),
        )
        self._lock = threading.Lock()
        self.sent = 0
        self.bytes = 0
        self.errors = 0
        self.last_error: str | None = None

    @property
    def idempotent(self) -> bool:
        return bool(self._producer.config.get("enable_idempotence"))

    def send(self, topic: str, message: Message, *, partition: int | None = None):
        """Queue one message (to the key's partition unless `partition` is given); returns
        kafka-python's future. Delivery is counted when acknowledged."""
        size = message.size

        def ok(_metadata):
            with self._lock:
                self.sent += 1
                self.bytes += size

        def failed(exc):
            with self._lock:
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
            log.error("Kafka delivery to %s failed: %s", topic, exc)

        future = self._producer.send(
            topic, key=message.key, value=message.value, headers=message.headers, partition=partition
        )
        future.add_callback(ok)
        future.add_errback(failed)
        return future

    def flush(self, timeout: float | None = None) -> None:
        """Block until every queued message is acknowledged or has failed."""
        self._producer.flush(timeout=timeout)

    def close(self, timeout: float | None = None) -> None:
        self._producer.close(timeout=timeout)

    def __enter__(self) -> MessageProducer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FrameConsumer:
    """A KafkaConsumer with manual commits only.

    With `assign=False` it joins `group_id` (subscribe; fast joins: session 6 s, heartbeat 1 s, max
    poll interval 10 s). With `assign=True` it takes the partitions of `topics` itself (no group
    join, so no rebalance wait): every one, or with `share=(i, n)` those whose number is i modulo n, so
    n consumers divide a topic and a key (a camera) stays with one of them; offsets are still committed
    under `group_id` when one is given. Where there is no committed offset it starts from the earliest
    message (`from_beginning`) or the end. `commit(offsets)` is for the caller to call once everything
    derived from the messages before those offsets is durable."""

    def __init__(
        self,
        settings: KafkaConfig | None,
        topics: str | Sequence[str],
        *,
        group_id: str | None = None,
        assign: bool = False,
        share: tuple[int, int] = (0, 1),
        from_beginning: bool = True,
        client_id: str = "vigil",
        max_poll_records: int = 100,
    ):
        from kafka import KafkaConsumer, TopicPartition

        self.settings = settings = settings or KafkaConfig(brokers=resolve_brokers())
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        if not assign and not group_id:
            raise ValueError("a subscribing consumer needs a group_id (or use assign=True)")
        self.group_id = group_id
        self.from_beginning = from_beginning
        self._consumer = _connect(
            settings,
            "consumer",
            lambda: KafkaConsumer(
                bootstrap_servers=settings.servers,
                client_id=client_id,
                group_id=group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest" if from_beginning else "latest",
                session_timeout_ms=6000,
                heartbeat_interval_ms=1000,
                max_poll_interval_ms=10000,
                max_poll_records=max_poll_records,
                # a message at our size limit must always be fetchable
                max_partition_fetch_bytes=max(1024 * 1024, settings.max_message_bytes + OVERHEAD_BYTES),
                bootstrap_timeout_ms=_ms(settings.connect_timeout),
                retry_backoff_ms=_ms(min(settings.backoff, 1.0)),
                reconnect_backoff_max_ms=_ms(max(settings.backoff_max, 0.05)),
            ),
        )
        if assign:
            part, parts = share
            partitions = []
            deadline = time.monotonic() + settings.connect_timeout
            for topic in self.topics:
                ids = self._consumer.partitions_for_topic(topic)
                while not ids and time.monotonic() < deadline:
                    time.sleep(0.1)
                    ids = self._consumer.partitions_for_topic(topic)
                if not ids:
                    self._consumer.close()
                    raise KafkaUnavailable(f"topic {topic!r} not found on Kafka brokers {settings.brokers}")
                if len(ids) < parts:
                    self._consumer.close()
                    raise ValueError(
                        f"topic {topic!r} has {len(ids)} partition(s), too few to share among {parts} consumers "
                        "(monitor.decoders)"
                    )
                partitions += [TopicPartition(topic, p) for p in sorted(ids) if p % parts == part]
            self._consumer.assign(partitions)
        else:
            self._consumer.subscribe(self.topics)

    @property
    def kafka(self):
        """The underlying kafka-python KafkaConsumer."""
        return self._consumer

    def poll(self, timeout: float = 1.0, max_records: int | None = None) -> list:
        """Records fetched within `timeout` seconds, partition by partition, offsets increasing."""
        batches = self._consumer.poll(timeout_ms=_ms(timeout), max_records=max_records)
        return [r for tp in sorted(batches, key=lambda tp: (tp.topic, tp.partition)) for r in batches[tp]]

    def gather(self, max_records: int, timeout: float, refetch: float = 0.05) -> list:
        """Every record on hand, up to `max_records`: waits up to `timeout` seconds for the first ones, then
        fetches again (waiting up to `refetch` seconds each time) while more keep coming. The consumer
        prefetches in the background, so what the first poll hands over can be an old, small response
        while the broker holds far more: the refetches take the backlog. A caller that gathers when it is
        ready for more gets batches that grow with the load (adaptive batching). Partition by partition,
        offsets increasing."""
        records = self.poll(timeout, max_records)
        while records and len(records) < max_records:
            more = self.poll(min(refetch, timeout), max_records - len(records))
            if not more:
                break
            records += more
        return sorted(records, key=lambda r: (r.topic, r.partition))  # stable: offsets stay in order

    def rewind(self, records: Iterable) -> None:
        """Have the next poll read `records` (polled but not taken) again: each of their partitions goes back
        to the first of them. Prefetched records of those partitions are dropped."""
        from kafka import TopicPartition

        first: dict[tuple[str, int], int] = {}
        for r in records:
            key = (r.topic, r.partition)
            first[key] = min(first.get(key, r.offset), r.offset)
        for (topic, partition), offset in first.items():
            self._consumer.seek(TopicPartition(topic, partition), offset)

    def seek(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Read each assigned partition again from its offset in `offsets`, or one not in it from its committed
        offset (the beginning or the end, as `from_beginning` says, without one). Prefetched records are dropped."""
        for tp in self._consumer.assignment():
            offset = offsets.get((tp.topic, tp.partition))
            if offset is None and self.group_id:
                offset = self._consumer.committed(tp)
            if offset is not None:
                self._consumer.seek(tp, offset)
            elif self.from_beginning:
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek_to_end(tp)

    def commit(self, offsets: Mapping[Any, int]) -> None:
        """Commit `{TopicPartition or (topic, partition): next offset to read}`. Without a group_id
        there is nowhere to commit and this does nothing. Brokers away (restarting, unreachable) are waited for
        with backoff, as a producer waits to deliver, for up to `kafka.delivery_timeout` seconds: kafka-python
        gives up on a commit at the first refused connection while it looks for the group's coordinator."""
        from kafka import TopicPartition
        from kafka.errors import RetriableError
        from kafka.structs import OffsetAndMetadata

        if not self.group_id or not offsets:
            return
        commit = {TopicPartition(*tp): OffsetAndMetadata(int(off), "", -1) for tp, off in offsets.items()}
        deadline = time.monotonic() + self.settings.delivery_timeout
        attempt = 0
        while True:
            attempt += 1
            try:
                self._consumer.commit(commit, timeout_ms=_ms(max(deadline - time.monotonic(), 0.001)))
                return
            except RetriableError as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise KafkaUnavailable(
                        f"cannot commit offsets to Kafka brokers {self.settings.brokers} within "
                        f"{self.settings.delivery_timeout:.0f} s (kafka.delivery_timeout): {exc}"
                    ) from None
                delay = min(self.settings.delay(attempt), left)
                log.warning(
                    "Kafka commit: brokers %s unreachable (%s); retrying in %.1f s", self.settings.brokers, exc, delay
                )
                time.sleep(delay)

    def committed(self, topic: str, partition: int) -> int | None:
        from kafka import TopicPartition

        return self._consumer.committed(TopicPartition(topic, partition))

    def close(self) -> None:
        self._consumer.close(autocommit=False)

    def __enter__(self) -> FrameConsumer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# kafka-python's ConsumerRecord.timestamp_type for a timestamp the producer set. The other kind, LogAppendTime,
# is when the broker stored the record, which can be long after the camera took the frame.
CREATE_TIME = 0


def decode_record(
    record, *, max_bytes: int, max_pixels: int = DEFAULT_MAX_MESSAGE_PIXELS, short_side: int | None = None
) -> list[Frame]:
    """The frames of one consumed `vigil.frames` record (see `decode_message`), dated by its `wallclock`
    header, else by its CreateTime timestamp; raises `MalformedMessage`."""
    created = record.timestamp if record.timestamp_type == CREATE_TIME else None
    return decode_message(
        record.key,
        record.value,
        record.headers,
        max_bytes=max_bytes,
        max_pixels=max_pixels,
        short_side=short_side,
        timestamp_ms=created,
    )


def announced_cost(record, max_message_pixels: int) -> tuple[int, int]:
    """(frames, decoded pixels) a record's headers announce; (0, 0) for one refused without decoding (headers
    that do not parse, more pixels than `max_message_pixels`)."""
    try:
        headers = parse_headers(record.headers)
    except MalformedMessage:
        return 0, 0
    if headers.pixels > max_message_pixels:
        return 0, 0
    return headers.frames, headers.pixels


def _position(record) -> tuple[str, int, int]:
    return record.topic, record.partition, record.offset


def take_within(
    records: Sequence, *, max_frames: int, max_pixels: int, max_message_pixels: int, first: int = 0
) -> tuple[list, list]:
    """Split polled records into those a poll takes and those it leaves for the next one. Partitions take turns,
    a message each, starting with the `first`-th (modulo their number, so no partition always waits behind
    another), while the frames and decoded pixels the taken messages announce stay within `max_frames` and
    `max_pixels`; the first message is always taken, so every poll moves on. Each partition's taken records
    come before its left ones; both lists are partition by partition, offsets increasing."""
    queues: dict[tuple[str, int], deque] = {}
    for r in sorted(records, key=_position):
        queues.setdefault((r.topic, r.partition), deque()).append(r)
    turns = sorted(queues)
    if turns:
        start = first % len(turns)
        turns = turns[start:] + turns[:start]
    taken: list = []
    frames = pixels = 0
    while any(queues.values()):
        for key in turns:
            if not queues[key]:
                continue
            cost_frames, cost_pixels = announced_cost(queues[key][0], max_message_pixels)
            if taken and (frames + cost_frames > max_frames or pixels + cost_pixels > max_pixels):
                left = [r for partition in sorted(queues) for r in queues[partition]]
                return sorted(taken, key=_position), left
            taken.append(queues[key].popleft())
            frames, pixels = frames + cost_frames, pixels + cost_pixels
    return sorted(taken, key=_position), []


def next_offsets(records: Iterable) -> dict[tuple[str, int], int]:
    """{(topic, partition): last offset + 1} over `records`: what to commit once they are done."""
    out: dict[tuple[str, int], int] = {}
    for r in records:
        key = (r.topic, r.partition)
        out[key] = max(out.get(key, 0), r.offset + 1)
    return out


class DeadLetters:
    """Publishes malformed messages to the DLQ topic: the original key, value and headers, plus
    `reason`, `original-topic`, `original-partition` and `original-offset` headers. A value larger
    than the size limit is cut to it, with an `original-size` header. `count` and `reasons` (a
    Counter) say what went there; `flush()` raises if a dead letter could not be delivered (then
    the consumer must not commit past it)."""

    def __init__(self, producer: MessageProducer, topic: str = "vigil.dlq"):
        self.producer = producer
        self.topic = topic
        self.count = 0
        self.reasons: Counter[str] = Counter()
        self._futures: list = []

    def publish(self, record, reason: str) -> None:
        value = record.value if record.value is not None else b""
        headers = [
            (str(k), v if isinstance(v, bytes) else (b"" if v is None else str(v).encode()))
            for k, v in (record.headers or [])
        ]
        headers += [
            (H_REASON, reason.encode("utf-8", "replace")),
            ("original-topic", str(record.topic).encode()),
            ("original-partition", str(record.partition).encode()),
            ("original-offset", str(record.offset).encode()),
        ]
        limit = self.producer.settings.max_message_bytes
        if len(value) > limit:
            headers.append(("original-size", str(len(value)).encode()))
            value = value[:limit]
        key = record.key if record.key is None or isinstance(record.key, bytes) else bytes(record.key)
        self._futures.append(self.producer.send(self.topic, Message(key, bytes(value), headers)))
        self.count += 1
        self.reasons[reason] += 1
        log.warning("dead letter %s[%s]@%s: %s", record.topic, record.partition, record.offset, reason)

    def flush(self, timeout: float | None = None) -> None:
        if not self._futures:
            return
        self.producer.flush(timeout)
        futures, self._futures = self._futures, []
        for future in futures:
            future.get(timeout=0)  # raises the delivery error, if any


class FrameReader:
    """Frames from the partitions of a `FrameConsumer`, a poll at a time, in bounded memory: a poll takes the
    messages on hand while their frames fit the caller's `max_frames` and their decoded pixels
    `kafka.max_poll_pixels` (see `take_within`), and leaves the rest in Kafka for the next poll. Malformed
    messages, those announcing more than `kafka.max_message_pixels` included, go to the DLQ. Frames larger
    than `short_side` are downscaled to it as they are decoded."""

    def __init__(self, consumer: FrameConsumer, dead_letters: DeadLetters, *, short_side: int | None = None):
        self.consumer = consumer
        self.dead_letters = dead_letters
        self.settings = consumer.settings
        self.short_side = short_side
        self._polls = 0  # which partition goes first: each in turn

    def poll(self, timeout: float, max_frames: int) -> tuple[list[Frame], dict[tuple[str, int], int]]:
        """The frames of the messages taken (partition by partition, in order) and `{(topic, partition): next
        offset}` after those messages, to commit once their outputs are durable; the dead letters among them
        are durable when this returns. `timeout` is the wait for a first message."""
        records = self.consumer.gather(max_frames, timeout)
        taken, left = take_within(
            records,
            max_frames=max_frames,
            max_pixels=self.settings.max_poll_pixels,
            max_message_pixels=self.settings.max_message_pixels,
            first=self._polls,
        )
        self._polls += 1
        self.consumer.rewind(left)
        frames: list[Frame] = []
        for record in taken:
            try:
                frames += decode_record(
                    record,
                    max_bytes=self.settings.max_message_bytes,
                    max_pixels=self.settings.max_message_pixels,
                    short_side=self.short_side,
                )
            except MalformedMessage as exc:
                self.dead_letters.publish(record, exc.reason)
        self.dead_letters.flush()  # dead letters are durable before their offsets can be committed
        return frames, next_offsets(taken)


@dataclass
class ConsumeStats:
    messages: int = 0  # records read
    frames: int = 0  # frames handed to `handle`
    malformed: int = 0  # records sent to the DLQ
    commits: int = 0
    reasons: Counter = field(default_factory=Counter)


def consume_frames(
    consumer: FrameConsumer,
    dlq: DeadLetters,
    handle: Callable[[list[Frame], Any], None],
    *,
    flush: Callable[[], None] | None = None,
    max_messages: int | None = None,
    idle_timeout: float | None = None,
    stop: Callable[[], bool] | None = None,
    poll_timeout: float = 0.5,
    max_bytes: int | None = None,
) -> ConsumeStats:
    """Read `vigil.frames` records and call `handle(frames, record)` for each valid one, in order.

    Malformed records go to the DLQ and are counted; they never stop the loop (exceptions from
    `handle`, `flush` or the brokers do: they are not the message's fault). After each polled batch:
    `flush()` (which must make everything handed to `handle` so far durable; omit it when `handle`
    is durable on return), then the DLQ is flushed, then the batch's offsets are committed. So no
    offset is committed ahead of the outputs it covers, and a restart replays from the last commit.

    Stops after `max_messages` records, after `idle_timeout` seconds without a record, or when
    `stop()` returns True."""
    stats = ConsumeStats()
    limit = max_bytes if max_bytes is not None else consumer.settings.max_message_bytes
    max_pixels = consumer.settings.max_message_pixels
    last_record = time.monotonic()
    while max_messages is None or stats.messages < max_messages:
        if stop is not None and stop():
            break
        remaining = None if max_messages is None else max_messages - stats.messages
        records = consumer.poll(poll_timeout, max_records=remaining)
        if not records:
            if idle_timeout is not None and time.monotonic() - last_record >= idle_timeout:
                break
            continue
        last_record = time.monotonic()
        for record in records:
            stats.messages += 1
            try:
                frames = decode_record(record, max_bytes=limit, max_pixels=max_pixels)
            except MalformedMessage as exc:
                dlq.publish(record, exc.reason)
                stats.malformed += 1
                stats.reasons[exc.reason] += 1
                continue
            handle(frames, record)
            stats.frames += len(frames)
        if flush is not None:
            flush()
        dlq.flush()
        consumer.commit(next_offsets(records))
        stats.commits += 1
    return stats
