"""Encoders and random-weight checkpoints: real models loaded offline through the from_pretrained path."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.models import (
    DEFAULT_MODELS,
    UNTRAINED_MARKER,
    Dinov2Encoder,
    ModelSource,
    ModelUnavailableError,
    PrecisionTrial,
    SiglipEncoder,
    TensorPreprocessor,
    build_random_checkpoints,
    calibration_photographs,
    choose_cpu_precision,
    hub,
    load_encoders,
    min_cosine,
    resolve_models,
    tiny_checkpoints,
)
from pipeline.models import encoders as encoders_module
from pipeline.models import precision as precision_module
from pipeline.models.precision import (
    CpuPrecisionDecision,
    cpu_identity,
    decision_key,
    decision_path,
    measure_ms_per_image,
    read_decision,
    write_decision,
)
from pipeline.records import ModelIds


@pytest.fixture(scope="module", autouse=True)
def offline_env(tmp_path_factory, vigil_cache):
    """No hub here: every test of this module runs offline, with a vigil cache of its own; the session's
    (`vigil_cache`, which Ray's workers are given) is back after it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("VIGIL_CACHE", str(tmp_path_factory.mktemp("vigil-cache")))
        yield


@pytest.fixture(scope="module")
def tiny(offline_env) -> ModelSource:
    return tiny_checkpoints()  # built under $VIGIL_CACHE, reused by every test


@pytest.fixture(scope="module")
def encoders(tiny):
    return load_encoders(tiny, precision="fp32", batch_size=16)


def scenes(h: int = 96, w: int = 128) -> np.ndarray:
    """Eight strongly different scenes (colour and pattern), uint8 (8, h, w, 3)."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.zeros((8, h, w, 3), np.uint8)
    out[0] = [220, 30, 30]  # solid red
    out[1] = np.where(((xx // 8) % 2)[..., None] == 1, [255, 255, 255], [20, 40, 200])  # blue/white stripes
    out[2] = np.where((((xx // 16) + (yy // 16)) % 2)[..., None] == 1, [0, 0, 0], [30, 200, 60])  # checkerboard
    out[3] = np.stack([xx * 255 // (w - 1), np.full_like(xx, 128), 255 - xx * 255 // (w - 1)], -1)  # gradient
    r = np.sqrt((yy - h / 2) ** 2 + (xx - w / 2) ** 2)
    out[4] = np.where(((r // 6) % 2)[..., None] == 1, [250, 230, 20], [90, 20, 120])  # rings
    out[5] = np.random.default_rng(7).integers(0, 256, (h, w, 3))  # noise
    out[6] = np.where((((xx + yy) // 10) % 2)[..., None] == 1, [255, 140, 0], [0, 160, 160])  # diagonals
    out[7] = 245
    out[7, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 10  # white with a black square
    return out


def photo_like(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(xx * 9) * 0.5 + 0.5, np.cos(yy * 7) * 0.5 + 0.5, (xx + yy) / 2], -1) * 200
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Checkpoints


def test_tiny_checkpoints_build_and_load_offline_through_auto_classes(tiny):
    from transformers import AutoImageProcessor, AutoModel, AutoProcessor

    for folder, model_type in ((tiny.siglip, "siglip"), (tiny.dinov2, "dinov2")):
        folder = Path(folder)
        assert json.loads((folder / UNTRAINED_MARKER).read_text())["untrained"] is True
        assert json.loads((folder / "config.json").read_text())["model_type"] == model_type
        size = sum(f.stat().st_size for f in folder.iterdir())
        assert size < 1_000_000, f"{folder} is {size} bytes"

    model = AutoModel.from_pretrained(tiny.siglip, local_files_only=True)
    processor = AutoProcessor.from_pretrained(tiny.siglip, local_files_only=True)
    assert type(model).__name__ == "SiglipModel"
    assert type(processor).__name__ == "SiglipProcessor"
    assert processor.image_processor.size["height"] == processor.image_processor.size["width"] == 224
    tokens = processor(text=["a cat", "一只猫"], padding="max_length", max_length=64, return_tensors="pt")
    assert tokens["input_ids"].shape == (2, 64)
    assert model.config.text_config.pad_token_id == processor.tokenizer.pad_token_id

    dino = AutoModel.from_pretrained(tiny.dinov2, local_files_only=True)
    dino_ip = AutoImageProcessor.from_pretrained(tiny.dinov2, local_files_only=True, backend="pil")
    assert type(dino).__name__ == "Dinov2Model"
    assert dino_ip.crop_size["height"] == dino.config.image_size  # processor consistent with the model
    assert dino_ip.size["shortest_edge"] == round(dino.config.image_size * 256 / 224)
    assert list(dino_ip.image_mean) == [0.485, 0.456, 0.406]


def test_tiny_checkpoints_are_cached_reproducible_and_atomic(tiny, tmp_path):
    before = Path(tiny.siglip, "model.safetensors").stat().st_mtime_ns
    assert tiny_checkpoints() == tiny  # reused, not rebuilt
    assert Path(tiny.siglip, "model.safetensors").stat().st_mtime_ns == before

    # Two concurrent builders of the same folder: both succeed, one complete checkpoint, no temp leftovers.
    results: list = []
    threads = [
        threading.Thread(target=lambda: results.append(build_random_checkpoints(tmp_path / "m"))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0] == results[1]
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["dinov2", "siglip"]
    for name in ("siglip", "dinov2"):  # fixed seed: byte-identical weights
        assert (tmp_path / "m" / name / "model.safetensors").read_bytes() == Path(
            getattr(tiny, name), "model.safetensors"
        ).read_bytes()
    with pytest.raises(ValueError):
        build_random_checkpoints(tmp_path / "x", size="huge")
    (tmp_path / "mine" / "siglip").mkdir(parents=True)  # somebody else's folder is never replaced
    (tmp_path / "mine" / "siglip" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        build_random_checkpoints(tmp_path / "mine")
    assert (tmp_path / "mine" / "siglip" / "keep.txt").exists()


# ---------------------------------------------------------------------------------------------
# Embeddings


def test_shapes_unit_norm_and_ids(encoders, tiny):
    imgs = scenes()
    for enc in (encoders.siglip, encoders.dinov2):
        emb = enc.embed_images(imgs)
        assert emb.shape == (8, enc.dim) and emb.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
        mixed = enc.embed_images([imgs[0], photo_like(50, 300), photo_like(480, 270)])  # any sizes
        assert mixed.shape == (3, enc.dim)
        assert enc.embed_images(np.zeros((0, 32, 32, 3), np.uint8)).shape == (0, enc.dim)
        assert enc.untrained is True and enc.precision == "fp32" and enc.device == "cpu"
        with pytest.raises(ValueError):
            enc.embed_images(imgs.astype(np.float32))
    assert encoders.ids == ModelIds(siglip=tiny.siglip, dinov2=tiny.dinov2, untrained=True)


def test_same_image_same_vector_and_different_scenes_differ(encoders):
    imgs = scenes()
    for enc in (encoders.siglip, encoders.dinov2):
        a = enc.embed_images(imgs)
        b = enc.embed_images(imgs.copy())
        np.testing.assert_allclose(a, b, atol=1e-6)
        sims = a @ a.T
        off = sims[~np.eye(8, dtype=bool)]
        assert off.max() < 0.95, f"{type(enc).__name__}: distinct scenes too similar ({off.max():.4f})"
        assert sims[0, 2] < 0.98  # red vs green checkerboard


def test_identical_image_is_nearest_to_itself(encoders):
    imgs = scenes()
    order = [5, 2, 7, 0, 3, 6, 1, 4]  # queries in another batch, in another order
    for enc in (encoders.siglip, encoders.dinov2):
        gallery = enc.embed_images(imgs)
        queries = enc.embed_images(imgs[order].copy())
        for query, k in zip(queries, order):
            ranking = np.argsort(-(gallery @ query))
            assert ranking[0] == k
            assert gallery[k] @ query > 0.9999


def test_texts_embed_in_any_language(encoders):
    texts = ["a red car parked at night", "一辆红色的汽车停在夜里", "un coche rojo", "سيارة حمراء", ""]
    emb = encoders.siglip.embed_texts(texts)
    assert emb.shape == (5, encoders.siglip.dim) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(encoders.siglip.embed_texts(texts[:2]), emb[:2], atol=1e-6)
    assert (emb[0] @ emb[1]) < 0.999  # English and Chinese are different token sequences
    assert encoders.siglip.embed_texts([]).shape == (0, encoders.siglip.dim)
    long = encoders.siglip.embed_texts(["word " * 500])  # truncated to 64 tokens, no error
    assert long.shape == (1, encoders.siglip.dim)
    with pytest.raises(ValueError):
        encoders.siglip.embed_texts("not a list")


def test_batch_splitting_matches_one_big_batch(tiny, encoders):
    small_sig = SiglipEncoder.from_pretrained(tiny.siglip, precision="fp32", batch_size=3)
    small_dino = Dinov2Encoder.from_pretrained(tiny.dinov2, precision="fp32", batch_size=3)
    imgs = scenes()
    np.testing.assert_allclose(small_sig.embed_images(imgs), encoders.siglip.embed_images(imgs), atol=1e-5)
    np.testing.assert_allclose(small_dino.embed_images(imgs), encoders.dinov2.embed_images(imgs), atol=1e-5)
    texts = [f"scene number {i}" for i in range(7)]
    np.testing.assert_allclose(small_sig.embed_texts(texts), encoders.siglip.embed_texts(texts), atol=1e-5)
    with pytest.raises(ValueError):
        SiglipEncoder.from_pretrained(tiny.siglip, batch_size=0)


# ---------------------------------------------------------------------------------------------
# Model specs and unavailable weights


def test_resolve_models_forms(tiny, tmp_path):
    assert resolve_models(None) == DEFAULT_MODELS
    assert resolve_models("default") == DEFAULT_MODELS
    assert resolve_models(" Default ") == DEFAULT_MODELS
    assert resolve_models("tiny") == tiny  # $VIGIL_CACHE/models/random-tiny-v1
    assert "random-tiny-v1" in tiny.siglip
    assert resolve_models("org/a, org/b") == ModelSource("org/a", "org/b")
    assert resolve_models(f"{tiny.siglip},{tiny.dinov2}") == tiny
    assert resolve_models(str(Path(tiny.siglip).parent)) == tiny  # folder with siglip/ and dinov2/
    src = ModelSource("x/y", "z/w")
    assert resolve_models(src) is src
    for bad in ("google/siglip2-base-patch16-224", "a,b,c", ",", "a,", str(tmp_path)):
        with pytest.raises(ValueError, match="SIGLIP,DINOV2"):
            resolve_models(bad)


def _assert_guidance(message: str, model_id: str) -> None:
    assert model_id in message
    assert f"huggingface-cli download {model_id}" in message and f"hf download {model_id}" in message
    assert "~/.cache/huggingface" in message and "HF_HOME" in message
    assert "--models SIGLIP_DIR,DINOV2_DIR" in message and "VIGIL_MODELS" in message
    assert "--models tiny" in message


def test_missing_model_offline_raises_quickly_with_guidance():
    t0 = time.monotonic()
    with pytest.raises(ModelUnavailableError) as err:
        SiglipEncoder.from_pretrained("vigil-test/no-such-model")
    assert time.monotonic() - t0 < 5
    _assert_guidance(str(err.value), "vigil-test/no-such-model")
    assert "HF_HUB_OFFLINE" in str(err.value)

    with pytest.raises(ModelUnavailableError) as err:
        load_encoders("vigil-test/no-siglip,vigil-test/no-dinov2")
    _assert_guidance(str(err.value), "vigil-test/no-siglip")


def test_missing_folder_and_wrong_type_raise(tiny, tmp_path):
    missing = str(tmp_path / "nowhere" / "siglip")
    with pytest.raises(ModelUnavailableError, match="nowhere") as err:
        Dinov2Encoder.from_pretrained(missing)
    _assert_guidance(str(err.value), DEFAULT_MODELS.dinov2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUnavailableError, match="empty"):
        SiglipEncoder.from_pretrained(str(tmp_path / "empty"))
    with pytest.raises(ModelUnavailableError, match="dinov2"):
        SiglipEncoder.from_pretrained(tiny.dinov2)  # a DINOv2 folder is not a SigLIP checkpoint


def test_unreachable_hub_fails_fast_without_offline_flag(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: refused at once
    monkeypatch.setattr(hub, "_reachability", {})
    t0 = time.monotonic()
    with pytest.raises(ModelUnavailableError) as err:
        Dinov2Encoder.from_pretrained("vigil-test/no-such-dinov2")
    assert time.monotonic() - t0 < 8
    assert "unreachable" in str(err.value)
    _assert_guidance(str(err.value), "vigil-test/no-such-dinov2")


# ---------------------------------------------------------------------------------------------
# Preprocessing matches the Hugging Face PIL processors


def _compare(ip, images):
    tp = TensorPreprocessor.from_image_processor(ip)
    for img in images:
        ref = ip(images=[img], return_tensors="pt")
        mine = tp([img])
        assert set(mine) == set(k for k in ref if k in mine)
        assert mine["pixel_values"].shape == ref["pixel_values"].shape
        diff = (mine["pixel_values"] - ref["pixel_values"]).abs().mean().item()
        assert diff < 0.05, f"{type(ip).__name__} {img.shape}: mean abs diff {diff}"
        for key in ("spatial_shapes", "pixel_attention_mask"):
            if key in ref:
                assert torch.equal(mine[key].long(), ref[key].long())


def test_tensor_preprocessing_matches_hf_pil_processors(tiny):
    from transformers import AutoImageProcessor, BitImageProcessorPil, Siglip2ImageProcessorPil, SiglipImageProcessorPil

    images = [
        photo_like(180, 320),
        photo_like(50, 40, 1),
        photo_like(224, 224, 2),
        photo_like(481, 263, 3),
        scenes()[2],
    ]
    _compare(AutoImageProcessor.from_pretrained(tiny.siglip, backend="pil"), images)  # bilinear 224x224
    _compare(AutoImageProcessor.from_pretrained(tiny.dinov2, backend="pil"), images)  # bicubic, edge + crop
    # facebook/dinov2-small settings, SigLIP with bicubic, and SigLIP 2 NaFlex patches
    _compare(
        BitImageProcessorPil(
            size={"shortest_edge": 256},
            crop_size={"height": 224, "width": 224},
            do_center_crop=True,
            resample=3,
            image_mean=[0.485, 0.456, 0.406],
            image_std=[0.229, 0.224, 0.225],
        ),
        images,
    )
    _compare(SiglipImageProcessorPil(size={"height": 224, "width": 224}, resample=3), images)
    _compare(Siglip2ImageProcessorPil(max_num_patches=64, patch_size=16), images)


# ---------------------------------------------------------------------------------------------
# Precision


def trial(ms: float, cosine: float) -> PrecisionTrial:
    return PrecisionTrial(ms_per_image=ms, min_cosine=cosine)


def test_precision_rule_keeps_the_fastest_faithful_precision():
    fp32 = trial(40.0, 1.0)
    assert choose_cpu_precision({"fp32": fp32, "bf16": trial(290.0, 0.999), "int8": trial(25.0, 0.995)}) == "int8"
    # the fastest is unfaithful: the next fastest faithful one wins, even if fp32 is faster still than the rest
    assert choose_cpu_precision({"fp32": fp32, "bf16": trial(30.0, 0.999), "int8": trial(20.0, 0.98)}) == "bf16"
    assert choose_cpu_precision({"fp32": fp32, "bf16": trial(50.0, 0.999), "int8": trial(20.0, 0.98)}) == "fp32"
    assert choose_cpu_precision({"fp32": fp32, "bf16": trial(10.0, 0.97), "int8": trial(20.0, 0.5)}) == "fp32"
    assert (
        choose_cpu_precision({"fp32": trial(10.0, 1.0), "bf16": trial(20.0, 1.0), "int8": trial(30.0, 1.0)}) == "fp32"
    )
    assert choose_cpu_precision({"fp32": fp32, "bf16": trial(40.0, 1.0)}) == "fp32"  # a tie: the reference
    assert choose_cpu_precision({"fp32": fp32, "int8": trial(20.0, 0.99)}) == "int8"  # the threshold is faithful
    assert choose_cpu_precision({"fp32": fp32, "int8": trial(20.0, 0.995)}, threshold=0.999) == "fp32"
    assert choose_cpu_precision({"fp32": trial(40.0, 0.2), "int8": trial(99.0, 1.0)}) == "fp32"  # fp32 is the reference
    with pytest.raises(ValueError, match="fp32"):
        choose_cpu_precision({"bf16": trial(1.0, 1.0)})
    # the minimum over the batch decides fidelity
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(6, 32))
    close = ref + rng.normal(scale=0.01, size=ref.shape)
    assert min_cosine(ref, close) > 0.999
    close[3] = -ref[3]
    assert min_cosine(ref, close) == pytest.approx(-1.0)


def test_timing_is_a_warm_up_then_the_best_of_a_few_calls():
    calls, pauses = [], iter([0.0, 0.1, 0.005, 0.1])  # warm-up, then three timed calls

    def run():
        calls.append(len(calls))
        time.sleep(next(pauses))
        return np.full((1, 2), len(calls))

    output, ms = measure_ms_per_image(run, images=5, repeats=3, budget_s=10.0)
    assert len(calls) == 4 and output.tolist() == [[1, 1]]  # the warm-up's output, for the fidelity check
    assert 1.0 <= ms < 10.0  # the best timed call (5 ms) per image (5 images): not the mean, not the warm-up
    calls.clear()
    pauses = iter([0.0] * 4)
    measure_ms_per_image(run, images=1, repeats=3, budget_s=0.0)
    assert len(calls) == 2  # the budget spent: one timed call is enough


def test_calibration_batch_is_scikit_image_photographs():
    import skimage.data

    photos = calibration_photographs()
    assert len(photos) == 4
    assert [p.shape for p in photos] == [(512, 512, 3), (400, 600, 3), (300, 451, 3), (427, 640, 3)]
    for photo, name in zip(photos, ("astronaut", "coffee", "chelsea", "rocket")):
        assert photo.dtype == np.uint8
        np.testing.assert_array_equal(photo, getattr(skimage.data, name)())
        assert photo.std() > 30  # real content, not a flat frame
        assert len(np.unique(photo.reshape(-1, 3), axis=0)) > 10_000  # photographic colour, not a pattern
        # neighbouring pixels are alike (unlike noise), but not everywhere (unlike a gradient)
        steps = np.abs(np.diff(photo.astype(np.int16), axis=1))
        assert 2 < steps.mean() < 20 and steps.max() > 100


def running_precision(enc) -> str:
    """The precision an encoder's model really runs at, read from its modules."""
    if enc._compiled is not None:  # beside the int8 model, its image tower in torchao's int8, compiled
        assert any(type(getattr(m, "weight", None)).__name__ == "Int8Tensor" for m in enc._tower.modules())
        return "int8-compiled"
    if any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in enc.model.modules()):
        return "int8"
    return {torch.float32: "fp32", torch.bfloat16: "bf16"}[next(enc.model.parameters()).dtype]


