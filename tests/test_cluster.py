"""vigil on a real multi-node Ray cluster on this machine (tests/cluster.py): a head without CPUs on 127.0.0.2
and two worker nodes (127.0.0.3 `node_a`, 127.0.0.4 `node_b`, 2 CPUs each), each a raylet of its own.

The pytest process keeps its own local Ray (`ray_local`) for the other tests and a process joins one cluster
only, so vigil runs here as its CLI in subprocesses with RAY_ADDRESS naming the cluster, as a user runs it.
Losing a node is the real thing: its raylet, its workers and every other process of it get SIGKILL at once.

Run by `make test-cluster` (`pytest --cluster -m cluster`); `make test` shows them skipped. Each test prints
its durations (shown with -rA, and kept as the test's user properties).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.live.sink import alert_records
from pipeline.media.synthetic import Scene, write_scene_video
from pipeline.search.index import ClipIndex
from pipeline.storage.clips import read_clip
from pipeline.storage.layout import monitor_checkpoint_key
from pipeline.storage.store import LocalStore, open_store
from tests.servers import wait_until
from tests.test_monitor import add_lobby_query

pytestmark = [pytest.mark.cluster]

VIGIL = str(Path(sys.executable).parent / "vigil")
MONITOR_STAGES = {"ExtractorActor", "StreamDecoderActor", "KafkaDecoderActor", "StreamAnalyzerActor", "SinkActor"}
ARCHIVE_STAGES = {"ExtractorActor", "DecoderActor"}


# ---------------------------------------------------------------- helpers


@pytest.fixture
def cluster(ray_cluster, report):
    """The session's cluster with every worker node up (a test that killed one gets it back here)."""
    if not ray_cluster.startup_reported:
        report(f"cluster of 3 nodes up in {ray_cluster.startup_seconds:.1f} s")
        ray_cluster.startup_reported = True
    restarted = ray_cluster.ensure_up()
    if restarted:
        report(f"restarted {', '.join(restarted)} left dead by an earlier test")
    return ray_cluster


@pytest.fixture
def report(request):
    """`report(line)`: a line of this test's durations and findings, printed at once (beside pytest's own
    output), in the captured output shown with -rA or on failure, and kept as a user property."""
    plugins = request.config.pluginmanager
    terminal, capture = plugins.getplugin("terminalreporter"), plugins.getplugin("capturemanager")
    lines: list[str] = []

    def note(line: str) -> None:
        line = f"[{request.node.name}] {line}"
        lines.append(line)
        print(line)
        if terminal is not None and capture is not None:
            with capture.global_and_fixture_disabled():
                terminal.write_line(line)

    yield note
    request.node.user_properties.append(("cluster_report", "\n".join(lines)))


def run_vigil(args: list[str], env: dict[str, str], timeout: float = 300) -> tuple[subprocess.CompletedProcess, float]:
    """`vigil ARGS` to its end; the result and the seconds it took."""
    started = time.monotonic()
    result = subprocess.run([VIGIL, *args], env=env, capture_output=True, text=True, timeout=timeout)
    return result, time.monotonic() - started


def output(result) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}"


class Background:
    """`vigil ARGS` running in the background, its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path):
        self.log_path = log_path
        self.started = time.monotonic()
        with log_path.open("w") as log:
            self.process = subprocess.Popen([VIGIL, *args], env=env, stdout=log, stderr=subprocess.STDOUT)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float) -> int | None:
        """The exit status, or None if it is still running after `timeout` seconds."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def interrupt(self, grace: float = 10.0) -> tuple[int, bool]:
        """Ctrl-C (SIGINT), then SIGKILL after `grace` seconds; the exit status, and whether Ctrl-C ended it."""
        self.process.send_signal(signal.SIGINT)
        if (rc := self.wait(grace)) is not None:
            return rc, True
        self.process.kill()
        return self.process.wait(timeout=30), False

    def stop(self) -> None:
        if self.running:
            self.process.kill()
            self.process.wait(timeout=30)

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def last_lines(self, count: int = 3, width: int = 800) -> str:
        return " | ".join(self.text().strip().splitlines()[-count:])[-width:]


