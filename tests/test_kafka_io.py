"""The vigil.frames wire format, the Kafka clients and the dead-letter path, against a real Tansu broker."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest
from PIL import Image

from pipeline.config import ConfigError, KafkaConfig, load_config
from pipeline.media.decode import decode_frames
from pipeline.media.kafka_clients import (
    DeadLetters,
    FrameConsumer,
    FrameReader,
    KafkaUnavailable,
    MessageProducer,
    consume_frames,
    take_within,
)
from pipeline.media.kafka_messages import MalformedMessage, Message, decode_message, frame_message, segment_message
from pipeline.records import Frame
from tests.servers import free_port, start_tansu

pytestmark = pytest.mark.filterwarnings("ignore:.*is deprecated. Use files\\(\\) instead:DeprecationWarning")


LIMIT = 256 * 1024  # the readers' message size limit in these tests


def topic_name(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:8]}"


def settings_for(broker, **kw) -> KafkaConfig:
    return KafkaConfig(brokers=broker.brokers, connect_timeout=10.0, delivery_timeout=20.0, **kw)


def read_records(broker, topic: str, count: int, timeout: float = 20.0) -> list:
    """Every record of `topic` (all partitions, from the start) until `count` arrived."""
    records: list = []
    with FrameConsumer(settings_for(broker), topic, assign=True) as consumer:
        deadline = time.monotonic() + timeout
        while len(records) < count and time.monotonic() < deadline:
            records += consumer.poll(0.5)
    assert len(records) == count, f"{topic}: got {len(records)} records, expected {count}"
    return records


@pytest.fixture(scope="module")
def sample_frames(scene_video):
    path, _ = scene_video
    return list(decode_frames(path, fps=5, short_side=120))  # 100 frames, 160x120


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# --------------------------------------------------------------------------------------------- round trips


def test_jpeg_round_trip_through_kafka(kafka_broker, sample_frames):
    topic = topic_name("frames.jpeg")
    sent = sample_frames[:12]
    with MessageProducer(settings_for(kafka_broker)) as producer:
        for frame in sent:
            producer.send(topic, frame_message(frame, "cam-1"))
        producer.flush()
        assert producer.sent == 12 and producer.errors == 0
        assert producer.idempotent  # Tansu supports idempotent producers: kafka-python keeps it on
    records = sorted(read_records(kafka_broker, topic, 12), key=lambda r: r.offset)
    assert {r.partition for r in records} == {records[0].partition}  # one camera, one partition
    decoded = [f for r in records for f in decode_message(r.key, r.value, r.headers)]
    assert [f.pts for f in decoded] == [f.pts for f in sent]
    assert [f.index for f in decoded] == [f.index for f in sent]
    for got, want in zip(decoded, sent):
        assert got.camera == got.source == "cam-1"
        assert got.image.shape == want.image.shape and got.image.dtype == np.uint8
        assert mean_abs_diff(got.image, want.image) < 4.0  # JPEG q90
    headers = dict(records[0].headers)
    assert headers["vigil-schema"] == b"1" and headers["codec"] == b"jpeg" and headers["camera"] == b"cam-1"
    assert (headers["width"], headers["height"]) == (b"160", b"120")


def test_gather_takes_what_is_on_hand_up_to_a_size(kafka_broker, sample_frames):
    topic = topic_name("frames.gather")
    with MessageProducer(settings_for(kafka_broker)) as producer:
        for i, frame in enumerate(sample_frames[:10]):
            producer.send(topic, frame_message(frame, f"cam-{i % 3}"))
        producer.flush()
    with FrameConsumer(settings_for(kafka_broker), topic, assign=True) as consumer:
        batches = [consumer.gather(4, timeout=10.0)]
        while sum(map(len, batches)) < 10:
            batches.append(consumer.gather(100, timeout=10.0))
        assert consumer.gather(4, timeout=0.2) == []  # nothing on hand after waiting
    assert len(batches[0]) == 4 and all(batches)
    records = [r for batch in batches for r in batch]
    assert len({(r.partition, r.offset) for r in records}) == 10
    for batch in batches:  # each partition's records in offset order
        for partition in {r.partition for r in batch}:
            offsets = [r.offset for r in batch if r.partition == partition]
            assert offsets == sorted(offsets)


def test_segment_round_trip_through_kafka(kafka_broker, sample_frames):
    topic = topic_name("frames.segment")
    chunks = [sample_frames[i : i + 10] for i in range(0, 30, 10)]  # three 2 s segments at 5 fps
    with MessageProducer(settings_for(kafka_broker)) as producer:
        for chunk in chunks:
            producer.send(topic, segment_message(chunk, "cam-2", period=0.2))
        producer.flush()
    records = sorted(read_records(kafka_broker, topic, 3), key=lambda r: r.offset)
    for record, chunk in zip(records, chunks):
        headers = dict(record.headers)
        assert headers["codec"] == b"h264/mpegts" and headers["frames"] == b"10"
        assert float(headers["duration"]) == pytest.approx(2.0)
        assert record.value[:1] == b"\x47"  # an MPEG-TS sync byte: no pickle, no framing of ours
        frames = decode_message(record.key, record.value, record.headers)
        assert [f.pts for f in frames] == pytest.approx([f.pts for f in chunk], abs=1e-4)
        assert [f.index for f in frames] == [f.index for f in chunk]
        for got, want in zip(frames, chunk):
            assert got.image.shape == want.image.shape
            assert mean_abs_diff(got.image, want.image) < 6.0  # H.264 crf 23


def test_each_segment_decodes_on_its_own(sample_frames):
    """A segment starts on a keyframe: the second of two consecutive segments decodes alone."""
    first = segment_message(sample_frames[:5], "cam", period=0.2)
    second = segment_message(sample_frames[5:10], "cam", period=0.2)
    frames = decode_message(second.key, second.value, second.headers)
    assert [f.pts for f in frames] == pytest.approx([f.pts for f in sample_frames[5:10]], abs=1e-4)
    assert len(decode_message(first.key, first.value, first.headers)) == 5


# --------------------------------------------------------------------------------------------- validation


def _jpeg(width=32, height=24, seed=0) -> bytes:
    image = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG")
    return buf.getvalue()


def _headers(**override) -> list[tuple[str, bytes]]:
    base = {
        "vigil-schema": "1",
        "camera": "cam",
        "pts": "1.5",
        "frame-index": "3",
        "codec": "jpeg",
        "width": "32",
        "height": "24",
    }
    base.update(override)
    return [(k, v.encode() if isinstance(v, str) else v) for k, v in base.items() if v is not None]


def malformed_cases(segment: Message) -> list[tuple[str, object, object, object]]:
    """(expected reason fragment, key, value, headers) of messages every reader must refuse."""
    good = _jpeg()
    seg_headers = list(segment.headers)

    def seg_with(**override):
        values = {k: v for k, v in seg_headers}
        values.update({k: v.encode() for k, v in override.items()})
        return list(values.items())

    rng = np.random.default_rng(7)
    return [
        ("missing key", None, good, _headers()),
        ("empty key", b"", good, _headers()),
        ("key is not UTF-8", b"\xff\xfe", good, _headers()),
        ("has a control character", "gate\u0085".encode(), good, _headers(camera="gate\u0085")),
        ("at most 256 bytes", b"k" * 300, good, _headers(camera="k" * 300)),
        ("differs from the key", b"other", good, _headers()),
        ("empty value", b"cam", b"", _headers()),
        ("missing header 'vigil-schema'", b"cam", good, _headers(**{"vigil-schema": None})),
        ("unsupported schema version", b"cam", good, _headers(**{"vigil-schema": "2"})),
        ("missing header 'pts'", b"cam", good, _headers(pts=None)),
        ("not a decimal number", b"cam", good, _headers(pts="nan")),
        ("not a decimal number", b"cam", good, _headers(pts="1e999x")),
        ("out of range", b"cam", good, _headers(pts="1e300")),
        ("not a non-negative integer", b"cam", good, _headers(**{"frame-index": "-1"})),
        ("unknown codec", b"cam", good, _headers(codec="png")),
        ("out of range", b"cam", good, _headers(width="0")),
        ("out of range", b"cam", good, _headers(width="100000")),
        ("exceeds", b"cam", good, _headers(width="8192", height="8192")),
        ("duplicate header", b"cam", good, _headers() + [("pts", b"2.0")]),
        ("not UTF-8", b"cam", good, _headers(camera=b"\xff")),
        ("JPEG is 32x24 but headers say", b"cam", good, _headers(width="64")),
        ("truncated JPEG", b"cam", good[: len(good) // 2], _headers()),
        ("not a JPEG", b"cam", rng.bytes(500), _headers()),
        ("undecodable JPEG", b"cam", good[:20] + rng.bytes(len(good) - 22) + b"\xff\xd9", _headers()),
        ("exceeds the limit", b"cam", b"\xff\xd8\xff" + bytes(LIMIT + 1000), _headers()),
        ("segment", b"cam", rng.bytes(4000), seg_with()),
        ("segment", b"cam", segment.value[: len(segment.value) // 3], seg_with()),
        ("headers announce", b"cam", segment.value, seg_with(frames="4")),
        ("outside the segment", b"cam", segment.value, seg_with(duration="0.1")),
        ("missing header 'frames'", b"cam", segment.value, [(k, v) for k, v in seg_headers if k != "frames"]),
        ("not even", b"cam", segment.value, seg_with(width="161")),
        ("kafka.max_message_pixels", b"cam", segment.value, seg_with(width="8192", height="4320", frames="24")),
    ]


def test_decode_message_refuses_anything_malformed(sample_frames):
    segment = segment_message(sample_frames[:5], "cam", period=0.2)
    assert len(decode_message(b"cam", _jpeg(), _headers())) == 1  # the baseline is valid
    assert len(decode_message(segment.key, segment.value, segment.headers)) == 5
    for reason, key, value, headers in malformed_cases(segment):
        with pytest.raises(MalformedMessage) as caught:
            decode_message(key, value, headers, max_bytes=LIMIT)
        assert reason in caught.value.reason, (reason, caught.value.reason)


def test_building_refuses_what_readers_would_refuse(sample_frames):
    with pytest.raises(ValueError, match="exceeds the limit"):
        frame_message(sample_frames[0], "cam", max_bytes=100)
    with pytest.raises(ValueError, match="camera id"):
        frame_message(sample_frames[0], "bad\ncamera")
    with pytest.raises(ValueError, match="increasing pts"):
        segment_message([sample_frames[3], sample_frames[1]], "cam")
    odd = Frame("cam", 0.0, 0, np.zeros((15, 21, 3), np.uint8))
    message = segment_message([odd], "cam")  # cropped to even for yuv420p
    assert message.header("width") == "20" and message.header("height") == "14"


# --------------------------------------------------------------------------------------------- dead letters


def test_malformed_messages_go_to_the_dlq_while_frames_keep_flowing(kafka_broker, sample_frames):
    frames_topic, dlq_topic = topic_name("frames.mixed"), topic_name("dlq")
    segment = segment_message(sample_frames[:5], "cam", period=0.2)
    cases = malformed_cases(segment)
    rng = np.random.default_rng(1)
    bad = []
    for i in range(200):  # the catalogue above, then random junk of every shape
        if i < len(cases):
            _, key, value, headers = cases[i]
        else:
            kind = i % 4
            key = [b"cam", None, rng.bytes(8), b"cam"][kind]
            value = rng.bytes(int(rng.integers(1, 3000)))
            headers = [
                _headers(),
                [],
                [(f"h{j}", rng.bytes(5)) for j in range(3)],
                _headers(codec="h264/mpegts", frames="3", duration="1.0"),
            ][kind]
        bad.append((key, value, headers))
    good = [frame_message(f, "cam") for f in sample_frames[:40]] + [
        segment_message(sample_frames[40:50], "cam", period=0.2)
    ]
    # interleave: good messages at random places among the bad ones, order of each kept
    slots = sorted(rng.choice(len(bad) + len(good), size=len(good), replace=False).tolist())
    sequence, g, b = [], 0, 0
    for position in range(len(bad) + len(good)):
        if g < len(good) and position == slots[g]:
            sequence.append(("good", good[g]))
            g += 1
        else:
            sequence.append(("bad", bad[b]))
            b += 1
    with MessageProducer(settings_for(kafka_broker)) as producer:
        for kind, item in sequence:
            # everything on one partition, so the order above is the order read
            producer.send(frames_topic, item if kind == "good" else Message(*item), partition=0)
        producer.flush()
        assert producer.errors == 0 and producer.sent == len(sequence)

    received: list[Frame] = []
    settings = settings_for(kafka_broker, max_message_bytes=LIMIT)
    with MessageProducer(settings) as dlq_producer:
        dlq = DeadLetters(dlq_producer, dlq_topic)
        with FrameConsumer(settings, frames_topic, group_id=f"g-{uuid.uuid4().hex[:6]}") as consumer:
            stats = consume_frames(
                consumer, dlq, lambda frames, record: received.extend(frames), max_messages=len(sequence)
            )
            # everything read is committed: a restart would resume after the last message
            assert consumer.committed(frames_topic, 0) == len(sequence)
    assert stats.messages == 241 and stats.malformed == 200 and dlq.count == 200
    assert sum(stats.reasons.values()) == 200 and stats.commits >= 1
    # the good frames came through, all of them, in order
    assert [f.pts for f in received] == pytest.approx([f.pts for f in sample_frames[:50]], abs=1e-4)
    assert stats.frames == 50

    letters = read_records(kafka_broker, dlq_topic, 200)
    originals = {r.offset: r for r in read_records(kafka_broker, frames_topic, 241)}
    reasons = Counter()
    for letter in letters:
        headers = dict(letter.headers)
        original = originals[int(headers["original-offset"])]
        assert headers["original-topic"].decode() == frames_topic
        if "original-size" in headers:  # the oversized one is cut to the limit
            assert int(headers["original-size"]) == len(original.value) and letter.value == original.value[:LIMIT]
        else:
            assert letter.value == original.value
        assert letter.key == original.key
        assert letter.headers[: len(original.headers)] == original.headers  # original headers kept, in order
        reasons[headers["reason"].decode()] += 1
    assert reasons == dlq.reasons


# --------------------------------------------------------------------------------------------- failures


def test_unreachable_brokers_fail_clearly_after_bounded_retries():
    port = free_port()  # nothing listens there
    settings = KafkaConfig(brokers=f"127.0.0.1:{port}", connect_attempts=3, backoff=0.1, connect_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(KafkaUnavailable) as caught:
        MessageProducer(settings)
    elapsed = time.monotonic() - started
    assert f"127.0.0.1:{port}" in str(caught.value) and "3 attempt(s)" in str(caught.value)
    assert elapsed < 5.0
    with pytest.raises(KafkaUnavailable, match=f"127.0.0.1:{port}"):
        FrameConsumer(settings, "vigil.frames", group_id="g")


def test_kafka_config_section(monkeypatch, tmp_path):
    config = load_config()
    assert config.kafka.brokers == "127.0.0.1:9092"
    assert (config.kafka.topics.frames, config.kafka.topics.alerts, config.kafka.topics.dlq) == (
        "vigil.frames",
        "vigil.alerts",
        "vigil.dlq",
    )
    monkeypatch.setenv("VIGIL_KAFKA_BROKERS", "127.0.0.1:19092,127.0.0.1:19093")
    assert load_config().kafka.brokers == "127.0.0.1:19092,127.0.0.1:19093"
    assert load_config().kafka.servers == ["127.0.0.1:19092", "127.0.0.1:19093"]
    assert load_config(overrides={"kafka.brokers": "127.0.0.1:1"}).kafka.brokers == "127.0.0.1:1"  # flags win
    monkeypatch.delenv("VIGIL_KAFKA_BROKERS")  # the environment would override the file's value
    bad = tmp_path / "bad.yaml"
    bad.write_text("kafka:\n  brokers: 'no port'\n  retries: 3\n")
    with pytest.raises(ConfigError) as caught:
        load_config(bad)
    assert "kafka.brokers" in str(caught.value) and "unknown key 'kafka.retries'" in str(caught.value)


def test_pipeline_modules_import_no_kafka_client():
    code = (
        "import sys, pipeline.media.kafka_messages, pipeline.media.kafka_clients, pipeline.media.streams; "
        "assert 'kafka' not in sys.modules, 'kafka imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_dead_letter_of_an_oversized_message_is_cut_to_the_limit():
    sent = []

    class FakeProducer:
        settings = KafkaConfig(max_message_bytes=1024)

        def send(self, topic, message):
            sent.append((topic, message))

    dlq = DeadLetters(FakeProducer(), "dlq")
    record = SimpleNamespace(topic="t", partition=0, offset=5, key=None, value=bytes(5000), headers=[("a", None)])
    dlq.publish(record, "too big")
    topic, message = sent[0]
    assert topic == "dlq" and len(message.value) == 1024 and message.key is None
    assert message.header("original-size") == "5000" and message.header("reason") == "too big"
    assert dlq.count == 1 and dlq.reasons == Counter({"too big": 1})


# --------------------------------------------------------------------------------------------- decoded-size bounds

UHD = (8192, 4320)  # the largest picture the wire format allows


def black_segment(width: int, height: int, frames: int, fps: int = 24) -> bytes:
    """A valid H.264 MPEG-TS segment of `frames` black frames, encoded straight from one YUV frame (no RGB
    copies): a few hundred kilobytes at any size, that decode to frames x width x height pixels."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, 90000)
        stream.options = {"preset": "ultrafast", "tune": "zerolatency", "crf": "51", "x264-params": "scenecut=0"}
        picture = av.VideoFrame(width, height, "yuv420p")
        for plane, level in zip(picture.planes, (16, 128, 128)):
            np.frombuffer(plane, np.uint8)[:] = level
        for i in range(frames):
            picture.pts = i * 90000 // fps
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buf.getvalue()


