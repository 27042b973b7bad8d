"""Faults under the Kafka monitor on a real multi-node Ray cluster (tests/cluster.py): the broker stopped for 10 s
while cameras stream, the S3 server stopped while checkpoints are being written, and SIGTERM. Each disturbed
monitor ends with exactly the alerts, clips, keyframes and index of an undisturbed run of the same frames, and
the consumer group's commits never run ahead of the checkpoint in the store.

As in tests/test_cluster.py (whose fixtures and helpers these tests use), vigil runs as its CLI in subprocesses
joined to the cluster, and every outage is a real server process stopped by its PID. Run by `make test-cluster`
(`pytest --cluster -m cluster`); each test prints its durations and findings.
"""

from __future__ import annotations

import contextlib
import re
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.live.sink import alert_records
from pipeline.media.decode import decode_frames
from pipeline.storage.layout import monitor_checkpoint_key
from pipeline.storage.store import ObjectStore, open_store
from tests import test_cluster
from tests.servers import HttpCamera, start_s3_gateway, start_tansu, wait_until
from tests.test_cluster import (
    Background,
    alert_lifecycle,
    assert_same_outcome,
    ingest,
    output,
    run_vigil,
    write_config,
)
from tests.test_ingest import TopicReader
from tests.test_monitor import add_lobby_query

pytestmark = [pytest.mark.cluster]

# tests/test_cluster.py's fixtures: the session's cluster with every worker node up, and the report of findings.
cluster = test_cluster.cluster
report = test_cluster.report

CAMERAS = ["door", "gate"]
PER_CAMERA = 40  # the scene video's 20 s sampled at 2 fps
FRAMES = PER_CAMERA * len(CAMERAS)
SIGTERM_BOUND = 30.0  # seconds from SIGTERM to the monitor's exit, drained, checkpointed and committed


# ---------------------------------------------------------------- helpers


def monitor_config(folder: Path, broker, store: str, run: str, topic: str, tag: str, **sections) -> Path:
    """Monitor `run` of tests/test_cluster.py's shape (two extractors, batches of two frames, a checkpoint every
    0.2 s) with a consumer group, alerts topic and store of its own; `sections` on top (`kafka` merged)."""
    kafka = {
        "brokers": broker.brokers,
        "group": group(run, tag),
        "topics": {"frames": topic, "alerts": f"alerts-{run}-{tag}", "dlq": f"dlq-{tag}"},
    }
    kafka |= sections.pop("kafka", {})
    monitor = {"name": run, "extractors": 2, "batch_frames": 2, "checkpoint_every": 0.2}
    return write_config(folder / f"{run}.yaml", store=store, kafka=kafka, monitor=monitor, **sections)


def group(run: str, tag: str) -> str:
    return f"faults-{run}-{tag}"


def checkpoint_offsets(store: ObjectStore, name: str) -> dict[str, int]:
    """The offsets ("topic:partition": next offset) monitor `name`'s checkpoint covers; {} before the first."""
    key = monitor_checkpoint_key(name)
    return store.get_json(key)["offsets"] if store.exists(key) else {}


def reported_frames(text: str) -> int:
    """The frames a `vigil monitor` run says it handed to the extractors (its last line on stdout)."""
    found = re.findall(r"^monitor \S+: (\d+) frames", text, re.MULTILINE)
    assert found, f"no report line in the monitor's output:\n{text[-2000:]}"
    return int(found[-1])


class Commits:
    """The offsets a consumer group has committed on a topic ("topic:partition": next offset), asked of the
    broker at each call by a consumer of the group that reads nothing."""

    def __init__(self, broker, group_id: str, topic: str):
        from kafka import KafkaConsumer, TopicPartition

        self.consumer = KafkaConsumer(bootstrap_servers=broker.brokers, group_id=group_id, enable_auto_commit=False)
        partitions: set[int] = set()

        def known() -> bool:
            partitions.update(self.consumer.partitions_for_topic(topic) or ())
            return bool(partitions)

        wait_until(known, 30, f"the partitions of {topic}")
        self.partitions = [TopicPartition(topic, p) for p in sorted(partitions)]

    def __call__(self) -> dict[str, int]:
        found = {f"{tp.topic}:{tp.partition}": self.consumer.committed(tp) for tp in self.partitions}
        return {name: offset for name, offset in found.items() if offset is not None}

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def commits_of():
    """`commits_of(broker, group_id, topic)`: a `Commits`, closed when the test ends."""
    made: list[Commits] = []

    def make(broker, group_id: str, topic: str) -> Commits:
        made.append(Commits(broker, group_id, topic))
        return made[-1]

    yield make
    for made_commits in made:
        made_commits.close()


