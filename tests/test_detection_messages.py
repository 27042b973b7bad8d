"""The `vigil.detections` wire format (an external detector's boxes, per camera frame): round trips through a real
Tansu broker, every validation rule, a reader that skips and counts bad messages, and a fuzzed decoder that only
ever returns a frame or raises `DetectionMessageError`."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config import KafkaConfig
from pipeline.media.detection_messages import (
    DetectionMessageError,
    DetectionReader,
    decode_detection_message,
    detection_message,
    send_detections,
)
from pipeline.media.kafka_clients import DeadLetters, FrameConsumer, MessageProducer
from pipeline.media.kafka_messages import Message
from pipeline.records import DetectionFrame, Detections

pytestmark = pytest.mark.filterwarnings("ignore:.*is deprecated. Use files\\(\\) instead:DeprecationWarning")

CLASSES = ("person", "car")


def topic_name(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:8]}"


def settings_for(broker) -> KafkaConfig:
    return KafkaConfig(brokers=broker.brokers, connect_timeout=10.0, delivery_timeout=20.0)


def unit_rows(rng, count: int, dim: int) -> np.ndarray:
    rows = rng.normal(size=(count, dim))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def camera_frames(camera: str, count: int, *, dim: int | None, seed: int = 0) -> list[DetectionFrame]:
    """`count` frames of one camera at 5 fps, 0 to 4 detections each (some frames find nothing)."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(count):
        n = i % 5
        x1, y1 = rng.uniform(0, 500, n), rng.uniform(0, 300, n)
        boxes = np.stack([x1, y1, x1 + rng.uniform(5, 140, n), y1 + rng.uniform(5, 180, n)], axis=1)
        detections = Detections(
            boxes,
            rng.uniform(0, 1, n),
            rng.integers(0, len(CLASSES), n),
            None if dim is None else unit_rows(rng, n, dim),
        )
        if dim is not None and n == 0:
            detections = Detections.empty(dim)
        frames.append(DetectionFrame(camera, 10 + i * 0.2, 50 + i, 640, 480, detections, CLASSES, 1.8e9 + i * 0.2))
    return frames


def record_of(message: Message, **fields) -> SimpleNamespace:
    return SimpleNamespace(topic="t", partition=0, offset=0, key=message.key, value=message.value, **fields)


def assert_same_frames(got: list[DetectionFrame], sent: list[DetectionFrame]) -> None:
    assert [(f.camera, f.pts, f.index, f.width, f.height, f.classes) for f in got] == [
        (f.camera, f.pts, f.index, f.width, f.height, f.classes) for f in sent
    ]
    for a, b in zip(got, sent):
        assert np.array_equal(a.detections.boxes, b.detections.boxes)  # float32 values survive the decimals exactly
        assert np.array_equal(a.detections.scores, b.detections.scores)
        assert np.array_equal(a.detections.class_ids, b.detections.class_ids)
        if b.detections.appearance is None:
            assert a.detections.appearance is None
        else:
            assert a.detections.appearance.shape == b.detections.appearance.shape
            np.testing.assert_allclose(a.detections.appearance, b.detections.appearance, atol=1e-6)


def read_all(broker, topic: str, count: int, dead_letters=None, group: str | None = None) -> tuple:
    with FrameConsumer(settings_for(broker), topic, assign=True, group_id=group) as consumer:
        reader = DetectionReader(consumer, dead_letters)
        frames: list[DetectionFrame] = []
        deadline = time.monotonic() + 20
        while reader.messages < count and time.monotonic() < deadline:
            got, offsets = reader.poll(0.5)
            frames += got
            consumer.commit(offsets)
        partitions = [tp.partition for tp in consumer.kafka.assignment()]
        committed = {partition: consumer.committed(topic, partition) for partition in partitions} if group else {}
    assert reader.messages == count, f"read {reader.messages} of {count} records"
    return frames, reader, committed


