"""`vigil ingest`: files and a real RTSP camera on loopback into a real Kafka (Tansu) broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from jobs.cli import main
from pipeline.config import KafkaConfig, load_config
from pipeline.media.kafka_clients import FrameConsumer
from pipeline.media.kafka_messages import decode_message
from pipeline.media.sampling import TrackerOnlyMarker, decode_file
from tests.servers import free_port, start_rtsp_camera

pytestmark = pytest.mark.filterwarnings("ignore:.*is deprecated. Use files\\(\\) instead:DeprecationWarning")

VIGIL = str(Path(sys.executable).parent / "vigil")


def topic_name(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:8]}"


class TopicReader:
    """Reads a topic from the start (every partition, no group) and decodes what it finds."""

    def __init__(self, broker, topic: str, wait_for_topic: float = 30.0):
        settings = KafkaConfig(brokers=broker.brokers, connect_timeout=wait_for_topic)
        self.consumer = FrameConsumer(settings, topic, assign=True)
        self.records: list = []
        self.frames: list = []

    def read(self, until, timeout: float = 20.0) -> list:
        deadline = time.monotonic() + timeout
        while not until(self.frames) and time.monotonic() < deadline:
            for record in self.consumer.poll(0.3):
                self.records.append(record)
                self.frames += decode_message(record.key, record.value, record.headers)
        return self.frames

    def close(self) -> None:
        self.consumer.close()


def read_topic(broker, topic: str, frames: int) -> tuple[list, list]:
    reader = TopicReader(broker, topic)
    try:
        reader.read(lambda got: len(got) >= frames)
        return reader.records, reader.frames
    finally:
        reader.close()


def mean_abs_diff(a, b) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_ingest_a_file_as_jpeg_frames(kafka_broker, scene_video, capsys):
    path, _ = scene_video  # 20 s, 25 fps, 320x240
    topic = topic_name("ingest.jpeg")
    rc = main(
        ["ingest", str(path), "--camera", "gate-1", "--brokers", kafka_broker.brokers, "--topic", topic, "--fps", "2"]
    )
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "sent 40 of 40 sampled frames in 40 jpeg message(s)" in out.out and "0 error(s)" in out.out
    expected = list(decode_file(path, load_config(overrides={"decode.fps": 2}).decode))  # as ingest decodes
    records, frames = read_topic(kafka_broker, topic, 40)
    assert len(frames) == 40 and {r.key for r in records} == {b"gate-1"}
    assert [f.pts for f in frames] == [f.pts for f in expected]  # in order, exact media times
    assert [f.index for f in frames] == list(range(40))
    for got, want in zip(frames, expected):
        assert got.camera == "gate-1" and got.image.shape == want.image.shape == (256, 342, 3)
        assert mean_abs_diff(got.image, want.image) < 6.0  # JPEG q90, 4:2:0 chroma on a textured scene


def test_ingest_for_a_live_tracker_sends_its_detectors_rate(kafka_broker, scene_video, tmp_path, capsys):
    """With track.live and detect.rate above decode.fps, ingest sends the detector's rate; the monitor's Kafka
    decoders mark the frames between the models' (`TrackerOnlyMarker`), leaving them the frames of decode.fps."""
    path, _ = scene_video  # 20 s, 25 fps
    config = tmp_path / "config.yaml"
    config.write_text("track:\n  live: true\ndetect:\n  rate: 4\n")
    topic = topic_name("ingest.tracker")
    argv = ["ingest", str(path), "--camera", "gate-1", "--brokers", kafka_broker.brokers, "--topic", topic]
    rc = main([*argv, "--fps", "2", "--config", str(config)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "sent 80 of 80 sampled frames" in out.out
    _, frames = read_topic(kafka_broker, topic, 80)
    assert len(frames) == 80
    marker = TrackerOnlyMarker(2.0)
    models = [frame.pts for frame in map(marker.mark, frames) if not frame.tracker_only]
    expected = list(decode_file(path, load_config(overrides={"decode.fps": 2}).decode))
    assert models == [frame.pts for frame in expected]  # the frames ingest sends without a tracker


def test_ingest_a_file_as_segments(kafka_broker, scene_video, capsys):
    path, _ = scene_video
    topic = topic_name("ingest.segment")
    rc = main(
        [
            "ingest",
            str(path),
            "--camera",
            "gate-2",
            "--brokers",
            kafka_broker.brokers,
            "--topic",
            topic,
            "--fps",
            "5",
            "--payload",
            "segment",
            "--segment-seconds",
            "2",
            "--short-side",
            "120",
        ]
    )
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "sent 100 of 100 sampled frames in 10 segment message(s)" in out.out
    expected = list(decode_file(path, load_config(overrides={"decode.fps": 5, "decode.short_side": 120}).decode))
    records, frames = read_topic(kafka_broker, topic, 100)
    assert len(records) == 10 and all(dict(r.headers)["frames"] == b"10" for r in records)
    assert [f.pts for f in frames] == pytest.approx([f.pts for f in expected], abs=1e-4)
    assert [f.index for f in frames] == list(range(100))
    assert max(mean_abs_diff(g.image, w.image) for g, w in zip(frames, expected)) < 8.0


def test_ingest_refuses_bad_input_clearly(tmp_path, capsys):
    assert main(["ingest", str(tmp_path / "missing.mp4"), "--camera", "c"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["ingest", "rtsp://127.0.0.1:1/x", "--camera", "c", "--brokers", "not-a-broker"]) == 2
    assert "kafka.brokers" in capsys.readouterr().err
    assert main(["ingest", "rtsp://127.0.0.1:1/x", "--camera", "bad\tid"]) == 2
    assert "camera id" in capsys.readouterr().err


def test_ingest_with_unreachable_brokers_names_them(tmp_path, scene_video, capsys):
    path, _ = scene_video
    port = free_port()  # nothing listens there
    config = tmp_path / "kafka.yaml"
    config.write_text("kafka:\n  connect_attempts: 2\n  backoff: 0.1\n  connect_timeout: 0.3\n")
    started = time.monotonic()
    rc = main(["ingest", str(path), "--camera", "c", "--brokers", f"127.0.0.1:{port}", "--config", str(config)])
    err = capsys.readouterr().err
    assert rc == 2 and time.monotonic() - started < 5
    assert f"cannot reach Kafka brokers 127.0.0.1:{port}" in err and "2 attempt(s)" in err and "Traceback" not in err


def _colour(frame) -> str:
    r, g, b = frame.image.reshape(-1, 3).mean(axis=0)
    return "red" if r > 150 > max(g, b) else "blue" if b > 150 > max(r, g) else "other"


def test_ingest_rtsp_survives_the_camera_restarting(kafka_broker, tmp_path):
    """A live RTSP camera (GStreamer) is stopped and started again (red before, blue after): vigil ingest
    reconnects by itself, frames continue with monotonic pts, and it gives up after --max-reconnects
    once the camera stays away."""
    port = free_port()
    url = f"rtsp://127.0.0.1:{port}/cam"
    topic = topic_name("ingest.rtsp")
    camera = start_rtsp_camera(tmp_path, port, pattern="red")
    ingest = subprocess.Popen(
        [
            VIGIL,
            "ingest",
            url,
            "--camera",
            "door",
            "--brokers",
            kafka_broker.brokers,
            "--topic",
            topic,
            "--fps",
            "5",
            "--max-reconnects",
            "3",
            "--reconnect-backoff",
            "0.3",
            "--read-timeout",
            "3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    reader = None
    try:
        reader = TopicReader(kafka_broker, topic)
        frames = reader.read(lambda got: len(got) >= 8)
        assert len(frames) >= 8, "no frames from the RTSP camera"
        camera.stop()  # the camera goes away ...
        camera = start_rtsp_camera(tmp_path, port, pattern="blue")  # ... and comes back
        frames = reader.read(lambda got: sum(_colour(f) == "blue" for f in got) >= 8)
        camera.stop()  # gone for good: ingest gives up after 3 attempts (0.3 + 0.6 + 1.2 s)
        out, err = ingest.communicate(timeout=30)
        frames = reader.read(lambda got: len(got) >= len(reader.frames) + 1, timeout=1.0)  # the rest
    finally:
        if ingest.poll() is None:
            os.kill(ingest.pid, signal.SIGKILL)
            ingest.wait()
        camera.stop()
        if reader is not None:
            reader.close()
    colours = [_colour(f) for f in frames]
    assert colours.count("red") >= 8 and colours.count("blue") >= 8 and "other" not in colours
    switch = colours.index("blue")
    assert set(colours[:switch]) == {"red"} and set(colours[switch:]) == {"blue"}  # before, then after
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in zip(pts, pts[1:])), "pts must increase across the reconnection"
    assert pts[0] == 0.0 and [f.index for f in frames] == list(range(len(frames)))
    steps = np.diff(pts[:switch])
    assert np.all(np.abs(steps - 0.2) < 0.021)  # sampled at 5 fps of the 10 fps stream
    assert pts[switch] - pts[switch - 1] > 0.2  # the outage shows as a gap, not glued together
    assert ingest.returncode == 1, err
    assert "reconnection(s)" in out and f"sent {len(frames)} of {len(frames)} sampled frames" in out
    assert "gave up" in err and url in err