def ahead(committed: dict[str, int], durable: dict[str, int]) -> dict[str, tuple[int, int]]:
    """The partitions whose commit is beyond the durable checkpoint: (committed, checkpointed)."""
    return {name: (offset, durable.get(name, 0)) for name, offset in committed.items() if offset > durable.get(name, 0)}


@pytest.fixture(scope="module")
def s3_env(s3_server):
    """This process and the vigil commands it starts reach the session's S3 server (VIGIL_S3_ENDPOINT and the
    credentials in the environment); the cluster's nodes have them from the start."""
    with pytest.MonkeyPatch.context() as patch:
        for variable, value in s3_server.env().items():
            patch.setenv(variable, value)
        yield s3_server


@dataclass
class Recorded:
    """Two cameras' frames in a topic of the session's broker, and the undisturbed monitor's run on them."""

    topic: str
    tag: str
    expected: ObjectStore
    seconds: float

    def store(self, run: str, path: Path) -> tuple[str, ObjectStore]:
        """Run `run`'s store (a prefix of this module's bucket) with the lobby query the undisturbed run had."""
        url = f"s3://faults-{self.tag}/{run}"
        store = open_store(url)
        add_lobby_query(store, path)
        return url, store


@pytest.fixture(scope="module")
def recorded(ray_cluster, kafka_broker, s3_env, scene_video, tmp_path_factory) -> Recorded:
    """The frames the S3 and SIGTERM tests disturb the monitor on, and the outcome of an undisturbed run."""
    ray_cluster.ensure_up()
    path, _ = scene_video
    tag = uuid.uuid4().hex[:8]
    topic = f"faults-frames-{tag}"
    ingest(kafka_broker, path, topic, CAMERAS)
    steady = Recorded(topic, tag, open_store(f"s3://faults-{tag}/steady"), 0.0)
    url, _ = steady.store("steady", path)
    config = monitor_config(tmp_path_factory.mktemp("steady"), kafka_broker, url, "steady", topic, tag)
    result, steady.seconds = run_vigil(
        ["monitor", "--config", str(config), "--idle-exit", "5"], ray_cluster.client_env()
    )
    assert result.returncode == 0, output(result)
    assert reported_frames(result.stdout) == FRAMES, result.stdout
    assert [(a["query_id"], a["camera"]) for a in alert_records(steady.expected)] == [("lobby", c) for c in CAMERAS]
    return steady


# ---------------------------------------------------------------- 1. the broker stopped for 10 s

BROKER_OUTAGE = 10.0
STREAM_SECONDS = 20.0  # the scene video's length: each camera streams it in real time


@pytest.fixture(scope="module")
def camera_recording(scene_video, tmp_path_factory) -> Path:
    """The scene video as MPEG-TS, the container cameras stream over HTTP (the same H.264 packets)."""
    import av

    source, _ = scene_video
    target = tmp_path_factory.mktemp("camera") / "scenes.ts"
    with av.open(str(source)) as src, av.open(str(target), "w", format="mpegts") as dst:
        video = src.streams.video[0]
        stream = dst.add_stream_from_template(video)
        for packet in src.demux(video):
            if packet.dts is None:  # the demuxer's empty packet at the end
                continue
            packet.stream = stream
            dst.mux(packet)
    return target


def create_topic(broker, topic: str, partitions: int) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=broker.brokers)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()