def read_dead_letters(broker, topic: str, count: int) -> list:
    records: list = []
    with FrameConsumer(settings_for(broker), topic, assign=True) as consumer:
        deadline = time.monotonic() + 20
        while len(records) < count and time.monotonic() < deadline:
            records += consumer.poll(0.5)
    return records


# --------------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("dim, appearance_format", [(None, "base64"), (16, "base64"), (16, "list")])
def test_round_trip_through_kafka(kafka_broker, dim, appearance_format):
    topic = topic_name("detections")
    sent = {camera: camera_frames(camera, 12, dim=dim, seed=s) for s, camera in enumerate(("gate", "yard", "dock"))}
    with MessageProducer(settings_for(kafka_broker)) as producer:
        for i in range(12):  # the cameras' frames interleaved, as live cameras send them
            for frames in sent.values():
                send_detections(producer, frames[i], topic=topic, appearance_format=appearance_format)
        producer.flush()
        assert producer.sent == 36 and producer.errors == 0
    got, reader, _ = read_all(kafka_broker, topic, 36)
    assert reader.malformed == 0
    for camera, frames in sent.items():
        assert_same_frames([f for f in got if f.camera == camera], frames)
    norms = [np.linalg.norm(f.detections.appearance, axis=1) for f in got if dim is not None]
    assert all(np.allclose(n, 1, atol=1e-6) for n in norms)


def test_the_message_is_the_documented_json():
    detections = Detections([[10, 20, 110, 220.5]], [0.875], [1], unit_rows(np.random.default_rng(0), 1, 4))
    message = detection_message(
        "gate-1", 12.04, detections, width=1920, height=1080, frame_index=301, wallclock=1796025600.25, classes=CLASSES
    )
    assert message.key == b"gate-1" and message.header("content-type") == "application/json"
    body = json.loads(message.value)
    assert {k: v for k, v in body.items() if k != "detections"} == {
        "v": 1,
        "camera": "gate-1",
        "pts": 12.04,
        "wallclock": 1796025600.25,
        "frame_index": 301,
        "width": 1920,
        "height": 1080,
        "classes": ["person", "car"],
        "appearance_dim": 4,
    }
    (item,) = body["detections"]
    assert item["box"] == [10, 20, 110, 220.5] and item["score"] == 0.875 and item["class"] == "car"
    raw = np.frombuffer(base64.b64decode(item["appearance"]), "<f4")
    assert np.array_equal(raw, detections.appearance[0])


def test_a_plain_json_message_a_user_writes_by_hand_reads():
    body = {
        "v": 1,
        "camera": "gate-1",
        "pts": 3.5,
        "frame_index": 0,
        "width": 100,
        "height": 50,
        "detections": [
            {"box": [-2, 1, 40, 52.5], "score": 1, "class": 3, "appearance": [3, 4]},  # clipped; scaled to unit
            {"box": [50, 0, 60, 10], "score": 0, "appearance": [0, -2]},
        ],
        "appearance_dim": 2,
        "comment": "fields a reader does not know are ignored",
    }
    frame = decode_detection_message(
        SimpleNamespace(key=b"gate-1", value=json.dumps(body).encode(), timestamp=1_700_000_000_500, timestamp_type=0)
    )
    assert frame.wallclock == 1_700_000_000.5  # the record's CreateTime dates it without a wallclock field
    assert frame.detections.boxes.tolist() == [[0, 1, 40, 50], [50, 0, 60, 10]]
    assert frame.detections.class_ids.tolist() == [3, 0] and frame.classes == ()
    np.testing.assert_allclose(frame.detections.appearance, [[0.6, 0.8], [0, -1]], rtol=1e-6)
    # a wall clock alone dates the frame and stands in for its pts
    del body["pts"]
    body["wallclock"] = 1796025600.25
    frame = decode_detection_message(SimpleNamespace(key="gate-1", value=json.dumps(body).encode()))
    assert frame.pts == frame.wallclock == 1796025600.25


