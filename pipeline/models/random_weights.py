"""Random-weight SigLIP / DINOv2 (and OWL detector) checkpoints built locally, loadable offline like real ones.

The folders are ordinary Hugging Face checkpoints (``save_pretrained`` of model and processor), so
they go through exactly the ``AutoModel`` / ``AutoProcessor`` path that real weights take. They carry a
``vigil-untrained.json`` marker: random weights are for plumbing and speed only, never accuracy.

- ``size="tiny"``: a few hundred KB each, for tests.
- ``size="base"``: vision towers with the real sizes of SigLIP2-base-patch16-224 and DINOv2-small,
  for speed benchmarks (the text tower keeps the real width and depth but a small vocabulary).
- ``tiny_owl_checkpoint``: a tiny OWLv2 or OWL-ViT detector (``*ForObjectDetection``, CLIP tokenizer), for tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path

from pipeline.models.preprocessing import TEXT_MAX_LENGTH
from pipeline.models.sources import ModelSource

UNTRAINED_MARKER = "vigil-untrained.json"
UNTRAINED_MARKER_CONTENT = {"untrained": True, "note": "random weights: plumbing and speed only, never accuracy"}
TINY_CACHE_NAME = "random-tiny-v1"
SEED = 1234
_BUILD_LOCK = threading.Lock()

# A small multilingual corpus for the tokenizer: byte-level BPE, so any script still encodes.
_CORPUS = [
    "a photo of a cat sitting on a red sofa",
    "a person walking a dog across the street at night",
    "two cars stopped at a traffic light in the rain",
    "a crowded train station during rush hour",
    "a delivery truck parked in front of a warehouse",
    "a man in a blue jacket opens the door",
    "children playing football in a green park",
    "an empty parking lot under bright street lamps",
    "a bicycle leaning against a brick wall",
    "smoke rising from a building on fire",
    "一只猫坐在红色的沙发上",
    "一个人在夜里牵着狗过马路",
    "雨中两辆汽车停在红绿灯前",
    "高峰时段拥挤的火车站",
    "穿蓝色夹克的男人打开了门",
    "un gato sentado en un sofá rojo",
    "una persona paseando a un perro por la calle de noche",
    "dos coches detenidos en un semáforo bajo la lluvia",
    "niños jugando al fútbol en un parque verde",
    "قطة تجلس على أريكة حمراء",
    "شخص يمشي مع كلب عبر الشارع في الليل",
    "سيارتان متوقفتان عند إشارة المرور تحت المطر",
    "un chat assis sur un canapé rouge",
    "une personne promène un chien dans la rue la nuit",
    "eine Katze sitzt auf einem roten Sofa",
    "ein Mann in einer blauen Jacke öffnet die Tür",
    "赤いソファに座っている猫",
    "雨の中で信号待ちをしている二台の車",
    "кошка сидит на красном диване",
    "человек выгуливает собаку ночью",
    "लाल सोफे पर बैठी एक बिल्ली",
    "빨간 소파에 앉아 있는 고양이",
    "um gato sentado em um sofá vermelho",
    "bir kedi kırmızı bir kanepede oturuyor",
]

# Gemma's special-token layout: <pad>=0, </s>=1 (eos), <bos>=2, <unk>=3.
_SPECIALS = ["<pad>", "</s>", "<bos>", "<unk>"]

_SIZES = {
    "tiny": {
        "siglip_vision": dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=224,
            patch_size=16,
        ),
        "siglip_text": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
        "vocab_size": 1000,
        # initializer_range 0.1 (real: 0.02): with the default, a tiny random DINOv2's CLS output is dominated
        # by the shared CLS token and distinct scenes land at cosine ~0.99; 0.1 keeps them apart (<= ~0.85).
        "dinov2": dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            mlp_ratio=2,
            image_size=56,
            patch_size=14,
            initializer_range=0.1,
        ),
        "dinov2_crop": 56,
    },
    "base": {
        # google/siglip2-base-patch16-224 (published as model_type "siglip")
        "siglip_vision": dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            image_size=224,
            patch_size=16,
        ),
        "siglip_text": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
        "vocab_size": 2000,
        # facebook/dinov2-small: image_size 518 in its config, the processor crops 224
        "dinov2": dict(
            hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4, image_size=518, patch_size=14
        ),
        "dinov2_crop": 224,
    },
}


def _build_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GemmaTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return GemmaTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="</s>",
        bos_token="<bos>",
        unk_token="<unk>",
        model_max_length=TEXT_MAX_LENGTH,
    )


def _write_marker(folder: Path) -> None:
    (folder / UNTRAINED_MARKER).write_text(json.dumps(UNTRAINED_MARKER_CONTENT, indent=2) + "\n")


def _build_siglip(folder: Path, spec: dict) -> None:
    import torch
    from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel, SiglipProcessor

    tokenizer = _build_tokenizer(spec["vocab_size"])
    vocab = len(tokenizer)
    text = dict(
        spec["siglip_text"],
        vocab_size=vocab,
        max_position_embeddings=TEXT_MAX_LENGTH,
        projection_size=spec["siglip_vision"]["hidden_size"],
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config = SiglipConfig(text_config=text, vision_config=dict(spec["siglip_vision"]))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = SiglipModel(config).eval()
    size = spec["siglip_vision"]["image_size"]
    image_processor = SiglipImageProcessorPil(
        size={"height": size, "width": size},
        resample=2,  # bilinear, as the published SigLIP 2 checkpoints
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_resize=True,
        do_rescale=True,
        do_normalize=True,
        rescale_factor=1 / 255,
    )
    processor = SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    _write_marker(folder)


def _build_dinov2(folder: Path, spec: dict) -> None:
    import torch
    from transformers import BitImageProcessorPil, Dinov2Config, Dinov2Model

    config = Dinov2Config(**spec["dinov2"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED + 1)
        model = Dinov2Model(config).eval()
    crop = spec["dinov2_crop"]
    # facebook/dinov2-small: shortest edge 256, center crop 224, ImageNet mean/std, bicubic
    image_processor = BitImageProcessorPil(
        size={"shortest_edge": round(crop * 256 / 224)},
        crop_size={"height": crop, "width": crop},
        do_center_crop=True,
        do_resize=True,
        resample=3,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        do_convert_rgb=True,
    )
    model.save_pretrained(folder)
    image_processor.save_pretrained(folder)
    _write_marker(folder)


# OWL's text tower reads 16 tokens; a 96-pixel picture of 16-pixel patches gives 36 boxes per frame
_TINY_OWL = dict(
    text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
    vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=16),
    image_size=96,
    text_max_length=16,
    vocab_size=1000,
)


def _build_clip_tokenizer(vocab_size: int, max_length: int):
    """A CLIP tokenizer (OWL's) trained on the corpus: CLIP's normalizer and pre-tokenizer, BPE with "</w>"
    word ends. CLIPTokenizer appends its start and end tokens after the vocabulary, so the end token has the
    largest id, which OWL's text tower looks for (argmax) to pool a phrase."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    template = CLIPTokenizer(vocab={c: i for i, c in enumerate(sorted(alphabet))}, merges=[]).backend_tokenizer
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    bpe.normalizer, bpe.pre_tokenizer = template.normalizer, template.pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=alphabet, end_of_word_suffix="</w>", show_progress=False
    )
    bpe.train_from_iterator(_CORPUS * 4, trainer=trainer)
    trained = json.loads(bpe.to_str())["model"]
    merges = [tuple(merge) if isinstance(merge, list) else tuple(merge.split()) for merge in trained["merges"]]
    # pad "!" (id 0), as the published OWL tokenizers
    return CLIPTokenizer(vocab=trained["vocab"], merges=merges, pad_token="!", model_max_length=max_length)