@pytest.fixture
def precision_cache(tiny, tmp_path, monkeypatch, caplog) -> Path:
    """A private vigil cache for the precision decisions (the tiny checkpoints stay where they were built); the
    decision line is captured as a log record."""
    monkeypatch.setenv("VIGIL_CACHE", str(tmp_path))
    caplog.set_level(logging.INFO, logger="pipeline.models.precision")
    return tmp_path / "precision"


def decision_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("precision auto for")]


def fail_if_timed(*args, **kwargs):
    raise AssertionError("a cache hit timed a precision")


def test_auto_measures_every_precision_once_and_caches_the_choice(tiny, precision_cache, caplog, monkeypatch):
    enc = SiglipEncoder.from_pretrained(tiny.siglip, precision="auto")
    files = list(precision_cache.glob("*.json"))
    assert len(files) == 1 and not list(precision_cache.glob(".*"))  # no temporary file left
    record = json.loads(files[0].read_text())
    assert set(record["measured"]) == {"fp32", "bf16", "int8"}
    for figures in record["measured"].values():
        assert figures["ms_per_image"] > 0 and -1 <= figures["min_cosine"] <= 1.0 + 1e-6
    assert record["measured"]["fp32"]["min_cosine"] == pytest.approx(1.0)
    trials = {p: trial(f["ms_per_image"], f["min_cosine"]) for p, f in record["measured"].items()}
    assert record["choice"] == choose_cpu_precision(trials) == enc.precision == running_precision(enc)
    assert enc.precision_timings == trials
    # the images per model call were timed at the chosen precision too; the fastest within batch_size is used
    batch_ms = {int(b): ms for b, ms in record["batch_ms"].items()}
    assert set(batch_ms) == {4, 8, 16} and all(ms > 0 for ms in batch_ms.values())
    assert enc.model_batch == min(batch_ms, key=batch_ms.__getitem__)
    assert record["key"]["model"] == tiny.siglip and record["key"]["threads"] == torch.get_num_threads()
    assert record["key"]["torch"] == torch.__version__ and record["calibrated_at"].endswith("Z")
    assert enc.precision_reason.startswith(f"{enc.precision}: fastest within cosine 0.99 of fp32")
    (line,) = decision_lines(caplog)
    assert line.startswith(f"precision auto for {tiny.siglip}: {enc.precision} (fp32 ")
    assert "bf16 min cosine" in line and "int8 min cosine" in line and "8 per call" in line
    assert line.endswith(f"cached in {files[0]}")
    emb = enc.embed_images(scenes()[:2])
    assert emb.dtype == np.float32 and emb.shape == (2, enc.dim)

    # The second construction reads the cache: nothing is timed, nothing printed, the file is left alone.
    caplog.clear()
    written = files[0].stat().st_mtime_ns
    monkeypatch.setattr(encoders_module, "measure_ms_per_image", fail_if_timed)
    again = SiglipEncoder.from_pretrained(tiny.siglip, precision="auto")
    assert (again.precision, again.precision_timings) == (enc.precision, enc.precision_timings)
    assert running_precision(again) == enc.precision and not decision_lines(caplog)
    assert files[0].stat().st_mtime_ns == written

    # The cached choice is the one applied, whatever it is.
    for choice in ("int8", "bf16", "fp32"):
        files[0].write_text(json.dumps({**record, "choice": choice}))
        assert running_precision(SiglipEncoder.from_pretrained(tiny.siglip, precision="auto")) == choice