def test_the_documented_example_and_snippet_work(kafka_broker):
    text = (Path(__file__).parents[1] / "docs" / "DETECTIONS.md").read_text()
    example = re.search(r"```json\n(.*?)```", text, re.S).group(1)
    frame = decode_detection_message(SimpleNamespace(key=b"gate-1", value=example.encode()))
    assert frame.classes == CLASSES and frame.detections.class_ids.tolist() == [0, 1]
    assert frame.detections.appearance.shape == (2, 4)
    topic = topic_name("detections.doc")
    snippet = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    snippet = snippet.replace("127.0.0.1:9092", kafka_broker.brokers).replace(
        "send_detections(producer, frame)", f"send_detections(producer, frame, topic={topic!r})"
    )
    exec(snippet, {})
    (got,), _, _ = read_all(kafka_broker, topic, 1)
    assert (got.camera, got.pts, got.classes, got.detections.boxes.tolist()) == (
        "gate-1",
        12.04,
        CLASSES,
        [[410.5, 220, 530.25, 610]],
    )


# --------------------------------------------------------------------------------------------- validation


def valid_body() -> dict:
    return {
        "v": 1,
        "camera": "cam",
        "pts": 1.0,
        "frame_index": 3,
        "width": 100,
        "height": 80,
        "classes": ["person", "car"],
        "appearance_dim": 2,
        "detections": [
            {"box": [10, 10, 50, 60], "score": 0.5, "class": "car", "appearance": [1, 0]},
            {
                "box": [0, 0, 100, 80],
                "score": 0.9,
                "class": 0,
                "appearance": base64.b64encode(bytes(4) + b"\0\0\x80?").decode(),
            },
        ],
    }


def changed(path: tuple, value=KeyError) -> bytes:
    """valid_body() with the field at `path` set to `value` (removed for KeyError)."""
    body = valid_body()
    *parents, last = path
    target = body
    for step in parents:
        target = target[step]
    if value is KeyError:
        del target[last]
    else:
        target[last] = value
    return json.dumps(body).encode()


VALID = json.dumps(valid_body()).encode()

