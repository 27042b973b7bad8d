"""SigLIP (image + text) and DINOv2 (image) encoders: unit-norm float32 embeddings from uint8 RGB frames.

Each encoder loads its checkpoint (pipeline.models.hub), preprocesses frames on tensors, batched
(pipeline.models.preprocessing), and runs at the device and precision chosen by pipeline.models.precision.

The library never changes torch's global thread count: callers decide.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from pipeline.models.hub import LoadedCheckpoint, ModelUnavailableError, load_checkpoint, weights_guidance
from pipeline.models.precision import (
    BF16_MIN_COSINE,
    CALIBRATION_TEXTS,
    PRECISIONS,
    calibration_images,
    choose_cpu_precision,
    cpu_bf16_is_fast,
    min_cosine,
    resolve_device,
)
from pipeline.models.preprocessing import TEXT_MAX_LENGTH, TensorPreprocessor, as_image_list
from pipeline.models.sources import DEFAULT_MODELS, ModelSource
from pipeline.models.specs import resolve_models
from pipeline.records import ModelIds


def _pooled(out: Any, which: str):
    """The embedding tensor from whatever a HF forward / get_*_features returned."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    for name in (f"{which}_embeds", "pooler_output"):
        value = getattr(out, name, None)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(out, (tuple, list)):
        return out[1] if len(out) > 1 and isinstance(out[1], torch.Tensor) else out[0]
    raise TypeError(f"cannot find {which} embeddings in {type(out).__name__}")


def _normalise(x):
    x = x.float()
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