def write_config(path: Path, **sections) -> Path:
    """A vigil config file: tiny models on CPU, fp32, 2 sampled frames a second, and `sections` on top."""
    config = {"models": "tiny", "precision": "fp32", "device": "cpu", "decode": {"fps": 2.0}}
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(config))
    return path


def store_urls(kind: str, tmp_path: Path, request, monkeypatch, runs=("steady", "killed")) -> dict[str, str]:
    """A store per run: folders under tmp_path, or prefixes of a new bucket of the session's S3 server (whose
    endpoint and credentials this process then has in its environment, and so do the vigil subprocesses;
    the cluster's nodes have them from the start)."""
    if kind == "local":
        return {run: str(tmp_path / run) for run in runs}
    for variable, value in request.getfixturevalue("s3_server").env().items():
        monkeypatch.setenv(variable, value)
    bucket = f"cluster-{uuid.uuid4().hex[:8]}"
    return {run: f"s3://{bucket}/{run}" for run in runs}


def placement(cluster, actors: list[dict]) -> dict[str, list[str]]:
    """Class name -> the names of the nodes its actors ran on (one entry per actor, sorted)."""
    names = cluster.node_names()
    where: dict[str, list[str]] = {}
    for actor in actors:
        where.setdefault(actor["class_name"], []).append(names.get(actor["node_id"], actor["node_id"] or "unplaced"))
    return {name: sorted(nodes) for name, nodes in sorted(where.items())}


def new_actors(cluster, before: set[str]) -> list[dict]:
    return [actor for actor in cluster.actors() if actor["actor_id"] not in before]


def checkpoint_frames(store, name: str) -> int:
    """Frames (Kafka offsets) the monitor's checkpoint covers; 0 before the first one."""
    try:
        return sum(store.get_json(monitor_checkpoint_key(name))["offsets"].values())
    except Exception:  # noqa: BLE001  (not written yet, or being replaced)
        return 0


def outcome(store) -> dict:
    """What a run leaves that must not depend on how it ran, part by part: the alerts, the clips (each
    clip's metadata and vectors), the keyframe objects, the source records and the index rows."""
    clips = {}
    for key in sorted(store.list("clips/")):
        clip = read_clip(store, key)
        meta = {name: value for name, value in vars(clip).items() if name not in ("siglip", "dinov2")}
        clips[key] = (meta, np.concatenate([np.asarray(clip.siglip).ravel(), np.asarray(clip.dinov2).ravel()]))
    return {
        "alerts": {alert["id"]: alert for alert in alert_records(store)},
        "clips": clips,
        "keyframes": dict.fromkeys(sorted(store.list("keyframes/")), True),
        "sources": {key: store.get_json(key) for key in sorted(store.list("sources/"))},
        "index rows": {(row.source, row.start): vars(row) for row in ClipIndex.load(store).rows},
    }


def differences(got: dict, expected: dict) -> list[str]:
    """How two outcomes differ, one line per part that does (empty when they are the same)."""
    lines = []
    for part, want in expected.items():
        have = got[part]
        extra, missing = sorted(have.keys() - want.keys()), sorted(want.keys() - have.keys())
        changed = []
        for key in sorted(want.keys() & have.keys(), key=str):
            a, b = have[key], want[key]
            if part == "clips":
                same = a[0] == b[0] and np.allclose(a[1], b[1], atol=1e-5)
            else:
                same = a == b
            if not same:
                changed.append(key)
        if extra or missing or changed:
            detail = []
            if part == "keyframes" and extra:
                used = {clip[0]["keyframe_key"] for clip in got["clips"].values()}
                used |= {alert.get("keyframe_key") for alert in got["alerts"].values()}
                detail.append(f"extra {extra} (referenced by a clip or alert: {sorted(set(extra) & used)})")
            elif extra:
                detail.append(f"extra {extra}")
            if missing:
                detail.append(f"missing {missing}")
            for key in changed[:3]:
                a, b = (have[key][0], want[key][0]) if part == "clips" else (have[key], want[key])
                detail.append(f"{key}: {a} instead of {b}" if a != b else f"{key}: vectors differ")
            lines.append(f"{part}: " + "; ".join(detail))
    return lines


