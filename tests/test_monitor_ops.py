"""Operating the live monitor: its status document and `vigil status`, its Prometheus metrics through Ray's
metrics export, its structured logs."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
import yaml

from actors.actor_table import actor_id
from actors.stages import RayCalls, make_monitor_stages
from jobs.cli import main
from jobs.monitor import drive
from jobs.monitor_status import StatusReporter
from pipeline.config import load_config
from pipeline.live.analyzer import StreamOutput
from pipeline.live.logs import configure_logging, structured_logs
from pipeline.live.metrics import TimedOutput
from pipeline.live.queries import StandingQuery, save_query
from pipeline.live.status import (
    ActorStatus,
    CameraStatus,
    IntakeTally,
    LastAlert,
    MonitorStatus,
    PartitionStatus,
    StageStatus,
)
from pipeline.media.decode import decode_frames
from pipeline.records import Alert, Frame, ModelIds, TrackEvent
from pipeline.storage.layout import monitor_status_key
from pipeline.storage.store import LocalStore

VIGIL = str(Path(sys.executable).parent / "vigil")
IMAGE = np.zeros((2, 2, 3), dtype=np.uint8)

# --------------------------------------------------------------------------------------------- structured logs


def test_logs_are_one_json_object_per_line_with_stage_and_camera(capsys):
    root = logging.getLogger()
    before = list(root.handlers)
    log = logging.getLogger("pipeline.live.test")
    with structured_logs("driver"):
        configure_logging("decoder")  # configured again: still one handler, one line per record
        log.info("source ended", extra={"camera": "gate"})
        log.warning("stage lost", extra={"stage": "sink"})
        try:
            raise RuntimeError("first line\nsecond line")
        except RuntimeError:
            log.exception("failed on %s", "gate", extra={"camera": "gate", "query": "fence"})
        logging.getLogger("kafka.conn").info("library chatter below WARNING is left out")
    assert root.handlers == before  # the process's logging as it was
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3
    ended, lost, failed = (json.loads(line) for line in lines)
    assert ended["stage"] == "decoder" and ended["camera"] == "gate" and ended["message"] == "source ended"
    assert ended["level"] == "info" and ended["time"].endswith("Z") and ended["logger"] == "pipeline.live.test"
    assert lost["stage"] == "sink" and "camera" not in lost and lost["level"] == "warning"
    assert failed["message"] == "failed on gate" and failed["query"] == "fence"
    assert failed["error"].startswith("Traceback") and "second line" in failed["error"]


# --------------------------------------------------------------------------------------------- what stages tally


def test_an_intake_tally_gives_frames_per_second_and_the_lag_behind_each_cameras_clock():
    now = [1000.0]
    tally = IntakeTally(clock=lambda: now[0])
    tally.add([Frame("gate", pts, 0, IMAGE, camera="gate", wallclock=990.0 + pts) for pts in range(6)])
    tally.add([Frame("/files/a.mp4", 0.0, 0, IMAGE)])  # a file: no wall clock
    now[0] = 1002.0
    first = tally.look()
    assert first.interval == 2.0 and first.fps("gate") == 3.0 and first.seconds_behind("gate") == 7.0
    assert first.cameras["/files/a.mp4"].frames == 1 and first.seconds_behind("/files/a.mp4") is None
    now[0] = 1006.0
    second = tally.look()  # nothing came since: frames stay, the rate and the lag tell it
    assert second.cameras["gate"].frames == 6 and second.fps("gate") == 0.0 and second.seconds_behind("gate") == 11.0


def test_an_open_alert_carries_the_wall_clock_of_the_frame_that_opened_it():
    models = ModelIds("s", "d", untrained=True)

    def alert(camera, status, start, end):
        return Alert(Alert.make_id("q", camera, start), "q", camera, start, end, 0.9, end, "k", models, status)

    opened = alert("gate", "open", 12.0, 13.0)
    closed = alert("door", "closed", 2.0, 4.0)
    frames = [
        Frame("gate", 12.5, 0, IMAGE, camera="gate", wallclock=500.5),
        Frame("door", 13.0, 0, IMAGE, camera="door", wallclock=700.0),  # another camera at the same pts
        Frame("gate", 13.0, 1, IMAGE, camera="gate", wallclock=501.0),
    ]
    crossing = TrackEvent("gate", 1, 0, "cross", "door line", 12.5, direction="left_to_right")
    out = TimedOutput.of(StreamOutput(alerts=[opened, closed], track_events=[crossing]), frames)
    assert isinstance(out, StreamOutput) and out.alerts == [opened, closed]
    assert out.opened_at == {opened.id: 501.0} and out.track_events == [crossing]  # nothing of the output lost


# --------------------------------------------------------------------------------------------- vigil status


def stored_status(store, name="site", **changes) -> MonitorStatus:
    """A document as a monitor of two cameras on two partitions writes it, written just now."""
    now = time.time()
    actor = ActorStatus("a1b2c3d4e5", "f6e5d4c3b2", "127.0.0.1", 4242, "ALIVE", 0, 1)
    status = MonitorStatus(
        monitor=name,
        state="running",
        written_at=now,
        started_at=now - 300,
        period=2.0,
        mode="kafka",
        report={"frames": 900, "batches": 60, "alerts": 2, "checkpoints": 150, "recoveries": 0, "dead_letters": 0},
        frames_in_flight=12,
        cameras={
            "gate": CameraStatus(450, 1.5, 0.4, LastAlert(now - 30, "fence", "open", "abc"), 0, 0),
            "door": CameraStatus(450, 1.5, None, None, 1, 1),
        },
        partitions={"frames:0": PartitionStatus.of(0, 450, 452), "frames:1": PartitionStatus.of(1, 450, 450)},
        stages={"decoder": StageStatus([actor], 1, 1, "KafkaDecoderActor.poll failed: ActorDiedError")},
    )
    status = replace(status, **changes)
    store.put_json(monitor_status_key(name), status.to_json())
    return status


def test_status_prints_a_fresh_document_as_tables(tmp_path, capsys):
    stored_status(LocalStore(tmp_path))
    assert main(["status", "--store", str(tmp_path), "--name", "site"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("monitor site (kafka): running, up 5m00s")
    gate = next(line for line in out.splitlines() if line.startswith("gate "))
    assert gate.split()[:5] == ["gate", "1.5", "450", "0.4", "s"] and "fence open, 30" in gate
    assert next(line for line in out.splitlines() if line.startswith("frames:0 ")).split() == [
        "frames:0",
        "0",
        "450",
        "452",
        "2",
    ]
    decoder = next(line for line in out.splitlines() if line.startswith("decoder "))
    assert decoder.split() == ["decoder", "1", "1", "a1b2c3d4", "f6e5d4c3", "127.0.0.1", "4242", "ALIVE", "0", "1"]
    assert "last error: KafkaDecoderActor.poll failed: ActorDiedError" in out


def test_status_of_no_monitor_or_a_stale_or_stopped_one_is_one_line_and_exit_1(tmp_path, capsys):
    store = LocalStore(tmp_path)
    store.put_json("queries/x.json", {})  # a store, without any status
    assert main(["status", "--store", str(tmp_path), "--name", "site"]) == 1
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("monitor site has published no status in ")

    stored_status(store, written_at=time.time() - 100)
    assert main(["status", "--store", str(tmp_path), "--name", "site"]) == 1
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("monitor site: its status is 1m4") and line.endswith("not running, or stuck")

    stored_status(store, state="stopped", written_at=time.time() - 5)
    assert main(["status", "--store", str(tmp_path), "--name", "site", "--json"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["state"] == "stopped" and json.loads(out)["cameras"]["gate"]["frames"] == 450
    (line,) = err.splitlines()
    assert line.startswith("monitor site stopped at ") and line.endswith(" ago)")


def test_a_status_document_no_vigil_wrote_is_a_one_line_error(tmp_path, capsys):
    LocalStore(tmp_path).put(monitor_status_key("site"), b'{"version": 1, "cameras": ')
    assert main(["status", "--store", str(tmp_path), "--name", "site"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("vigil status: error: ") and monitor_status_key("site") in line
    assert main(["status", "--store", str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.startswith("vigil status: error: ")


# --------------------------------------------------------------------------------------------- a running monitor

CAMERAS = {"ops-gate": 0, "ops-door": 0, "ops-yard": 1}  # camera: partition of OPS_TOPIC
OPS_TOPIC = "frames-ops"


class Cameras:
    """The cameras sending frames to OPS_TOPIC, a round of one frame each every 0.2 s, until stopped: the scene
    video at 2 fps over and over, the planted lobby scene among it, so events open and close as it runs. Frames
    are dated by the message's CreateTime (they carry no wall clock of their own)."""

    def __init__(self, broker, path):
        from pipeline.media.kafka_clients import MessageProducer
        from tests.test_kafka_io import settings_for

        self.frames = list(decode_frames(path, fps=2, short_side=None))
        self.producer = MessageProducer(settings_for(broker))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._send, daemon=True)

    def _send(self):
        from pipeline.media.kafka_messages import frame_message

        i = 0
        while not self.stop.is_set():
            frame = self.frames[i % len(self.frames)]
            for camera, partition in CAMERAS.items():
                moment = replace(frame, pts=i * 0.5, index=i)
                self.producer.send(OPS_TOPIC, frame_message(moment, camera), partition=partition)
            self.producer.flush()
            i += 1
            self.stop.wait(0.2)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=30)
        self.producer.close()