def segment_headers(
    width: int, height: int, frames: int, *, duration: float = 1.0, camera: str = "cam", pts: float = 1.5
) -> list:
    return _headers(
        camera=camera,
        pts=str(pts),
        codec="h264/mpegts",
        width=str(width),
        height=str(height),
        frames=str(frames),
        duration=str(duration),
    )


@pytest.fixture(scope="module")
def uhd_segment() -> bytes:
    """24 frames of 8192x4320 in about 114 KB: 849 million decoded pixels, 2.4 GiB as RGB."""
    return black_segment(*UHD, frames=24)


# Decodes messages in a fresh process and reports, for each, the reason it was refused and how much its peak
# memory (max RSS) grew: this process's own peak is high from everything run before.
_MEASURE = """
import json, resource, sys
from pipeline.media.kafka_messages import MalformedMessage, decode_message
from tests.test_kafka_io import black_segment, segment_headers

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

decode_message(b"cam", black_segment(64, 48, 2), segment_headers(64, 48, 2))  # the decoder loaded and warm
value = open(sys.argv[1], "rb").read()
report = {}
for label, headers in json.loads(sys.argv[2]).items():
    before = peak_mb()
    try:
        decode_message(b"cam", value, [(k, v.encode()) for k, v in headers])
        reason = None
    except MalformedMessage as exc:
        reason = exc.reason
    report[label] = [reason, peak_mb() - before]
print(json.dumps(report))
"""


