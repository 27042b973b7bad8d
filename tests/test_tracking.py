"""The multi-object tracker (pipeline/tracking/) on generated scenes with known identities, its state saved
and restored, MOTChallenge files and `vigil track`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pytest

from jobs.cli import main
from pipeline.config import ConfigError, TrackConfig, load_config
from pipeline.detection import iou_matrix
from pipeline.tracking import (
    Detections,
    MOTInputError,
    Track,
    Tracker,
    kalman,
    read_detections,
    write_tracks,
)

DIM = 32  # appearance dimensions: enough for distinct identities, small for speed


@dataclass
class Mover:
    """One ground-truth object: its box at frame 1 (x1, y1, x2, y2), moving by `velocity` (dx, dy) per frame.
    `jumps` moves it by (dx, dy) from a frame on (a reappearance elsewhere); from frame `turn` on it goes back
    the way it came."""

    box: tuple[float, float, float, float]
    velocity: tuple[float, float] = (0.0, 0.0)
    hidden: set[int] = field(default_factory=set)  # frames without its detection
    low: set[int] = field(default_factory=set)  # frames its detection scores low (0.3)
    jumps: dict[int, tuple[float, float]] = field(default_factory=dict)
    turn: int | None = None

    def box_at(self, frame: int) -> np.ndarray:
        steps = frame - 1 if self.turn is None or frame <= self.turn else 2 * (self.turn - 1) - (frame - 1)
        shift = np.array(self.velocity) * steps
        for start, offset in self.jumps.items():
            if frame >= start:
                shift = shift + offset
        return np.array(self.box) + np.tile(shift, 2)


def scene(
    movers: list[Mover],
    frames: int,
    *,
    appearance: bool = True,
    jitter: float = 0.5,
    false_positives: dict[int, tuple[float, float, float, float]] | None = None,
    seed: int = 0,
) -> tuple[list[Detections], list[list[int]]]:
    """Each frame's detections, and which mover each detection is (-1 for a false positive). Boxes jitter by
    `jitter` pixels; each mover has its own appearance, seen through a little noise."""
    rng = np.random.default_rng(seed)
    identities = rng.normal(size=(len(movers) + 1, DIM))
    identities /= np.linalg.norm(identities, axis=1, keepdims=True)
    per_frame, truth = [], []
    for frame in range(1, frames + 1):
        boxes, scores, who = [], [], []
        for number, mover in enumerate(movers):
            if frame not in mover.hidden:
                boxes.append(mover.box_at(frame) + rng.normal(0, jitter, 4))
                scores.append(0.3 if frame in mover.low else 0.9)
                who.append(number)
        if false_positives and frame in false_positives:
            boxes.append(np.array(false_positives[frame]))
            scores.append(0.95)
            who.append(-1)
        vectors = identities[who] + rng.normal(0, 0.03, (len(who), DIM))
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        per_frame.append(
            Detections(
                np.array(boxes).reshape(-1, 4),
                np.array(scores),
                appearance=vectors.reshape(-1, DIM) if appearance else None,
            )
        )
        truth.append(who)
    return per_frame, truth


def run(tracker: Tracker, per_frame: list[Detections]) -> list[list[Track]]:
    return [tracker.update(detections) for detections in per_frame]


def ids_of_movers(outputs: list[list[Track]], per_frame: list[Detections], truth: list[list[int]]) -> dict:
    """The track ids each mover was reported under (a track belongs to the detection its box overlaps most; a
    track reported while lost, overlapping no detection, to none)."""
    seen: dict[int, set[int]] = {}
    for tracks, detections, who in zip(outputs, per_frame, truth):
        if not tracks or not len(detections):
            continue
        overlap = iou_matrix(np.array([track.box for track in tracks]), detections.boxes)
        for track, best, most in zip(tracks, overlap.argmax(axis=1), overlap.max(axis=1)):
            if most > 0:
                seen.setdefault(who[best], set()).add(track.track_id)
    return seen


def test_two_objects_crossing_keep_their_ids():
    # Same size, same row, opposite ways: at the crossing both predicted boxes overlap both detections fully.
    movers = [Mover((0, 100, 40, 180), (4, 0)), Mover((400, 100, 440, 180), (-4, 0))]
    per_frame, truth = scene(movers, 100)
    outputs = run(Tracker(), per_frame)
    assert ids_of_movers(outputs, per_frame, truth) == {0: {1}, 1: {2}}
    assert not outputs[0] and all(len(tracks) == 2 for tracks in outputs[1:])  # from the second hit (confirm_hits)


def test_two_objects_meeting_and_turning_back_keep_their_ids_by_appearance():
    # They meet box on box at frame 45 and turn: motion alone carries each track on with the other object.
    movers = [Mover((0, 100, 40, 180), (4, 0), turn=45), Mover((352, 100, 392, 180), (-4, 0), turn=45)]
    per_frame, truth = scene(movers, 90)
    assert ids_of_movers(run(Tracker(), per_frame), per_frame, truth) == {0: {1}, 1: {2}}
    per_frame, truth = scene(movers, 90, appearance=False)
    assert ids_of_movers(run(Tracker(), per_frame), per_frame, truth) == {0: {1, 2}, 1: {1, 2}}


def test_an_occlusion_within_the_reid_window_keeps_the_id_and_a_longer_one_does_not():
    config = TrackConfig(reid_frames=10)
    short = Mover((100, 100, 150, 200), (2, 1), hidden=set(range(20, 30)))  # 10 frames missed
    per_frame, truth = scene([short], 60)
    assert ids_of_movers(run(Tracker(config), per_frame), per_frame, truth) == {0: {1}}
    long = Mover((100, 100, 150, 200), (2, 1), hidden=set(range(20, 31)))  # 11 frames missed
    per_frame, truth = scene([long], 60)
    assert ids_of_movers(run(Tracker(config), per_frame), per_frame, truth) == {0: {1, 2}}


def test_a_lost_track_is_reidentified_by_appearance_far_from_where_it_was_predicted():
    # Hidden for 5 frames, then seen 300 px away (another camera angle, a teleport): IoU has nothing to go on.
    mover = Mover((100, 100, 150, 200), (2, 0), hidden=set(range(30, 35)), jumps={30: (300, 150)})
    other = Mover((500, 400, 560, 480), (-1, 0))
    per_frame, truth = scene([mover, other], 60)
    assert ids_of_movers(run(Tracker(), per_frame), per_frame, truth) == {0: {1}, 1: {2}}
    # without appearance the reappearance is a new object
    per_frame, truth = scene([mover, other], 60, appearance=False)
    assert ids_of_movers(run(Tracker(), per_frame), per_frame, truth) == {0: {1, 3}, 1: {2}}


def test_missed_and_false_detections_neither_break_nor_make_tracks():
    rng = np.random.default_rng(5)
    movers = [
        Mover((50.0 + 120 * i, 50.0 + 60 * i, 100.0 + 120 * i, 150.0 + 60 * i), (1.5, 0.5), hidden=set(misses))
        for i, misses in enumerate(rng.choice(np.arange(5, 80), (4, 6), replace=False).tolist())
    ]
    # one-frame false positives, away from every object, some two frames apart
    false_positives = {frame: (900.0, 700.0 - frame, 950.0, 760.0 - frame) for frame in (10, 25, 27, 50, 70)}
    for appearance in (True, False):
        per_frame, truth = scene(movers, 80, appearance=appearance, false_positives=false_positives)
        outputs = run(Tracker(), per_frame)
        assert ids_of_movers(outputs, per_frame, truth) == {0: {1}, 1: {2}, 2: {3}, 3: {4}}
        reported = {track.track_id for tracks in outputs for track in tracks}
        assert reported == {1, 2, 3, 4}  # no false positive ever confirmed


def test_low_score_detections_keep_a_track_alive_but_never_start_one():
    mover = Mover((100, 100, 150, 200), (3, 0), low=set(range(20, 45)))
    faint = Mover((600, 300, 650, 400), (0, 2), low=set(range(1, 61)))  # only ever low-score
    per_frame, truth = scene([mover, faint], 60)
    # reid_frames 0: a track not kept alive by its low-score detections would be gone at once
    outputs = run(Tracker(TrackConfig(reid_frames=0)), per_frame)
    assert ids_of_movers(outputs, per_frame, truth) == {0: {1}}
    assert all([track.track_id for track in tracks] == [1] for tracks in outputs[2:])
    assert [track.score for tracks in outputs[18:44] for track in tracks] == pytest.approx([0.9] + [0.3] * 25)


def test_track_records_count_hits_and_age():
    mover = Mover((100, 100, 150, 200), (1, 0), hidden={6, 7})
    per_frame, _ = scene([mover], 10)
    tracker = Tracker(TrackConfig(report_lost_frames=0))
    outputs = run(tracker, per_frame)
    assert [len(tracks) for tracks in outputs] == [0, 1, 1, 1, 1, 0, 0, 1, 1, 1]
    last = outputs[-1][0]
    assert (last.track_id, last.frame, last.hits, last.age, last.state, last.class_id) == (1, 10, 8, 10, "confirmed", 0)
    assert tracker.frame == 10 and len(tracker) == 1
    assert np.allclose(last.box, mover.box_at(10), atol=2)


def test_a_lost_track_is_reported_at_its_prediction_for_report_lost_frames():
    mover = Mover((100, 100, 150, 200), (3, 1), hidden=set(range(20, 28)))  # 8 frames without a detection
    per_frame, _ = scene([mover], 40)
    outputs = run(Tracker(TrackConfig(report_lost_frames=3)), per_frame)
    assert [len(tracks) for tracks in outputs[18:29]] == [1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1]  # frames 19 to 29
    for frame in (20, 21, 22):  # outputs[frame - 1]: the frame's own tracks
        (track,) = outputs[frame - 1]
        assert (track.track_id, track.state, track.frame, track.hits) == (1, "lost", frame, 19)
        assert track.score == pytest.approx(0.9)  # its last detection's
        assert np.allclose(track.box, mover.box_at(frame), atol=3)  # carried on by its velocity
    assert outputs[27][0].state == "confirmed" and outputs[27][0].track_id == 1
    # report_lost_frames 0: a track is reported only in the frames it took a detection in
    outputs = run(Tracker(TrackConfig(report_lost_frames=0)), per_frame)
    assert [len(tracks) for tracks in outputs[18:29]] == [1] + [0] * 8 + [1, 1]


def test_each_reported_track_names_the_detection_it_took():
    movers = [
        Mover((0, 100, 40, 180), (4, 0)),
        Mover((400, 300, 450, 400), (-2, 0), hidden=set(range(30, 35)), jumps={30: (300, 150)}),  # re-identified
        Mover((200, 500, 260, 600), (0, -2), low=set(range(10, 20))),  # taken by low-score detections meanwhile
    ]
    per_frame, truth = scene(movers, 50, false_positives={5: (900, 900, 950, 960), 25: (900, 50, 950, 110)})
    # the rows shuffled each frame after the first (whose order numbers the tracks): a track's row is where its
    # detection is, whatever the order
    rng = np.random.default_rng(2)
    for number, (detections, who) in enumerate(zip(per_frame, truth)):
        order = rng.permutation(len(who)) if number else np.arange(len(who))
        per_frame[number] = Detections(
            detections.boxes[order], detections.scores[order], None, detections.appearance[order]
        )
        truth[number] = [who[row] for row in order]
    mover_of = {1: 0, 2: 1, 3: 2}  # ids count in order of birth; the two false positives are tracks 4 and 5

    def check(track: Track, detections: Detections, who: list[int]) -> None:
        if track.state == "lost":
            assert track.detection is None
            return
        assert who[track.detection] == mover_of.get(track.track_id, -1)
        assert track.score == pytest.approx(detections.scores[track.detection])
        assert iou_matrix(np.array([track.box]), detections.boxes[[track.detection]])[0, 0] > 0.8

    reported = run(Tracker(), per_frame)
    tracker = Tracker()
    with_tentative = [tracker.update(detections, include_tentative=True) for detections in per_frame]
    for tracks, more, detections, who in zip(reported, with_tentative, per_frame, truth):
        assert [track for track in more if track.state != "tentative"] == tracks  # nothing else changes
        for track in more:
            check(track, detections, who)
        rows = [track.detection for track in more if track.detection is not None]
        assert len(rows) == len(set(rows))
    lost = [track for tracks in reported for track in tracks if track.state == "lost"]
    assert {track.track_id for track in lost} == {2} and len(lost) == 3  # report_lost_frames of its 5
    # tentative: the three movers' first frame and the two false positives', never confirmed
    tentative = [
        (track.frame, track.track_id) for tracks in with_tentative for track in tracks if track.state == "tentative"
    ]
    assert tentative == [(1, 1), (1, 2), (1, 3), (5, 4), (25, 5)]
    assert {track.track_id for tracks in reported for track in tracks} == {1, 2, 3}


def test_state_round_trips_through_json_and_continues_identically():
    movers = [
        Mover((0, 100, 40, 180), (4, 0), hidden=set(range(38, 44))),  # lost at the save
        Mover((400, 100, 440, 180), (-4, 0)),
        Mover((200, 300, 260, 400), (0, -2), low=set(range(35, 45))),
    ]
    per_frame, _ = scene(movers, 90, false_positives={39: (900, 900, 950, 960), 40: (901, 901, 951, 961)})
    original = Tracker(TrackConfig(reid_frames=8))
    run(original, per_frame[:40])
    saved = json.loads(json.dumps(original.state()))
    restored = Tracker.from_state(TrackConfig(reid_frames=8), saved)
    assert restored.state() == saved
    assert run(restored, per_frame[40:]) == run(original, per_frame[40:])
    assert restored.state() == original.state()


def test_a_state_that_is_none_is_refused_in_one_line():
    with pytest.raises(ValueError, match="version"):
        Tracker.from_state(None, {"tracks": []})
    state = Tracker().state()
    del state["next_id"]
    with pytest.raises(ValueError, match="not a tracker state: KeyError"):
        Tracker.from_state(None, state)


def test_the_block_kalman_filter_equals_the_dense_one():
    """kalman keeps four 2 x 2 covariance blocks per track: the textbook 8 x 8 filter gives the same numbers."""
    rng = np.random.default_rng(1)
    measurements = np.column_stack([rng.uniform(0, 500, (3, 2)), rng.uniform(20, 80, (3, 2))])
    means, blocks = kalman.initiate(measurements)
    transition = np.eye(8) + np.eye(8, k=4)
    observation = np.eye(4, 8)

    def dense(blocks):
        full = np.zeros((len(blocks), 8, 8))
        for i in range(4):
            full[:, i, i], full[:, i, i + 4], full[:, i + 4, i], full[:, i + 4, i + 4] = (
                blocks[:, 0, i],
                blocks[:, 1, i],
                blocks[:, 1, i],
                blocks[:, 2, i],
            )
        return full

    dense_means, dense_covariances = means.copy(), dense(blocks)
    for _ in range(3):
        scales = np.tile(dense_means[:, 2:4], 2)
        noise = np.concatenate([(kalman.POSITION_NOISE * scales) ** 2, (kalman.VELOCITY_NOISE * scales) ** 2], 1)
        dense_means = dense_means @ transition.T
        dense_covariances = transition @ dense_covariances @ transition.T + np.apply_along_axis(np.diag, 1, noise)
        means, blocks = kalman.predict(means, blocks)
        assert np.allclose(means, dense_means) and np.allclose(dense(blocks), dense_covariances)

        observed = measurements + rng.normal(0, 2, measurements.shape)
        scales = np.tile(dense_means[:, 2:4], 2)
        innovation_cov = observation @ dense_covariances @ observation.T + np.apply_along_axis(
            np.diag, 1, (kalman.POSITION_NOISE * scales) ** 2
        )
        gain = dense_covariances @ observation.T @ np.linalg.inv(innovation_cov)
        dense_means = dense_means + np.einsum("tij,tj->ti", gain, observed - dense_means[:, :4])
        dense_covariances = dense_covariances - gain @ innovation_cov @ gain.transpose(0, 2, 1)
        means, blocks = kalman.update(means, blocks, observed)
        assert np.allclose(means, dense_means) and np.allclose(dense(blocks), dense_covariances)


def test_detections_are_checked():
    assert len(Detections.empty()) == 0 and Detections.empty(8).appearance.shape == (0, 8)
    detections = Detections([[0, 0, 10, 10]], [0.9])
    assert detections.class_ids.tolist() == [0] and detections.boxes.dtype == np.float32
    with pytest.raises(ValueError, match=r"boxes must have shape \(N, 4\)"):
        Detections([[0, 0, 10]], [0.9])
    with pytest.raises(ValueError, match=r"scores must have shape \(1,\)"):
        Detections([[0, 0, 10, 10]], [0.9, 0.8])
    with pytest.raises(ValueError, match="unit vectors"):
        Detections([[0, 0, 10, 10]], [0.9], appearance=[[3.0, 4.0]])
    with pytest.raises(ValueError, match="finite"):
        Detections([[0, 0, np.nan, 10]], [0.9])
    tracker = Tracker()
    tracker.update(Detections([[0, 0, 10, 10]], [0.9], appearance=[[1.0, 0.0]]))
    with pytest.raises(ValueError, match="3 dimensions, but this tracker's tracks have 2"):
        tracker.update(Detections([[0, 0, 10, 10]], [0.9], appearance=[[1.0, 0.0, 0.0]]))


def test_the_track_section_of_the_config():
    assert load_config().track == TrackConfig()
    assert load_config(None, {"track.reid_frames": 5}).track.reid_frames == 5
    with pytest.raises(ConfigError, match=r"'track.high_score': Value error, must be at least track.low_score \(0.7\)"):
        load_config(None, {"track.low_score": 0.7})
    with pytest.raises(ValueError, match="must be at least track.high_score"):
        TrackConfig(birth_score=0.4)


def write_det(path, rows):
    path.write_text("".join(",".join(map(str, row)) + "\n" for row in rows))
    return path


DET_ROWS = [
    (2, -1, 10, 20, 30, 40, 0.9, -1, -1, -1),
    (1, -1, 0, 0, 10, 10, 0.8, -1, -1, -1),
    (2, -1, 100, 100, 5, 5, 0.5, -1, -1, -1),
]


def test_mot_files_round_trip(tmp_path):
    vectors = np.eye(3, 4, dtype=np.float32) * 2  # normalised as read
    np.save(tmp_path / "feats.npy", vectors)
    per_frame = read_detections(write_det(tmp_path / "det.txt", DET_ROWS), tmp_path / "feats.npy")
    assert sorted(per_frame) == [1, 2]
    assert per_frame[2].boxes.tolist() == [[10, 20, 40, 60], [100, 100, 105, 105]]
    assert per_frame[2].scores.tolist() == pytest.approx([0.9, 0.5])
    assert per_frame[1].appearance.tolist() == [[0, 1, 0, 0]]  # the file's second row
    assert per_frame[2].appearance.tolist() == [[1, 0, 0, 0], [0, 0, 1, 0]]

    tracks = [
        (1, [Track(7, (0.0, 0.0, 10.0, 10.0), 0.8, 0, 1, 3, 3)]),
        (2, [Track(7, (1.5, 2.25, 11.5, 12.25), 0.75, 0, 2, 4, 4), Track(9, (50, 60, 70, 90), 0.6, 0, 2, 3, 3)]),
    ]
    assert write_tracks(tmp_path / "tracks.txt", tracks) == 3
    lines = (tmp_path / "tracks.txt").read_text().splitlines()
    assert lines[0] == "1,7,0.000,0.000,10.000,10.000,0.80000,-1,-1,-1"
    assert [line.split(",")[:2] for line in lines] == [["1", "7"], ["2", "7"], ["2", "9"]]
    again = read_detections(tmp_path / "tracks.txt")
    assert again[2].boxes.tolist() == [list(track.box) for track in tracks[1][1]]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1,-1,0,0,10,10,0.9\n1,-1,0,0,10\n", r"det.txt:2: expected frame,id,x,y,w,h,conf, got 5 field\(s\)"),
        ("1,-1,0,0,10,10,0.9\n\n1,-1,0,zero,10,10,0.9\n", r"det.txt:3: not a number"),
        ("0,-1,0,0,10,10,0.9\n", r"det.txt:1: the frame must be a whole number from 1"),
        ("1,-1,0,0,-10,10,0.9\n", r"det.txt:1: the box's width and height must not be negative"),
    ],
)
def test_malformed_detection_files_are_named_with_their_line(tmp_path, text, message):
    (tmp_path / "det.txt").write_text(text)
    with pytest.raises(MOTInputError, match=message):
        read_detections(tmp_path / "det.txt")


def test_missing_files_and_misaligned_appearance_are_refused(tmp_path):
    with pytest.raises(MOTInputError, match="detection file not found"):
        read_detections(tmp_path / "nope.txt")
    det = write_det(tmp_path / "det.txt", DET_ROWS)
    np.save(tmp_path / "feats.npy", np.ones((2, 4), dtype=np.float32))
    with pytest.raises(MOTInputError, match="has 2 appearance rows but the detection file has 3"):
        read_detections(det, tmp_path / "feats.npy")
    with pytest.raises(MOTInputError, match="appearance file not found"):
        read_detections(det, tmp_path / "none.npy")
    with pytest.raises(MOTInputError, match="det.txt is not a .npy array file"):
        read_detections(det, det)  # np.load would take it for a pickle


def test_vigil_track_end_to_end(tmp_path, capsys):
    movers = [Mover((0, 100, 40, 180), (4, 0)), Mover((400, 100, 440, 180), (-4, 0))]
    per_frame, _ = scene(movers, 40)
    rows, vectors = [], []
    for frame, detections in enumerate(per_frame, 1):
        if frame == 20:
            continue  # a frame without detections: the tracker still steps through it
        for box, score, vector in zip(detections.boxes, detections.scores, detections.appearance):
            rows.append((frame, -1, *np.round([box[0], box[1], box[2] - box[0], box[3] - box[1]], 2), score))
            vectors.append(vector)
    det = write_det(tmp_path / "det.txt", rows)
    np.save(tmp_path / "feats.npy", np.array(vectors))
    out = tmp_path / "tracks.txt"
    assert main(["track", "--det", str(det), "--appearance", str(tmp_path / "feats.npy"), "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"tracked 40 frames: 2 tracks, 78 rows written to {out}\n"
    written = np.loadtxt(out, delimiter=",")
    # frame 20 has no detection: both tracks are reported lost there, at their predictions
    assert set(written[:, 1].tolist()) == {1, 2} and written[written[:, 0] == 20, 1].tolist() == [1, 2]

    assert main(["track", "--det", str(tmp_path / "nope.txt"), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error == f"vigil track: error: detection file not found: {tmp_path / 'nope.txt'}\n"
    det.write_text("1,-1,0,0,10,10,0.9\nnot,a,detection\n")
    assert main(["track", "--det", str(det), "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("vigil track: error: ") and f"{det}:2: " in error and error.count("\n") == 1