def test_siglip_texts_are_judged_with_the_images(tiny, precision_cache, monkeypatch):
    """A lower precision that keeps the images but flips the texts is unfaithful: they share one space."""
    embed_texts = SiglipEncoder._embed_texts_raw

    def texts_flipped_below_fp32(self, texts):
        vectors = embed_texts(self, texts)
        return vectors if running_precision(self) == "fp32" else -vectors

    monkeypatch.setattr(SiglipEncoder, "_embed_texts_raw", texts_flipped_below_fp32)
    enc = SiglipEncoder.from_pretrained(tiny.siglip, precision="auto")
    assert enc.precision == "fp32" == running_precision(enc)
    assert enc.precision_timings["bf16"].min_cosine < 0 and enc.precision_timings["int8"].min_cosine < 0


def test_the_cache_key_follows_model_weights_cpu_torch_and_threads(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("VIGIL_CACHE", str(tmp_path))
    siglip, dinov2 = decision_key(tiny.siglip), decision_key(tiny.dinov2)
    assert decision_path(siglip) != decision_path(dinov2)
    assert decision_path(siglip) == decision_path(decision_key(tiny.siglip))  # stable
    assert decision_path(siglip).parent == tmp_path / "precision"

    copy = tmp_path / "copy"  # the same weights in another folder, then rewritten weights
    shutil.copytree(tiny.dinov2, copy)
    assert decision_path(decision_key(str(copy))) != decision_path(dinov2)
    before = decision_path(decision_key(str(copy)))
    weights = copy / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert decision_path(decision_key(str(copy))) != before

    cpu = cpu_identity()
    assert cpu["flags"] == sorted(cpu["flags"]) and cpu["machine"]
    with monkeypatch.context() as patch:
        patch.setattr(precision_module, "cpu_identity", lambda: {**cpu, "flags": cpu["flags"] + ["amx_bf16"]})
        assert decision_path(decision_key(tiny.dinov2)) != decision_path(dinov2)
    with monkeypatch.context() as patch:
        patch.setattr(torch, "__version__", "0.0.0")
        assert decision_path(decision_key(tiny.dinov2)) != decision_path(dinov2)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert decision_path(decision_key(tiny.dinov2)) != decision_path(dinov2)
    finally:
        torch.set_num_threads(threads)


def test_another_cpu_is_calibrated_anew(tiny, precision_cache, caplog, monkeypatch):
    Dinov2Encoder.from_pretrained(tiny.dinov2, precision="auto")
    cpu = cpu_identity()
    monkeypatch.setattr(precision_module, "cpu_identity", lambda: {**cpu, "model": "another CPU"})
    Dinov2Encoder.from_pretrained(tiny.dinov2, precision="auto")
    assert len(list(precision_cache.glob("*.json"))) == 2 and len(decision_lines(caplog)) == 2


def test_cpu_identity_without_proc_cpuinfo(monkeypatch):
    real_read_text = Path.read_text

    def no_cpuinfo(self, *args, **kwargs):
        if str(self) == "/proc/cpuinfo":
            raise FileNotFoundError(self)
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", no_cpuinfo)
    cpu = cpu_identity()
    assert cpu["flags"] == [] and cpu["model"] and cpu["machine"]


@pytest.mark.parametrize(
    "content", [b"\x00\xffnot json", b"[]", b'{"choice": "int8"}', b'{"choice": "int8", "measured": {"fp32"', b""]
)
def test_a_corrupt_cache_file_is_calibrated_again(tiny, precision_cache, caplog, content):
    path = decision_path(decision_key(tiny.dinov2))
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    enc = Dinov2Encoder.from_pretrained(tiny.dinov2, precision="auto")
    assert len(decision_lines(caplog)) == 1
    record = json.loads(path.read_text())
    assert record["choice"] == enc.precision and set(record["measured"]) == {"fp32", "bf16", "int8"}


def test_a_decision_for_another_key_is_not_used(tiny, precision_cache, caplog):
    Dinov2Encoder.from_pretrained(tiny.dinov2, precision="auto")
    path = decision_path(decision_key(tiny.dinov2))
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "key": {**record["key"], "threads": -1}}))  # e.g. a hash collision
    caplog.clear()
    Dinov2Encoder.from_pretrained(tiny.dinov2, precision="auto")
    assert len(decision_lines(caplog)) == 1 and json.loads(path.read_text())["key"] == record["key"]