# (words the reason must contain, key, value)
CASES = [
    ("missing key", None, VALID),
    ("key is not UTF-8", b"\xff", VALID),
    ("key: camera id", b"bad\ncam", VALID),
    ("differs from the key", b"other", VALID),
    ("empty value", b"cam", b""),
    ("exceeds the limit", b"cam", b" " * 5000 + VALID),
    ("not UTF-8", b"cam", b"\xff\xfe{}"),
    ("not JSON", b"cam", b"{'v': 1}"),
    ("not a JSON object", b"cam", b"[1, 2]"),
    ("nests too deeply", b"cam", b"[" * 4000),
    ("field 'pts' is given twice", b"cam", VALID.replace(b'"v": 1', b'"v": 1, "pts": 2')),
    ("missing field 'v'", b"cam", changed(("v",))),
    ("unsupported version v = 2", b"cam", changed(("v",), 2)),
    ("unsupported version v = True", b"cam", changed(("v",), True)),
    ("missing field 'pts' or 'wallclock'", b"cam", changed(("pts",))),
    ("pts is not a number", b"cam", changed(("pts",), "1.0")),
    ("pts = nan is not a finite number", b"cam", changed(("pts",), float("nan"))),
    ("pts = inf is not a finite", b"cam", changed(("pts",), float("inf"))),
    ("wallclock = -5", b"cam", changed(("wallclock",), -5)),
    ("missing field 'frame_index'", b"cam", changed(("frame_index",))),
    ("frame_index is not an integer", b"cam", changed(("frame_index",), 3.0)),
    ("frame_index = -1 is out of range", b"cam", changed(("frame_index",), -1)),
    ("missing field 'width'", b"cam", changed(("width",))),
    ("width = 0 is out of range", b"cam", changed(("width",), 0)),
    ("height = 9000 is out of range", b"cam", changed(("height",), 9000)),
    ("picture of 8192x8192 exceeds", b"cam", json.dumps(valid_body() | {"width": 8192, "height": 8192}).encode()),
    ("classes is not a list", b"cam", changed(("classes",), "person")),
    ("classes[1] is not a name", b"cam", changed(("classes", 1), " ")),
    ("classes[1] repeats the name 'person'", b"cam", changed(("classes", 1), "person")),
    ("missing field 'detections'", b"cam", changed(("detections",))),
    ("detections is not a list", b"cam", changed(("detections",), {})),
    ("detections[1] is not an object", b"cam", changed(("detections", 1), [0, 0, 1, 1])),
    ("detections[0] misses field 'box'", b"cam", changed(("detections", 0, "box"))),
    ("detections[1] misses field 'score'", b"cam", changed(("detections", 1, "score"))),
    ("detections[0].box is not a list of 4 numbers", b"cam", changed(("detections", 0, "box"), [1, 2, 3])),
    ("detections[0].box[2] is not a number", b"cam", changed(("detections", 0, "box", 2), None)),
    ("detections[0].box[1] = nan", b"cam", changed(("detections", 0, "box", 1), float("nan"))),
    ("detections[0].box: x1 (10) is not less than x2 (5)", b"cam", changed(("detections", 0, "box", 2), 5)),
    ("detections[0].box: y1 (10) is not less than y2 (10)", b"cam", changed(("detections", 0, "box", 3), 10)),
    ("detections[0].box[2] = 120 is outside the 100x80 picture", b"cam", changed(("detections", 0, "box", 2), 120)),
    ("detections[0].box[1] = -5 is outside", b"cam", changed(("detections", 0, "box", 1), -5)),
    ("detections[0].box lies outside the 100x80 picture", b"cam", changed(("detections", 0, "box"), [101, 1, 104, 5])),
    ("detections[0].score = 1.5", b"cam", changed(("detections", 0, "score"), 1.5)),
    ("detections[0].score = -0.1", b"cam", changed(("detections", 0, "score"), -0.1)),
    ("detections[0].score is not a number", b"cam", changed(("detections", 0, "score"), True)),
    (
        "detections[0].class 'bus' is not one of the message's classes",
        b"cam",
        changed(("detections", 0, "class"), "bus"),
    ),
    ("detections[1].class = 2 is out of range [0, 1]", b"cam", changed(("detections", 1, "class"), 2)),
    ("detections[1].class = -1", b"cam", changed(("detections", 1, "class"), -1)),
    ("detections[0].class 'car' is a name, but the message has no 'classes'", b"cam", changed(("classes",))),
    ("appearance_dim = 0 is out of range", b"cam", changed(("appearance_dim",), 0)),
    ("detections[0].appearance is given without the message's appearance_dim", b"cam", changed(("appearance_dim",))),
    ("detections[0] has no appearance, but appearance_dim", b"cam", changed(("detections", 0, "appearance"))),
    (
        "detections[0].appearance has 3 values, not appearance_dim = 2",
        b"cam",
        changed(("detections", 0, "appearance"), [1, 0, 0]),
    ),
    ("detections[0].appearance[1] is not a number", b"cam", changed(("detections", 0, "appearance", 1), "0")),
    ("detections[0].appearance[0] = 1e+300", b"cam", changed(("detections", 0, "appearance", 0), 1e300)),
    ("detections[0].appearance is a zero vector", b"cam", changed(("detections", 0, "appearance"), [0, 0])),
    ("detections[1].appearance is not base64", b"cam", changed(("detections", 1, "appearance"), "not base64!")),
    ("detections[1].appearance holds 4 bytes, not the 8", b"cam", changed(("detections", 1, "appearance"), "AAAAAA==")),
    (
        "detections[1].appearance holds a value that is not a finite number",
        b"cam",
        changed(("detections", 1, "appearance"), base64.b64encode(np.array([np.nan, 1], "<f4").tobytes()).decode()),
    ),
    (
        "detections[1].appearance is neither a list of numbers nor base64",
        b"cam",
        changed(("detections", 1, "appearance"), {}),
    ),
]


def test_the_valid_body_reads():
    frame = decode_detection_message(SimpleNamespace(key=b"cam", value=VALID))
    assert frame.detections.class_ids.tolist() == [1, 0] and frame.detections.appearance.tolist() == [[1, 0], [0, 1]]


