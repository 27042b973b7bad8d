"""`vigil track --kafka`: an external detector's `vigil.detections` messages through the tracker into the store, on
the session's Kafka broker: track events, one alert per track of a standing query, refused messages counted, and
a restart that goes on from its checkpoint with the next track ids and no alert twice."""

from __future__ import annotations

import uuid

import numpy as np

from jobs.cli import main
from jobs.track_detections import checkpoint_name, track_detections
from pipeline.config import load_config
from pipeline.live.queries import StandingQuery, save_query
from pipeline.live.sink import alert_records
from pipeline.media.detection_messages import send_detections
from pipeline.media.kafka_clients import MessageProducer
from pipeline.media.kafka_messages import Message
from pipeline.records import DetectionFrame, Detections
from pipeline.storage.layout import camera_source_id, monitor_checkpoint_key, tracks_prefix
from pipeline.storage.store import LocalStore
from tests.test_hardening_store import one_line_error

FRAMES_PER_WALK = 25  # at 5 fps: each person crosses the 400-pixel-wide picture in 5 s


def walks(first: int, count: int) -> list[DetectionFrame]:
    """Person after person walking left to right across the picture, one at a time: walk k from frame
    k * FRAMES_PER_WALK (pts = frame / 5), the picture empty for a frame between walks."""
    frames = []
    for index in range(first * FRAMES_PER_WALK, (first + count) * FRAMES_PER_WALK):
        step = index % FRAMES_PER_WALK
        if step == FRAMES_PER_WALK - 1:
            boxes = np.zeros((0, 4))
        else:
            x = 16.0 * step
            boxes = np.array([[x, 100.0, x + 40, 220.0]])
        detections = Detections(boxes, np.full(len(boxes), 0.9), np.zeros(len(boxes), np.int64))
        frames.append(DetectionFrame("gate", index / 5, index, 400, 300, detections, classes=("person", "car")))
    return frames


def test_external_detections_are_tracked_once_across_a_restart(kafka_broker, tmp_path):
    run = uuid.uuid4().hex[:8]
    config = load_config(
        None,
        {
            "store": str(tmp_path / "store"),
            "kafka.brokers": kafka_broker.brokers,
            "kafka.connect_timeout": 10.0,
            "kafka.topics.detections": f"detections.{run}",
            "kafka.topics.alerts": f"alerts.{run}",
            "kafka.topics.dlq": f"dlq.{run}",
            "kafka.group": f"g-{run}",
            "monitor.checkpoint_every": 0.2,
            "events.lines": [{"name": "door", "points": [[200, 0], [200, 300]], "direction": "both"}],
        },
    )
    store = LocalStore(tmp_path / "store")
    save_query(store, StandingQuery.from_json({"id": "in", "track": {"event": "cross", "where": "door"}}))
    cars = StandingQuery.from_json({"id": "cars", "track": {"event": "cross", "where": "door", "classes": ["car"]}})
    save_query(store, cars)
    with MessageProducer(config.kafka) as producer:
        for frame in walks(0, 2):
            send_detections(producer, frame, topic=config.kafka.topics.detections)
        producer.send(config.kafka.topics.detections, Message(b"gate", b"{not json", []))  # refused, counted
        producer.flush()

    first = track_detections(config, idle_exit=2.0)
    assert (first.frames, first.messages, first.malformed) == (2 * FRAMES_PER_WALK, 2 * FRAMES_PER_WALK + 1, 1)
    alerts = sorted(alert_records(store), key=lambda alert: alert["track"]["id"])
    assert [(a["query_id"], a["track"]["id"], a["track"]["class_name"], a["status"]) for a in alerts] == [
        ("in", 1, "person", "closed"),
        ("in", 2, "person", "closed"),
    ]
    assert all(a["keyframe_key"] == "" and a["models"]["siglip"] == "external detector" for a in alerts)
    sid = camera_source_id("gate")
    crossings = [e for key in store.list(tracks_prefix(sid)) for e in store.get_json(key) if e["kind"] == "cross"]
    assert [(e["track_id"], e["direction"]) for e in crossings] == [(1, "right_to_left"), (2, "right_to_left")]
    checkpoint = store.get_json(monitor_checkpoint_key(checkpoint_name(config)))
    assert checkpoint["analyzer"]["tracking"]["gate"]["tracker"]["next_id"] == 3
    assert checkpoint["offsets"] == {f"{config.kafka.topics.detections}:0": 2 * FRAMES_PER_WALK + 1}

    with MessageProducer(config.kafka) as producer:  # the detector goes on while vigil is down
        for frame in walks(2, 1):
            send_detections(producer, frame, topic=config.kafka.topics.detections)
        producer.flush()
    second = track_detections(config, idle_exit=2.0)
    assert second.frames == FRAMES_PER_WALK  # only the new messages: the checkpoint holds the others
    assert sorted(a["track"]["id"] for a in alert_records(store)) == [1, 2, 3]


def test_vigil_track_kafka_refuses_what_does_not_go_with_it(capsys, tmp_path):
    for argv, problem in [
        (["track", "--kafka", "cam.mp4"], "one of them"),
        (["track", "--kafka", "--camera", "gate"], "do not go with --kafka"),
        (["track", "cam.mp4", "--idle-exit", "3"], "go with --kafka"),
        (["track", "--kafka", "--idle-exit", "0"], "--idle-exit must be more than 0"),
        (["track", "--kafka", "--brokers", "127.0.0.1:9"], "127.0.0.1:9"),
    ]:
        assert main([*argv, "--store", str(tmp_path), "--config", str(fast_fail(tmp_path))]) == 2
        one_line_error(capsys.readouterr().err, problem)


def fast_fail(folder):
    """A config whose Kafka connection gives up at once."""
    path = folder / "fast.yaml"
    path.write_text("kafka:\n  connect_timeout: 0.5\n  connect_attempts: 1\n")
    return path