def test_broker_stopped_for_10_s_while_cameras_stream_loses_nothing(
    cluster, report, s3_env, camera_recording, scene_video, tmp_path
):
    """A durable broker (Tansu on S3 in the session's SeaweedFS), two cameras streaming live over HTTP into it
    (`vigil ingest`, 20 s each) and the monitor consuming as they stream; once the monitor has checkpointed some
    frames the broker is stopped for 10 s and started again on the same port. Both ingests deliver every frame
    exactly once, the monitor checkpoints and commits all of them, and its outcome equals an undisturbed run's
    over the same topic afterwards (the messages carry the cameras' wall-clock times, so the same topic it is)."""
    path, _ = scene_video
    tag = uuid.uuid4().hex[:8]
    topic = f"faults-live-{tag}"
    env = cluster.client_env()
    with contextlib.ExitStack() as cleanup:  # last in, first out: the processes, the cameras, the broker
        broker = start_tansu(tmp_path / "tansu", durable=(s3_env, f"tansu-{tag}"))
        cleanup.callback(broker.stop)
        create_topic(broker, topic, partitions=2)
        stores = {run: f"s3://faults-live-{tag}/{run}" for run in ("steady", "outage")}
        for url in stores.values():
            add_lobby_query(open_store(url), path)
        # The monitor and the ingests (given the same file) reconnect within a second once the broker is back
        # (the default backs off up to 8 s).
        fast = {"kafka": {"backoff_max": 1.0}}
        configs = {run: monitor_config(tmp_path, broker, url, run, topic, tag, **fast) for run, url in stores.items()}
        got = open_store(stores["outage"])

        monitor = Background(["monitor", "--config", str(configs["outage"])], env, tmp_path / "monitor.log")
        cleanup.callback(monitor.stop)
        wait_until(
            lambda: got.exists(monitor_checkpoint_key("outage")) or not monitor.running, 180, "the monitor's start"
        )
        ingests = {}
        for camera in CAMERAS:
            stream = cleanup.enter_context(HttpCamera(camera_recording, STREAM_SECONDS))
            ingests[camera] = Background(
                ["ingest", stream.url, "--camera", camera, "--topic", topic, "--fps", "2"]
                + ["--max-frames", str(PER_CAMERA), "--config", str(configs["outage"])],
                env,
                tmp_path / f"ingest-{camera}.log",
            )
            cleanup.callback(ingests[camera].stop)
        started = time.monotonic()
        wait_until(
            lambda: sum(checkpoint_offsets(got, "outage").values()) > 0 or not monitor.running,
            60,
            "the monitor to checkpoint the first frames",
        )
        at_stop = sum(checkpoint_offsets(got, "outage").values())
        streaming = [camera for camera, ingest_run in ingests.items() if ingest_run.running]
        broker.stop()
        stopped = time.monotonic()
        report(
            f"broker stopped {stopped - started:.1f} s into the streams: the monitor had checkpointed {at_stop} "
            f"frames, {streaming} still streaming"
        )
        assert monitor.running, f"the monitor ended before the outage: {monitor.last_lines(5, 3000)}"
        assert streaming == CAMERAS, "an ingest ended before the outage: it was to stream across it"
        time.sleep(max(0.0, BROKER_OUTAGE - (time.monotonic() - stopped)))
        broker.start()
        restarted = time.monotonic()
        report(f"broker started again after {restarted - stopped:.1f} s")

        for camera, ingest_run in ingests.items():
            rc = ingest_run.wait(60)
            assert rc == 0, f"ingest {camera} (exit {rc}): {ingest_run.last_lines(5, 3000)}"
            assert f"sent {PER_CAMERA} of {PER_CAMERA} sampled frames" in ingest_run.text(), ingest_run.text()
        report(f"both ingests delivered {PER_CAMERA} frames each, {time.monotonic() - started:.1f} s after starting")

        wait_until(
            lambda: sum(checkpoint_offsets(got, "outage").values()) >= FRAMES or not monitor.running,
            120,
            f"the monitor to checkpoint all {FRAMES} frames",
        )
        caught_up = time.monotonic()
        monitor.process.send_signal(signal.SIGTERM)
        rc = monitor.wait(SIGTERM_BOUND)
        report(
            f"the monitor checkpointed all {FRAMES} frames {caught_up - restarted:.1f} s after the broker came back; "
            f"SIGTERM: exit {rc}"
        )
        assert rc == 0, monitor.last_lines(5, 3000)
        assert reported_frames(monitor.text()) == FRAMES, monitor.last_lines(3)
        durable = checkpoint_offsets(got, "outage")
        commits = Commits(broker, group("outage", tag), topic)
        cleanup.callback(commits.close)
        assert commits() == durable, "the monitor's last checkpoint is not what it committed"

        # Every frame on the topic once: none lost, none repeated by the producers' retries.
        reader = TopicReader(broker, topic)
        cleanup.callback(reader.close)
        reader.read(lambda got_frames: len(got_frames) >= FRAMES)
        reader.read(lambda _: False, timeout=1.0)  # and nothing more
        sampled = [frame.pts for frame in decode_frames(path, fps=2.0, short_side=120)]
        for camera in CAMERAS:
            pts = sorted(frame.pts for frame in reader.frames if frame.camera == camera)
            assert pts == sampled, f"{camera}: {len(pts)} frames on the topic, not each of the {len(sampled)} once"

        steady, seconds = run_vigil(["monitor", "--config", str(configs["steady"]), "--idle-exit", "5"], env)
        report(f"undisturbed run over the same topic: {seconds:.1f} s including 5 s idle exit")
        assert steady.returncode == 0, output(steady)
        assert reported_frames(steady.stdout) == FRAMES, steady.stdout
        expected = open_store(stores["steady"])
        assert [(a["query_id"], a["camera"]) for a in alert_records(expected)] == [("lobby", c) for c in CAMERAS]
        assert_same_outcome(got, expected)
        lifecycle = alert_lifecycle(broker, f"alerts-steady-{tag}", 2 * len(CAMERAS))
        assert len(lifecycle) == 2 * len(CAMERAS), lifecycle  # each camera's alert: open, then closed
        assert alert_lifecycle(broker, f"alerts-outage-{tag}", 2 * len(CAMERAS)) == lifecycle


