"""pipeline.media.decode and pipeline.media.synthetic against real (generated) H.264 files."""

from __future__ import annotations

import math
import pickle
from fractions import Fraction

import av
import decord  # noqa: F401  -- installed on purpose: a missing decord must fail these tests, not skip
import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.media.decode import (
    NO_SHORTCUTS,
    Shortcuts,
    VideoDecodeError,
    VideoInfo,
    apply_rotation,
    decode_frames,
    mark_still_frames,
    output_size,
    plan_sampling,
    probe,
)
from pipeline.media.sampling import decode_file, first_seconds, sampled_frames
from pipeline.media.synthetic import (
    Scene,
    scene_image,
    truncate_file,
    write_corrupt_video,
    write_high_motion_video,
    write_scene_video,
    write_static_camera_video,
    write_vfr_video,
)
from pipeline.records import Frame

FPS = 30
PERIOD = 1.0 / FPS
SCENES = [Scene("red", 1.0), Scene("blue", 1.5), Scene("green", 0.5)]  # 3 s in all


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    out = {}
    # encoder default GOP (libx264: 250 frames; extra IDRs only at scene cuts)
    out["default"] = d / "default.mp4"
    out["bounds"] = write_scene_video(out["default"], SCENES, fps=FPS)
    out["gop10"] = d / "gop10.mp4"  # keyframe every 1/3 s
    write_scene_video(out["gop10"], SCENES, fps=FPS, gop=10)
    out["gop30"] = d / "gop30.mp4"  # keyframe every second
    write_scene_video(out["gop30"], SCENES, fps=FPS, gop=30)
    out["faststart"] = d / "faststart.mp4"  # moov first: truncation cuts the media data
    write_scene_video(out["faststart"], SCENES, fps=FPS, gop=15, faststart=True)
    return out


