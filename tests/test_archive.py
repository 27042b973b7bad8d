"""The archive job end to end on generated footage with tiny untrained models."""

import shutil

import numpy as np
import pytest

from jobs.archive import agreed_precisions, index_paths
from pipeline.config import load_config
from pipeline.media.decode import decode_frames
from pipeline.search.index import ClipIndex
from pipeline.search.manifest import read_newest
from pipeline.search.moments import find_moments
from pipeline.storage.clips import read_clip
from pipeline.storage.layout import source_id
from pipeline.storage.store import LocalStore


def _snapshot(store):
    """Every object but the index's, and the index's rows (a save adds a generation, append-only)."""
    objects = {key: store.get(key) for key in store.list() if not key.startswith("index/")}
    return objects, ClipIndex.load(store).rows


@pytest.fixture(scope="module")
def config(vigil_cache):
    return load_config(None, {"models": "tiny", "precision": "fp32", "device": "cpu", "batch_size": 8})


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, scene_video, config, tiny_encoders):
    path, bounds = scene_video
    store = LocalStore(tmp_path_factory.mktemp("store"))
    report = index_paths([path], config, store, progress=False, encoders=tiny_encoders)
    return store, report


def test_every_window_is_stored_with_its_keyframe(indexed, scene_video):
    store, report = indexed
    path, bounds = scene_video
    sid = source_id(str(path.resolve()))
    assert report.indexed == [str(path.resolve())] and not report.failed and report.untrained
    clips = [read_clip(store, key) for key in store.list(f"clips/{sid}/")]
    assert [c.start for c in clips] == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    assert all(c.frame_count == 2 and c.models.untrained for c in clips)
    for clip in clips:
        assert clip.start <= clip.keyframe_pts < clip.end
        assert store.get(clip.keyframe_key)[:3] == b"\xff\xd8\xff"  # a JPEG
    manifest = read_newest(store)
    assert sum(entry.rows for entry in manifest.segments) == 10 and manifest.models.untrained
    record = store.get_json(f"sources/{sid}.json")
    assert record["precision"] == {"siglip": "fp32", "dinov2": "fp32"} and "precision" not in record["models"]


def test_a_precision_change_neither_reindexes_nor_refuses_the_index(tmp_path, scene_video, config, tiny_encoders):
    """The record says which precision made the vectors; indexes compare the models only."""
    from pipeline.models import Dinov2Encoder, Encoders, SiglipEncoder

    path, _ = scene_video
    sid = source_id(str(path.resolve()))
    store = LocalStore(tmp_path)
    index_paths([path], config, store, progress=False, encoders=tiny_encoders)
    int8 = Encoders(
        SiglipEncoder.from_pretrained(tiny_encoders.siglip.model_id, precision="int8", batch_size=8),
        Dinov2Encoder.from_pretrained(tiny_encoders.dinov2.model_id, precision="int8", batch_size=8),
    )
    assert int8.ids == tiny_encoders.ids and int8.precisions == {"siglip": "int8", "dinov2": "int8"}
    again = index_paths([path], config, store, progress=False, encoders=int8)
    assert again.unchanged == [str(path.resolve())] and not again.indexed
    assert store.get_json(f"sources/{sid}.json")["precision"] == {"siglip": "fp32", "dinov2": "fp32"}
    forced = index_paths([path], config, store, progress=False, encoders=int8, force=True)
    assert forced.indexed == [str(path.resolve())]
    assert store.get_json(f"sources/{sid}.json")["precision"] == {"siglip": "int8", "dinov2": "int8"}


def test_agreed_precisions_over_extractors():
    fp32 = {"siglip": "fp32", "dinov2": "fp32"}
    assert agreed_precisions([fp32, dict(fp32)]) == fp32
    mixed = agreed_precisions([fp32, {"siglip": "int8", "dinov2": "fp32"}, {"siglip": "bf16", "dinov2": "fp32"}])
    assert mixed == {"siglip": ["bf16", "fp32", "int8"], "dinov2": "fp32"}
    assert agreed_precisions([{}, {}]) == {}  # null extractors: no model runs


@pytest.mark.parametrize("moment", [1.3, 5.5, 9.3, 13.9, 18.7])
def test_an_example_frame_finds_its_window_first(indexed, scene_video, tiny_encoders, moment):
    store, _ = indexed
    path, _ = scene_video
    frame = next(f for f in decode_frames(path, fps=25, short_side=None, keyframes_only=False) if f.pts >= moment)
    events = find_moments(ClipIndex.load(store), tiny_encoders, image=frame.image, top_k=3)
    best = events[0]
    assert best.start <= frame.pts < best.end, (frame.pts, events)
    assert best.untrained
    assert all(a.score >= b.score for a, b in zip(events, events[1:]))


