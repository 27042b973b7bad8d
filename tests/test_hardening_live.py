"""Hostile and careless input on the live path: `vigil monitor` and `vigil ingest` answer bad sources, brokers and
camera ids with one line naming the problem and a non-zero exit, never a traceback; a failing stage is one line
too; camera ids follow one rule wherever they arrive."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import yaml

from actors.stages import RayCalls, StageFailed, ray_get
from jobs.cli import main
from jobs.monitor import MonitorReport
from pipeline.cameras import MAX_CAMERA_BYTES, check_camera_id
from pipeline.config import StreamSource
from pipeline.media.kafka_messages import MalformedMessage, decode_message, frame_message
from pipeline.records import Frame
from tests.servers import free_port


def only_error_line(capsys) -> str:
    """The one line the command wrote to stderr: no traceback, no terminal colour codes."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err and "\x1b" not in err, err
    assert lines[0].startswith("vigil ")
    return lines[0]


def monitor(tmp_path, *args: str) -> int:
    return main(["monitor", "--store", str(tmp_path / "store"), "--models", "tiny", "--idle-exit", "1", *args])


# --------------------------------------------------------------------------------------------- monitor sources


def test_a_missing_source_file_is_one_line(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "cam.mp4"
    assert monitor(tmp_path, "--source", str(missing), "--camera", "door") == 2
    line = only_error_line(capsys)
    assert "no such file" in line and str(missing) in line and "'door'" in line


@pytest.mark.parametrize("damage", ["random bytes", "cut in half"])
def test_an_undecodable_source_file_is_one_line(tmp_path, capsys, scene_video, damage):
    path = tmp_path / "cam.mp4"
    data = scene_video[0].read_bytes()
    rng = np.random.default_rng(0)
    path.write_bytes(rng.bytes(20000) if damage == "random bytes" else data[: len(data) // 2])
    assert monitor(tmp_path, "--source", str(path), "--camera", "door") == 2
    line = only_error_line(capsys)
    assert f"cannot decode {path}" in line and "'door'" in line


def test_unreachable_brokers_are_one_line_naming_them(tmp_path, capsys):
    config = tmp_path / "kafka.yaml"
    config.write_text(yaml.safe_dump({"kafka": {"connect_attempts": 1, "connect_timeout": 0.5}}))
    brokers = f"127.0.0.1:{free_port()}"  # nothing listens there
    assert monitor(tmp_path, "--config", str(config), "--brokers", brokers) == 2
    line = only_error_line(capsys)
    assert f"cannot reach Kafka brokers {brokers}" in line


# --------------------------------------------------------------------------------------------- camera ids


@pytest.mark.parametrize(
    "camera, problem",
    [
        ("x" * 300, f"at most {MAX_CAMERA_BYTES} bytes"),
        ("gate\x1b[31m", "control character"),
        ("gate\nyard", "control character"),
        ("gate\u2028", "line break"),
        ("gate\udcff", "undecodable byte"),  # how Python passes a command-line byte that is not UTF-8
    ],
)
def test_a_bad_camera_id_is_one_line_for_monitor_and_ingest(tmp_path, capsys, scene_video, camera, problem):
    video = str(scene_video[0])
    assert monitor(tmp_path, "--source", video, "--camera", camera) == 2
    line = only_error_line(capsys)
    assert "--camera" in line and problem in line and len(line) < 200
    assert main(["ingest", video, "--camera", camera, "--brokers", f"127.0.0.1:{free_port()}"]) == 2
    line = only_error_line(capsys)
    assert "--camera" in line and problem in line


def test_one_rule_for_camera_ids_everywhere():
    for good in ("gate", "Caméra 3 / entrée", "門 2", "k" * MAX_CAMERA_BYTES, "é" * (MAX_CAMERA_BYTES // 2)):
        assert check_camera_id(good) == good
    bad = ["", "k" * (MAX_CAMERA_BYTES + 1), "é" * (MAX_CAMERA_BYTES // 2 + 1), "a\tb", "a\x7f", "a\x85", "a\u2029"]
    image = np.zeros((8, 8, 3), np.uint8)
    for camera in bad:
        with pytest.raises(ValueError) as caught:
            check_camera_id(camera)
        assert "\n" not in str(caught.value)
        with pytest.raises(ValueError, match="camera id"):  # not sent to Kafka
            frame_message(Frame(camera, 0.0, 0, image), camera)
        if camera:  # nor taken from it
            message = frame_message(Frame("cam", 0.0, 0, image), "cam")
            headers = [(k, camera.encode() if k == "camera" else v) for k, v in message.headers]
            with pytest.raises(MalformedMessage, match="key: "):
                decode_message(camera.encode(), message.value, headers)
    with pytest.raises(ValueError, match="must be text"):
        check_camera_id(b"gate")


# --------------------------------------------------------------------------------------------- the config


def test_embedded_sources_become_a_valid_config_without_serializer_warnings(tmp_path, monkeypatch, scene_video):
    seen = []

    def fake_run_monitor(config, **_):
        seen.append(config)
        config.model_dump()  # where a half-validated config warned
        return MonitorReport()

    monkeypatch.setattr("jobs.commands.monitor.run_monitor", fake_run_monitor)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert monitor(tmp_path, "--source", str(scene_video[0]), "--camera", "door", "--brokers", "kafka:9092") == 0
    assert [str(w.message) for w in caught if "serializ" in str(w.message).lower()] == []
    (config,) = seen
    assert config.monitor.sources == [StreamSource(camera="door", url=str(scene_video[0]))]
    assert config.kafka.brokers == "kafka:9092"


# --------------------------------------------------------------------------------------------- failing stages


def test_a_failing_stage_is_one_line_naming_it_and_the_cause(ray_local):
    from pipeline.media.decode import VideoDecodeError
    from pipeline.media.kafka_clients import KafkaUnavailable

    @ray_local.remote(num_cpus=0)
    class Decoder:
        def __init__(self, reachable: bool = True):
            if not reachable:
                raise KafkaUnavailable("cannot reach Kafka brokers 10.0.0.1:9092 (consumer) after 1 attempt(s)")

        def poll(self):
            raise VideoDecodeError("/videos/cam.mp4", 3.2, "Invalid data found\nwhen processing input")

        def write(self, frames):
            return frames

    decoder, calls = Decoder.remote(), RayCalls()
    with pytest.raises(StageFailed) as caught:
        calls.get(decoder.poll.remote())
    assert str(caught.value) == (
        "Decoder.poll failed: VideoDecodeError: cannot decode /videos/cam.mp4 at 3.200 s: Invalid data found when "
        "processing input"
    )
    with pytest.raises(StageFailed) as caught:  # passed on to the next stage: still the one that failed
        calls.get(decoder.write.remote(decoder.poll.remote()))
    assert str(caught.value).startswith("Decoder.poll failed: VideoDecodeError: cannot decode /videos/cam.mp4")
    with pytest.raises(StageFailed) as caught:
        ray_get([Decoder.remote(reachable=False).__ray_ready__.remote()])
    assert str(caught.value) == (
        "Decoder.__init__ failed to start: KafkaUnavailable: cannot reach Kafka brokers 10.0.0.1:9092 (consumer) "
        "after 1 attempt(s)"
    )


def test_the_monitor_command_says_a_failed_stage_in_one_line(tmp_path, capsys, monkeypatch, scene_video):
    def failing_run_monitor(config, **_):
        raise StageFailed("StreamDecoderActor.poll failed: VideoDecodeError: cannot decode cam.mp4 at 3.200 s: EOF")

    monkeypatch.setattr("jobs.commands.monitor.run_monitor", failing_run_monitor)
    assert monitor(tmp_path, "--source", str(scene_video[0]), "--camera", "door") == 2
    assert only_error_line(capsys).endswith(
        "StreamDecoderActor.poll failed: VideoDecodeError: cannot decode cam.mp4 at 3.200 s: EOF"
    )
