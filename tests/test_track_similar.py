"""The same object across cameras and time: `vigil tracks` (list, `--similar SOURCE#ID`) and
`vigil search --image CROP --tracks` over a store of two generated videos tracked by `vigil track` (the footage and
settings of test_track_video: the motion detector and the tiny random DINOv2)."""

from __future__ import annotations

import base64
import json
import shutil

import numpy as np
import pytest

from jobs.cli import main
from pipeline.media.synthetic import write_static_camera_video
from pipeline.records import UNTRAINED_NOTE
from pipeline.storage.codecs import decode_image
from pipeline.storage.layout import camera_source_id, file_source_id, tracks_key
from pipeline.storage.store import LocalStore
from pipeline.tracking import TrackIndex, TrackSearchError, decode_appearance
from tests.test_track_video import SECONDS, SIZE, WRITTEN_FPS, footage, track  # noqa: F401  (footage: a fixture)

CAMERA = "lobby"  # the second video is tracked as this camera

NO_TRACKS = "no tracks in {empty}: run `vigil track VIDEO`, or a monitor with track.live, first"


@pytest.fixture(scope="module")
def tracked_store(footage, tmp_path_factory, vigil_cache):  # noqa: F811
    """A store with the footage's video tracked as a file, and a second video (another scene) as a camera."""
    video, _, config = footage
    folder = tmp_path_factory.mktemp("track-similar")
    second = folder / "lobby.mp4"
    write_static_camera_video(second, SECONDS, size=SIZE, fps=WRITTEN_FPS, seed=1)
    store = folder / "store"
    assert track(video, store, config) == 0
    assert track(second, store, config, "--camera", CAMERA) == 0
    return store, video


def stored_tracks(store: LocalStore) -> list[tuple[str, int, np.ndarray]]:
    """(source id, track id, appearance) of every stored track, in source id and track id order."""
    rows = []
    for sid in sorted(key.split("/")[1] for key in store.list("tracks/") if key.endswith("/tracks.json")):
        for entry in store.get_json(tracks_key(sid))["tracks"]:
            rows.append((sid, entry["id"], decode_appearance(entry["appearance"])))
    return rows


def run(capsys, *argv) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_similar_ranks_the_other_tracks_of_every_source_by_cosine(tracked_store, capsys):
    store_path, video = tracked_store
    store = LocalStore(store_path)
    rows = stored_tracks(store)
    assert len(rows) == 4 and {sid for sid, _, _ in rows} == {file_source_id(str(video)), camera_source_id(CAMERA)}
    query_sid = file_source_id(str(video))
    query = next(vector for sid, track_id, vector in rows if (sid, track_id) == (query_sid, 1))
    expected = sorted(
        ((sid, track_id, float(vector @ query)) for sid, track_id, vector in rows if (sid, track_id) != (query_sid, 1)),
        key=lambda row: -row[2],
    )

    status, out, _ = run(capsys, "tracks", "--similar", f"{video}#1", "--store", str(store_path), "--json")
    assert status == 0
    hits = [json.loads(line) for line in out.splitlines()]
    assert [(hit["source_id"], hit["track_id"]) for hit in hits] == [(sid, track_id) for sid, track_id, _ in expected]
    assert [hit["score"] for hit in hits] == pytest.approx([score for _, _, score in expected], abs=1e-5)
    camera_hit = next(hit for hit in hits if hit["source_id"] == camera_source_id(CAMERA))
    assert (camera_hit["source"], camera_hit["class_name"], camera_hit["untrained"]) == (CAMERA, "moving object", True)
    assert camera_hit["thumbnail"] == store.locate(
        store.get_json(tracks_key(camera_hit["source_id"]))["tracks"][0]["thumbnail"]
    )

    # the same track named by its source id; --top-k bounds the hits; text output ranks them under the note
    status, out, _ = run(capsys, "tracks", "--similar", f"{query_sid}#1", "--store", str(store_path), "--top-k", "2")
    lines = out.splitlines()
    assert status == 0 and lines[0] == UNTRAINED_NOTE and len(lines) == 1 + 2 * 2
    assert lines[1].startswith(f"  1. {expected[0][2]:.4f}  #{expected[0][1]} moving object")
    best = next(t for t in store.get_json(tracks_key(expected[0][0]))["tracks"] if t["id"] == expected[0][1])
    assert lines[2] == f"     thumbnail: {store.locate(best['thumbnail'])}"