def test_text_search_returns_ranked_wellformed_events(indexed, tiny_encoders):
    store, _ = indexed
    for text in ("a person climbing the fence", "有人翻越围栏"):
        events = find_moments(ClipIndex.load(store), tiny_encoders, text=text, top_k=4)
        assert 1 <= len(events) <= 4
        assert all(a.score >= b.score for a, b in zip(events, events[1:]))
        for event in events:
            assert 0 <= event.start < event.end <= 20 and -1 <= event.score <= 1
            assert store.exists(event.keyframe_key)
            assert event.to_json()["untrained"] is True
    with pytest.raises(ValueError, match="empty"):
        find_moments(ClipIndex.load(store), tiny_encoders, text="  ")


def test_reindexing_changes_nothing(tmp_path, scene_video, config, tiny_encoders):
    path, _ = scene_video
    store = LocalStore(tmp_path)
    index_paths([path], config, store, progress=False, encoders=tiny_encoders)
    before = _snapshot(store)
    generations = list(store.list("index/generations/"))
    again = index_paths([path], config, store, progress=False, encoders=tiny_encoders)
    assert again.unchanged == [str(path.resolve())] and not again.indexed
    assert _snapshot(store) == before and list(store.list("index/generations/")) == generations
    forced = index_paths([path], config, store, progress=False, encoders=tiny_encoders, force=True)
    assert forced.indexed == [str(path.resolve())]
    assert _snapshot(store) == before


def test_changed_settings_reindex_and_drop_stale_windows(tmp_path, scene_video, config, tiny_encoders):
    path, _ = scene_video
    store = LocalStore(tmp_path)
    index_paths([path], config, store, progress=False, encoders=tiny_encoders)
    wider = config.model_copy(update={"embed": config.embed.model_copy(update={"window": 5.0})})
    report = index_paths([path], wider, store, progress=False, encoders=tiny_encoders)
    assert report.indexed == [str(path.resolve())]
    sid = source_id(str(path.resolve()))
    assert [read_clip(store, k).start for k in store.list(f"clips/{sid}/")] == [0, 5, 10, 15]
    assert len(list(store.list(f"keyframes/{sid}/"))) == 4
    assert len(ClipIndex.load(store)) == 4


def test_a_corrupt_file_in_a_folder_is_reported_and_the_others_indexed(tmp_path, scene_video, config, tiny_encoders):
    from pipeline.media.synthetic import truncate_file, write_corrupt_video

    path, _ = scene_video
    folder = (tmp_path / "videos").resolve()
    folder.mkdir()
    shutil.copy(path, folder / "good.mp4")
    write_corrupt_video(folder / "garbage.mp4")
    truncate_file(path, folder / "cut.mp4", 0.5)
    store = LocalStore(tmp_path / "store")
    report = index_paths([folder, tmp_path / "missing.mp4"], config, store, progress=False, encoders=tiny_encoders)
    assert report.indexed == [str(folder / "good.mp4")]
    failed = dict(report.failed)
    assert set(failed) == {str(folder / "garbage.mp4"), str(folder / "cut.mp4"), str(tmp_path / "missing.mp4")}
    assert "garbage.mp4" in failed[str(folder / "garbage.mp4")] and "cut.mp4" in failed[str(folder / "cut.mp4")]
    assert ClipIndex.load(store).sources == {source_id(str(folder / "good.mp4"))}
    assert {key.split("/")[1] for key in store.list("clips/")} == ClipIndex.load(store).sources


def test_ray_path_equals_plain_path(tmp_path, ray_local, scene_video, config, indexed):
    plain, _ = indexed
    path, _ = scene_video
    store = LocalStore(tmp_path)
    report = index_paths([path], config, store, use_ray=True, progress=False)
    assert report.indexed == [str(path.resolve())] and not report.failed
    assert sorted(store.list("keyframes/")) == sorted(plain.list("keyframes/"))
    assert sorted(store.list("clips/")) == sorted(plain.list("clips/"))
    for key in plain.list("clips/"):
        a, b = read_clip(plain, key), read_clip(store, key)
        np.testing.assert_allclose(a.siglip, b.siglip, atol=1e-4)
        np.testing.assert_allclose(a.dinov2, b.dinov2, atol=1e-4)
        assert (a.keyframe_key, a.frame_count, a.models) == (b.keyframe_key, b.frame_count, b.models)
    assert [r.start for r in ClipIndex.load(store).rows] == [r.start for r in ClipIndex.load(plain).rows]
    sid = source_id(str(path.resolve()))
    assert store.get_json(f"sources/{sid}.json")["precision"] == {"siglip": "fp32", "dinov2": "fp32"}


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_source_that_turns_corrupt_leaves_store_and_index_consistent(
    tmp_path, scene_video, config, tiny_encoders, damage
):
    from pipeline.media.synthetic import truncate_file, write_corrupt_video

    path, _ = scene_video
    video = (tmp_path / "cam.mp4").resolve()
    shutil.copy(path, video)
    store = LocalStore(tmp_path / "store")
    index_paths([video], config, store, progress=False, encoders=tiny_encoders)
    if damage == "garbage":
        write_corrupt_video(video)
    else:
        truncate_file(path, video, 0.6)
    report = index_paths([video], config, store, progress=False, encoders=tiny_encoders, force=True)
    assert [p for p, _ in report.failed] == [str(video)] and "cam.mp4" in report.failed[0][1]
    index = ClipIndex.load(store)
    stored = {key.split("/")[1] for key in store.list("clips/")}
    assert index.sources == stored == {key.split("/")[1].removesuffix(".json") for key in store.list("sources/")}
    for row in index.rows:
        assert store.exists(row.keyframe_key)