def test_concurrent_writers_leave_one_complete_decision(tmp_path):
    path, key = tmp_path / "precision" / "d.json", {"model": "m"}
    trials = {p: trial(1.0, 1.0) for p in ("fp32", "bf16", "int8")}
    batches = {4: 2.0, 8: 1.0, 16: 1.5}
    write_decision(path, key, CpuPrecisionDecision("fp32", trials, batches))

    def write_many(choice):
        for _ in range(30):
            write_decision(path, key, CpuPrecisionDecision(choice, trials, batches))

    writers = [threading.Thread(target=write_many, args=(choice,)) for choice in ("bf16", "int8")]
    for writer in writers:
        writer.start()
    seen = set()
    while any(w.is_alive() for w in writers):
        decision = read_decision(path, key)
        assert decision is not None  # never a partial file
        seen.add(decision.choice)
    for writer in writers:
        writer.join()
    assert read_decision(path, key).choice in ("bf16", "int8") and seen
    assert [p.name for p in path.parent.iterdir()] == ["d.json"]


def test_the_decision_line_is_printed_where_logging_is_not_set_up(tiny, tmp_path, monkeypatch, caplog, capsys):
    monkeypatch.setenv("VIGIL_CACHE", str(tmp_path))
    caplog.set_level(logging.WARNING, logger="pipeline.models.precision")  # as in the CLI: INFO is dropped
    Dinov2Encoder.from_pretrained(tiny.dinov2, precision="auto")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("precision auto for")]
    assert len(lines) == 1 and lines[0].startswith(f"precision auto for {tiny.dinov2}: ")
    Dinov2Encoder.from_pretrained(tiny.dinov2, precision="auto")
    assert "precision auto" not in capsys.readouterr().err  # a cache hit says nothing