def test_a_camera_track_is_named_with_camera(tracked_store, capsys):
    store_path, video = tracked_store
    status, out, _ = run(capsys, "tracks", "--similar", f"{CAMERA}#2", "--camera", "--store", str(store_path), "--json")
    hits = [json.loads(line) for line in out.splitlines()]
    assert status == 0 and len(hits) == 3
    assert (camera_source_id(CAMERA), 2) not in {(hit["source_id"], hit["track_id"]) for hit in hits}


def test_tracks_alone_lists_every_source(tracked_store, capsys):
    store_path, video = tracked_store
    status, out, _ = run(capsys, "tracks", "--store", str(store_path))
    lines = out.splitlines()
    assert status == 0 and lines[0] == UNTRAINED_NOTE
    headers = [line for line in lines[1:] if not line.startswith("  ")]
    assert [header.split(" (")[0] for header in headers] == sorted(
        [str(video.resolve()), CAMERA],
        key=lambda source: file_source_id(source) if source != CAMERA else camera_source_id(CAMERA),
    )
    assert all(": 2 tracks, appearance " in header for header in headers)
    status, out, _ = run(capsys, "tracks", "--list", "--json", "--store", str(store_path))
    listed = [json.loads(line) for line in out.splitlines()]
    assert status == 0 and [(t["source_id"], t["track_id"]) for t in listed] == [
        (sid, track_id) for sid, track_id, _ in stored_tracks(LocalStore(store_path))
    ]


def search_tracks(capsys, image: str, store_path) -> list[dict]:
    # fp32, as the tracks were made: the random DINOv2's crops differ by less than another precision's error
    argv = ["search", "--image", image, "--tracks", "--store", str(store_path), "--precision", "fp32", "--json"]
    status, out, _ = run(capsys, *argv)
    assert status == 0
    return [json.loads(line) for line in out.splitlines()]


def test_an_example_crop_ranks_the_tracks_by_cosine_to_its_dinov2_vector(tracked_store, tiny_encoders, capsys):
    store_path, video = tracked_store
    store = LocalStore(store_path)
    rows = stored_tracks(store)
    thumbnail_key = store.get_json(tracks_key(file_source_id(str(video))))["tracks"][1]["thumbnail"]
    # the tracks' appearance model (the tiny DINOv2, fp32 as they were made) on the crop as given
    query = tiny_encoders.dinov2.embed_images([decode_image(store.get(thumbnail_key))])[0]
    expected = sorted(((sid, track_id, float(vector @ query)) for sid, track_id, vector in rows), key=lambda r: -r[2])
    hits = search_tracks(capsys, store.locate(thumbnail_key), store_path)
    assert [(hit["source_id"], hit["track_id"]) for hit in hits] == [(sid, track_id) for sid, track_id, _ in expected]
    assert [hit["score"] for hit in hits] == pytest.approx([score for _, _, score in expected], abs=1e-4)
    assert all(hit["untrained"] for hit in hits)
    status, out, _ = run(
        capsys, "search", "--image", store.locate(thumbnail_key), "--tracks", "--store", str(store_path)
    )
    assert status == 0 and out.splitlines()[0] == UNTRAINED_NOTE and out.splitlines()[1].startswith("  1. ")


def test_a_stored_thumbnail_ranks_its_own_track_first(tracked_store, tiny_encoders, tmp_path, capsys):
    """The random DINOv2 finds every crop of the block alike (cosines within 0.001), so a track's mean
    appearance need not be nearest its own best crop. Here each track's appearance is its thumbnail's vector,
    as a track seen once has: the same encoder on the same crop gives cosine ~1 to its own track only."""
    store_path, _ = tracked_store
    copy = tmp_path / "store"
    shutil.copytree(store_path, copy)
    store = LocalStore(copy)
    thumbnails = {}
    for sid, _, _ in stored_tracks(store):
        document = store.get_json(tracks_key(sid))
        for stored in document["tracks"]:
            vector = tiny_encoders.dinov2.embed_images([decode_image(store.get(stored["thumbnail"]))])[0]
            stored["appearance"] = base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
            thumbnails[(sid, stored["id"])] = store.locate(stored["thumbnail"])
        store.put_json(tracks_key(sid), document)
    assert len(thumbnails) == 4
    for (sid, track_id), thumbnail in thumbnails.items():
        hits = search_tracks(capsys, thumbnail, copy)
        assert (hits[0]["source_id"], hits[0]["track_id"]) == (sid, track_id)
        assert hits[0]["score"] == pytest.approx(1.0, abs=1e-5) and hits[1]["score"] < hits[0]["score"]