@pytest.mark.parametrize("words, key, value", CASES, ids=[case[0][:50] for case in CASES])
def test_each_rule_refuses_naming_the_field(words, key, value):
    with pytest.raises(DetectionMessageError) as caught:
        decode_detection_message(SimpleNamespace(key=key, value=value), max_bytes=4096)
    assert words in caught.value.reason and "\n" not in caught.value.reason, caught.value.reason


def test_building_refuses_what_readers_would_refuse():
    boxes = Detections([[10, 10, 50, 60]], [0.5], [2])
    with pytest.raises(DetectionMessageError, match=r"detections\[0\].class = 2 is out of range \[0, 1\]"):
        detection_message("cam", 1.0, boxes, width=100, height=80, frame_index=0, classes=CLASSES)
    with pytest.raises(DetectionMessageError, match="box.* outside the 40x40 picture"):
        detection_message("cam", 1.0, boxes, width=40, height=40, frame_index=0)
    with pytest.raises(DetectionMessageError, match="missing field 'pts' or 'wallclock'"):
        detection_message("cam", None, boxes, width=100, height=80, frame_index=0)
    with pytest.raises(DetectionMessageError, match="pts = nan"):
        detection_message("cam", float("nan"), boxes, width=100, height=80, frame_index=0)
    with pytest.raises(ValueError, match="camera id"):
        detection_message("bad\ncam", 1.0, boxes, width=100, height=80, frame_index=0)
    many = Detections(
        np.tile([[10, 10, 50, 60]], (500, 1)),
        np.full(500, 0.5),
        appearance=unit_rows(np.random.default_rng(0), 500, 64),
    )
    with pytest.raises(DetectionMessageError, match="exceeds the limit of 4096 bytes"):
        detection_message("cam", 1.0, many, width=100, height=80, frame_index=0, max_bytes=4096)


# --------------------------------------------------------------------------------------------- the reader


def test_the_reader_yields_the_good_frames_in_order_and_counts_the_bad(kafka_broker):
    topic, dlq_topic = topic_name("detections.mixed"), topic_name("dlq")
    good = camera_frames("cam", 30, dim=8)
    bad = [Message(key, value, []) for _, key, value in CASES if len(value or b"") < 4096]
    rng = np.random.default_rng(2)
    sequence = []
    for frame in good:  # each good frame after a random few bad ones
        sequence += [("bad", bad[i]) for i in rng.choice(len(bad), int(rng.integers(0, 4)), replace=False)]
        sequence.append(("good", frame))
    # frames of the camera's past: one from before its first frame, one repeating its last pts
    first = next(i for i, (kind, _) in enumerate(sequence) if kind == "good")
    for pts, after in ((0.5, first), (good[-1].pts, len(sequence))):
        stale = detection_message("cam", pts, Detections.empty(), width=64, height=48, frame_index=0)
        sequence.insert(after + 1, ("bad", stale))
    with MessageProducer(settings_for(kafka_broker)) as producer:
        for kind, item in sequence:
            if kind == "good":
                item = detection_message(
                    item.camera, item.pts, item.detections, width=640, height=480, frame_index=item.index,
                    wallclock=item.wallclock, classes=item.classes,
                )  # fmt: skip
            producer.send(topic, item, partition=0)  # one partition, so the order above is the order read
        producer.flush()
        assert producer.errors == 0
    bad_count = sum(kind == "bad" for kind, _ in sequence)
    with MessageProducer(settings_for(kafka_broker)) as dlq_producer:
        dead_letters = DeadLetters(dlq_producer, dlq_topic)
        got, reader, committed = read_all(
            kafka_broker, topic, len(sequence), dead_letters, group=f"g-{uuid.uuid4().hex[:6]}"
        )
    assert_same_frames(got, good)
    assert reader.malformed == dead_letters.count == bad_count
    assert sum(reader.reasons.values()) == bad_count and reader.reasons == dead_letters.reasons
    stale = [reason for reason in reader.reasons if "is not after the previous frame's" in reason]
    assert sum(reader.reasons[reason] for reason in stale) == 2  # the frame from before the first, the repeated pts
    assert committed[0] == len(sequence)  # everything read is committed
    assert len(read_dead_letters(kafka_broker, dlq_topic, bad_count)) == bad_count


