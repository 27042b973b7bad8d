import numpy as np
import pytest

from pipeline.records import Frame, FrameBatch, ModelIds
from pipeline.search.embed import STILL_FRAMES_PER_SLOT, FeatureCarry, clip_embeddings, extract_features, model_batches

MODELS = ModelIds("s", "d", untrained=True)


class CountingEncoders:
    """Embeds an image as its normalised mean colour; counts the images it was given."""

    def __init__(self):
        self.seen = 0

    def embed_images(self, images):
        self.seen += len(images)
        colour = images.reshape(len(images), -1, 3).mean(axis=1) + 1.0
        unit = colour / np.linalg.norm(colour, axis=1, keepdims=True)
        return unit.astype(np.float32), unit[:, :2].astype(np.float32)


def _frame(pts, colour, still=False):
    return Frame("v.mp4", pts, int(pts * 2), np.full((4, 4, 3), colour, np.uint8), still=still)


def test_still_frames_skip_the_models_and_reuse_features():
    frames = [_frame(0.0, (200, 0, 0)), _frame(0.5, (200, 0, 0), still=True), _frame(1.0, (0, 0, 200))]
    encoders = CountingEncoders()
    batch = extract_features(FrameBatch(frames), encoders)
    features = batch.features()
    assert encoders.seen == 2 and features[1] is None
    assert features[2].pts == 1.0
    clips = list(clip_embeddings([batch], window=2.0, source_id="v", models=MODELS))
    assert len(clips) == 1 and clips[0][0].frame_count == 3


def test_windows_pool_unit_vectors_and_pick_the_typical_frame():
    colours = [(250, 10, 10), (240, 20, 10), (10, 10, 250), (10, 240, 10), (10, 250, 10), (10, 10, 10)]
    frames = [_frame(i * 0.7, c) for i, c in enumerate(colours)]  # pts 0 .. 3.5
    encoders = CountingEncoders()
    batches = [extract_features(batch, encoders) for batch in model_batches(frames, 4)]
    clips = list(clip_embeddings(batches, window=1.5, source_id="v", models=MODELS))
    assert [(c.start, c.end, c.frame_count) for c, _ in clips] == [(0.0, 1.5, 3), (1.5, 3.0, 2), (3.0, 4.5, 1)]
    for clip, keyframe in clips:
        assert np.linalg.norm(clip.siglip) == pytest.approx(1.0, abs=1e-5)
        assert (
            keyframe.pts == clip.keyframe_pts
            and clip.keyframe_key == f"keyframes/v/{round(keyframe.pts * 1000):012d}.jpg"
        )
    # two red frames and one blue: the keyframe is a red one
    assert clips[0][1].image[0, 0, 0] > 200


def test_a_still_first_frame_is_an_error():
    with pytest.raises(ValueError, match="marked still"):
        batch = extract_features(FrameBatch([_frame(0.0, (1, 1, 1), still=True)]), CountingEncoders())
        list(clip_embeddings([batch], window=2, source_id="v", models=MODELS))


def test_model_batches_fill_the_models_and_stay_bounded_on_a_still_camera():
    frames = [_frame(i * 0.5, (i, 0, 0), still=i % 3 != 0) for i in range(40)]  # a mostly still camera
    batches = list(model_batches(frames, 4))
    assert [f for batch in batches for f in batch.frames] == frames  # every frame, in order
    assert [len(batch.moving()) for batch in batches] == [4, 4, 4, 2]  # full model batches
    assert [len(batch) for batch in batches] == [10, 12, 12, 6]
    all_still = [_frame(0.0, (1, 1, 1))] + [_frame(i * 0.5, (1, 1, 1), still=True) for i in range(1, 40)]
    assert [len(batch) for batch in model_batches(all_still, 4)] == [4 * STILL_FRAMES_PER_SLOT] * 2 + [8]


def test_a_still_frame_takes_its_own_cameras_previous_features_across_batches():
    # Two cameras interleaved, batches cut between a camera's moving frame and its still successor.
    red_a, blue_b = _frame(0.0, (200, 0, 0)), Frame("b.mp4", 0.0, 0, np.full((4, 4, 3), (0, 0, 200), np.uint8))
    still_a = _frame(0.5, (0, 0, 0), still=True)  # pixels differ on purpose: the carry, not the models, decides
    still_b = Frame("b.mp4", 0.5, 1, np.zeros((4, 4, 3), np.uint8), still=True)
    encoders = CountingEncoders()
    batches = [extract_features(FrameBatch(frames), encoders) for frames in ([red_a, blue_b], [still_a, still_b])]
    carry = FeatureCarry()
    got = {(frame.source, frame.pts): features for batch in batches for frame, features in carry.per_frame(batch)}
    assert encoders.seen == 2
    np.testing.assert_array_equal(got["v.mp4", 0.5].siglip, got["v.mp4", 0.0].siglip)
    np.testing.assert_array_equal(got["b.mp4", 0.5].siglip, got["b.mp4", 0.0].siglip)
    assert got["v.mp4", 0.5].pts == 0.5 and not np.allclose(got["v.mp4", 0.0].siglip, got["b.mp4", 0.0].siglip)
