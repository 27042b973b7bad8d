"""The sink: makes what the live stages produced durable, and keeps the monitor's checkpoints.

Writes are keyed deterministically (keyframes by pts, clips by window start, alerts by their id), so a
replay after a crash rewrites the same objects. An alert is published (Kafka `vigil.alerts`) before it
is stored, and one already stored with the same content is not published again: a crash between the
two can repeat an alert on the topic (same id, consumers overwrite by id) but never loses one.

A monitor of several analyzer shards has one sink per shard, each storing the checkpoint of its shard
(`ShardCheckpoint`). `CheckpointSet` reads a monitor's checkpoints, of whatever shard counts it ran with, as
one: where it goes on from (`ResumePoint`) and the state of each shard it runs with now.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.live.analyzer import StreamOutput, camera_shard, cameras_state, merge_states
from pipeline.records import Alert, ClipEmbedding, TrackEvent
from pipeline.search.index import ClipIndex
from pipeline.storage.clips import write_clip, write_keyframe
from pipeline.storage.layout import (
    ALERTS,
    alert_key,
    camera_record,
    camera_source_id,
    live_track_events_key,
    monitor_checkpoints_prefix,
    monitor_shard_checkpoint_key,
    source_key,
)
from pipeline.storage.store import ObjectStore
from pipeline.tracking import write_ended_tracks


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


@dataclass(frozen=True)
class ShardCheckpoint:
    """One analyzer shard's checkpoint: the state of its cameras (those `camera_shard` gives it) and the offsets
    it covers: the state holds every frame before them, and maybe more (the shard was ahead of the others when
    the monitor last went back to the least of their offsets)."""

    shard: int
    shards: int
    sequence: int  # the checkpoint cycle: later ones have larger numbers, across runs; -1 from before shards
    analyzer: dict
    offsets: dict[str, int]  # per "topic:partition", the next offset

    def to_json(self) -> dict:
        return {
            "shard": self.shard,
            "shards": self.shards,
            "sequence": self.sequence,
            "analyzer": self.analyzer,
            "offsets": self.offsets,
        }

    @classmethod
    def from_json(cls, data: dict) -> ShardCheckpoint:
        """A stored checkpoint; one of before shards is shard 0 of 1, older than any other."""
        return cls(
            data.get("shard", 0), data.get("shards", 1), data.get("sequence", -1), data["analyzer"], data["offsets"]
        )


@dataclass(frozen=True)
class ResumePoint:
    """Where a monitor goes on from its checkpoints."""

    offsets: dict[str, int]  # per "topic:partition", where to read again; a partition not here: from its commit
    sequence: int  # the next checkpoint cycle's


class CheckpointSet:
    """A monitor's stored checkpoints, of any shard counts, read as one: each camera's state comes from the
    newest checkpoint whose shard holds it. A camera's shard is its hash modulo the shard count, so over the
    residues of the hash modulo `period` (the least common multiple of the counts) each residue has one newest
    checkpoint; those are the current ones, the others (every camera of which a newer one holds) superseded."""

    def __init__(self, checkpoints: list[ShardCheckpoint]):
        self.period = math.lcm(*(c.shards for c in checkpoints)) if checkpoints else 1
        self.newest = [
            max((c for c in checkpoints if residue % c.shards == c.shard), key=lambda c: c.sequence, default=None)
            for residue in range(self.period)
        ]
        current = {id(c): c for c in self.newest if c is not None}
        self.current = sorted(current.values(), key=lambda c: c.sequence, reverse=True)
        self.superseded = [c for c in checkpoints if id(c) not in current]
        self.sequence = max((c.sequence for c in checkpoints), default=-1) + 1

    def resume_point(self) -> ResumePoint:
        """Per partition, the least offset of the current checkpoints: each camera's state holds every frame
        before it, and the analyzers skip the frames they hold. A partition some of them lack, and every
        partition when the cameras of some residue were never checkpointed, is read from its commit: no
        checkpoint is behind a commit (offsets are committed once every shard's checkpoint holds them)."""
        if not self.current or None in self.newest:
            return ResumePoint({}, self.sequence)
        partitions = set.intersection(*(set(c.offsets) for c in self.current))
        return ResumePoint({p: min(c.offsets[p] for c in self.current) for p in sorted(partitions)}, self.sequence)

    def states(self, shards: int) -> list[dict | None]:
        """The state of each of `shards` analyzer shards (None for all: nothing was checkpointed yet)."""
        if not self.current:
            return [None] * shards
        parts = [
            cameras_state(c.analyzer, lambda camera, c=c: self.newest[camera_shard(camera, self.period)] is c)
            for c in self.current
        ]
        whole = merge_states(parts)  # the newest first: a query changed between checkpoints has its newest definition
        return [cameras_state(whole, lambda camera, k=k: camera_shard(camera, shards) == k) for k in range(shards)]


class Sink:
    def __init__(self, store: ObjectStore, index: ClipIndex, publish: Callable[[Alert], None] | None = None):
        self.store = store
        self.index = index
        self.publish = publish
        self._unindexed: list[ClipEmbedding] = []
        self._recorded: set[str] = set()  # cameras whose source record is in the store
        self.published = 0

    def write(self, out: StreamOutput) -> int:
        """Store an output; the alert updates it stored (a replay of a stored one is not stored again)."""
        stored = 0
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
            stored += 1
        # Keyed by the events' pts; a replay after a restore can differ (the detector warms up again), so its
        # batch may land beside the first one's rather than over it.
        by_camera: dict[str, list[TrackEvent]] = {}
        for event in out.track_events:
            by_camera.setdefault(event.camera, []).append(event)
        for camera, events in by_camera.items():
            key = live_track_events_key(camera_source_id(camera), events[0].pts, events[-1].pts)
            self.store.put_json(key, [event.to_json() for event in events])
        if out.ended_tracks:
            write_ended_tracks(self.store, out.ended_tracks)
        return stored

    def checkpoint(self, name: str, state: dict, shard: int = 0, shards: int = 1) -> None:
        """Index the clips written since the last checkpoint, then record `state` (offsets included) as the
        checkpoint of analyzer shard `shard` of `shards`."""
        if self._unindexed:
            self.index.upsert(self._unindexed)
            self.index.save(self.store)
            self._unindexed = []
        self.store.put_json(monitor_shard_checkpoint_key(name, shard, shards), state)

    def resume(self, name: str, shards: int) -> tuple[ResumePoint, list[dict | None]]:
        """Where monitor `name`, now of `shards` analyzer shards, goes on from its checkpoints (of any shard
        count), and the state of each shard. Superseded checkpoints are deleted: no resume needs them again."""
        stored = CheckpointSet(
            [
                ShardCheckpoint.from_json(self.store.get_json(key))
                for key in self.store.list(monitor_checkpoints_prefix(name))
                if key.endswith(".json")
            ]
        )
        for old in stored.superseded:
            self.store.delete(monitor_shard_checkpoint_key(name, old.shard, old.shards))
        return stored.resume_point(), stored.states(shards)