def test_frames_yields_until_idle_and_commits_what_was_handled(kafka_broker):
    topic, group = topic_name("detections.iter"), f"g-{uuid.uuid4().hex[:6]}"
    frames = camera_frames("lobby", 8, dim=None)
    with MessageProducer(settings_for(kafka_broker)) as producer:
        for frame in frames:
            send_detections(producer, frame, topic=topic)
        producer.send(topic, Message(b"lobby", b"not json", []))
        producer.flush()
    with FrameConsumer(settings_for(kafka_broker), topic, group_id=group, assign=True) as consumer:
        reader = DetectionReader(consumer)
        got = list(reader.frames(idle_timeout=2.0))
        committed = [consumer.committed(topic, tp.partition) for tp in consumer.kafka.assignment()]
        assert (
            sorted(committed, key=lambda offset: offset or 0)[-1] == 9 and committed.count(None) == len(committed) - 1
        )
    assert_same_frames(got, frames)
    assert reader.messages == 9 and reader.malformed == 1
    assert list(reader.reasons) == ["value is not JSON: Expecting value: line 1 column 1 (char 0)"]


def test_the_module_imports_no_kafka_client():
    code = "import sys, pipeline.media.detection_messages; assert 'kafka' not in sys.modules, 'kafka imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --------------------------------------------------------------------------------------------- fuzzing

FUZZ = settings(
    max_examples=400,
    deadline=None,
    database=None,  # nothing written to the working tree
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=30,
)
FIELDS = [
    "v",
    "camera",
    "pts",
    "wallclock",
    "frame_index",
    "width",
    "height",
    "classes",
    "appearance_dim",
    "detections",
]
DETECTION_FIELDS = ["box", "score", "class", "appearance"]


@st.composite
def damaged_bodies(draw) -> bytes:
    """valid_body() with up to four fields, of the frame or of a detection, dropped or set to any JSON value."""
    body = valid_body()
    for _ in range(draw(st.integers(1, 4))):
        target = body
        names = FIELDS
        if draw(st.booleans()) and isinstance(body.get("detections"), list) and body["detections"]:
            target = draw(st.sampled_from(body["detections"]))
            names = DETECTION_FIELDS
            if not isinstance(target, dict):
                continue
        name = draw(st.sampled_from(names))
        if draw(st.integers(0, 3)) == 0:
            target.pop(name, None)
        else:
            target[name] = draw(json_values)
    return json.dumps(body).encode()


def check_outcome(key, value) -> None:
    record = SimpleNamespace(key=key, value=value, timestamp=1, timestamp_type=0)
    try:
        frame = decode_detection_message(record, max_bytes=4096)
    except DetectionMessageError as exc:
        assert isinstance(exc.reason, str) and exc.reason and "\n" not in exc.reason
        return
    detections = frame.detections
    assert np.isfinite(detections.boxes).all() and ((0 <= detections.scores) & (detections.scores <= 1)).all()
    assert (detections.boxes[:, :2] < detections.boxes[:, 2:]).all()
    assert (detections.boxes <= [frame.width, frame.height] * 2).all() and (detections.boxes >= 0).all()


@FUZZ
@given(st.one_of(st.none(), st.binary(max_size=64), st.text(max_size=20)), st.binary(max_size=3000))
def test_random_bytes_never_crash_the_decoder(key, value):
    check_outcome(key, value)


@FUZZ
@given(json_values)
def test_random_json_never_crashes_the_decoder(body):
    check_outcome(b"cam", json.dumps(body).encode())


@FUZZ
@given(damaged_bodies())
def test_damaged_messages_never_crash_the_decoder(value):
    check_outcome(b"cam", value)