def test_sources_of_another_appearance_model_are_left_out_and_said_so(tracked_store, tmp_path, capsys):
    store_path, video = tracked_store
    copy = tmp_path / "store"
    shutil.copytree(store_path, copy)
    store = LocalStore(copy)
    key = tracks_key(camera_source_id(CAMERA))
    store.put_json(key, store.get_json(key) | {"appearance_model": "another/dinov2"})
    status, out, err = run(capsys, "tracks", "--similar", f"{video}#1", "--store", str(copy), "--json")
    assert status == 0
    assert [json.loads(line)["track_id"] for line in out.splitlines()] == [2]  # its own source's other track
    assert err.startswith("vigil tracks: left out 1 sources tracked with another appearance model than ")
    assert err.rstrip().endswith(f": {CAMERA}") and err.count("\n") == 1


def test_vectors_of_other_dimensions_or_models_are_refused(tracked_store):
    index = TrackIndex.from_store(LocalStore(tracked_store[0]))
    with pytest.raises(TrackSearchError, match=f"cannot compare a 3-dimensional vector with {index.dim}-dimensional"):
        index.search(np.ones(3, dtype=np.float32), index.appearance_model, 5)
    with pytest.raises(
        TrackSearchError, match="cannot compare a vector of appearance model other/model with tracks of"
    ):
        index.search(index.vectors[0], "other/model", 5)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["tracks", "--similar", "{video}#9"], "{video} has no track 9 (its tracks: 1, 2)"),
        (
            ["tracks", "--similar", "nope.mp4#1"],
            "no tracks of nope.mp4 (a camera id needs --camera; a monitor's live tracks, --live): run `vigil track`",
        ),
        (
            ["tracks", "--similar", "gate#1", "--camera"],
            "no tracks of gate (a monitor's live tracks of it need --live): run `vigil track` on it first",
        ),
        (["tracks", "--similar", "{video}"], "--similar '{video}': give SOURCE#ID, a source and a track number"),
        (["tracks", "--similar", "{video}#x"], "--similar '{video}#x': give SOURCE#ID"),
        (["tracks", "--similar", "#1"], "--similar '#1': give SOURCE#ID"),
        (["tracks", "--camera"], "--camera goes with --similar SOURCE#ID"),
        (
            ["tracks", "--similar", "{video}#1", "EMPTY"],
            NO_TRACKS,
        ),
        (
            ["search", "--image", "{thumb}", "--tracks", "EMPTY"],
            NO_TRACKS,
        ),
        (["search", "a person", "--tracks"], "--tracks needs --image PATH, not a phrase: tracks have no text vectors"),
        (["search", "--tracks"], "--tracks needs --image PATH, not a phrase"),
        (["search", "--image", "{thumb}", "--tracks", "--camera", "x"], "--camera, --source, --from and --to filter"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tracked_store, tmp_path, capsys, argv, message):
    store_path, video = tracked_store
    store = LocalStore(store_path)
    thumb = store.locate(store.get_json(tracks_key(file_source_id(str(video))))["tracks"][0]["thumbnail"])
    empty = tmp_path / "empty"
    empty.mkdir()
    where = str(empty) if "EMPTY" in argv else str(store_path)
    argv = [arg.format(video=video, thumb=thumb) for arg in argv if arg != "EMPTY"]
    status, out, err = run(capsys, *argv, "--store", where)
    assert status == 2 and out == ""
    assert err.startswith(f"vigil {argv[0]}: error: {message.format(video=video, empty=LocalStore(empty).url)}")
    assert err.count("\n") == 1