def test_a_camera_named_like_a_file_never_touches_its_objects(tmp_path, scene_video, config, tiny_encoders):
    """Cameras and files are separate namespaces: a camera whose id is an indexed file's path gets its own
    clips, keyframes, record and index rows, and the file stays indexed and unchanged."""
    from pipeline.live.analyzer import StreamAnalyzer
    from pipeline.live.match import Matcher
    from pipeline.live.sink import Sink
    from pipeline.records import FrameBatch
    from pipeline.search.embed import extract_features

    path, _ = scene_video
    store = LocalStore(tmp_path)
    index_paths([path], config, store, progress=False, encoders=tiny_encoders)
    file_objects, _ = _snapshot(store)
    camera = str(path.resolve())  # `vigil monitor --source ... --camera PATH`, or a Kafka key equal to it
    frames = [f for f in decode_frames(path, fps=1, short_side=64, source=camera, camera=camera)][:6]
    analyzer = StreamAnalyzer(Matcher(tiny_encoders.ids), window=2.0, models=tiny_encoders.ids)
    sink = Sink(store, ClipIndex.load(store), None)
    sink.write(analyzer.process(extract_features(FrameBatch(frames), tiny_encoders)))
    sink.write(analyzer.flush())
    sink.checkpoint("monitor", {})
    objects, rows = _snapshot(store)
    assert {key: objects[key] for key in file_objects} == file_objects  # nothing of the file's was rewritten
    camera_keys = set(objects) - set(file_objects)
    assert len([k for k in camera_keys if k.startswith("clips/")]) == 3  # the camera's own windows
    (record_key,) = [k for k in camera_keys if k.startswith("sources/")]
    assert store.get_json(record_key)["kind"] == "camera"  # the record its rows can be rebuilt from
    assert len({row.source_id for row in rows}) == 2 and len(rows) == 10 + 3
    again = index_paths([path], config, store, progress=False, encoders=tiny_encoders)
    assert again.unchanged == [camera] and len(ClipIndex.load(store)) == 13


@pytest.mark.parametrize("change", ["force", "wider windows"])
def test_an_interrupted_reindex_leaves_the_old_version_searchable_and_complete(
    tmp_path, scene_video, config, tiny_encoders, monkeypatch, change
):
    """Ctrl-C in the middle of `vigil index --force` (or of a re-index with other settings): the index, the
    source record and every object the index names are those of the old version."""
    import jobs.archive

    path, _ = scene_video
    store = LocalStore(tmp_path)
    index_paths([path], config, store, progress=False, encoders=tiny_encoders)
    before, rows = _snapshot(store)
    real_write_clip, written = jobs.archive.write_clip, []

    def interrupted_after_three(target_store, clip):
        if len(written) == 3:
            raise KeyboardInterrupt
        written.append(clip)
        return real_write_clip(target_store, clip)

    monkeypatch.setattr(jobs.archive, "write_clip", interrupted_after_three)
    again = config
    if change == "wider windows":
        again = config.model_copy(update={"embed": config.embed.model_copy(update={"window": 5.0})})
    with pytest.raises(KeyboardInterrupt):
        index_paths([path], again, store, progress=False, encoders=tiny_encoders, force=True)
    assert len(written) == 3  # the interruption came mid-file
    index = ClipIndex.load(store)
    assert index.rows == rows and len(index) == 10
    for row in index.rows:  # every keyframe a search returns exists
        assert store.exists(row.keyframe_key)
    after, _ = _snapshot(store)
    sid = source_id(str(path.resolve()))
    assert after[f"sources/{sid}.json"] == before[f"sources/{sid}.json"]
    assert {k for k in after if k.startswith("clips/")} == {k for k in before if k.startswith("clips/")}
    monkeypatch.undo()
    done = index_paths([path], again, store, progress=False, encoders=tiny_encoders, force=True)
    assert done.indexed == [str(path.resolve())]  # the re-run completes it
    assert len(ClipIndex.load(store)) == (10 if change == "force" else 4)