def test_a_message_of_gigapixels_is_refused_before_decoding_and_lying_headers_do_not_help(tmp_path, uhd_segment):
    assert len(uhd_segment) < 200_000
    path = tmp_path / "uhd.ts"
    path.write_bytes(uhd_segment)
    cases = {
        "honest": segment_headers(*UHD, 24),  # 849M pixels: over kafka.max_message_pixels (100M)
        "small size": segment_headers(64, 64, 24),  # within the bound, but the stream is 8192x4320
        "few frames": segment_headers(*UHD, 1),  # 35M pixels, within the bound, but the stream has 24 frames
    }
    as_text = {label: [(k, v.decode()) for k, v in headers] for label, headers in cases.items()}
    run = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path), json.dumps(as_text)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    reason, grown = report["honest"]
    assert "849346560 pixels" in reason and "kafka.max_message_pixels" in reason
    assert grown < 50  # MB: nothing decoded (one frame alone is 53 MB as YUV, 106 MB as RGB)
    reason, grown = report["small size"]
    assert "8192x4320 but headers say 64x64" in reason
    assert grown < 50  # refused before a picture of the real size was allocated
    reason, grown = report["few frames"]
    assert "more than the 1 frames" in reason
    assert grown < 600  # at most the announced frame and the decoder's own buffers, never all 24 (2.4 GiB)