# ---------------------------------------------------------------- 2. S3 stopped while checkpoints are written

S3_OUTAGE = 6.0  # seconds, when the store's retries outlast it
# The monitor's store settings: retried for up to a minute, every half second at most once the server is back;
# or given up after three attempts in 0.3 s, so that the outage outlasts the retries.
RETRIES = {
    "within the store's retries": {"attempts": 100, "backoff": 0.1, "backoff_max": 0.5, "deadline": 60.0},
    "beyond the store's retries": {"attempts": 3, "backoff": 0.1, "backoff_max": 0.2, "deadline": 5.0},
}


@pytest.fixture
def gateway(s3_env, tmp_path):
    """An S3 server of the test's own over the session SeaweedFS's storage (`start_s3_gateway`), stopped at the end."""
    server = start_s3_gateway(tmp_path / "gateway", s3_env)
    yield server
    server.stop()


@pytest.mark.parametrize("outage", list(RETRIES))
def test_s3_stopped_during_checkpoints_commits_nothing_not_durable(
    cluster, report, recorded, kafka_broker, gateway, commits_of, scene_video, tmp_path, outage
):
    """The monitor reaches its store through an S3 server of its own (`weed s3` over the session SeaweedFS's
    filer), which is stopped once the monitor has committed: while it is away nothing becomes durable, and at
    every moment what the consumer group has committed is within the checkpoint in the store (read through the
    session's S3 server). Within the store's retries the monitor rides the outage out; beyond them it ends with
    a one-line error, and a restart once S3 is back resumes from the checkpoint. Either way the outcome is the
    undisturbed run's."""
    path, _ = scene_video
    report(f"undisturbed run: {recorded.seconds:.1f} s including 5 s idle exit")
    rides_out = outage == "within the store's retries"
    run = "s3-rides-out" if rides_out else "s3-gives-up"
    url, store = recorded.store(run, path)
    # The endpoint as a deployment gives it (the environment comes before the config file).
    env = cluster.client_env(VIGIL_S3_ENDPOINT=gateway.endpoint)
    config = monitor_config(tmp_path, kafka_broker, url, run, recorded.topic, recorded.tag, s3=RETRIES[outage])
    args = ["monitor", "--config", str(config), "--idle-exit", "5"]
    commits = commits_of(kafka_broker, group(run, recorded.tag), recorded.topic)
    monitor = Background(args, env, tmp_path / "monitor.log")
    samples: list[tuple[dict, dict]] = []  # (committed, durable) while S3 is away, in that order
    try:
        wait_until(lambda: sum(commits().values()) > 0 or not monitor.running, 180, "a first commit")
        assert monitor.running, monitor.last_lines(5, 3000)
        gateway.stop()  # the process is gone: connections are refused
        stopped = time.monotonic()
        at_stop = checkpoint_offsets(store, run)
        report(
            f"S3 server stopped {stopped - monitor.started:.1f} s after the monitor started, its checkpoint then "
            f"covering {sum(at_stop.values())}/{FRAMES} frames"
        )
        while (time.monotonic() - stopped < S3_OUTAGE) if rides_out else monitor.running:
            samples.append((commits(), checkpoint_offsets(store, run)))
            assert time.monotonic() - stopped < 60, "the monitor neither ended nor gave up within 60 s of the outage"
            time.sleep(0.1)
        samples.append((commits(), checkpoint_offsets(store, run)))
        gave_up = None if rides_out else monitor.wait(0)
        gateway.start()
        report(f"S3 server started again after {time.monotonic() - stopped:.1f} s; {len(samples)} samples taken")
        rc = monitor.wait(120) if rides_out else gave_up
    finally:
        monitor.stop()
    assert 0 < sum(at_stop.values()) < FRAMES, "the outage was to come mid-stream"
    assert not [ahead(c, d) for c, d in samples if ahead(c, d)], "offsets committed beyond the durable checkpoint"
    assert all(d == at_stop for _, d in samples), "a checkpoint became durable while S3 was away"
    if rides_out:
        assert rc == 0, monitor.last_lines(5, 3000)
        assert reported_frames(monitor.text()) == FRAMES, monitor.last_lines(3)  # went on: nothing replayed
    else:
        errors = [line for line in monitor.text().splitlines() if line.startswith("vigil monitor: error:")]
        report(f"the monitor gave up (exit {rc}): {errors}")
        assert rc == 2 and len(errors) == 1 and "Traceback" not in monitor.text(), monitor.last_lines(5, 3000)
        assert gateway.endpoint in errors[0] and "unreachable" in errors[0], errors[0]
        restart, seconds = run_vigil(args, env)
        report(f"restarted once S3 was back: {seconds:.1f} s including 5 s idle exit (exit {restart.returncode})")
        assert restart.returncode == 0, output(restart)
        assert reported_frames(restart.stdout) == FRAMES - sum(at_stop.values()), restart.stdout
    durable = checkpoint_offsets(store, run)
    assert sum(durable.values()) == FRAMES and commits() == durable
    assert_same_outcome(store, recorded.expected)


