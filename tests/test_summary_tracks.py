"""A summary of a source `vigil track` has tracked: its track events on the timeline and a section of its tracks,
in summary.json and on the page; an untracked source's summary has neither."""

import pytest

from pipeline.config import load_config
from pipeline.storage.layout import file_source_id, tracks_key
from pipeline.storage.store import LocalStore
from pipeline.summaries import summarize_file, validate_summary
from pipeline.summaries.timecode import format_time
from tests.test_track_video import events_of, footage, track  # noqa: F401  (footage: a fixture)


@pytest.fixture(scope="module")
def config(vigil_cache):
    return load_config(None, {"models": "tiny", "precision": "fp32", "device": "cpu", "batch_size": 8})


def test_a_tracked_sources_summary_shows_its_tracks_and_their_events(footage, tmp_path, config, tiny_encoders):  # noqa: F811
    video, crossings, track_config = footage
    store = LocalStore(tmp_path / "store")
    sid = file_source_id(str(video))

    untracked = summarize_file(video, config, store, encoders=tiny_encoders).summary
    validate_summary(untracked)
    assert "tracks" not in untracked and all("track" not in event for event in untracked["events"])

    assert track(video, tmp_path / "store", track_config) == 0
    result = summarize_file(video, config, store, encoders=tiny_encoders)
    summary = result.summary
    validate_summary(summary)
    document = store.get_json(tracks_key(sid))
    assert summary["tracks"]["key"] == tracks_key(sid) and summary["tracks"]["untrained"] is True
    assert summary["tracks"]["classes"] == {"moving object": 2}
    assert summary["tracks"]["tracks"] == [
        {
            "id": tracked["id"],
            "class_name": "moving object",
            "first_pts": round(tracked["first_pts"], 3),
            "last_pts": round(tracked["last_pts"], 3),
            "thumbnail": tracked["thumbnail"],
        }
        for tracked in document["tracks"]
    ]

    # each track event at its pts, in the timeline, with what its track did
    stored = events_of(store, sid)["events"]
    timeline = [event for event in summary["events"] if event["kind"] == "track"]
    assert len(timeline) == len(stored) == 6
    for event in stored:
        assert {
            "t_start": round(event["pts"], 3),
            "t_end": round(event["pts"], 3),
            "label": {
                "enter": f"moving object entered {event['name']}",
                "leave": f"moving object left {event['name']}",
                "cross": f"moving object crossed {event['name']} right to left",
            }[event["kind"]],
            "kind": "track",
            "score": None,
            "id": None,
            "track": {
                "id": event["track_id"],
                "class_name": "moving object",
                "kind": event["kind"],
                "name": event["name"],
                "direction": event["direction"],
                "duration": None if event["duration"] is None else round(event["duration"], 3),
            },
        } in timeline
    assert ", 2 tracks" in summary["text"].splitlines()[1] and "'moving object entered left_half'" in summary["text"]

    page = store.get(result.keys["report"]).decode()
    assert "<h2>Tracks</h2>" in page and "2 moving objects" in page
    for event in stored:
        if event["kind"] == "enter":
            line = f"<td>{format_time(event['pts'])}</td><td>track</td><td>moving object #{event['track_id']} entered"
            assert line in page
        if event["kind"] == "leave":
            assert f"moving object #{event['track_id']} left left_half after {event['duration']:.0f} s" in page
    assert "crossed middle right to left" in page
    for tracked in document["tracks"]:
        assert f'<img alt="track {tracked["id"]}" src="data:image/jpeg;base64,' in page
        span = f"{format_time(tracked['first_pts'])}-{format_time(tracked['last_pts'])}"
        assert f"<td>#{tracked['id']}</td><td>moving object</td><td>{span}</td>" in page

    # a range holding the first crossing only: its track and events alone
    first = summarize_file(video, config, store, encoders=tiny_encoders, start=0.0, end=crossings[0][1] + 1).summary
    validate_summary(first)
    assert [t["id"] for t in first["tracks"]["tracks"]] == [1] and first["tracks"]["classes"] == {"moving object": 1}
    assert {e["track"]["id"] for e in first["events"]} == {1} and len(first["events"]) == 3