def test_explicit_precision_bypasses_calibration_and_cache(tiny, precision_cache, monkeypatch):
    monkeypatch.setattr(encoders_module, "measure_ms_per_image", fail_if_timed)
    monkeypatch.setattr(encoders_module, "decision_key", fail_if_timed)
    for precision in ("fp32", "bf16", "int8"):
        enc = Dinov2Encoder.from_pretrained(tiny.dinov2, precision=precision)
        assert enc.precision == running_precision(enc) == precision
        assert enc.precision_timings == {} and enc.precision_reason == f"{precision}: requested"
    assert not precision_cache.exists()


def assert_faithful(siglip, dinov2, reference, imgs, texts) -> None:
    """Lower-precision encoders' unit vectors of images and texts within cosine 0.99 of the fp32 `reference`'s."""
    for low, ref in (
        (siglip.embed_images(imgs), reference.siglip.embed_images(imgs)),
        (siglip.embed_texts(texts), reference.siglip.embed_texts(texts)),
        (dinov2.embed_images(imgs), reference.dinov2.embed_images(imgs)),
    ):
        assert min_cosine(ref, low) >= 0.99
        np.testing.assert_allclose(np.linalg.norm(low, axis=1), 1.0, atol=1e-5)


def test_explicit_precisions(tiny, encoders):
    imgs = scenes()
    texts = ["a red car", "一只猫"]
    sig8 = SiglipEncoder.from_pretrained(tiny.siglip, precision="int8")
    dino8 = Dinov2Encoder.from_pretrained(tiny.dinov2, precision="int8")
    assert sig8.precision == dino8.precision == "int8"
    assert_faithful(sig8, dino8, encoders, imgs, texts)
    bf = Dinov2Encoder.from_pretrained(tiny.dinov2, precision="bf16")
    assert bf.precision == "bf16"
    assert min_cosine(encoders.dinov2.embed_images(imgs), bf.embed_images(imgs)) > 0.9
    with pytest.raises(ValueError, match="CUDA"):
        Dinov2Encoder.from_pretrained(tiny.dinov2, precision="fp16", device="cpu")
    with pytest.raises(ValueError, match="unknown precision"):
        SiglipEncoder.from_pretrained("vigil-test/not-even-loaded", precision="fp64")


