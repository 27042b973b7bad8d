"""deploy/docker-compose.yml's processes, run as the compose file writes them, on loopback.

No Docker engine runs here, so the images are not built or started. What the containers would run is: the
Ray head, a Ray worker, the monitor (joining the cluster as a node without CPUs, then the driver) and the
demo camera's `vigil ingest`, all with configs/cluster.yaml. This test runs those commands, taken from the
compose file, with the compose services' addresses replaced by loopback ones (the Ray nodes on 127.0.0.2, see
RAY_NODE_IP): Tansu stands in for Apache
Kafka and SeaweedFS for MinIO (both speak the same protocols), and the environment names them as a `.env`
would. Each Ray node gets its own free ports and temporary folder (here they share one machine), and the
dashboard stays off.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import yaml

from pipeline.live.sink import alert_records
from pipeline.search.index import ClipIndex
from pipeline.storage.layout import monitor_checkpoint_key
from pipeline.storage.store import open_store
from tests.servers import ManagedProcess, free_ports, start_tansu, wait_until
from tests.test_deploy import COMPOSE
from tests.test_monitor import add_lobby_query

BIN = Path(sys.executable).parent
COMPOSE_VARIABLE = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")
RAY_HEAD = "ray-head:6379"  # the address every node and the monitor are given in the compose file
# The Ray nodes' address. Ray 2.60 joins several nodes into one cluster only with multi-node mode on (Linux's
# default), and in that mode it replaces 127.0.0.1 by the machine's network address; 127.0.0.2 is loopback too.
RAY_NODE_IP = "127.0.0.2"


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution: ${NAME}, ${NAME:-default}, ${NAME:?error}; $$ is a literal $."""

    def value(match: re.Match) -> str:
        name, kind, rest = match.groups()
        if env.get(name):
            return env[name]
        if kind == "?":
            raise KeyError(f"{name}: {rest}")
        return rest if kind == "-" else ""

    return "$".join(COMPOSE_VARIABLE.sub(value, part) for part in text.split("$$"))


class LoopbackCompose:
    """The compose file's services as processes on this machine: `run(service)` starts one with the
    compose file's entrypoint, command and environment, the compose addresses replaced by loopback ones."""

    def __init__(self, workdir: Path, env: dict[str, str]):
        self.services = yaml.safe_load(COMPOSE.read_text())["services"]
        self.workdir, self.env = workdir, env
        self.gcs_port, self.client_port = free_ports(2)
        self.processes: list[ManagedProcess] = []
        self.temp_dirs: list[Path] = []  # one per Ray node; short: Ray's socket paths must stay short
        # `ray start` leaves the cluster's address here for a later ray.init() without one: put it back.
        self.address_file = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        self.address_before = self.address_file.read_text() if self.address_file.exists() else None

    def mounts(self, service: str) -> list[tuple[str, Path]]:
        """(path in the container, path here) of the service's volumes: a named volume is a folder of the
        work folder, a bind mount the file or folder it names."""
        found = []
        for volume in self.services[service].get("volumes", []):
            source, target = interpolate(volume, self.env).split(":")[:2]
            here = (COMPOSE.parent / source).resolve() if source.startswith(".") else self.workdir / "volumes" / source
            found.append((target, here))
        return found

    def localize(self, service: str, text: str) -> str:
        """Compose variables, addresses and container paths of `text` as they are here."""
        text = interpolate(text, self.env).replace(RAY_HEAD, f"{RAY_NODE_IP}:{self.gcs_port}")
        for target, here in self.mounts(service):
            text = text.replace(target, str(here))
        return text

    def command(self, service: str) -> list[str]:
        spec = self.services[service]
        words = [self.localize(service, word) for word in [*spec["entrypoint"], *spec["command"]]]
        if service == "ray-head":  # its own port, and no dashboard (compose binds it to 0.0.0.0)
            words = [
                w.replace("--port=6379", f"--port={self.gcs_port}")
                for w in words
                if not w.startswith("--dashboard-host")
            ]
            words += ["--include-dashboard=false", f"--ray-client-server-port={self.client_port}"]
        if words[:2] == ["ray", "start"]:
            return [*words[:2], *self._node_options(service).split(), *words[2:]]
        # a shell script whose `ray start` joins the cluster
        return [re.sub(r"\bray start\b", lambda _: f"ray start {self._node_options(service)}", word) for word in words]

    def _node_options(self, service: str) -> str:
        """What every `ray start` here adds: loopback, its own ports and folder (the nodes share one machine)."""
        self.temp_dirs.append(Path(tempfile.mkdtemp(prefix=f"vigil-{service}-", dir="/tmp")))
        names = [
            "node-manager-port",
            "object-manager-port",
            "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port",
            "runtime-env-agent-port",
            "metrics-export-port",
        ]
        ports = " ".join(f"--{name}={port}" for name, port in zip(names, free_ports(len(names))))
        return f"--node-ip-address={RAY_NODE_IP} --temp-dir={self.temp_dirs[-1]} --disable-usage-stats {ports}"

    def run(self, service: str, ready: str | None = None) -> ManagedProcess:
        """Start `service`; with `ready`, wait until its output shows that text."""
        environment = self.services[service].get("environment") or {}
        # An empty value in the compose file means "not set" (the config file's value holds).
        env = {**self.env, **{name: self.localize(service, str(v)) for name, v in environment.items() if v != ""}}
        process = ManagedProcess(service, self.command(service), self.workdir / f"{service}.log", env=env).start()
        self.processes.append(process)
        if ready:
            process.wait_ready(lambda: ready in process.log_path.read_text(errors="replace"), timeout=120)
        return process

    def ray_pids(self) -> list[int]:
        """The processes of these Ray nodes: every one names its node's temporary folder."""
        found = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                with contextlib.suppress(OSError):
                    command = (proc / "cmdline").read_bytes().decode(errors="replace")
                    if any(str(folder) in command for folder in self.temp_dirs):
                        found.append(int(proc.name))
        return found

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop(grace=10)
        for pid in self.ray_pids():  # what a `ray start` without --block left running
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not self.ray_pids(), timeout=30, what="the end of the Ray nodes' processes")
        for folder in self.temp_dirs:
            shutil.rmtree(folder, ignore_errors=True)
        if self.address_before is None:
            self.address_file.unlink(missing_ok=True)
        else:
            self.address_file.write_text(self.address_before)