def keyframe_times(path) -> list[float]:
    """Independent of pipeline.media.decode: the pts of keyframe packets, straight from the demuxer."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return sorted(float(p.pts * s.time_base) for p in c.demux(s) if p.size and p.is_keyframe)


# ------------------------------------------------------------------------------------------ sampling


def test_sampled_pts_follow_the_grid(videos):
    stream = decode_frames(videos["default"], fps=2, source="cam-a", camera="lobby")
    frames = list(stream)
    assert stream.keyframes_only is False  # keyframes >= 0.5 s apart: every frame must be decoded
    assert len(frames) == 3.0 * 2
    for k, f in enumerate(frames):
        assert isinstance(f, Frame)
        assert abs(f.pts - 0.5 * k) < PERIOD
        assert f.index == k
        assert f.source == "cam-a" and f.camera == "lobby" and f.still is False
        assert f.image.dtype == np.uint8 and f.image.flags["C_CONTIGUOUS"]

    # 3 fps: grid 0, 1/3, 2/3, ... hits exact frame times (k * 10 frames); pts are media times
    frames = list(decode_frames(videos["default"], fps=3, keyframes_only=False))
    assert len(frames) == 9
    np.testing.assert_allclose([f.pts for f in frames], [k / 3 for k in range(9)], atol=1e-6)

    # a rate above the frame rate yields every frame once, at its own pts
    frames = list(decode_frames(videos["default"], fps=100, short_side=32))
    assert len(frames) == 90
    np.testing.assert_allclose([f.pts for f in frames], np.arange(90) / FPS, atol=1e-6)
    assert frames[0].source == str(videos["default"])


def test_sampling_grid_skips_to_the_next_slot_after_a_gap(tmp_path):
    # variable frame rate: irregular pts, including a long gap and a near-duplicate time
    times = [0.0, 0.04, 0.1, 0.35, 0.36, 0.9, 1.5, 1.52, 2.0, 2.1]
    path = tmp_path / "vfr.mp4"
    exact = write_vfr_video(path, times, size=(160, 120))

    # every frame: the true (irregular) pts
    frames = list(decode_frames(path, fps=1000, short_side=None))
    np.testing.assert_allclose([f.pts for f in frames], exact, atol=1e-6)
    assert frames[0].image.shape == (120, 160, 3)

    # 4 fps: first frame at or after 0, 0.25 -> 0.35 (next slot 0.5) -> 0.9 (next 1.0) -> 1.5
    # (next 1.75) -> 2.0 (next 2.25): never a frame before its slot, never two in one slot
    frames = list(decode_frames(path, fps=4, short_side=None, keyframes_only=False))
    np.testing.assert_allclose([f.pts for f in frames], [0.0, 0.35, 0.9, 1.5, 2.0], atol=1e-6)
    assert [f.index for f in frames] == list(range(5))

    info = probe(path)
    assert info.frame_count == len(times)
    assert 2.1 <= info.duration <= 2.3


@pytest.mark.parametrize("fps", [0, -1, float("nan"), float("inf"), "x"])
def test_bad_fps_raises_value_error(videos, fps):
    with pytest.raises(ValueError):
        decode_frames(videos["default"], fps=fps)


def test_unknown_backend_raises_value_error(videos):
    with pytest.raises(ValueError, match="backend"):
        decode_frames(videos["default"], backend="opencv")


# ------------------------------------------------------------------------------------------ keyframes


def test_probe_measures_keyframe_gaps(videos):
    info = probe(videos["gop10"])
    assert isinstance(info, VideoInfo)
    assert (info.width, info.height, info.rotation) == (320, 240, 0)
    assert info.fps == pytest.approx(30.0)
    assert info.duration == pytest.approx(3.0, abs=1e-6)
    assert info.frame_count == 90
    assert info.keyframe_interval == pytest.approx(10 / FPS, abs=1e-6)
    assert probe(videos["gop30"]).keyframe_interval == pytest.approx(1.0, abs=1e-6)
    # default x264 GOP (250 frames, plus IDRs at scene cuts): the largest gap, stream end included
    kf = keyframe_times(videos["default"]) + [3.0]
    assert len(kf) < 6
    assert probe(videos["default"]).keyframe_interval == pytest.approx(max(np.diff(kf)), abs=1e-6)


def test_keyframe_path_chosen_when_gop_fits_the_interval(videos):
    path = videos["gop10"]  # keyframes every 1/3 s; sampling interval 1/2 s
    kf = keyframe_times(path)
    np.testing.assert_allclose(kf, [k / 3 for k in range(9)], atol=1e-6)
    assert plan_sampling(probe(path), fps=2) is True

    stream = decode_frames(path, fps=2, short_side=64)
    frames = list(stream)
    assert stream.keyframes_only is True
    pts = [f.pts for f in frames]
    # every output is a keyframe, picked by the grid rule: 0 | 2/3 (>=0.5) | 1 | 5/3 (>=1.5) | 2 | 8/3
    for t in pts:
        assert min(abs(t - k) for k in kf) < 1e-6
    np.testing.assert_allclose(pts, [0, 2 / 3, 1, 5 / 3, 2, 8 / 3], atol=1e-6)
    assert all(abs(t - 0.5 * k) < 0.5 for k, t in enumerate(pts))  # still one per interval

    # the same file with the fast path disabled: the plain grid, mostly non-keyframes
    stream = decode_frames(path, fps=2, short_side=64, keyframes_only=False)
    np.testing.assert_allclose([f.pts for f in stream], [0, 0.5, 1, 1.5, 2, 2.5], atol=1e-6)
    assert stream.keyframes_only is False


def test_keyframe_path_not_chosen_when_gop_is_larger(videos):
    path = videos["gop30"]  # keyframe every 1 s, sampling every 0.5 s
    assert plan_sampling(probe(path), fps=2) is False
    assert plan_sampling(probe(path), fps=1) is True  # the boundary case counts as fitting
    stream = decode_frames(path, fps=2)
    pts = [f.pts for f in stream]
    assert stream.keyframes_only is False
    np.testing.assert_allclose(pts, [0, 0.5, 1, 1.5, 2, 2.5], atol=1e-6)

    # forcing it: only the keyframes come out, at their exact times
    stream = decode_frames(path, fps=2, keyframes_only=True)
    np.testing.assert_allclose([f.pts for f in stream], keyframe_times(path), atol=1e-6)
    np.testing.assert_allclose(keyframe_times(path), [0, 1, 2], atol=1e-6)


# ------------------------------------------------------------------------------------------ pixels


def test_output_size_keeps_aspect_and_even_sizes():
    assert output_size(1280, 720, 256) == (456, 256)
    assert output_size(720, 1280, 256) == (256, 456)
    assert output_size(320, 240, 128) == (170, 128)
    assert output_size(320, 240, None) == (320, 240)
    assert all(v % 2 == 0 for v in output_size(333, 201, 101))


def test_frames_are_resized_with_the_short_side(videos):
    for short, shape in [(128, (128, 170, 3)), (64, (64, 86, 3)), (None, (240, 320, 3))]:
        frames = list(decode_frames(videos["gop30"], fps=1, short_side=short))
        assert frames and all(f.image.shape == shape for f in frames)
    # content survives the scaler: the first frame looks like scene 0 (mover aside)
    img = list(decode_frames(videos["gop30"], fps=1, short_side=None))[0].image
    assert np.abs(img.astype(int) - scene_image(0, (320, 240))).mean() < 12


def test_rotation_metadata_is_applied(tmp_path):
    plain, rotated = tmp_path / "plain.mp4", tmp_path / "rot90.mp4"
    write_scene_video(plain, [Scene("a", 0.5)], size=(320, 240))
    write_scene_video(rotated, [Scene("a", 0.5)], size=(320, 240), rotation=90)

    info = probe(rotated)
    assert info.rotation == 90 and (info.width, info.height) == (240, 320)  # displayed size

    a = list(decode_frames(plain, fps=4, short_side=None))
    b = list(decode_frames(rotated, fps=4, short_side=None))
    assert b[0].image.shape == (320, 240, 3)  # portrait: upright
    for fa, fb in zip(a, b):
        np.testing.assert_array_equal(fb.image, np.rot90(fa.image, 1))  # 90 deg counter-clockwise
    small = list(decode_frames(rotated, fps=4, short_side=120))
    assert small[0].image.shape == (160, 120, 3)
    # decord turns rotated videos upright too (its own resize is bypassed for them)
    d = list(decode_frames(rotated, fps=4, short_side=120, backend="decord"))
    assert [f.image.shape for f in d] == [f.image.shape for f in small]
    assert np.abs(d[0].image.astype(int) - small[0].image).mean() < 8


def test_apply_rotation_unit():
    img = np.zeros((2, 3, 3), np.uint8)
    img[0, 0] = 255  # top-left marker
    assert apply_rotation(img, 0) is img
    r90 = apply_rotation(img, 90)  # counter-clockwise: top-left goes bottom-left
    assert r90.shape == (3, 2, 3) and r90[2, 0, 0] == 255
    assert apply_rotation(img, -90)[0, 1, 0] == 255  # clockwise: top-left goes top-right
    np.testing.assert_array_equal(apply_rotation(img, 270), apply_rotation(img, -90))
    np.testing.assert_array_equal(apply_rotation(img, -180), img[::-1, ::-1])
    assert apply_rotation(img, 180).flags["C_CONTIGUOUS"]


# ------------------------------------------------------------------------------------------ errors


def test_garbage_file_raises_video_decode_error(tmp_path):
    path = tmp_path / "garbage_clip.mp4"
    write_corrupt_video(path)
    for call in (lambda: probe(path), lambda: list(decode_frames(path, keyframes_only=False))):
        with pytest.raises(VideoDecodeError, match="garbage_clip.mp4") as err:
            call()
        assert err.value.path == str(path) and err.value.position is None
    with pytest.raises(VideoDecodeError, match="garbage_clip.mp4"):
        list(decode_frames(path, backend="decord"))


def test_truncated_file_without_moov_fails_on_open(videos, tmp_path):
    path = tmp_path / "cut_moov_at_end.mp4"
    truncate_file(videos["gop30"], path, 0.8)
    with pytest.raises(VideoDecodeError, match="cut_moov_at_end.mp4"):
        list(decode_frames(path))


@pytest.mark.parametrize("keyframes_only", [None, False, True])
def test_truncated_media_data_raises_with_position(videos, tmp_path, keyframes_only):
    path = tmp_path / "cut_mid_packet.mp4"
    truncate_file(videos["faststart"], path, 0.6)  # index intact, data cut inside a packet
    got = []
    with pytest.raises(VideoDecodeError, match="cut_mid_packet.mp4") as err:
        for f in decode_frames(path, fps=4, keyframes_only=keyframes_only):
            got.append(f.pts)
    assert err.value.position is not None and 0.5 < err.value.position < 3.0
    assert f"{err.value.position:.3f} s" in str(err.value)
    assert all(t <= err.value.position + 1e-6 for t in got)


def test_truncation_on_a_packet_boundary_is_not_silent(videos, tmp_path):
    # cut exactly where a packet starts: the demuxer sees a clean EOF, only the declared duration tells
    src = videos["faststart"]
    with av.open(str(src)) as c:
        starts = sorted(p.pos for p in c.demux(c.streams.video[0]) if p.size)
    cut = starts[len(starts) * 6 // 10]
    path = tmp_path / "cut_on_boundary.mp4"
    path.write_bytes(src.read_bytes()[:cut])
    with pytest.raises(VideoDecodeError, match="truncated") as err:
        list(decode_frames(path, fps=4, keyframes_only=False))
    assert "cut_on_boundary.mp4" in str(err.value) and 1.0 < err.value.position < 3.0
    with pytest.raises(VideoDecodeError):
        probe(path)


def test_missing_file_and_no_video_stream(tmp_path):
    with pytest.raises(VideoDecodeError, match="nope.mp4"):
        list(decode_frames(tmp_path / "nope.mp4"))
    with pytest.raises(VideoDecodeError, match="nope.mp4"):
        probe(tmp_path / "nope.mp4")
    audio = tmp_path / "audio_only.mp4"
    with av.open(str(audio), "w") as c:
        s = c.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        for p in [*s.encode(frame), *s.encode(None)]:
            c.mux(p)
    with pytest.raises(VideoDecodeError, match="no video stream"):
        list(decode_frames(audio))


def test_video_decode_error_pickles():
    err = VideoDecodeError("/x/clip.mp4", 1.5, "boom")
    back = pickle.loads(pickle.dumps(err))
    assert (back.path, back.position, str(back)) == (err.path, err.position, str(err))
    assert "clip.mp4" in str(err) and "1.500 s" in str(err)


# ------------------------------------------------------------------------------------------ decord


@pytest.mark.parametrize("name,fps", [("default", 2), ("gop10", 2), ("gop30", 3)])
def test_decord_matches_pyav(videos, name, fps):
    a = list(decode_frames(videos[name], fps=fps, short_side=96))
    stream = decode_frames(videos[name], fps=fps, short_side=96, backend="decord")
    b = list(stream)
    assert stream.keyframes_only == plan_sampling(probe(videos[name]), fps)
    assert len(a) == len(b) > 0
    for fa, fb in zip(a, b):
        assert abs(fa.pts - fb.pts) < PERIOD
        assert fa.image.shape == fb.image.shape
        assert np.abs(fa.image.astype(int) - fb.image).mean() < 8
        assert fa.index == fb.index and fa.source == fb.source


# ------------------------------------------------------------------------------------------ stills


def test_mark_still_frames_on_a_static_camera(tmp_path):
    path = tmp_path / "cctv.mp4"
    crossings = write_static_camera_video(path, 20, size=(320, 240), seed=1)
    assert len(crossings) == 1
    a, b = crossings[0]
    assert 1.0 < a and b - a == pytest.approx(3.0) and b < 19.0
    frames = list(mark_still_frames(decode_frames(path, fps=4)))
    assert len(frames) == 80
    assert frames[0].still is False
    before = [f for f in frames if 0.5 <= f.pts < a - 0.1]
    moving = [f for f in frames if a + 0.3 <= f.pts < b - 0.3]
    after = [f for f in frames if f.pts >= b + 0.5]
    assert len(before) > 10 and len(moving) >= 8 and len(after) > 10
    assert all(f.still for f in before)
    assert not any(f.still for f in moving)
    assert all(f.still for f in after)
    # a benchmark-style view: most of a static camera is still
    assert sum(f.still for f in frames) / len(frames) > 0.75


def _frame(value: float, source: str = "s", index: int = 0) -> Frame:
    return Frame(source, float(index), index, np.full((48, 64, 3), value, np.uint8))


def test_interleaved_cameras_are_each_compared_with_their_own_frames():
    # Kafka batches interleave cameras: camera a's unchanged frames stay still between b's frames.
    frames = [_frame(50, "a", 0), _frame(200, "b", 0), _frame(50, "a", 1), _frame(200, "b", 1), _frame(120, "a", 2)]
    assert [f.still for f in mark_still_frames(frames)] == [False, False, True, True, False]


def test_a_monitor_source_is_sampled_and_still_marked_like_an_archive_file(tmp_path):
    path = tmp_path / "cctv.mp4"
    write_static_camera_video(path, 8, size=(320, 240), seed=1)
    decode = load_config(None, {"decode.fps": 2}).decode
    camera = list(sampled_frames(path, decode, camera="gate"))
    archive = list(sampled_frames(path, decode, source=str(path)))
    assert {(f.source, f.camera) for f in camera} == {("gate", "gate")}
    assert [(f.pts, f.still) for f in camera] == [(f.pts, f.still) for f in archive]
    assert sum(f.still for f in camera) > len(camera) // 2  # the models skip most of a static camera


def test_mark_still_frames_compares_with_the_last_non_still_frame():
    # brightness creeps up 0.6 levels per frame: each step alone is below the threshold,
    # but against the last *non-still* frame the drift adds up and triggers a fresh frame
    levels = [100, 100.6, 101.2, 101.8, 102.4, 103.0]
    imgs = [Frame("s", float(i), i, np.full((48, 64, 3), round(v * 10) / 10, np.float32)) for i, v in enumerate(levels)]
    out = [f.still for f in mark_still_frames(imgs, threshold=1.0)]
    assert out == [False, True, False, True, False, True]
    # identical images from another source are not "still": the reference is per source
    out = [f.still for f in mark_still_frames([_frame(50, "a", 0), _frame(50, "a", 1), _frame(50, "b", 2)])]
    assert out == [False, True, False]
    # a small mover on a flat image is not still
    moved = _frame(50, "a", 1)
    moved.image[10:20, 10:20] = 255
    assert [f.still for f in mark_still_frames([_frame(50, "a", 0), moved])] == [False, False]


# ------------------------------------------------------------------------------------------ synthetic


def test_scene_images_are_pairwise_very_different():
    imgs = [scene_image(i, (160, 120)).astype(np.int16) for i in range(10)]
    assert all(img.shape == (120, 160, 3) for img in imgs)
    for i in range(len(imgs)):
        for j in range(i + 1, len(imgs)):
            assert np.abs(imgs[i] - imgs[j]).mean() > 30, (i, j)
        # a pattern, not a flat colour
        assert imgs[i].std(axis=(0, 1)).max() > 20
    np.testing.assert_array_equal(scene_image(3, (160, 120)), scene_image(3, (160, 120)))


def test_write_scene_video_boundaries_and_content(videos):
    bounds = videos["bounds"]
    assert bounds == [("red", 0.0, 1.0), ("blue", 1.0, 2.5), ("green", 2.5, 3.0)]
    assert probe(videos["default"]).duration == pytest.approx(3.0, abs=1e-6)
    refs = [scene_image(i, (320, 240)).astype(int) for i in range(len(SCENES))]
    for f in decode_frames(videos["default"], fps=4, short_side=None):
        scene = next(i for i, (_, s, e) in enumerate(bounds) if s <= f.pts < e)
        dists = [np.abs(f.image.astype(int) - r).mean() for r in refs]
        assert int(np.argmin(dists)) == scene and dists[scene] < 15, (f.pts, dists)
    # consecutive frames inside a scene differ (the mover)
    two = list(decode_frames(videos["default"], fps=10, short_side=None))[:2]
    assert np.abs(two[0].image.astype(int) - two[1].image).mean() > 0.1


def test_benchmark_generators_small(tmp_path):
    hm = tmp_path / "motion.mp4"
    cuts = write_high_motion_video(hm, 3, size=(320, 240), fps=30, seed=2)
    info = probe(hm)
    assert info.duration == pytest.approx(3.0, abs=1e-6) and (info.width, info.height) == (320, 240)
    assert info.keyframe_interval == pytest.approx(1.0, abs=1e-6)  # gop = fps
    assert cuts[0] == 0.0 and all(0 < b - a <= 4.0 for a, b in zip(cuts, cuts[1:]))
    frames = list(mark_still_frames(decode_frames(hm, fps=5, short_side=64)))
    assert not any(f.still for f in frames)  # motion everywhere

    st = tmp_path / "static.mp4"
    crossings = write_static_camera_video(st, 3, size=(320, 240), fps=30)
    assert probe(st).keyframe_interval == pytest.approx(1.0, abs=1e-6)
    assert all(0 <= a < b <= 3.0 for a, b in crossings)


def test_vfr_writer_rejects_non_increasing_times(tmp_path):
    with pytest.raises(ValueError):
        write_vfr_video(tmp_path / "bad.mp4", [0.0, 0.5, 0.5])
    assert write_vfr_video(tmp_path / "ok.mp4", [0, 0.25], time_base=Fraction(1, 4), size=(64, 48)) == [0.0, 0.25]


def test_threads_and_index_restart_per_call(videos):
    one = [f.pts for f in decode_frames(videos["gop30"], fps=2, threads=1)]
    two = [f.pts for f in decode_frames(videos["gop30"], fps=2, threads=2)]
    assert one == two and math.isclose(one[-1], 2.5, abs_tol=1e-6)


# ------------------------------------------------------------------------------------------ decode shortcuts


@pytest.fixture(scope="module")
def b_frame_video(tmp_path_factory):
    """High motion with x264's default GOP and preset (B-frames, deblocking), 640x480."""
    path = tmp_path_factory.mktemp("shortcuts") / "motion.mp4"
    write_high_motion_video(path, 4, size=(640, 480), fps=FPS, seed=3, keyframe_every=None)
    return path


