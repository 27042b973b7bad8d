"""The live monitor's actor graph: standing queries over a stream, alerts, checkpoints and replays."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray
import yaml

from actors.stages import RayCalls, cpu_shortfall, make_monitor_stages, threads_per_extractor
from jobs.cli import main
from jobs.monitor import drive, run_monitor
from pipeline.config import load_config
from pipeline.live.queries import StandingQuery, save_query
from pipeline.live.sink import alert_records
from pipeline.media.decode import decode_frames
from pipeline.media.synthetic import write_static_camera_video
from pipeline.search.index import ClipIndex
from pipeline.storage.clips import read_clip
from pipeline.storage.layout import (
    camera_source_id,
    clips_prefix,
    live_track_events_span,
    monitor_checkpoint_key,
    monitor_shard_checkpoint_key,
    summary_prefix,
    tracks_prefix,
)
from pipeline.storage.store import LocalStore
from pipeline.summaries import validate_summary
from pipeline.tracking import stored_sources

VIGIL = str(Path(sys.executable).parent / "vigil")


def lobby_frame(path):
    """A frame of the 'lobby' scene, planted at 12-16 s of the scene video."""
    return next(f for f in decode_frames(path, fps=25, short_side=None, keyframes_only=False) if f.pts >= 13.9)


def monitor_config(store, sources, **monitor):
    return load_config(
        None,
        {
            "store": str(store),
            "models": "tiny",
            "precision": "fp32",
            "device": "cpu",
            "decode.fps": 2.0,
            "monitor.sources": sources,
            **{f"monitor.{k}": v for k, v in monitor.items()},
        },
    )


def add_lobby_query(store, path):
    query = StandingQuery(
        id="lobby", image="lobby.jpg", calibration="raw", threshold=0.9, min_duration=1.0, cooldown=5.0
    )
    save_query(store, query, lobby_frame(path).image)


def test_embedded_monitor_alerts_once_for_the_planted_scene(tmp_path, ray_local, scene_video):
    path, bounds = scene_video
    store = LocalStore(tmp_path)
    add_lobby_query(store, path)
    report = run_monitor(monitor_config(tmp_path, [{"camera": "door", "url": str(path)}]))
    assert report.frames == 40
    alerts = alert_records(store)
    assert [(a["query_id"], a["camera"], a["status"]) for a in alerts] == [("lobby", "door", "closed")]
    alert = alerts[0]
    assert abs(alert["start"] - 12.0) <= 0.5 and abs(alert["end"] - 15.5) <= 0.5
    assert store.exists(alert["keyframe_key"]) and alert["untrained"] is True
    # the stream's clip windows went to the index too, so `vigil search` finds live footage
    assert {row.source for row in ClipIndex.load(store).rows} == {"door"}
    assert len(ClipIndex.load(store)) == 10


def test_two_extractors_give_the_same_alerts_and_clips_as_one(tmp_path, ray_local, scene_video):
    path, _ = scene_video
    results = {}
    for extractors in (1, 2):
        store = LocalStore(tmp_path / str(extractors))
        add_lobby_query(store, path)
        config = monitor_config(
            tmp_path / str(extractors), [{"camera": "door", "url": str(path)}], extractors=extractors, batch_frames=3
        )
        report = run_monitor(config)
        assert report.frames == 40 and report.batches >= 14
        rows = ClipIndex.load(store).rows
        results[extractors] = (
            [(a["id"], a["status"], a["start"], a["end"], a["peak_score"]) for a in alert_records(store)],
            [(row.source, row.start, row.end) for row in rows],
        )
    alerts, clips = results[2]
    assert [status for _, status, *_ in alerts] == ["closed"] and abs(alerts[0][2] - 12.0) <= 0.5
    assert len(clips) == 10
    assert results[2] == results[1]


def test_a_restarted_monitor_resumes_from_its_checkpoint_without_duplicates(tmp_path, ray_local, scene_video):
    path, _ = scene_video
    store = LocalStore(tmp_path)
    add_lobby_query(store, path)
    config = monitor_config(tmp_path, [{"camera": "door", "url": str(path)}], batch_frames=4, checkpoint_every=0.001)
    first = run_monitor(config, max_frames=28)  # stops inside the planted event
    assert first.frames == 28
    assert [a["status"] for a in alert_records(store)] == ["open"]
    second = run_monitor(config)
    assert second.frames == 40  # the file is read again; frames already analysed are skipped
    alerts = alert_records(store)
    assert [(a["query_id"], a["status"]) for a in alerts] == [("lobby", "closed")]
    assert abs(alerts[0]["start"] - 12.0) <= 0.5
    assert len(ClipIndex.load(store)) == 10


def test_rolling_summaries_cover_each_period_once(tmp_path, ray_local, scene_video):
    path, _ = scene_video
    store = LocalStore(tmp_path)
    config = monitor_config(
        tmp_path, [{"camera": "door", "url": str(path)}], summary_every=10, batch_frames=8, checkpoint_every=0.001
    )
    first = run_monitor(config)
    assert first.frames == 40 and first.summaries == 2
    for start, end in ((0, 10), (10, 20)):  # the second period ends with the file: summarized when it ends
        summary = store.get_json(f"{summary_prefix(camera_source_id('door'), start, end)}/summary.json")
        validate_summary(summary)
        assert summary["source"]["kind"] == "camera" and summary["features"]["kind"] == "clips"
        assert (summary["range"]["start"], summary["range"]["end"]) == (start, end)
    written = {key: (tmp_path / key).stat().st_mtime_ns for key in store.list("summaries/")}
    assert {key.split("/")[2] for key in written if "/range-" in key} == {
        summary_prefix(camera_source_id("door"), start, end).split("/")[2] for start, end in ((0, 10), (10, 20))
    }

    second = run_monitor(config)  # a replay of the whole file: every period is already summarized
    assert second.frames == 40 and second.summaries == 0
    assert {key: (tmp_path / key).stat().st_mtime_ns for key in store.list("summaries/")} == written


def kafka_config(tmp_path, broker, run, frames="frames-monitor", **monitor):
    """A config file for a Kafka-mode monitor of `frames` writing to its own store and alerts topic."""
    path = tmp_path / f"{run}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "store": str(tmp_path / run),
                "models": "tiny",
                "precision": "fp32",
                "device": "cpu",
                "decode": {"fps": 2.0},
                "kafka": {
                    "brokers": broker.brokers,
                    "group": f"monitor-{run}",
                    "topics": {"frames": frames, "alerts": f"alerts-{run}", "dlq": "dlq-monitor"},
                },
                "monitor": {"name": run, "batch_frames": 2, "checkpoint_every": 0.05, **monitor},
            }
        )
    )
    return path


def alert_messages(broker, topic, count):
    from tests.test_kafka_io import read_records

    return [json.loads(record.value) for record in read_records(broker, topic, count)]


def test_kafka_monitor_survives_sigkill_with_the_same_alerts(tmp_path, ray_local, scene_video, kafka_broker):
    path, _ = scene_video
    assert (
        main(
            [
                "ingest",
                str(path),
                "--camera",
                "door",
                "--brokers",
                kafka_broker.brokers,
                "--topic",
                "frames-monitor",
                "--fps",
                "2",
            ]
        )
        == 0
    )
    for run in ("steady", "killed"):
        add_lobby_query(LocalStore(tmp_path / run), path)

    steady = run_monitor(load_config(kafka_config(tmp_path, kafka_broker, "steady")), idle_exit=3.0)
    assert steady.frames == 40
    expected = alert_records(LocalStore(tmp_path / "steady"))
    assert [(a["query_id"], a["camera"]) for a in expected] == [("lobby", "door")]
    assert abs(expected[0]["start"] - 12.0) <= 0.5
    lifecycle = {(expected[0]["id"], "open"), (expected[0]["id"], "closed")}
    assert {(m["id"], m["status"]) for m in alert_messages(kafka_broker, "alerts-steady", 2)} == lifecycle

    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    command = [VIGIL, "monitor", "--config", str(kafka_config(tmp_path, kafka_broker, "killed")), "--idle-exit", "3"]
    checkpoint = tmp_path / "killed" / monitor_checkpoint_key("killed")
    victim = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not _consumed(checkpoint, at_least=10):
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    assert 10 <= _consumed(checkpoint) < 40, "killed mid-stream"

    survivor = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert survivor.returncode == 0, survivor.stdout + survivor.stderr
    assert alert_records(LocalStore(tmp_path / "killed")) == expected
    assert {(m["id"], m["status"]) for m in alert_messages(kafka_broker, "alerts-killed", 2)} == lifecycle


# Four cameras on a two-partition topic: gate and door on partition 0, yard and dock on 1. Of two shards, gate
# and yard are shard 0's, door and dock shard 1's. Camera k sends ten frames at 1 fps, from second 6 + k on: the
# planted lobby scene (12-16 s) among them.
SHARDED_CAMERAS = {"gate": 0, "door": 0, "yard": 1, "dock": 1}
SHARDED_TOPIC = "frames-sharded"


@pytest.fixture(scope="module")
def sharded_topic(kafka_broker, scene_video):
    from pipeline.media.kafka_clients import MessageProducer
    from pipeline.media.kafka_messages import frame_message
    from tests.test_kafka_io import create_topic, settings_for

    path, _ = scene_video
    create_topic(kafka_broker, SHARDED_TOPIC, 2)
    frames = list(decode_frames(path, fps=1, short_side=None))
    with MessageProducer(settings_for(kafka_broker)) as producer:
        for i in range(10):
            for k, (camera, partition) in enumerate(SHARDED_CAMERAS.items()):
                producer.send(SHARDED_TOPIC, frame_message(frames[6 + k + i], camera), partition=partition)
        producer.flush()
        assert producer.errors == 0
    return path


def sharded_monitor(tmp_path, broker, path, run, *, decoders, shards, kill=None):
    """A Kafka-mode monitor of the sharded topic, with its own store and group, until idle; `kill(stages)` runs
    in a thread beside it. What it stored (alerts, clips, index rows) and its report."""
    store = LocalStore(tmp_path / run)
    add_lobby_query(store, path)
    config = load_config(
        kafka_config(tmp_path, broker, run, SHARDED_TOPIC, batch_frames=4, decoders=decoders, shards=shards)
    )
    stages = make_monitor_stages(config)
    killer = threading.Thread(target=kill, args=(stages,), daemon=True) if kill else None
    if killer:
        killer.start()
    report = drive(stages, config.monitor, RayCalls(), stop=threading.Event(), idle_exit=3.0)
    if killer:
        killer.join(timeout=60)
    stored = (
        [(a["id"], a["camera"], a["status"], a["start"], a["end"], a["peak_score"]) for a in alert_records(store)],
        sorted(store.list("clips/")),
        sorted((row.source, row.start, row.end, row.recorded, row.keyframe_key) for row in ClipIndex.load(store).rows),
    )
    return stored, report


@pytest.fixture(scope="module")
def one_decoder_one_shard(tmp_path_factory, ray_local, kafka_broker, sharded_topic):
    """The sharded topic through one decoder and one shard."""
    stored, report = sharded_monitor(
        tmp_path_factory.mktemp("sharded"), kafka_broker, sharded_topic, "one", decoders=1, shards=1
    )
    alerts, clips, rows = stored
    assert report.frames == 40 and {camera for _, camera, *_ in alerts} == set(SHARDED_CAMERAS)
    assert len(clips) == len(rows) >= 4 * 4
    return stored


def test_two_decoders_and_two_shards_store_what_one_of_each_does(
    tmp_path, ray_local, kafka_broker, sharded_topic, one_decoder_one_shard
):
    stored, report = sharded_monitor(tmp_path, kafka_broker, sharded_topic, "two", decoders=2, shards=2)
    assert report.frames == 40 and report.recoveries == 0
    assert stored == one_decoder_one_shard
    store = LocalStore(tmp_path / "two")
    checkpoints = [store.get_json(monitor_shard_checkpoint_key("two", shard, 2)) for shard in range(2)]
    assert [sorted(c["analyzer"]["last_pts"]) for c in checkpoints] == [["gate", "yard"], ["dock", "door"]]
    assert all(c["offsets"] == {f"{SHARDED_TOPIC}:0": 20, f"{SHARDED_TOPIC}:1": 20} for c in checkpoints)


def test_an_analyzer_shard_and_a_decoder_killed_mid_stream_change_nothing_stored(
    tmp_path, ray_local, kafka_broker, sharded_topic, one_decoder_one_shard, capsys
):
    def kill(stages):
        """The second analyzer shard once its checkpoint covers a quarter of the frames, then the first decoder
        once one covers half."""
        checkpoint = tmp_path / "killed" / monitor_shard_checkpoint_key("killed", 1, 2)
        for victim, frames in ((stages.analyzers[1], 10), (stages.decoders[0], 20)):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not _consumed(checkpoint, at_least=frames):
                time.sleep(0.01)
            ray_local.kill(victim, no_restart=False)

    stored, report = sharded_monitor(tmp_path, kafka_broker, sharded_topic, "killed", decoders=2, shards=2, kill=kill)
    assert report.recoveries == 2 and report.recovery_seconds > 0
    assert stored == one_decoder_one_shard
    recovered = [line for line in capsys.readouterr().err.splitlines() if "recovered" in line]
    assert len(recovered) == 2 and all(line.startswith("monitor killed: recovered in ") for line in recovered)


def _consumed(checkpoint, at_least=None):
    """Frames (offsets) the checkpoint covers; 0 before the first one."""
    try:
        offsets = json.loads(checkpoint.read_text())["offsets"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0
    total = sum(offsets.values())
    return total >= at_least if at_least is not None else total


def test_cpu_extractors_share_the_smallest_nodes_cores():
    assert threads_per_extractor([8], 1) == 8  # one extractor: every core
    assert threads_per_extractor([2], 2) == 1  # one one-thread extractor per core
    assert threads_per_extractor([16, 16, 8], 3) == 8  # spread one per node: the smallest node decides
    assert threads_per_extractor([16, 16], 4) == 8
    assert threads_per_extractor([2], 5) == 1  # never below one thread


def test_more_slot_holding_actors_than_cpu_slots_are_named():
    assert cpu_shortfall(2, 0, [2]) is None
    assert cpu_shortfall(1, 1, [1, 1]) is None
    message = cpu_shortfall(2, 1, [2])
    assert "need 3 CPU slots" in message and "has 2" in message and "monitor.extractors" in message


def test_a_tracking_monitor_alerts_once_per_object_and_keeps_its_track_ids_across_a_restart(tmp_path, ray_local):
    """`track.live`: a tracker actor beside the analyzer, its detector at twice the models' rate; a standing query on
    tracks alerts once per block crossing a line, and a restart between the two crossings goes on with the next
    track id."""
    video = tmp_path / "gate.mp4"
    crossings = write_static_camera_video(video, 40, size=(240, 320), fps=10, seed=0)
    store = LocalStore(tmp_path / "store")
    save_query(store, StandingQuery.from_json({"id": "crossing", "track": {"event": "cross", "where": "middle"}}))
    config = load_config(
        None,
        {
            "store": str(tmp_path / "store"),
            "models": "tiny",
            "precision": "fp32",
            "device": "cpu",
            "decode.fps": 2.5,  # the models' rate; the tracker's detector takes twice as many frames
            "detect.rate": 5.0,
            "decode.short_side": 0,  # the line is drawn in the source's pixels
            "track.live": True,
            "track.reid_frames": 10,
            "detect.warmup": 10,
            "events.lines": [{"name": "middle", "points": [[120, 0], [120, 320]], "direction": "both"}],
            "monitor.sources": [{"camera": "gate", "url": str(video)}],
            "monitor.batch_frames": 5,
            "monitor.checkpoint_every": 0.001,
        },
    )
    run_monitor(config, max_frames=int((crossings[0][1] + 3) * 5))  # stops between the crossings
    assert [(a["query_id"], a["track"]["id"]) for a in alert_records(store)] == [("crossing", 1)]
    state = store.get_json(monitor_shard_checkpoint_key(config.monitor.name, 0, 1))["analyzer"]
    assert state["tracking"]["gate"]["tracker"]["next_id"] == 2 and state["track_alerts"]["alerted"]

    run_monitor(config)  # the file again from the start: frames already tracked are skipped
    alerts = sorted(alert_records(store), key=lambda alert: alert["track"]["id"])
    assert [(a["query_id"], a["track"]["id"], a["status"]) for a in alerts] == [
        ("crossing", 1, "closed"),
        ("crossing", 2, "closed"),
    ]
    for alert, (start, end) in zip(alerts, crossings):
        assert start <= alert["start"] <= end and store.exists(alert["keyframe_key"])
        assert alert["track"]["kind"] == "cross" and alert["untrained"] is True
    stored = [key for key in store.list(tracks_prefix(camera_source_id("gate"))) if live_track_events_span(key)]
    events = [event for key in stored for event in store.get_json(key)]
    assert {(e["track_id"], e["kind"]) for e in events} == {(1, "cross"), (2, "cross")}
    # both tracks ended before the file did: the track index has them, with the appearance of their crops
    (indexed,) = stored_sources(store)
    assert (indexed.source, [track.track_id for track in indexed.tracks]) == ("gate", [1, 2])
    assert indexed.vectors.shape[0] == 2 and all(store.exists(track.thumbnail) for track in indexed.tracks)
    # the clip windows (2 s) hold the models' frames alone: 5 of them, at 2.5 a second
    clips = [read_clip(store, key) for key in store.list(clips_prefix(camera_source_id("gate")))]
    assert clips and max(clip.frame_count for clip in clips) == 5


def test_a_trackers_crops_run_on_an_extractors_dinov2(ray_local, vigil_cache, tiny_encoders):
    """A tracker actor holds no model: `ExtractorAppearance` sends a batch's crops to an extractor actor, whose
    DINOv2 gives what the same model gives in this process; the null extractor's stand-in vectors too."""
    from actors.extractor import ExtractorActor
    from actors.tracker import ExtractorAppearance
    from pipeline.models.null_encoders import NullEncoders

    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((40, 16), (90, 30), (12, 12))]
    for null, local in ((False, tiny_encoders), (True, NullEncoders.from_models("tiny"))):
        extractor = ExtractorActor.remote("tiny", device="cpu", precision="fp32", batch_size=8, null=null)
        appearance = ExtractorAppearance(extractor, local.ids)
        assert (appearance.model_id, appearance.untrained, appearance.dim) == (
            local.ids.dinov2,
            True,
            local.appearance_dim,
        )
        vectors = appearance.embed_images(crops)
        np.testing.assert_allclose(vectors, local.appearance(crops), atol=1e-5)
        assert vectors.shape == (3, local.appearance_dim)
        ray.kill(extractor)