def create_topics(compose: LoopbackCompose, brokers: str) -> list[tuple[str, int]]:
    """The topics kafka-init's script creates (name, partitions), created the same way on `brokers`."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    script = interpolate(compose.services["kafka-init"]["command"][0], compose.env)
    topics = [(name, int(count)) for name, count in re.findall(r"--topic (\S+) --partitions (\d+)", script)]
    admin = KafkaAdminClient(bootstrap_servers=brokers, client_id="compose-kafka-init")
    try:
        admin.create_topics([NewTopic(name, count, 1) for name, count in topics])
    finally:
        admin.close()
    return topics


def test_compose_processes_monitor_a_camera_into_s3(
    tmp_path, monkeypatch, s3_server, scene_video, vigil_cache, tiny_encoders
):
    path, _ = scene_video
    broker = start_tansu(tmp_path / "tansu")
    bucket = f"compose-{os.getpid()}"
    compose = LoopbackCompose(
        tmp_path,
        {
            **s3_server.env(),  # MinIO's address and vigil's own key, as deploy/.env gives them
            "VIGIL_STORE": f"s3://{bucket}/site1",
            "VIGIL_KAFKA_BROKERS": broker.brokers,
            "VIGIL_MODELS": "tiny",  # untrained checkpoints built by this session: no model hub here
            "RAY_WORKER_CPUS": "2",
            "VIGIL_DEMO_SOURCE": str(path),  # the demo camera sends the scene video
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            # Linux's default (multi-node clusters), which tests/conftest.py turns off for the session's Ray
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",
        },
    )
    try:
        assert create_topics(compose, broker.brokers) == [("vigil.frames", 8), ("vigil.alerts", 1), ("vigil.dlq", 1)]
        s3_server.client().make_bucket(bucket)  # minio-init's bucket
        # The model-cache volume, filled as a first start would fill it (here from this session's cache).
        shutil.copytree(vigil_cache, tmp_path / "volumes" / "model-cache" / "vigil")
        for name, value in s3_server.env().items():
            monkeypatch.setenv(name, value)
        store = open_store(compose.env["VIGIL_STORE"])
        add_lobby_query(store, path)

        compose.run("ray-head", ready="Ray runtime started")
        compose.run("ray-worker", ready="Ray runtime started")
        ingest = compose.run("vigil-ingest")
        assert ingest.process.wait(timeout=120) == 0, ingest.log_tail()
        monitor = compose.run("vigil-monitor")
        # The scene video at 2 fps: 40 frames, one message each.
        monitor.wait_ready(
            lambda: sum(json.loads(store.get(monitor_checkpoint_key("site1")))["offsets"].values()) == 40,
            timeout=300,
            interval=0.5,
        )
        os.kill(monitor.pid, signal.SIGTERM)  # compose's `init: true` hands docker stop's SIGTERM to it
        assert monitor.process.wait(timeout=60) == 0, monitor.log_tail()
        logs = {p.name: p.log_path.read_text(errors="replace") for p in compose.processes}
    finally:
        compose.stop()
        broker.stop()
    assert "monitor site1: 40 frames" in logs["vigil-monitor"], logs["vigil-monitor"]
    node_ips = [
        re.sub(r"\x1b\[[0-9;]*m", "", line).split(": ")[-1]
        for log in logs.values()
        for line in log.splitlines()
        if "Local node IP" in line
    ]
    assert node_ips == [RAY_NODE_IP] * 3, node_ips  # head, worker and the monitor's node: loopback
    assert not any(s3_server.secret_key in log for log in logs.values())
    alerts = alert_records(store)
    assert [(a["query_id"], a["camera"], a["status"]) for a in alerts] == [("lobby", "gate", "closed")]
    assert abs(alerts[0]["start"] - 12.0) <= 0.5
    # 20 s of video in 2 s windows, all but the last closed (a live stream has no end: the checkpoint keeps
    # the open one), stored and indexed, so `vigil search` finds the camera's footage
    assert len(list(store.list("clips/"))) == 9
    assert [row.source for row in ClipIndex.load(store).rows] == ["gate"] * 9