def assert_same_outcome(got, expected) -> None:
    diff = differences(outcome(got), outcome(expected))
    assert not diff, "not the undisturbed run's outcome:\n" + "\n".join(diff)


# ---------------------------------------------------------------- 1. stages spread over the worker nodes


def test_monitor_stages_run_on_both_worker_nodes_and_none_on_the_head(cluster, report, scene_video, tmp_path):
    """Two cameras (embedded: the monitor reads the file itself) with two extractors fill the workers' four
    CPU slots; Ray's state API then shows where each of the run's actors lived."""
    path, _ = scene_video
    store_dir = tmp_path / "store"
    add_lobby_query(LocalStore(store_dir), path)
    config = write_config(
        tmp_path / "spread.yaml",
        store=str(store_dir),
        monitor={"name": "spread", "extractors": 2, "batch_frames": 4, "checkpoint_every": 0.5},
    )
    before = {actor["actor_id"] for actor in cluster.actors()}
    args = ["monitor", "--config", str(config), "--source", str(path), "--camera", "door"]
    result, seconds = run_vigil([*args, "--source", str(path), "--camera", "gate"], cluster.client_env())
    report(f"monitor, 2 cameras x 40 frames, on the cluster: {seconds:.1f} s (exit {result.returncode})")
    assert result.returncode == 0, output(result)
    assert "80 frames" in result.stdout, result.stdout

    where = placement(cluster, [a for a in new_actors(cluster, before) if a["class_name"] in MONITOR_STAGES])
    report(f"actors by node: {where}")
    assert Counter({name: len(nodes) for name, nodes in where.items()}) == Counter(
        {"ExtractorActor": 2, "StreamDecoderActor": 2, "StreamAnalyzerActor": 1, "SinkActor": 1}
    ), where
    used = {node for nodes in where.values() for node in nodes}
    assert {"node_a", "node_b"} <= used, f"the stages did not use both worker nodes: {where}"
    on_head = sorted(name for name, nodes in where.items() if "head" in nodes)
    assert not on_head, (
        f"{', '.join(on_head)} ran on the head node, which has no CPUs (`ray start --head --num-cpus 0`): "
        f"Ray may place an actor asking for no CPU (num_cpus=0) on any node, the head included; placement: {where}"
    )

    store = LocalStore(store_dir)
    assert [(a["query_id"], a["camera"], a["status"]) for a in alert_records(store)] == [
        ("lobby", "door", "closed"),
        ("lobby", "gate", "closed"),
    ]
    assert Counter(row.source for row in ClipIndex.load(store).rows) == {"door": 10, "gate": 10}


# ---------------------------------------------------------------- 2. a worker node lost under the Kafka monitor