def test_frames_larger_than_short_side_are_downscaled_as_they_are_decoded(sample_frames):
    segment = segment_message(sample_frames[:3], "cam", period=0.2)  # 160x120
    jpeg = frame_message(sample_frames[0], "cam")
    for message in (segment, jpeg):
        small = decode_message(message.key, message.value, message.headers, short_side=60)
        assert {f.image.shape for f in small} == {(60, 80, 3)}
        same = decode_message(message.key, message.value, message.headers, short_side=256)  # never enlarged
        assert {f.image.shape for f in same} == {(120, 160, 3)}


def record(partition: int, offset: int, headers: list, topic: str = "t") -> SimpleNamespace:
    return SimpleNamespace(topic=topic, partition=partition, offset=offset, headers=headers)


def test_a_poll_takes_messages_in_turns_within_its_frames_and_pixels():
    segment = segment_headers(64, 48, 5)  # 15360 pixels
    polled = [record(0, i, segment) for i in range(4)] + [record(1, 10 + i, segment) for i in range(3)]
    take = dict(max_frames=100, max_pixels=50_000, max_message_pixels=10**8)
    taken, left = take_within(polled, **take)
    assert [(r.partition, r.offset) for r in taken] == [(0, 0), (0, 1), (1, 10)]  # turns: 0, 1, 0
    assert [(r.partition, r.offset) for r in left] == [(0, 2), (0, 3), (1, 11), (1, 12)]
    taken, _ = take_within(polled, **take, first=1)  # the next poll: partition 1 goes first
    assert [(r.partition, r.offset) for r in taken] == [(0, 0), (1, 10), (1, 11)]
    taken, left = take_within(polled, **(take | {"max_frames": 12}))  # the frame bound: two 5-frame segments
    assert len(taken) == 2 and len(left) == 5
    # the first message is always taken, however large; one refused unread (headers over the message bound,
    # or no vigil headers) costs nothing
    taken, _ = take_within(polled, **(take | {"max_pixels": 10}))
    assert [(r.partition, r.offset) for r in taken] == [(0, 0)]
    refused = [record(0, 0, segment_headers(*UHD, 24)), record(0, 1, [])] + [record(0, i, segment) for i in (2, 3, 4)]
    taken, left = take_within(refused, **(take | {"max_pixels": 31_000}))
    assert [r.offset for r in taken] == [0, 1, 2, 3] and [r.offset for r in left] == [4]


