"""Smoke test of `python -m bench.track` at a tiny size: the generator, TrackEval's metrics and vigil's tracker
(no baselines: they are not installed by `make test`)."""

import numpy as np

from bench import track


def _tiny(level: str = "crossing"):
    return track.generate(track.LEVELS[level], frames=90, seed=3, name=level)


def test_the_generator_is_deterministic_and_noisy():
    first, second = _tiny(), _tiny()
    assert all(np.array_equal(a.boxes, b.boxes) and np.array_equal(a.appearance, b.appearance)
               for a, b in zip(first.frames, second.frames))  # fmt: skip
    stats = first.stats()
    assert stats["ids"] > 10 and stats["false_positives_per_frame"] > 0 and 0 < stats["low_score_true_share"] < 1
    appearance = np.concatenate([f.appearance for f in first.frames])
    np.testing.assert_allclose(np.linalg.norm(appearance, axis=1), 1.0, rtol=1e-5)


def test_a_perfect_tracker_scores_one_and_swapped_ids_count_as_switches():
    sequence = _tiny()
    perfect = track.evaluate(sequence, track.ground_truth_outputs(sequence))
    assert perfect["HOTA"] > 0.99 and perfect["IDF1"] > 0.99 and perfect["MOTA"] > 0.99 and perfect["IDSW"] == 0

    # two objects seen on both sides of the middle frame trade ids from there on
    middle = len(sequence.frames) // 2
    a, b = sorted(set(sequence.frames[middle - 1].gt_ids) & set(sequence.frames[middle].gt_ids))[:2]
    swap = {a: b, b: a}
    swapped = [
        (np.array([swap.get(i, i) for i in ids]) if n >= middle else ids, boxes)
        for n, (ids, boxes) in enumerate(track.ground_truth_outputs(sequence))
    ]
    scores = track.evaluate(sequence, swapped)
    assert scores["IDSW"] >= 2 and scores["IDF1"] < perfect["IDF1"] and scores["HOTA"] < perfect["HOTA"]
    assert scores["MOTA"] < perfect["MOTA"]  # the switches are errors; the boxes still all match


def test_vigils_tracker_runs_on_the_generated_detections():
    sequence = _tiny("easy")
    run = track.run_tracker(track.vigil_tracker(), sequence)
    scores = track.evaluate(sequence, run.outputs)
    assert run.update_seconds > 0 and len(run.outputs) == len(sequence.frames)
    assert scores["HOTA"] > 0.6 and scores["IDF1"] > 0.7 and scores["MOTA"] > 0.5


def test_the_motion_detectors_cost_is_measured_on_720p_frames():
    motion = track.motion_cost(seconds=2, seed=0)
    assert motion["frames"] == 2 * motion["rate"] and motion["ms_per_frame"] > 0
    lines = track.motion_lines(motion)
    assert lines[0].startswith(f"- {motion['ms_per_frame']:.2f} ms per 720p frame")
