"""A real multi-node Ray cluster on this machine, for tests: a head node without CPUs and worker nodes, each a
`ray start --block` of its own on a loopback address of its own, stopped (or killed) by PID.

One machine, several nodes: Ray keeps a node's processes apart by node IP address, so each node gets one
(127.0.0.2 the head, 127.0.0.3, 127.0.0.4, ... the workers; 127.0.0.1 is left to the test session's own
local Ray). Multi-node Ray needs `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER` unset or 1 (tests/conftest.py sets it to 0
for the local Ray): every process started here gets `cluster_env()`.

- Each node has a temp dir of its own (nodes sharing one raced for the same unix socket names), short enough
  for unix socket paths, under one root removed at the end.
- Every port is chosen free up front (GCS, dashboard, client server, node manager, object manager, agents,
  metrics) and workers bind OS-chosen ports, so no Ray default port (6379, 8265, 10001, 52365, the worker
  range 10002-19999) is shared with another Ray on the machine.
- `ray start --block` runs as the leader of a new session, and Ray's processes of that node (GCS, raylet,
  agents, log monitor, every worker: workers change their process group, not their session) stay in it. A
  node's processes are found by that session id (and, as a safety net, by the node's temp dir in their
  command line), never by name; `ray stop` is never called (it stops every Ray on the machine).
- `RayNode.kill()` SIGKILLs a node's processes all at once (raylet and workers included: a machine lost);
  `RayCluster.restart(node)` brings it back under the same address and resources.
- GCS notices a dead node by health checks: `HEALTH_CHECK` makes that take about 3 s instead of Ray's
  default of about 15 s (5 failures, 3 s apart).
- Ray's state API (the dashboard's REST API on the head: `/api/v0/nodes`, `/api/v0/actors`) tells where
  actors ran; `RayCluster.actors()` and `RayCluster.nodes()`.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.servers import ManagedProcess, free_ports, port_open, wait_until

HEAD_IP = "127.0.0.2"
WORKER_IPS = ("127.0.0.3", "127.0.0.4")
RAY = str(Path(sys.executable).parent / "ray")

# GCS marks a node dead after `failure_threshold` failed health checks `period_ms` apart (Ray's defaults: 5 and
# 3000 ms). Set on every node's processes (Ray reads RAY_{name} for its system config).
HEALTH_CHECK = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


def cluster_env(**extra: str) -> dict[str, str]:
    """The environment of a cluster process or a client of it: this one's, multi-node Ray allowed, no auth
    token, no RAY_ADDRESS inherited from elsewhere; `extra` on top."""
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env |= {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    return env | extra


# ---------------------------------------------------------------- processes, by session id


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    sid: int
    state: str
    name: str  # the kernel's comm: "raylet", "gcs_server", "ray::ExtractorA", ...
    cmdline: str = field(repr=False)


def processes() -> list[Proc]:
    """Every process of the machine as /proc shows it now (those that vanish while reading are left out)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            raw = Path(entry.path, "cmdline").read_bytes()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        found.append(
            Proc(
                int(entry.name),
                int(fields[1]),
                int(fields[3]),
                fields[0],
                name,
                raw.replace(b"\0", b" ").decode(errors="replace").strip(),
            )
        )
    return found


def living(procs: list[Proc]) -> list[Proc]:
    return [p for p in procs if p.state not in ("Z", "X")]


def signal_all(pids, sig: int) -> list[int]:
    """Send `sig` to each PID; returns those that existed."""
    sent = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
            sent.append(pid)
    return sent


# ---------------------------------------------------------------- nodes and the cluster