def test_int8_compiled_runs_the_image_tower_quantized_and_compiled(tiny, encoders):
    imgs, texts = scenes(), ["a red car", "一只猫"]
    sig = SiglipEncoder.from_pretrained(tiny.siglip, precision="int8-compiled", batch_size=8)
    dino = Dinov2Encoder.from_pretrained(tiny.dinov2, precision="int8-compiled", batch_size=8)
    assert sig.precision == dino.precision == running_precision(sig) == running_precision(dino) == "int8-compiled"
    # texts run as in int8: a query is one eager call
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in sig.model.text_model.modules())
    assert_faithful(sig, dino, encoders, imgs, texts)
    # A call nearly full is padded to the compiled call size and cut back: each image's vector is the one it gets
    # in a full call (activations are quantized per token, so the padding rows change nothing). A shorter call
    # runs eager, as int8 does.
    np.testing.assert_allclose(dino.embed_images(imgs[:6]), dino.embed_images(imgs)[:6], atol=1e-5)
    eager = Dinov2Encoder.from_pretrained(tiny.dinov2, precision="int8", batch_size=8)
    np.testing.assert_allclose(dino.embed_images(imgs[:3]), eager.embed_images(imgs[:3]), atol=1e-6)
    assert dino.embed_images(imgs[:0]).shape == (0, dino.dim)
    # One graph per tower kind and call size: another encoder of the kind, or a short call, compiles nothing
    # (a graph past torch's recompile limit would silently run eager).
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    again = Dinov2Encoder.from_pretrained(tiny.dinov2, precision="int8-compiled", batch_size=8)
    again.embed_images(imgs[:6])
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs


