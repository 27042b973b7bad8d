"""Encoders and random-weight checkpoints: real models loaded offline through the from_pretrained path."""

from __future__ import annotations

import json
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
    SiglipEncoder,
    TensorPreprocessor,
    build_random_checkpoints,
    choose_cpu_precision,
    hub,
    load_encoders,
    min_cosine,
    resolve_models,
    tiny_checkpoints,
)
from pipeline.models import encoders as encoders_module
from pipeline.records import ModelIds


@pytest.fixture(scope="session", autouse=True)
def offline_env(tmp_path_factory):
    """No hub here: every test runs offline, with its own vigil cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("VIGIL_CACHE", str(tmp_path_factory.mktemp("vigil-cache")))
        yield


@pytest.fixture(scope="session")
def tiny(offline_env) -> ModelSource:
    return tiny_checkpoints()  # built under $VIGIL_CACHE, reused by every test


@pytest.fixture(scope="session")
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


def test_precision_decision_rule():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(6, 32))
    close = ref + rng.normal(scale=0.01, size=ref.shape)  # cosine ~0.9999
    assert choose_cpu_precision(ref, close) == "bf16"
    assert choose_cpu_precision(ref, close, bf16_fast=False) == "fp32"  # emulated bf16 is slower
    far = ref + rng.normal(scale=1.0, size=ref.shape)  # cosine ~0.7
    assert choose_cpu_precision(ref, far) == "fp32"
    one_bad = close.copy()
    one_bad[3] = -ref[3]  # the minimum over the batch decides
    assert choose_cpu_precision(ref, one_bad) == "fp32"
    edge = ref.copy()
    edge[0] = ref[0] * 0.995 + np.roll(ref[0], 1) * 0.0  # same direction: cosine 1
    assert choose_cpu_precision(ref, edge, threshold=0.99) == "bf16"


def test_precision_auto_calibrates_on_cpu(tiny, monkeypatch):
    monkeypatch.setattr(encoders_module, "cpu_bf16_is_fast", lambda: True)
    enc = SiglipEncoder.from_pretrained(tiny.siglip, precision="auto")
    assert enc.calibration_cosine is not None
    assert enc.precision == ("bf16" if enc.calibration_cosine >= 0.99 else "fp32")
    assert enc.embed_images(scenes()[:2]).dtype == np.float32
    monkeypatch.setattr(encoders_module, "choose_cpu_precision", lambda *a, **k: "fp32")  # rule says no
    assert Dinov2Encoder.from_pretrained(tiny.dinov2, precision="auto").precision == "fp32"
    monkeypatch.setattr(encoders_module, "cpu_bf16_is_fast", lambda: False)
    enc = Dinov2Encoder.from_pretrained(tiny.dinov2, precision="auto")
    assert enc.precision == "fp32" and enc.calibration_cosine is None


def test_explicit_precisions(tiny, encoders):
    imgs = scenes()
    texts = ["a red car", "一只猫"]
    sig8 = SiglipEncoder.from_pretrained(tiny.siglip, precision="int8")
    dino8 = Dinov2Encoder.from_pretrained(tiny.dinov2, precision="int8")
    assert sig8.precision == dino8.precision == "int8"
    for low, ref in (
        (sig8.embed_images(imgs), encoders.siglip.embed_images(imgs)),
        (sig8.embed_texts(texts), encoders.siglip.embed_texts(texts)),
        (dino8.embed_images(imgs), encoders.dinov2.embed_images(imgs)),
    ):
        assert min_cosine(ref, low) >= 0.99
        np.testing.assert_allclose(np.linalg.norm(low, axis=1), 1.0, atol=1e-5)
    bf = Dinov2Encoder.from_pretrained(tiny.dinov2, precision="bf16")
    assert bf.precision == "bf16"
    assert min_cosine(encoders.dinov2.embed_images(imgs), bf.embed_images(imgs)) > 0.9
    with pytest.raises(ValueError, match="CUDA"):
        Dinov2Encoder.from_pretrained(tiny.dinov2, precision="fp16", device="cpu")
    with pytest.raises(ValueError, match="unknown precision"):
        SiglipEncoder.from_pretrained("vigil-test/not-even-loaded", precision="fp64")


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