# ---------------------------------------------------------------- 3. SIGTERM


def test_sigterm_drains_checkpoints_and_commits_and_a_restart_redoes_nothing(
    cluster, report, recorded, kafka_broker, s3_env, commits_of, scene_video, tmp_path
):
    """SIGTERM to `vigil monitor` once it has checkpointed: it exits 0 within SIGTERM_BOUND seconds, its last
    checkpoint covering every frame it handed over and its group having committed exactly that. A restart hands
    over only the frames after that checkpoint and ends with the undisturbed run's outcome."""
    path, _ = scene_video
    report(f"undisturbed run: {recorded.seconds:.1f} s including 5 s idle exit")
    url, store = recorded.store("sigterm", path)
    env = cluster.client_env()
    config = monitor_config(tmp_path, kafka_broker, url, "sigterm", recorded.topic, recorded.tag)
    args = ["monitor", "--config", str(config), "--idle-exit", "5"]
    monitor = Background(args, env, tmp_path / "monitor.log")
    try:
        wait_until(
            lambda: sum(checkpoint_offsets(store, "sigterm").values()) > 0 or not monitor.running,
            180,
            "a first checkpoint",
        )
        monitor.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        rc = monitor.wait(SIGTERM_BOUND)
        took = time.monotonic() - signalled
    finally:
        monitor.stop()
    report(f"SIGTERM {signalled - monitor.started:.1f} s after the start: exit {rc} after {took:.1f} s")
    assert rc == 0, f"not ended (0) within {SIGTERM_BOUND:.0f} s of SIGTERM: exit {rc}; {monitor.last_lines(5, 3000)}"
    handed = reported_frames(monitor.text())
    durable = checkpoint_offsets(store, "sigterm")
    commits = commits_of(kafka_broker, group("sigterm", recorded.tag), recorded.topic)
    committed = commits()
    report(f"it had handed over {handed}/{FRAMES} frames; checkpointed {durable}; committed {committed}")
    assert 0 < handed < FRAMES, "SIGTERM was to come mid-stream"
    assert sum(durable.values()) == handed, "the last checkpoint does not cover every frame handed over"
    assert committed == durable, "what was committed is not the last checkpoint"

    restart, seconds = run_vigil(args, env)
    redone = reported_frames(restart.stdout)
    report(f"restart: {seconds:.1f} s including 5 s idle exit, {redone} frames handed over (exit {restart.returncode})")
    assert restart.returncode == 0, output(restart)
    assert redone == FRAMES - handed, "the restart did not go on from the last checkpoint"
    durable = checkpoint_offsets(store, "sigterm")
    assert sum(durable.values()) == FRAMES and commits() == durable
    assert_same_outcome(store, recorded.expected)