def decoded(path, shortcuts: Shortcuts, **kwargs) -> tuple[list[Frame], int]:
    """The sampled frames, and how many pictures the decoder produced for them."""
    stream = decode_frames(path, shortcuts=shortcuts, **kwargs)
    frames = list(stream)
    return frames, stream.frames_decoded


def test_skipping_non_reference_frames_decodes_fewer_and_the_same_pictures(b_frame_video):
    every, every_count = decoded(b_frame_video, NO_SHORTCUTS, fps=2 * FPS, short_side=None)
    assert len(every) == every_count == 4 * FPS
    by_pts = {f.pts: f.image for f in every}
    sampled, count = decoded(b_frame_video, Shortcuts(False, True, False), fps=2, short_side=None)
    assert count < 0.8 * every_count  # the B-frames nothing references were never decoded
    assert len(sampled) == 8
    for number, frame in enumerate(sampled):
        assert number * 0.5 - 1e-6 <= frame.pts <= number * 0.5 + 4 * PERIOD  # a frame or few later at most
        assert np.array_equal(frame.image, by_pts[frame.pts])  # a reference frame decodes as without skipping


def test_gop_parts_holding_no_sample_are_not_decoded(tmp_path):
    path = tmp_path / "gop45.mp4"
    write_scene_video(path, SCENES, fps=FPS, gop=45)  # keyframes at 0, 1.5 s; samples at 0 and 2 s
    options = dict(fps=0.5, short_side=None, keyframes_only=False)
    plain, plain_count = decoded(path, NO_SHORTCUTS, **options)
    fast, count = decoded(path, Shortcuts(True, False, False), **options)
    assert [f.pts for f in fast] == [f.pts for f in plain] == [0.0, 2.0]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(fast, plain))
    assert plain_count == 3 * FPS
    # frame 0 (and the decoder's look-ahead), then 1.5 s to 2 s: the rest of both GOPs is skipped
    assert count <= 1 + 16 + 8
    # no sample past the last one: decoding stops there (2.5 s) instead of at the end of the stream (3 s)
    late, late_count = decoded(path, Shortcuts(True, False, False), fps=0.4, short_side=None, keyframes_only=False)
    assert [f.pts for f in late] == [0.0, 2.5] and late_count <= 1 + 31 + 8