def ops_config(tmp_path, broker) -> Path:
    path = tmp_path / "ops.yaml"
    settings = {
        "store": str(tmp_path / "store"),
        "models": "tiny",
        "precision": "fp32",
        "device": "cpu",
        "decode": {"fps": 2.0},
        "kafka": {
            "brokers": broker.brokers,
            "group": "monitor-ops",
            "topics": {"frames": OPS_TOPIC, "alerts": "alerts-ops", "dlq": "dlq-ops"},
        },
        "monitor": {"name": "ops", "batch_frames": 8, "checkpoint_every": 0.5, "decoders": 2, "shards": 2},
    }
    path.write_text(yaml.safe_dump(settings))
    return path


def wait_for(what, check, timeout=120.0, every=0.25):
    """The first true value of `check()` within `timeout` seconds; fails naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def prometheus_samples(ray, workers: set[str]) -> list[tuple[str, dict[str, str], float]]:
    """What the metrics export port of the session's node serves Prometheus, of the processes `workers` (Ray's
    worker ids): (name, labels, value) samples."""
    (node,) = ray.nodes()
    with urllib.request.urlopen(f"http://127.0.0.1:{node['MetricsExportPort']}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = []
    for line in text.splitlines():
        if match := re.match(r"^(\w+)\{(.*)\} (\S+)$", line):
            name, labels, value = match.groups()
            labels = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            if labels.get("WorkerId") in workers:
                samples.append((name, labels, float(value)))
    return samples


def total(samples, name: str, **labels) -> float:
    """The sum of a metric's samples (over workers) with these labels; 0 when there is none."""
    return sum(v for n, got, v in samples if n == name and all(got.get(k) == w for k, w in labels.items()))