@dataclass
class RayNode:
    """One node: a `ray start --block` process leading its own session, on its own address and temp dir."""

    name: str
    ip: str
    argv: list[str]
    temp_dir: Path
    log_path: Path
    env: dict[str, str]
    head: bool = False
    process: ManagedProcess | None = None
    node_id: str | None = None  # Ray's node id (hex) of the current incarnation, once registered
    incarnations: list[str] = field(default_factory=list)  # every node id it had, oldest first

    def start(self) -> RayNode:
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        self.process = ManagedProcess(f"ray node {self.name} ({self.ip})", self.argv, self.log_path, env=self.env)
        self.process.start()
        self.node_id = None
        return self

    @property
    def session(self) -> int | None:
        return self.process.pid if self.process else None

    def procs(self) -> list[Proc]:
        """This node's living processes: its session's, and any naming its temp dir in their command line."""
        if self.session is None:
            return []
        marker = str(self.temp_dir) + "/"
        return living([p for p in processes() if p.sid == self.session or marker in p.cmdline])

    def raylet(self) -> Proc | None:
        return next((p for p in self.procs() if p.name == "raylet"), None)

    def kill(self) -> dict[str, list[int]]:
        """SIGKILL the raylet, its workers and every other process of the node at once, as if the machine
        were lost; returns the PIDs killed ({"raylet": [...], "workers": [...], "other": [...]})."""
        procs = self.procs()
        raylet = [p.pid for p in procs if p.name == "raylet"]
        workers = [p.pid for p in procs if p.ppid in raylet]  # its workers and agents
        other = [p.pid for p in procs if p.pid not in raylet and p.pid not in workers]
        signal_all(raylet + workers + other, signal.SIGKILL)
        if self.process and self.process.process:
            with contextlib.suppress(Exception):
                self.process.process.wait(timeout=10)
        wait_until(lambda: not self.procs(), 10, f"the processes of {self.name} to go")
        return {"raylet": raylet, "workers": workers, "other": other}

    def stop(self, grace: float = 5.0) -> list[Proc]:
        """SIGTERM the `ray start --block` leader (it stops the node's processes in order), then SIGKILL
        whatever of the node is left after `grace` seconds; returns what survived both (nothing, normally)."""
        if self.process is None:
            return []
        signal_all([self.session], signal.SIGTERM)  # the leader: it stops the node's processes in order
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: not self.procs(), grace, f"{self.name} to stop", interval=0.2)
        signal_all([p.pid for p in self.procs()], signal.SIGKILL)
        if self.process.process:
            with contextlib.suppress(Exception):
                self.process.process.wait(timeout=5)
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: not self.procs(), 5, f"{self.name} to die", interval=0.1)
        return self.procs()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.alive and self.raylet() is not None


class RayCluster:
    """A head without CPUs and worker nodes with `cpus` CPUs and a resource named after each (`node_a: 1`,
    `node_b: 1`, ...), to place or find work on one node."""

    def __init__(self, root: Path, logs: Path, *, workers=WORKER_IPS, cpus: int = 2, env: dict[str, str] | None = None):
        self.root, self.logs, self.cpus = Path(root), Path(logs), cpus
        self.env = cluster_env(**(env or {}), **HEALTH_CHECK)
        self.gcs_port, self.dashboard_port, self.client_port = free_ports(3, HEAD_IP)
        self.address = f"{HEAD_IP}:{self.gcs_port}"
        self.dashboard = f"http://{HEAD_IP}:{self.dashboard_port}"
        self.head = self._node("head", HEAD_IP, head=True)
        self.workers = [self._node(f"node_{chr(ord('a') + i)}", ip) for i, ip in enumerate(workers)]
        self.startup_seconds: float | None = None
        self.startup_reported = False  # by the first test that uses it
        self.stopped = False

    @property
    def all_nodes(self) -> list[RayNode]:
        return [self.head, *self.workers]

    def worker(self, name: str) -> RayNode:
        return next(node for node in self.workers if node.name == name)

    def _node(self, name: str, ip: str, head: bool = False) -> RayNode:
        temp_dir = self.root / name.removeprefix("node_")
        ports = free_ports(6, ip)
        argv = [
            RAY,
            "start",
            "--block",
            "--disable-usage-stats",
            f"--node-ip-address={ip}",
            f"--temp-dir={temp_dir}",
            f"--node-manager-port={ports[0]}",
            f"--object-manager-port={ports[1]}",
            f"--dashboard-agent-grpc-port={ports[2]}",
            f"--dashboard-agent-listen-port={ports[3]}",
            f"--runtime-env-agent-port={ports[4]}",
            f"--metrics-export-port={ports[5]}",
            "--min-worker-port=0",  # workers bind OS-chosen ports: no range shared with another Ray here
            "--max-worker-port=0",
            "--object-store-memory=200000000",
        ]
        if head:
            argv += [
                "--head",
                "--num-cpus=0",  # nothing that asks for a CPU runs on the head
                f"--port={self.gcs_port}",
                "--include-dashboard=true",  # the state API (where actors ran) is served by the dashboard
                f"--dashboard-host={HEAD_IP}",
                f"--dashboard-port={self.dashboard_port}",
                f"--ray-client-server-port={self.client_port}",
            ]
        else:
            argv += [f"--address={self.address}", f"--num-cpus={self.cpus}", f"--resources={json.dumps({name: 1})}"]
        return RayNode(name, ip, argv, temp_dir, self.logs / f"ray-{name}.log", self.env, head=head)

    # -- lifecycle

    def start(self, timeout: float = 90.0) -> RayCluster:
        started = time.monotonic()
        self.head.start()
        self.head.process.wait_ready(
            lambda: port_open(self.gcs_port, HEAD_IP) and self._registered(self.head), timeout=timeout, interval=0.3
        )
        for node in self.workers:  # one after another: each registers before the next starts
            self._start_worker(node, timeout)
        self.startup_seconds = time.monotonic() - started
        return self

    def _start_worker(self, node: RayNode, timeout: float) -> None:
        node.start()
        node.process.wait_ready(lambda: self._registered(node), timeout=timeout, interval=0.3)

    def _registered(self, node: RayNode) -> bool:
        """Whether the state API lists `node` alive; records its node id."""
        alive = [n for n in self.nodes() if n["node_ip"] == node.ip and n["state"] == "ALIVE"]
        if not alive:
            return False
        node.node_id = alive[0]["node_id"]
        if node.node_id not in node.incarnations:
            node.incarnations.append(node.node_id)
        return True

    def restart(self, node: RayNode, timeout: float = 90.0) -> float:
        """Start a stopped or killed worker node again (a new node id, same address and resources); seconds taken."""
        started = time.monotonic()
        node.stop()
        self._start_worker(node, timeout)
        return time.monotonic() - started

    def ensure_up(self) -> list[str]:
        """Restart worker nodes a test left dead; the names of those restarted."""
        restarted = []
        for node in self.workers:
            if not (node.alive and self._registered(node)):
                self.restart(node)
                restarted.append(node.name)
        return restarted

    def wait_dead(self, node: RayNode, timeout: float = 60.0) -> float:
        """Wait until GCS has marked the current incarnation of `node` dead; seconds waited."""
        started = time.monotonic()
        node_id = node.node_id

        def dead() -> bool:
            return any(n["node_id"] == node_id and n["state"] == "DEAD" for n in self.nodes())

        wait_until(dead, timeout, f"GCS to mark {node.name} dead", interval=0.2)
        return time.monotonic() - started

    def stop(self) -> list[Proc]:
        """Stop every node, workers first; returns any process that survived SIGKILL (nothing, normally),
        then removes the temp dirs."""
        if self.stopped:
            return []
        left = []
        for node in [*self.workers, self.head]:
            left += node.stop()
        marker = str(self.root) + "/"
        left += living([p for p in processes() if marker in p.cmdline and p not in left])
        if not left:
            shutil.rmtree(self.root, ignore_errors=True)
            self.stopped = True
        return left

    # -- Ray's state API (the dashboard's REST API)

    def _state(self, kind: str, timeout: float = 10.0) -> list[dict]:
        url = f"{self.dashboard}/api/v0/{kind}?limit=10000&detail=true&timeout={int(timeout)}"
        with urllib.request.urlopen(url, timeout=timeout + 5) as response:
            body = json.load(response)
        if not body.get("result", False):
            raise RuntimeError(f"state API {kind}: {body.get('msg')}")
        return body["data"]["result"]["result"]

    def nodes(self) -> list[dict]:
        """Every node the cluster ever had: node_id, node_ip, state (ALIVE/DEAD), is_head_node, resources_total."""
        return self._state("nodes")

    def actors(self) -> list[dict]:
        """Every actor of the cluster's lifetime: actor_id, class_name, state, node_id, pid, job_id, ..."""
        return self._state("actors")

    def node_names(self) -> dict[str, str]:
        """Node id -> our name for it ("head", "node_a", ...), over every incarnation."""
        names = {node.node_id: node.name for node in self.all_nodes if node.node_id}
        for node in self.all_nodes:
            names |= dict.fromkeys(node.incarnations, node.name)
        return names

    def client_env(self, **extra: str) -> dict[str, str]:
        """Environment of a driver joining this cluster (`vigil ... ` with RAY_ADDRESS)."""
        return cluster_env(RAY_ADDRESS=self.address, **extra)