def test_the_loop_filter_is_skipped_only_when_frames_shrink_to_half_or_less(b_frame_video):
    def pair(short_side: int):
        options = dict(fps=1, short_side=short_side)
        plain, _ = decoded(b_frame_video, NO_SHORTCUTS, **options)
        fast, _ = decoded(b_frame_video, Shortcuts(False, False, True), **options)
        assert [f.pts for f in fast] == [f.pts for f in plain]
        return [float(np.abs(a.image.astype(int) - b.image).mean()) for a, b in zip(plain, fast)]

    halved = pair(240)  # 480 -> 240: skipped; the blocking it would remove averages out in the downscale
    assert 0 < max(halved) < 2.0
    assert max(pair(320)) == 0  # 480 -> 320: the filter runs


def test_the_decode_section_switches_the_shortcuts(b_frame_video):
    decode = load_config().decode
    assert decode.skip_unsampled_gops and decode.skip_nonref_frames and decode.skip_loop_filter
    off = decode.model_copy(
        update={"skip_unsampled_gops": False, "skip_nonref_frames": False, "skip_loop_filter": False}
    )
    with_shortcuts, without = decode_file(b_frame_video, decode), decode_file(b_frame_video, off)
    assert len(list(with_shortcuts)) == len(list(without)) == 4
    assert with_shortcuts.frames_decoded < without.frames_decoded == 4 * FPS


def test_first_seconds_counts_media_time_from_the_first_frame():
    frames = [Frame("cam", pts, i, np.zeros((2, 2, 3), np.uint8)) for i, pts in enumerate([5.0, 5.5, 6.9, 7.0, 8.0])]
    assert [f.pts for f in first_seconds(frames, 2.0)] == [5.0, 5.5, 6.9]  # 7.0 is 2 s after the first
    assert list(first_seconds([], 2.0)) == []