def create_topic(broker, name: str, partitions: int) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=broker.brokers)
    try:
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()


def test_polls_stay_within_their_pixel_bound_and_leave_the_rest_in_kafka(kafka_broker, uhd_segment):
    frames_topic, dlq_topic = topic_name("frames.bounded"), topic_name("dlq.bounded")
    create_topic(kafka_broker, frames_topic, 2)
    small = black_segment(64, 48, 5, fps=5)  # 5 frames of 64x48, 0.2 s apart: 15360 decoded pixels
    sent: dict[str, list[float]] = {"a": [], "b": []}
    with MessageProducer(settings_for(kafka_broker)) as producer:
        for partition, camera in enumerate(sent):
            for i in range(6):
                headers = segment_headers(64, 48, 5, camera=camera, pts=i)
                producer.send(frames_topic, Message(camera.encode(), small, headers), partition=partition)
                sent[camera] += [i + j * 0.2 for j in range(5)]
                if camera == "a" and i == 2:  # 849 million pixels in 114 KB, among them (offset 3)
                    uhd = Message(b"a", uhd_segment, segment_headers(*UHD, 24, camera="a"))
                    producer.send(frames_topic, uhd, partition=partition)
        producer.flush()
        assert producer.errors == 0

    bound = 40_000  # two of the small segments
    settings = settings_for(kafka_broker, max_poll_pixels=bound)
    received: dict[str, list[float]] = {"a": [], "b": []}
    polls = []
    with MessageProducer(settings) as dlq_producer:
        dlq = DeadLetters(dlq_producer, dlq_topic)
        group = f"g-{uuid.uuid4().hex[:6]}"
        with FrameConsumer(settings, frames_topic, group_id=group, assign=True) as consumer:
            reader = FrameReader(consumer, dlq)
            deadline = time.monotonic() + 60
            while sum(map(len, received.values())) < 60 and time.monotonic() < deadline:
                frames, offsets = reader.poll(timeout=2.0, max_frames=100)
                if not frames and not offsets:
                    continue
                polls.append(frames)
                assert sum(f.image.shape[0] * f.image.shape[1] for f in frames) <= bound
                for frame in frames:
                    received[frame.camera].append(frame.pts)
                consumer.commit(offsets)
            assert consumer.committed(frames_topic, 0) == 7 and consumer.committed(frames_topic, 1) == 6
    # nothing lost, nothing twice, each camera in order; the partitions take turns, so neither waits for the
    # other's backlog
    assert received == {camera: pytest.approx(pts, abs=1e-4) for camera, pts in sent.items()}
    assert len(polls) >= 6 and {f.camera for poll in polls[:2] for f in poll} == {"a", "b"}
    assert dlq.count == 1
    (reason,) = dlq.reasons
    assert "kafka.max_message_pixels" in reason
    (letter,) = read_records(kafka_broker, dlq_topic, 1)
    headers = dict(letter.headers)
    assert headers["original-offset"] == b"3" and "kafka.max_message_pixels" in headers["reason"].decode()