def every_metric_in(samples) -> bool:
    """Whether `samples` hold every metric of a Kafka monitor of OPS_TOPIC that has alerted."""
    partitions = {got.get("partition") for n, got, _ in samples if n == "ray_vigil_consumer_lag_messages"}
    return (
        all(total(samples, "ray_vigil_frames_total", stage=stage) > 0 for stage in ("decoder", "extractor", "analyzer"))
        and all(total(samples, "ray_vigil_batch_frames_count", stage=stage) > 0 for stage in ("decoder", "extractor"))
        and {f"{OPS_TOPIC}:0", f"{OPS_TOPIC}:1"} <= partitions
        and total(samples, "ray_vigil_frame_to_alert_seconds_count") > 0
        and total(samples, "ray_vigil_alerts_total", status="open") > 0
        and any(n == "ray_vigil_frames_in_flight" for n, _, _ in samples)
    )


def vigil(*args) -> subprocess.CompletedProcess:
    return subprocess.run([VIGIL, *args], capture_output=True, text=True, timeout=120)


def test_a_running_monitor_publishes_its_status_metrics_and_logs(
    tmp_path, ray_local, kafka_broker, scene_video, capsys
):
    from tests.test_kafka_io import create_topic
    from tests.test_monitor import lobby_frame

    path, _ = scene_video
    create_topic(kafka_broker, OPS_TOPIC, 2)
    config_file = ops_config(tmp_path, kafka_broker)
    config = load_config(config_file)
    store = LocalStore(tmp_path / "store")
    query = StandingQuery(
        id="lobby", image="lobby.jpg", calibration="raw", threshold=0.9, min_duration=1.0, cooldown=2.0
    )
    save_query(store, query, lobby_frame(path).image)
    stages = make_monitor_stages(config)
    # The monitor's processes, as Ray labels their metrics: its actors and this driver (the session's earlier
    # monitors recorded metrics too).
    worker_id = lambda _: ray_local.get_runtime_context().get_worker_id()  # noqa: E731  (run on each actor)
    workers = {worker_id(None), *ray_local.get([h.__ray_call__.remote(worker_id) for h in stages.handles()])}
    calls = RayCalls()
    with structured_logs("driver"):  # as run_monitor logs
        status = StatusReporter(config, stages, calls)
        stop = threading.Event()
        monitor = threading.Thread(
            target=lambda: drive(stages, config.monitor, calls, stop=stop, status=status), daemon=True
        )
        key = monitor_status_key("ops")

        def published() -> dict | None:
            return store.get_json(key) if store.exists(key) else None

        with Cameras(kafka_broker, path):
            monitor.start()
            # Every camera moving, and one of them alerting.
            document = wait_for(
                "every camera's frames/s and an alert in the status",
                lambda: (
                    (d := published())
                    and set(d["cameras"]) == set(CAMERAS)
                    and all(c["fps"] > 0 for c in d["cameras"].values())
                    and any(c["last_alert"] for c in d["cameras"].values())
                    and d
                ),
            )
            printed = vigil("status", "--config", str(config_file))
            as_json = vigil("status", "--config", str(config_file), "--json")
            # Ray's metrics agent exports what the processes recorded every few seconds.
            metrics = wait_for(
                "the monitor's metrics on Ray's metrics export port",
                lambda: (m := prometheus_samples(ray_local, workers)) and every_metric_in(m) and m,
                timeout=60,
                every=1.0,
            )
            # A stage lost: counted against it, with its actor's restart, as the monitor goes on.
            ray_local.kill(stages.analyzers[1], no_restart=False)
            recovered = wait_for(
                "the lost analyzer in the status",
                lambda: (
                    (d := published())
                    and d["report"]["recoveries"] >= 1
                    and sorted(actor["restarts"] for actor in d["stages"]["analyzer"]["actors"]) == [0, 1]
                    and all(c["fps"] > 0 for c in d["cameras"].values())
                    and d
                ),
            )
        stop.set()
        monitor.join(timeout=120)
        assert not monitor.is_alive()

    assert document["monitor"] == "ops" and document["state"] == "running" and document["mode"] == "kafka"
    assert time.time() - document["written_at"] < 60 and document["report"]["frames"] > 0
    for camera, entry in document["cameras"].items():
        assert entry["frames"] > 0 and 0 <= entry["seconds_behind"] < 60, (camera, entry)
        assert entry["decoder"] == CAMERAS[camera] and entry["shard"] in (0, 1)
    assert set(document["partitions"]) == {f"{OPS_TOPIC}:0", f"{OPS_TOPIC}:1"}
    assert all(p["end"] >= p["position"] > 0 for p in document["partitions"].values())
    stages_seen = document["stages"]
    assert {stage: len(entry["actors"]) for stage, entry in stages_seen.items()} == {
        "decoder": 2,
        "extractor": len(stages.extractors),
        "analyzer": 2,
        "sink": 2,
    }
    for stage, entry in stages_seen.items():
        for actor in entry["actors"]:
            assert actor["address"] == "127.0.0.1" and len(actor["node_id"]) == 56 and actor["pid"] > 0, stage
            assert actor["state"] == "ALIVE" and actor["restarts"] == 0 and entry["errors"] == 0

    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert lines[0].startswith("monitor ops (kafka): running")
    for name in [*CAMERAS, f"{OPS_TOPIC}:0", f"{OPS_TOPIC}:1", "decoder", "extractor", "analyzer", "sink"]:
        assert any(line.startswith(f"{name} ") for line in lines), name
    assert as_json.returncode == 0, as_json.stderr
    assert set(json.loads(as_json.stdout)["cameras"]) == set(CAMERAS)

    # Every alert that opened was timed from its frame, and the batch sizes are within monitor.batch_frames.
    assert total(metrics, "ray_vigil_frame_to_alert_seconds_count") >= total(
        metrics, "ray_vigil_alerts_total", status="open"
    )
    assert total(metrics, "ray_vigil_batch_frames_bucket", stage="extractor", le="8.0") == total(
        metrics, "ray_vigil_batch_frames_count", stage="extractor"
    )

    lost = recovered["stages"]["analyzer"]
    assert lost["errors"] == recovered["report"]["recoveries"]
    assert actor_id(stages.analyzers[1]) in lost["last_error"]  # the failed call may be a sink's that waited on it
    assert all(entry["errors"] == 0 for stage, entry in recovered["stages"].items() if stage != "analyzer")

    final = MonitorStatus.from_json(store.get_json(key))
    assert final.state == "stopped" and set(final.cameras) == set(CAMERAS)
    stopped = vigil("status", "--config", str(config_file))
    assert stopped.returncode == 1 and stopped.stdout.startswith("monitor ops stopped at ")
    assert len(stopped.stdout.splitlines()) == 1

    # The driver logged as JSON lines on stderr; the lost stage's line names it.
    driver = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    assert (
        driver[0]["stage"] == "driver"
        and driver[0]["message"] == "monitor ops: 2 decoder(s), 1 extractor(s), 2 shard(s)"
    )
    assert any(r["stage"] == "analyzer" and r["message"].startswith("stage lost, replaying") for r in driver)
    assert (
        driver[-1]["message"] == "monitor ops stopped" and driver[-1]["recoveries"] == recovered["report"]["recoveries"]
    )

    # The sinks logged each alert as a JSON line naming the stage and the camera, in their Ray worker logs.
    logs = Path(ray_local._private.worker._global_node.get_logs_dir_path())
    records = [
        json.loads(line)
        for log in logs.glob("worker-*")
        for line in log.read_text(errors="replace").splitlines()
        if line.startswith("{") and ('"ops-' in line or OPS_TOPIC in line)
    ]
    assert any(r["stage"] == "sink" and r["camera"] in CAMERAS and r["message"].startswith("alert ") for r in records)
    assert any(r["stage"] == "decoder" and r["message"].startswith("reading partitions frames-ops") for r in records)