def ingest(broker, path: Path, topic: str, cameras: list[str]) -> None:
    for camera in cameras:
        result = subprocess.run(
            [VIGIL, "ingest", str(path), "--camera", camera, "--brokers", broker.brokers, "--topic", topic]
            + ["--fps", "2"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, output(result)


def kafka_monitor_config(tmp_path: Path, broker, store: str, run: str, topic: str, tag: str) -> Path:
    return write_config(
        tmp_path / f"{run}.yaml",
        store=store,
        kafka={
            "brokers": broker.brokers,
            "group": f"cluster-{run}-{tag}",
            "topics": {"frames": topic, "alerts": f"alerts-{run}-{tag}", "dlq": f"dlq-{tag}"},
        },
        monitor={"name": run, "extractors": 2, "batch_frames": 2, "checkpoint_every": 0.2},
    )


def alert_lifecycle(broker, topic: str, at_least: int, timeout: float = 20.0) -> set[tuple[str, str]]:
    """(alert id, status) of every message on the alerts topic: read until `at_least` messages came and then
    a poll found nothing more (a run that recovered may repeat an alert: the same id, ARCHITECTURE.md)."""
    from pipeline.media.kafka_clients import FrameConsumer
    from tests.test_kafka_io import settings_for

    records: list = []
    with FrameConsumer(settings_for(broker), topic, assign=True) as consumer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            polled = consumer.poll(0.5)
            records += polled
            if len(records) >= at_least and not polled:
                break
    return {(message["id"], message["status"]) for message in (json.loads(r.value) for r in records)}


@pytest.mark.parametrize("store_kind", ["local", "s3"])
def test_kafka_monitor_loses_a_worker_node_mid_stream_and_ends_as_undisturbed(
    cluster, report, scene_video, kafka_broker, tmp_path, store_kind, request, monkeypatch
):
    """Three cameras' frames in Kafka; an undisturbed run, then a run whose node_a (127.0.0.3) is killed with
    SIGKILL once the first checkpoint is written: the monitor must go on with the other node, replaying from
    its last checkpoint, and end (idle) with exactly the undisturbed run's alerts (stored and published),
    clips and index rows. Two extractors spread over the nodes, so node_a always holds one; the stages without
    a CPU slot are wherever Ray put them. With the S3 store, the sinks on the nodes write to S3."""
    path, _ = scene_video
    cameras = ["door", "gate", "yard"]
    frames = 40 * len(cameras)
    tag = uuid.uuid4().hex[:8]
    topic = f"cluster-frames-{tag}"
    started = time.monotonic()
    ingest(kafka_broker, path, topic, cameras)
    report(f"ingested {len(cameras)} cameras x 40 frames into {topic}: {time.monotonic() - started:.1f} s")

    stores = store_urls(store_kind, tmp_path, request, monkeypatch)
    for run in stores:
        add_lobby_query(open_store(stores[run]), path)
    configs = {run: kafka_monitor_config(tmp_path, kafka_broker, stores[run], run, topic, tag) for run in stores}
    env = cluster.client_env()

    steady, seconds = run_vigil(["monitor", "--config", str(configs["steady"]), "--idle-exit", "5"], env)
    report(f"undisturbed run: {seconds:.1f} s including 5 s idle exit (exit {steady.returncode})")
    assert steady.returncode == 0, output(steady)
    assert f"{frames} frames" in steady.stdout, steady.stdout
    expected = open_store(stores["steady"])
    assert [(a["query_id"], a["camera"]) for a in alert_records(expected)] == [("lobby", c) for c in cameras]

    got = open_store(stores["killed"])
    node = cluster.worker("node_a")
    before = {actor["actor_id"] for actor in cluster.actors()}
    victim = Background(["monitor", "--config", str(configs["killed"]), "--idle-exit", "5"], env, tmp_path / "k.log")
    try:
        wait_until(lambda: checkpoint_frames(got, "killed") > 0 or not victim.running, 180, "a first checkpoint")
        at_kill = checkpoint_frames(got, "killed")
        where = placement(cluster, [a for a in new_actors(cluster, before) if a["class_name"] in MONITOR_STAGES])
        killed_at = time.monotonic()
        pids = node.kill()
        report(
            f"first checkpoint {killed_at - victim.started:.1f} s after the start, covering {at_kill}/{frames} "
            f"frames: SIGKILL to node_a (raylet {pids['raylet']}, {len(pids['workers'])} raylet children, "
            f"{len(pids['other'])} other processes); actors by node then: {where}"
        )
        assert 0 < at_kill < frames, f"the node was to be lost mid-stream: the checkpoint covered {at_kill}/{frames}"
        assert any("node_a" in nodes for nodes in where.values()), f"no stage of the monitor on node_a: {where}"
        detected = cluster.wait_dead(node, timeout=60)
        at_detection = checkpoint_frames(got, "killed")
        report(f"GCS marked node_a dead {detected:.1f} s after the kill; the checkpoint then covered {at_detection}")

        # Recovery: from the kill to the first checkpoint after the node was declared dead that covers more
        # frames (checkpoints saved from work done before the kill do not count).
        resumed = None
        patience = 60 + 3 * seconds  # the undisturbed run's time thrice (half the CPUs are left), and then some
        deadline = time.monotonic() + patience
        while victim.running and time.monotonic() < deadline:
            if resumed is None and checkpoint_frames(got, "killed") > at_detection:
                resumed = time.monotonic() - killed_at
            time.sleep(0.05)
        rc = victim.wait(0)
        if rc is None:
            rc, _ = victim.interrupt()
            report(f"the disturbed run HUNG: still running {patience:.0f} s after the node was declared dead")
    finally:
        victim.stop()
    if resumed is None and checkpoint_frames(got, "killed") > at_detection:
        resumed = time.monotonic() - killed_at  # progress was only seen at the end (last checkpoint)
    report(
        "recovery time: "
        + (f"{resumed:.1f} s from the kill to the next checkpoint" if resumed is not None else "none (no progress)")
        + f"; the run ended (exit {rc}) {time.monotonic() - victim.started:.1f} s after it started "
        + f"(undisturbed: {seconds:.1f} s); covered {checkpoint_frames(got, 'killed')}/{frames} frames"
    )
    after = placement(cluster, [a for a in new_actors(cluster, before) if a["class_name"] in MONITOR_STAGES])
    report(f"actors by node at the end (a restarted actor counts where it last lived): {after}")
    own = [line.strip() for line in victim.text().splitlines() if "recovered" in line or line.startswith("monitor ")]
    report(f"the monitor's own account: {' | '.join(own) or '(nothing)'}")
    assert rc == 0, f"the monitor did not survive losing node_a: {victim.last_lines(4, 3000)}"
    assert_same_outcome(got, expected)
    lifecycle = alert_lifecycle(kafka_broker, f"alerts-steady-{tag}", 2 * len(cameras))
    assert len(lifecycle) == 2 * len(cameras), lifecycle  # each camera's alert: open, then closed
    published = alert_lifecycle(kafka_broker, f"alerts-killed-{tag}", 2 * len(cameras))
    assert published == lifecycle, (
        f"published alerts differ: extra {published - lifecycle}, missing {lifecycle - published}"
    )


# ---------------------------------------------------------------- 3. the archive job loses a worker node


@pytest.fixture(scope="module")
def archive_folder(tmp_path_factory):
    """Eight short videos of different scenes (4 s each scene, 10 fps, a keyframe a second)."""
    folder = tmp_path_factory.mktemp("archive")
    for number in range(8):
        scenes = [Scene(f"s{number}-{k}", 4.0) for k in range(3 + number % 3)]
        write_scene_video(folder / f"cam{number}.mp4", scenes, fps=10, size=(320, 240), gop=10, seed=number)
    return folder


def index_command(folder: Path, store: str) -> list[str]:
    args = ["index", str(folder), "--ray", "--store", store, "--models", "tiny", "--precision", "fp32"]
    return [*args, "--device", "cpu", "--fps", "2", "--no-progress"]


@pytest.mark.parametrize("store_kind", ["local", "s3"])
def test_archive_job_loses_a_worker_node_and_ends_as_undisturbed(
    cluster, report, archive_folder, tmp_path, store_kind, request, monkeypatch
):
    """`vigil index FOLDER --ray` on the cluster; a second run loses a worker node once about half the files
    are stored and finishes by itself (the files whose stages were lost are indexed again): the clips, sources
    and index rows equal the undisturbed run's. The node lost is the one running the extractor (the job has one
    on CPU: the worst case, and the same case every time, whatever node Ray chose), with one or two of the
    decoders."""
    urls = store_urls(store_kind, tmp_path, request, monkeypatch)
    env = cluster.client_env()
    files = len(list(archive_folder.glob("*.mp4")))

    steady, seconds = run_vigil(index_command(archive_folder, urls["steady"]), env)
    report(f"undisturbed `vigil index --ray` of {files} files ({store_kind} store): {seconds:.1f} s")
    assert steady.returncode == 0, output(steady)
    expected = open_store(urls["steady"])
    assert len(list(expected.list("sources/"))) == files

    got = open_store(urls["killed"])
    before = {actor["actor_id"] for actor in cluster.actors()}
    target = files // 2 - 1  # files finish in waves of one per decoder: kill once about half are stored
    victim = Background(index_command(archive_folder, urls["killed"]), env, tmp_path / "killed.log")
    try:
        wait_until(lambda: stored(got) >= target or not victim.running, 180, f"{target} stored files")
        done_at_kill = stored(got)
        where = placement(cluster, [a for a in new_actors(cluster, before) if a["class_name"] in ARCHIVE_STAGES])
        node = cluster.worker(where["ExtractorActor"][0])
        killed_at = time.monotonic()
        pids = node.kill()
        report(
            f"{done_at_kill}/{files} files stored after {killed_at - victim.started:.1f} s: SIGKILL to {node.name} "
            f"({node.ip}: raylet {pids['raylet']}, {len(pids['workers'])} raylet children); actors by node then: "
            f"{where}"
        )
        assert 0 < done_at_kill < files, f"the node was to be lost halfway: {done_at_kill}/{files} files done"
        patience = 20 + 2 * seconds  # twice the undisturbed run's time (half the CPUs are left), and then some
        rc = victim.wait(patience)
        hung = rc is None
        if hung:
            rc, ctrl_c = victim.interrupt()
            report(
                f"the disturbed run HUNG: still running {patience:.0f} s after the kill; Ctrl-C (SIGINT) "
                + ("ended it" if ctrl_c else "printed its last line but did not end it within 10 s: SIGKILL")
                + f" (exit {rc})"
            )
    finally:
        victim.stop()
    done = stored(got)
    report(
        f"disturbed run ended (exit {rc}) {time.monotonic() - victim.started:.1f} s after it started, "
        f"{done}/{files} files stored; its last lines: {victim.last_lines()}"
    )
    assert not hung, (
        f"`vigil index --ray` hung after losing {node.name}, the node of its extractor; actors by node at the kill: "
        f"{where}; its last lines: {victim.last_lines()}"
    )
    assert rc == 0 and done == files, (
        f"`vigil index --ray` did not survive losing {node.name} (exit {rc}, {done}/{files} files stored): "
        f"{victim.last_lines()}"
    )
    assert_same_outcome(got, expected)


def test_archive_job_killed_halfway_resumes_and_ends_as_undisturbed(
    cluster, report, archive_folder, tmp_path, request, monkeypatch
):
    """`vigil index FOLDER --ray` SIGKILLed once about half the files are stored, then run again: the files
    stored before the kill are not indexed again (reported unchanged), the rest are (a file half done is redone
    whole), and the store ends as the undisturbed run's."""
    urls = store_urls("local", tmp_path, request, monkeypatch)
    env = cluster.client_env()
    files = len(list(archive_folder.glob("*.mp4")))
    steady, _ = run_vigil(index_command(archive_folder, urls["steady"]), env)
    assert steady.returncode == 0, output(steady)

    got = open_store(urls["killed"])
    target = files // 2 - 1
    victim = Background(index_command(archive_folder, urls["killed"]), env, tmp_path / "killed.log")
    try:
        wait_until(lambda: stored(got) >= target or not victim.running, 180, f"{target} stored files")
        victim.process.kill()
        victim.process.wait(timeout=30)
    finally:
        victim.stop()
    done_at_kill = stored(got)
    report(f"`vigil index --ray` SIGKILLed with {done_at_kill}/{files} files stored")
    assert 0 < done_at_kill < files, f"the job was to be killed halfway: {done_at_kill}/{files} files stored"

    rerun, seconds = run_vigil(index_command(archive_folder, urls["killed"]), env)
    report(f"the re-run: {seconds:.1f} s: {rerun.stdout.strip()}")
    assert rerun.returncode == 0, output(rerun)
    assert f"indexed {files - done_at_kill} file(s)" in rerun.stdout, rerun.stdout
    assert f"{done_at_kill} unchanged" in rerun.stdout, rerun.stdout
    assert_same_outcome(got, open_store(urls["steady"]))


def stored(store) -> int:
    """Files whose record is in the store: indexed completely."""
    return len(list(store.list("sources/")))
