"""The sink: makes what the live stages produced durable, and says when a checkpoint may be taken.

Writes are keyed deterministically (keyframes by pts, clips by window start, alerts by their id), so a
replay after a crash rewrites the same objects. An alert is published (Kafka `vigil.alerts`) before it
is stored, and one already stored with the same content is not published again: a crash between the
two can repeat an alert on the topic (same id, consumers overwrite by id) but never loses one.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from pipeline.live.analyzer import StreamOutput
from pipeline.records import Alert, ClipEmbedding
from pipeline.search.index import ClipIndex
from pipeline.storage.layout import (
    ALERTS,
    alert_key,
    camera_record,
    camera_source_id,
    monitor_checkpoint_key,
    source_key,
)
from pipeline.storage.store import ObjectStore, write_clip, write_keyframe


class AlertPublisher:
    """Publishes alerts to `vigil.alerts` (key = camera id, value = the alert as JSON), waiting for the ack."""

    def __init__(self, settings, topic: str = "vigil.alerts"):
        from pipeline.media.kafka_clients import MessageProducer

        self.producer = MessageProducer(settings)
        self.topic = topic

    def __call__(self, alert: Alert) -> None:
        from pipeline.media.kafka_messages import Message

        body = json.dumps(alert.to_json(), sort_keys=True).encode()
        self.producer.send(self.topic, Message(alert.camera.encode(), body, [("vigil-schema", b"1")])).get(timeout=60)


def alert_records(store: ObjectStore) -> list[dict]:
    """Every alert in the store as its JSON record (the latest status), ordered by camera and start."""
    alerts = [store.get_json(key) for key in store.list(ALERTS) if key.endswith(".json")]
    return sorted(alerts, key=lambda a: (a["camera"], a["start"], a["query_id"]))


class Sink:
    def __init__(self, store: ObjectStore, index: ClipIndex, publish: Callable[[Alert], None] | None = None):
        self.store = store
        self.index = index
        self.publish = publish
        self._unindexed: list[ClipEmbedding] = []
        self._recorded: set[str] = set()  # cameras whose source record is in the store
        self.published = 0

    def write(self, out: StreamOutput) -> None:
        for key, image in out.thumbnails:
            write_keyframe(self.store, key, image)
        for clip, keyframe in out.clips:
            if clip.source not in self._recorded:  # the record from which the camera's rows can be rebuilt
                self.store.put_json(source_key(clip.source_id), camera_record(clip.source))
                self._recorded.add(clip.source)
            write_keyframe(self.store, clip.keyframe_key, keyframe.image)
            write_clip(self.store, clip)
            self._unindexed.append(clip)
        for alert in out.alerts:
            key, body = alert_key(camera_source_id(alert.camera), alert.id), alert.to_json()
            if self.store.exists(key) and self.store.get_json(key) == body:
                continue  # a replay of an alert already published and stored
            if self.publish is not None:
                self.publish(alert)
                self.published += 1
            self.store.put_json(key, body)

    def checkpoint(self, name: str, state: dict) -> None:
        """Index the clips written since the last checkpoint, then record `state` (offsets included)."""
        if self._unindexed:
            self.index.upsert(self._unindexed)
            self.index.save(self.store)
            self._unindexed = []
        self.store.put_json(monitor_checkpoint_key(name), state)

    def load_checkpoint(self, name: str) -> dict | None:
        key = monitor_checkpoint_key(name)
        return self.store.get_json(key) if self.store.exists(key) else None