def test_encoders_loaded_together_compile_nothing_in_their_first_batch(tiny):
    """Running DINOv2 the first time grows a transformers registry SigLIP's compiled graph guards on: the loader
    warms SigLIP again, so no batch pays for a recompile."""
    both = load_encoders(tiny, device="cpu", precision="int8-compiled", batch_size=8)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    both.embed_images(scenes())
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs


def test_auto_measures_int8_compiled_for_a_model_slow_enough_to_repay_it(tiny, precision_cache, monkeypatch):
    monkeypatch.setattr(encoders_module, "COMPILE_WORTH_MS", 0.0)  # the tiny model is far below the real bar
    enc = Dinov2Encoder.from_pretrained(tiny.dinov2, precision="auto")
    (path,) = precision_cache.glob("*.json")
    record = json.loads(path.read_text())
    assert set(record["measured"]) == {"fp32", "bf16", "int8", "int8-compiled"}
    assert record["measured"]["int8-compiled"]["min_cosine"] >= 0.99
    assert record["choice"] == enc.precision == running_precision(enc)
    # a cached int8-compiled choice is applied, at the call size it was timed at
    path.write_text(json.dumps({**record, "choice": "int8-compiled"}))
    again = Dinov2Encoder.from_pretrained(tiny.dinov2, precision="auto")
    assert running_precision(again) == "int8-compiled" and again.model_batch == again._compiled.call_size == 8


