"""The live monitor's actor graph: standing queries over a stream, alerts, checkpoints and replays."""

import pytest

from jobs.monitor import run_monitor
from pipeline.config import load_config
from pipeline.decode import decode_frames
from pipeline.index import ClipIndex
from pipeline.match import StandingQuery
from pipeline.query_store import save_query
from pipeline.sink import stored_alerts
from pipeline.store import LocalStore


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
    query = StandingQuery(id="lobby", image="lobby.jpg", calibration="raw", threshold=0.9, min_duration=1.0, cooldown=5.0)
    save_query(store, query, lobby_frame(path).image)


def test_embedded_monitor_alerts_once_for_the_planted_scene(tmp_path, ray_local, scene_video):
    path, bounds = scene_video
    store = LocalStore(tmp_path)
    add_lobby_query(store, path)
    report = run_monitor(monitor_config(tmp_path, [{"camera": "door", "url": str(path)}]))
    assert report.frames == 40
    alerts = stored_alerts(store)
    assert [(a["query_id"], a["camera"], a["status"]) for a in alerts] == [("lobby", "door", "closed")]
    alert = alerts[0]
    assert abs(alert["start"] - 12.0) <= 0.5 and abs(alert["end"] - 15.5) <= 0.5
    assert store.exists(alert["keyframe_key"]) and alert["untrained"] is True
    # the stream's clip windows went to the index too, so `vigil search` finds live footage
    assert {row.source for row in ClipIndex.load(store).rows} == {"door"}
    assert len(ClipIndex.load(store)) == 10


def test_a_restarted_monitor_resumes_from_its_checkpoint_without_duplicates(tmp_path, ray_local, scene_video):
    path, _ = scene_video
    store = LocalStore(tmp_path)
    add_lobby_query(store, path)
    config = monitor_config(tmp_path, [{"camera": "door", "url": str(path)}], batch_frames=4, checkpoint_every=0.001)
    first = run_monitor(config, max_frames=28)  # stops inside the planted event
    assert first.frames == 28
    assert [a["status"] for a in stored_alerts(store)] == ["open"]
    second = run_monitor(config)
    assert second.frames == 40  # the file is read again; frames already analysed are skipped
    alerts = stored_alerts(store)
    assert [(a["query_id"], a["status"]) for a in alerts] == [("lobby", "closed")]
    assert abs(alerts[0]["start"] - 12.0) <= 0.5
    assert len(ClipIndex.load(store)) == 10