def _owl_classes(kind: str) -> tuple:
    """The config, model, image processor and processor classes of OWLv2 or OWL-ViT."""
    import transformers

    prefix = {"owlv2": "Owlv2", "owlvit": "OwlViT"}[kind]
    return tuple(
        getattr(transformers, prefix + name)
        for name in ("Config", "ForObjectDetection", "ImageProcessorPil", "Processor")
    )


def _build_owl(folder: Path, spec: dict) -> None:
    import torch

    config_class, model_class, image_processor_class, processor_class = _owl_classes(spec["kind"])
    tokenizer = _build_clip_tokenizer(spec["vocab_size"], spec["text_max_length"])
    text = dict(
        spec["text"],
        vocab_size=len(tokenizer),
        max_position_embeddings=spec["text_max_length"],
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    vision = dict(spec["vision"], image_size=spec["image_size"])
    config = config_class(text_config=text, vision_config=vision, projection_dim=spec["text"]["hidden_size"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED + 2)
        model = model_class(config).eval()
    # the published processors' settings (OWLv2: pad to a square; OWL-ViT: stretch) at the tiny picture size
    side = {"height": spec["image_size"], "width": spec["image_size"]}
    image_processor = image_processor_class(size=side, crop_size=side)
    model.save_pretrained(folder)
    processor_class(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    _write_marker(folder)


@contextlib.contextmanager
def _quiet_transformers():
    """Silence save-time progress bars and config-default warnings of transformers, then restore."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _install(tmp: Path, final: Path) -> None:
    """Move a finished folder into place atomically; if another process won the race, keep theirs."""
    try:
        os.replace(tmp, final)
    except OSError:
        if not (final / UNTRAINED_MARKER).is_file():
            raise FileExistsError(f"{final} exists and is not a vigil random checkpoint; not replacing it")
        # `final` is a complete checkpoint another builder installed first: ours is discarded.


def build_random_checkpoints(out_dir, size: str = "tiny") -> ModelSource:
    """Write random-weight ``out_dir/siglip`` and ``out_dir/dinov2`` checkpoints; return their ModelSource.

    Each folder is built in a temporary sibling and moved into place with ``os.replace``, so a concurrent
    reader sees either nothing or a complete checkpoint. Builds are reproducible (fixed torch seed).
    """
    if size not in _SIZES:
        raise ValueError(f"size must be one of {sorted(_SIZES)}, got {size!r}")
    spec = _SIZES[size]
    out = Path(out_dir).expanduser().absolute()
    siglip = _build_once(out / "siglip", _build_siglip, spec)
    dinov2 = _build_once(out / "dinov2", _build_dinov2, spec)
    return ModelSource(str(siglip), str(dinov2))


def _build_once(final: Path, build, spec: dict) -> Path:
    """Build a checkpoint into `final` unless one is there; see build_random_checkpoints for the guarantees."""
    final.parent.mkdir(parents=True, exist_ok=True)
    if (final / UNTRAINED_MARKER).is_file():
        return final  # built before (by us or a concurrent process): reuse
    if final.exists():
        raise FileExistsError(f"{final} exists and is not a vigil random checkpoint; not replacing it")
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        # torch's global RNG is shared by threads: one build at a time per process keeps the seed's
        # weights reproducible (other processes are safe: they have their own RNG, and os.replace).
        with _BUILD_LOCK, _quiet_transformers():
            build(tmp, spec)
        _install(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def default_cache_dir() -> Path:
    return Path(os.environ.get("VIGIL_CACHE") or Path.home() / ".cache" / "vigil").expanduser()


def tiny_checkpoints(cache_dir=None) -> ModelSource:
    """The tiny random checkpoints under ``$VIGIL_CACHE`` (or ``~/.cache/vigil``), built on first use."""
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return build_random_checkpoints(base / "models" / TINY_CACHE_NAME, size="tiny")


def tiny_owl_checkpoint(cache_dir=None, kind: str = "owlv2") -> str:
    """The folder of a tiny random OWLv2 (or, `kind` "owlvit", OWL-ViT) detector under ``$VIGIL_CACHE`` (or
    ``~/.cache/vigil``), built on first use; it carries the untrained marker like the tiny encoders."""
    if kind not in ("owlv2", "owlvit"):
        raise ValueError(f"kind must be 'owlv2' or 'owlvit', got {kind!r}")
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder = base.absolute() / "models" / TINY_CACHE_NAME / kind
    return str(_build_once(folder, _build_owl, {**_TINY_OWL, "kind": kind}))


__all__ = [
    "build_random_checkpoints",
    "tiny_checkpoints",
    "tiny_owl_checkpoint",
    "default_cache_dir",
    "UNTRAINED_MARKER",
]