def test_where_torch_compile_fails_int8_compiled_is_not_chosen_and_asking_for_it_says_why(
    tiny, precision_cache, monkeypatch, caplog
):
    def no_compiler(fn, **kwargs):
        def compiled(*args):
            raise RuntimeError("InductorError: CppCompileError: C++ compile error\n(the compiler's output)")

        return compiled

    monkeypatch.setattr(torch, "compile", no_compiler)
    monkeypatch.setattr(encoders_module, "COMPILE_WORTH_MS", 0.0)
    enc = Dinov2Encoder.from_pretrained(tiny.dinov2, precision="auto")
    assert "int8-compiled" not in enc.precision_timings and enc.precision in ("fp32", "bf16", "int8")
    said = [r.getMessage() for r in caplog.records if "int8-compiled not measured" in r.getMessage()]
    assert said == [
        f"precision auto for {tiny.dinov2}: int8-compiled not measured (torch.compile failed: InductorError: "
        "CppCompileError: C++ compile error)"
    ]
    with pytest.raises(ModelUnavailableError, match="^torch.compile failed: InductorError"):
        Dinov2Encoder.from_pretrained(tiny.dinov2, precision="int8-compiled")


# ---------------------------------------------------------------------------------------------
# SigLIP 2 NaFlex ("siglip2" model type) goes through the same loader


def test_siglip2_naflex_checkpoint_loads_and_embeds(tmp_path):
    from transformers import Siglip2Config, Siglip2ImageProcessorPil, Siglip2Model

    from pipeline.models.random_weights import _build_tokenizer, _quiet_transformers

    tok = _build_tokenizer(500)
    text = dict(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=64,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    vision = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_patches=64, patch_size=16
    )
    torch.manual_seed(0)
    model = Siglip2Model(Siglip2Config(text_config=text, vision_config=vision)).eval()
    with _quiet_transformers():
        model.save_pretrained(tmp_path)
        tok.save_pretrained(tmp_path)
        Siglip2ImageProcessorPil(max_num_patches=64, patch_size=16).save_pretrained(tmp_path)

    enc = SiglipEncoder.from_pretrained(str(tmp_path), precision="fp32", batch_size=2)
    assert enc.preprocess.mode == "naflex" and enc.untrained is False
    imgs = [scenes()[1], photo_like(90, 300), photo_like(40, 40, 4)]
    emb = enc.embed_images(imgs)
    assert emb.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert enc.embed_texts(["a cat", "一只猫"]).shape == (2, 32)
    # the same result as the Hugging Face processor + model path
    from transformers import AutoImageProcessor

    ip = AutoImageProcessor.from_pretrained(str(tmp_path), backend="pil")
    with torch.inference_mode():
        ref = model.get_image_features(**ip(images=imgs[:1], return_tensors="pt")).pooler_output
    ref = torch.nn.functional.normalize(ref, dim=-1).numpy()
    assert float(ref[0] @ emb[0]) > 0.999
    # int8-compiled runs the NaFlex vision tower (with its mask and shapes) too
    compiled = SiglipEncoder.from_pretrained(str(tmp_path), precision="int8-compiled", batch_size=2)
    assert min_cosine(emb[:2], compiled.embed_images(imgs[:2])) > 0.99


def test_the_fastest_model_batch_is_used_within_the_configured_batch_size():
    trials = {p: trial(1.0, 1.0) for p in ("fp32", "bf16", "int8")}
    decision = CpuPrecisionDecision("int8", trials, {4: 3.0, 8: 2.0, 16: 2.5})
    assert decision.fastest_batch(16) == 8 and decision.fastest_batch(32) == 8
    assert decision.fastest_batch(6) == 4  # 8 and 16 are above the configured batch size
    assert decision.fastest_batch(2) == 2  # none tried fits: the configured size


def test_a_cached_decision_without_batch_timings_is_measured_again(tmp_path):
    path, key = tmp_path / "d.json", {"model": "m"}
    trials = {p: trial(1.0, 1.0) for p in ("fp32", "bf16", "int8")}
    write_decision(path, key, CpuPrecisionDecision("int8", trials, {4: 3.0, 8: 2.0, 16: 2.5}))
    assert read_decision(path, key).batch_ms == {4: 3.0, 8: 2.0, 16: 2.5}
    record = json.loads(path.read_text())
    del record["batch_ms"]  # written before the batch was measured
    path.write_text(json.dumps(record))
    assert read_decision(path, key) is None