class _Encoder:
    """Shared loading, device/precision handling and batching."""

    expected_types: tuple[str, ...] = ()
    default_model_id = "<model-id>"
    kind = ""
    with_tokenizer = False

    def __init__(
        self, loaded: LoadedCheckpoint, *, device: str = "auto", precision: str = "auto", batch_size: int = 16
    ):
        import torch

        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        model_type = getattr(loaded.model.config, "model_type", "?")
        if model_type not in self.expected_types:
            raise ModelUnavailableError(
                f"{loaded.model_id} is a {model_type!r} checkpoint, but the {self.kind} encoder needs one of "
                f"{self.expected_types}.\n{weights_guidance(self.default_model_id)}"
            )
        self.model_id = loaded.model_id
        self.untrained = loaded.untrained
        self.batch_size = int(batch_size)
        self.device = resolve_device(device)
        self.preprocess = TensorPreprocessor.from_image_processor(loaded.image_processor)
        self.tokenizer = loaded.tokenizer
        self.config = loaded.model.config
        self.calibration_cosine: float | None = None
        self.precision_reason = f"{precision}: requested"
        self._weights_dtype = torch.float32
        model = loaded.model.eval()
        on_cuda = self.device.startswith("cuda")

        if precision == "fp16" and not on_cuda:
            raise ValueError("precision 'fp16' needs a CUDA device; on CPU use 'bf16', 'int8', 'fp32' or 'auto'")
        if precision == "int8" and on_cuda:
            raise ValueError("precision 'int8' (dynamic quantization) runs on CPU only; on CUDA use 'bf16' or 'fp16'")
        if on_cuda:
            if precision == "auto":
                precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
                self.precision_reason = f"{precision}: CUDA default"
            if precision == "bf16" and not torch.cuda.is_bf16_supported():
                raise ValueError("this CUDA device does not support bf16; use 'fp16' or 'fp32'")
            self._weights_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
            self.model = model.to(self.device, dtype=self._weights_dtype)
        else:
            self.model = model
            if precision == "int8":
                with warnings.catch_warnings():  # torch deprecates quantized tensors; still works in 2.x
                    warnings.simplefilter("ignore", UserWarning)
                    warnings.simplefilter("ignore", DeprecationWarning)
                    self.model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
            elif precision == "bf16":
                self._use_bf16_weights()
            elif precision == "auto":
                precision = self._calibrate()
        self.precision = precision

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, id_or_dir: str, *, device: str = "auto", precision: str = "auto", batch_size: int = 16):
        if precision not in PRECISIONS:  # fail before loading anything
            raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
        loaded = load_checkpoint(id_or_dir, with_tokenizer=cls.with_tokenizer, default_id=cls.default_model_id)
        return cls(loaded, device=device, precision=precision, batch_size=batch_size)

    def _use_bf16_weights(self) -> None:
        """bf16 weights and inputs on CPU: with native bf16 (AMX / AVX512-BF16) this runs SigLIP-base about
        2.3x faster than bf16 autocast, which re-casts the fp32 weights on every call (measured here)."""
        import torch

        self._weights_dtype = torch.bfloat16
        self.model = self.model.to(torch.bfloat16)

    def _calibrate(self) -> str:
        """CPU "auto": bf16 if the CPU runs bf16 natively and bf16 keeps the embeddings of a structured
        calibration batch (and texts) within cosine 0.99 of fp32 (minimum over the batch), else fp32."""
        import torch

        if not cpu_bf16_is_fast():
            self.precision_reason = "fp32: this CPU has no native bf16, bf16 would be slower"
            return "fp32"
        size = self.preprocess.output_size or (224, 224)
        images = calibration_images(4, max(size))
        texts = CALIBRATION_TEXTS if self.with_tokenizer else ()
        ref = self._embed_images_raw(images)
        ref_text = self._embed_texts_raw(texts) if texts else None
        fp32_model = self.model
        self.model = copy.deepcopy(fp32_model)  # casting back from bf16 would lose the fp32 weights
        self._use_bf16_weights()
        low = self._embed_images_raw(images)
        low_text = self._embed_texts_raw(texts) if texts else None
        if texts:  # images and texts share one embedding space: judge them together
            ref, low = np.concatenate([ref, ref_text]), np.concatenate([low, low_text])
        self.calibration_cosine = min_cosine(ref, low)
        choice = choose_cpu_precision(ref, low)
        self.precision_reason = (
            f"{choice}: bf16 calibration min cosine {self.calibration_cosine:.5f} (threshold {BF16_MIN_COSINE})"
        )
        if choice == "fp32":
            self.model, self._weights_dtype = fp32_model, torch.float32
        return choice

    # -- inference ---------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self._dim())

    def _dim(self) -> int:
        raise NotImplementedError

    def _forward_images(self, inputs: dict):
        raise NotImplementedError

    def _batched(self, items: list, fn: Callable[[list], np.ndarray]) -> np.ndarray:
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        chunks = [fn(items[i : i + self.batch_size]) for i in range(0, len(items), self.batch_size)]
        return np.concatenate(chunks, axis=0)

    def _embed_image_chunk(self, frames: list[np.ndarray]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            inputs = self.preprocess(frames, device=self.device)
            if self._weights_dtype != torch.float32:
                inputs["pixel_values"] = inputs["pixel_values"].to(self._weights_dtype)
            out = self._forward_images(inputs)
            return _normalise(_pooled(out, "image")).cpu().numpy().astype(np.float32, copy=False)

    def _embed_images_raw(self, images) -> np.ndarray:
        return self._batched(as_image_list(images), self._embed_image_chunk)

    def embed_images(self, images: "np.ndarray | Sequence[np.ndarray]") -> np.ndarray:
        """uint8 RGB images (B,H,W,3) or a sequence of (H,W,3), any size -> float32 (B, dim), unit norm."""
        return self._embed_images_raw(images)

    def __repr__(self) -> str:
        flag = ", untrained" if self.untrained else ""
        return f"{type(self).__name__}({self.model_id!r}, dim={self.dim}, {self.device}, {self.precision}{flag})"


class SiglipEncoder(_Encoder):
    """SigLIP / SigLIP 2 image and text tower: images and texts (any language) in one embedding space."""

    expected_types = ("siglip", "siglip2")
    default_model_id = DEFAULT_MODELS.siglip
    kind = "SigLIP"
    with_tokenizer = True
    lowercase_text = True  # SigLIP 2 was trained on lowercased text

    def _dim(self) -> int:
        return self.config.vision_config.hidden_size

    @property
    def text_max_length(self) -> int:
        return min(TEXT_MAX_LENGTH, int(getattr(self.config.text_config, "max_position_embeddings", TEXT_MAX_LENGTH)))

    def _forward_images(self, inputs: dict):
        return self.model.get_image_features(**inputs)

    def _embed_text_chunk(self, texts: list[str]) -> np.ndarray:
        import torch

        if self.lowercase_text:
            texts = [t.lower() for t in texts]
        tokens = self.tokenizer(
            texts, padding="max_length", max_length=self.text_max_length, truncation=True, return_tensors="pt"
        )
        # Only input_ids: SigLIP's text tower was trained without an attention mask over the padding.
        with torch.inference_mode():
            out = self.model.get_text_features(input_ids=tokens["input_ids"].to(self.device))
            return _normalise(_pooled(out, "text")).cpu().numpy().astype(np.float32, copy=False)

    def _embed_texts_raw(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise ValueError("embed_texts takes a sequence of strings, not a single string")
        return self._batched([str(t) for t in texts], self._embed_text_chunk)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts in any language -> float32 (B, dim), unit norm, comparable with embed_images."""
        return self._embed_texts_raw(texts)


class Dinov2Encoder(_Encoder):
    """DINOv2 image tower; the embedding is the (layer-normed) CLS token, i.e. the pooler output."""

    expected_types = ("dinov2", "dinov2_with_registers")
    default_model_id = DEFAULT_MODELS.dinov2
    kind = "DINOv2"

    def _dim(self) -> int:
        return self.config.hidden_size

    def _forward_images(self, inputs: dict):
        return self.model(pixel_values=inputs["pixel_values"])


@dataclass
class Encoders:
    """The two encoders of a pipeline; `ids` names the checkpoints for the records."""

    siglip: SiglipEncoder
    dinov2: Dinov2Encoder

    @property
    def ids(self) -> ModelIds:
        return ModelIds(
            self.siglip.model_id, self.dinov2.model_id, untrained=bool(self.siglip.untrained or self.dinov2.untrained)
        )

    def embed_images(self, images: "np.ndarray | Sequence[np.ndarray]") -> tuple[np.ndarray, np.ndarray]:
        """SigLIP2 and DINOv2 unit vectors of the same images."""
        return self.siglip.embed_images(images), self.dinov2.embed_images(images)


def load_encoders(
    spec_or_source: "str | ModelSource | None" = None,
    *,
    device: str = "auto",
    precision: str = "auto",
    batch_size: int = 16,
) -> Encoders:
    """Load both encoders from a ModelSource or a spec accepted by resolve_models."""
    source = resolve_models(spec_or_source)
    siglip = SiglipEncoder.from_pretrained(source.siglip, device=device, precision=precision, batch_size=batch_size)
    dinov2 = Dinov2Encoder.from_pretrained(source.dinov2, device=device, precision=precision, batch_size=batch_size)
    return Encoders(siglip, dinov2)


__all__ = ["SiglipEncoder", "Dinov2Encoder", "Encoders", "load_encoders"]
