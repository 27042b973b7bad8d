"""The null extractor (`monitor.extractor: null`, benchmarking the data plane only): no model, no Ray."""

import shutil

import numpy as np
import pytest

from pipeline.config import load_config
from pipeline.models import tiny_checkpoints
from pipeline.models.null_encoders import NullEncoders, NullExtractorRefused
from pipeline.models.random_weights import UNTRAINED_MARKER
from pipeline.records import Frame, FrameBatch
from pipeline.search.embed import extract_features


@pytest.fixture(scope="module")
def null_encoders(vigil_cache):
    return NullEncoders.from_models("tiny")


def _frames(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 240, 320, 3), dtype=np.uint8)


def test_vectors_have_the_checkpoints_sizes_and_unit_norm(null_encoders, tiny_encoders):
    siglip, dinov2 = null_encoders.embed_images(_frames(5))
    assert siglip.shape == (5, tiny_encoders.siglip.dim) and dinov2.shape == (5, tiny_encoders.dinov2.dim)
    assert siglip.dtype == np.float32 and dinov2.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(siglip, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(dinov2, axis=1), 1.0, atol=1e-5)
    # a flat grey frame (all cells at the centre of the colour range) is a unit vector too, not zeros
    grey = np.full((1, 64, 64, 3), 127.5, dtype=np.float32).round().astype(np.uint8)
    assert np.isclose(np.linalg.norm(null_encoders.embed_images(grey)[0]), 1.0, atol=1e-5)
    empty = null_encoders.embed_images(np.zeros((0, 8, 8, 3), np.uint8))
    assert empty[0].shape == (0, tiny_encoders.siglip.dim) and empty[1].shape == (0, tiny_encoders.dinov2.dim)


def test_deterministic_and_different_for_different_pictures(null_encoders, vigil_cache):
    frames = _frames(3)
    first = null_encoders.embed_images(frames)
    again = NullEncoders.from_models("tiny").embed_images(list(frames))  # another instance, a list of frames
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    siglip = first[0]
    assert float(siglip[0] @ siglip[1]) < 0.999  # distinct pictures, distinct vectors


def test_outputs_marked_untrained_with_the_checkpoints_ids(null_encoders, vigil_cache):
    source = tiny_checkpoints()
    assert null_encoders.ids.untrained
    assert (null_encoders.ids.siglip, null_encoders.ids.dinov2) == (source.siglip, source.dinov2)


def test_refused_beside_checkpoints_without_the_untrained_marker(tmp_path, vigil_cache):
    source = tiny_checkpoints()
    for name, where in (("siglip", source.siglip), ("dinov2", source.dinov2)):
        shutil.copytree(where, tmp_path / name)
    (tmp_path / "siglip" / UNTRAINED_MARKER).unlink()
    with pytest.raises(NullExtractorRefused, match="random-weight checkpoints"):
        NullEncoders.from_models(str(tmp_path))


def test_extract_features_runs_on_it(null_encoders):
    frames = [Frame("cam", i * 0.5, i, image, camera="cam") for i, image in enumerate(_frames(4))]
    frames[2].still = True  # still frames skip extraction as with the models
    batch = extract_features(FrameBatch(frames), null_encoders)
    assert batch.siglip.shape[0] == 3 and batch.dinov2.shape[0] == 3


def test_config_value():
    assert load_config().monitor.extractor == "models"
    assert load_config(overrides={"monitor.extractor": "null"}).monitor.extractor == "null"