def start_ray_cluster(logs: Path, env: dict[str, str] | None = None, **kwargs) -> RayCluster:
    """A running cluster (head on 127.0.0.2, workers 127.0.0.3 and 127.0.0.4 by default), its temp dirs under
    a short new folder in /tmp (unix socket paths are limited to 107 bytes); stopped on failure to start."""
    root = Path(tempfile.mkdtemp(prefix="vigil-ray-", dir="/tmp"))
    cluster = RayCluster(root, logs, env=env, **kwargs)
    atexit.register(cluster.stop)  # a safety net should the session end without its finalizers
    try:
        return cluster.start()
    except BaseException:
        cluster.stop()
        raise


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory, tiny_encoders, vigil_cache, s3_server):
    """A multi-node Ray cluster for the session (about 20 s to start): a head without CPUs and two worker
    nodes with 2 CPUs each. Its processes get VIGIL_CACHE (the tiny checkpoints are built first) and the S3
    server's endpoint and credentials (VIGIL_S3_ENDPOINT, AWS_*), as a deployment gives its pods: stages on
    the nodes can open an s3:// store. At the end every node is stopped by PID; a process that survived
    SIGKILL fails the session loudly."""
    env = {"VIGIL_CACHE": str(vigil_cache), **s3_server.env()}
    cluster = start_ray_cluster(tmp_path_factory.mktemp("ray-cluster"), env=env)
    try:
        yield cluster
    finally:
        left = cluster.stop()
        if left:
            raise RuntimeError(f"Ray cluster processes survived SIGTERM and SIGKILL: {left}")