def test_a_commit_waits_for_a_restarting_broker_then_gives_up_in_one_line(tmp_path, s3_server):
    """A commit made while the broker is away (stopped, started again 3 s later on the same port; Tansu on S3, so
    the topic is still there) is retried until the broker is back, not lost at the first refused connection; one
    that cannot reach the broker within kafka.delivery_timeout is a one-line KafkaUnavailable naming it."""
    broker = start_tansu(tmp_path, durable=(s3_server, f"commit-{uuid.uuid4().hex[:8]}"))
    try:
        topic = topic_name("commit.restart")
        settings = KafkaConfig(brokers=broker.brokers, connect_timeout=10.0, delivery_timeout=20.0, backoff_max=0.5)
        with MessageProducer(settings) as producer:
            producer.send(topic, Message(b"k", b"v", []), partition=0).get(timeout=20)
        with FrameConsumer(settings, topic, group_id="restart", assign=True) as consumer:
            broker.stop()
            restart = threading.Timer(3.0, broker.start)
            restart.start()
            started = time.monotonic()
            consumer.commit({(topic, 0): 1})
            waited = time.monotonic() - started
            restart.join()
            assert waited >= 2.5, f"committed {waited:.1f} s into a 3 s outage"
            assert consumer.committed(topic, 0) == 1
        patience = settings.model_copy(update={"delivery_timeout": 2.0})
        with FrameConsumer(patience, topic, group_id="restart", assign=True) as consumer:
            broker.stop()
            started = time.monotonic()
            with pytest.raises(KafkaUnavailable) as failed:
                consumer.commit({(topic, 0): 1})
            assert time.monotonic() - started < 10
            assert broker.brokers in str(failed.value) and "\n" not in str(failed.value)
    finally:
        broker.stop()
