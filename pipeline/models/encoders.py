"""SigLIP (image + text) and DINOv2 (image) encoders: unit-norm float32 embeddings from uint8 RGB frames.

Each encoder loads its checkpoint (pipeline.models.hub), preprocesses frames on tensors, batched
(pipeline.models.preprocessing), and runs at the device and precision chosen by pipeline.models.precision.

The library never changes torch's global thread count: callers decide.
"""

from __future__ import annotations

import copy
import logging
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from pipeline.models.compiled import CompileUnavailableError, FixedSizeCompiled, quantize_int8
from pipeline.models.hub import LoadedCheckpoint, ModelUnavailableError, load_checkpoint, weights_guidance
from pipeline.models.precision import (
    CALIBRATION_BATCHES,
    CALIBRATION_CALL,
    CALIBRATION_TEXTS,
    COMPILE_WORTH_MS,
    COMPILED_INT8,
    CPU_PRECISIONS,
    FAITHFUL_MIN_COSINE,
    PRECISIONS,
    CpuPrecisionDecision,
    PrecisionTrial,
    announce,
    batch_precision,
    calibration_photographs,
    choose_cpu_precision,
    decision_key,
    decision_path,
    measure_ms_per_image,
    min_cosine,
    read_decision,
    resolve_device,
    write_decision,
)
from pipeline.models.preprocessing import TEXT_MAX_LENGTH, TensorPreprocessor, as_image_list
from pipeline.models.sources import DEFAULT_MODELS, ModelSource
from pipeline.models.specs import resolve_models
from pipeline.records import ModelIds

log = logging.getLogger(__name__)


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


def _repeated(pixels: dict, rows: int) -> dict:
    """Preprocessed images repeated to `rows` rows."""
    import torch

    repeats = -(-rows // len(pixels["pixel_values"]))
    return {name: torch.cat([value] * repeats)[:rows] for name, value in pixels.items()}


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
        self.batch_size = int(batch_size)  # images per model call at most
        self.model_batch = self.batch_size  # images per model call: "auto" on CPU measures the fastest
        self.device = resolve_device(device)
        self.preprocess = TensorPreprocessor.from_image_processor(loaded.image_processor)
        self.tokenizer = loaded.tokenizer
        self.config = loaded.model.config
        self.precision_reason = f"{precision}: requested"
        self.precision_timings: dict[str, PrecisionTrial] = {}  # "auto" on CPU: each precision's figures
        self._weights_dtype = torch.float32
        self._compiled: FixedSizeCompiled | None = None  # precision int8-compiled: the image tower, compiled
        self._tower = None  # ... and the copy of it that it runs
        model = loaded.model.eval()
        on_cuda = self.device.startswith("cuda")

        if precision == "fp16" and not on_cuda:
            raise ValueError("precision 'fp16' needs a CUDA device; on CPU use 'bf16', 'int8', 'fp32' or 'auto'")
        if precision in ("int8", COMPILED_INT8) and on_cuda:
            raise ValueError(
                f"precision {precision!r} (dynamic quantization) runs on CPU only; on CUDA use 'bf16' or 'fp16'"
            )
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
            if precision == "auto":
                precision = self._calibrate()
            self._use_cpu_precision(precision)
        self.precision = precision

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, id_or_dir: str, *, device: str = "auto", precision: str = "auto", batch_size: int = 16):
        if precision not in PRECISIONS:  # fail before loading anything
            raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
        loaded = load_checkpoint(id_or_dir, with_tokenizer=cls.with_tokenizer, default_id=cls.default_model_id)
        return cls(loaded, device=device, precision=precision, batch_size=batch_size)

    def _use_cpu_precision(self, precision: str, call_size: int | None = None) -> None:
        """Run the fp32 model at `precision` on CPU, in place (the fp32 weights are not kept).

        bf16: bf16 weights and inputs; with native bf16 (AMX / AVX512-BF16) this runs SigLIP-base about 2.3x
        faster than bf16 autocast, which re-casts the fp32 weights on every call (measured here).
        int8: dynamic quantization of the Linear layers (int8 weights, activations quantized per call).
        int8-compiled: as int8, plus a copy of the image tower quantized by torchao and compiled for calls of
        `call_size` images (model_batch by default), which takes the calls nearly that full (pipeline.models.
        compiled); texts and short calls run as in int8. Raises CompileUnavailableError when the tower cannot
        be compiled here."""
        import torch

        if precision == "bf16":
            self._weights_dtype = torch.bfloat16
            self.model = self.model.to(torch.bfloat16)
        elif precision in ("int8", COMPILED_INT8):
            if precision == COMPILED_INT8:
                self._tower = copy.deepcopy(self._image_tower())
                quantize_int8(self._tower)
                self._compiled = FixedSizeCompiled(self._tower_features, call_size or self.model_batch)
                self.warm_up()  # a failure leaves nothing behind: calibration restores the model, a constructor fails
            self._quantize_dynamic(self.model)

    @staticmethod
    def _quantize_dynamic(module) -> None:
        import torch

        with warnings.catch_warnings():  # torch deprecates quantized tensors; still works in 2.x
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)

    def _image_tower(self):
        """The module that embeds images (copied, quantized and compiled by int8-compiled)."""
        return self.model

    def _tower_features(self, inputs: dict):
        return _pooled(self._tower(**inputs), "image")

    def warm_up(self) -> None:
        """Run the compiled tower (int8-compiled) once: whatever it still has to compile, it compiles now."""
        if self._compiled is not None:
            self._compiled.warm_up(self.preprocess([np.zeros((64, 64, 3), np.uint8)], device=self.device))

    def _calibrate(self) -> str:
        """CPU "auto": the fastest precision whose embeddings stay within cosine FAITHFUL_MIN_COSINE of fp32's,
        measured on the first use of this model on this CPU and read from the vigil cache afterwards."""
        key = decision_key(self.model_id)
        path = decision_path(key)
        decision = read_decision(path, key)
        if decision is None:
            decision = self._measure_cpu_precisions()
            try:
                write_decision(path, key, decision)
                stored = f"cached in {path}"
            except OSError as exc:  # an unwritable cache costs a calibration per run, not the run
                stored = f"not cached ({exc})"
            announce(f"precision auto for {self.model_id}: {decision.choice} ({decision.figures()}) {stored}")
        else:
            log.debug("precision auto for %s: %s, cached in %s", self.model_id, decision.choice, path)
        self.precision_timings = decision.trials
        self.model_batch = decision.fastest_batch(self.batch_size)
        self.precision_reason = (
            f"{decision.choice}: fastest within cosine {FAITHFUL_MIN_COSINE} of fp32 on this CPU, "
            f"measured {decision.calibrated_at}"
        )
        return decision.choice

    def _measure_cpu_precisions(self) -> CpuPrecisionDecision:
        """Time each CPU precision on the calibration photographs, in calls of CALIBRATION_CALL images (the
        photographs repeated), and compare its embeddings (and, for a text tower, the calibration texts': one
        embedding space, judged together) with fp32's. The photographs are preprocessed once: only the model's
        time depends on the precision."""
        import torch

        photos = calibration_photographs()
        with torch.inference_mode():
            pixels = self.preprocess(photos, device=self.device)
        call = _repeated(pixels, CALIBRATION_CALL)
        texts = CALIBRATION_TEXTS if self.with_tokenizer else ()
        fp32_model = self.model
        embeddings: dict[str, np.ndarray] = {}
        ms_per_image: dict[str, float] = {}

        def trial(precision: str) -> None:
            # Each precision converts a copy in place: the fp32 weights stay for the next (and the choice).
            try:
                self._convert_copy(fp32_model, precision, call_size=CALIBRATION_CALL)
                images, ms_per_image[precision] = measure_ms_per_image(
                    lambda: self._embed_pixels(call), CALIBRATION_CALL
                )
                images = images[: len(photos)]
                embeddings[precision] = np.concatenate([images, self._embed_texts_raw(texts)]) if texts else images
            finally:
                self._restore(fp32_model)

        for precision in CPU_PRECISIONS:
            trial(precision)
        if ms_per_image["int8"] >= COMPILE_WORTH_MS:
            try:
                trial(COMPILED_INT8)
            except CompileUnavailableError as exc:  # measured without it: the others still stand
                announce(f"precision auto for {self.model_id}: {COMPILED_INT8} not measured ({exc})")
        trials = {p: PrecisionTrial(ms_per_image[p], min_cosine(embeddings["fp32"], embeddings[p])) for p in embeddings}
        choice = choose_cpu_precision(trials)
        self._convert_copy(fp32_model, batch_precision(choice))
        batch_ms = self._measure_batches(pixels)
        self._restore(fp32_model)
        return CpuPrecisionDecision(choice, trials, batch_ms)

    def _convert_copy(self, fp32_model, precision: str, call_size: int | None = None) -> None:
        self.model = copy.deepcopy(fp32_model) if precision != "fp32" else fp32_model
        self._use_cpu_precision(precision, call_size)

    def _restore(self, fp32_model) -> None:
        import torch

        self.model, self._weights_dtype, self._compiled, self._tower = fp32_model, torch.float32, None, None

    def _measure_batches(self, pixels: dict) -> dict[int, float]:
        """ms per image of the model as it is now, by images per call: the photographs repeated to the largest
        batch, embedded in calls of each CALIBRATION_BATCHES size."""
        largest = max(CALIBRATION_BATCHES)
        many = _repeated(pixels, largest)

        def in_calls_of(batch: int) -> Callable[[], None]:
            calls = [{name: value[i : i + batch] for name, value in many.items()} for i in range(0, largest, batch)]
            return lambda: [self._embed_pixels(call) for call in calls]

        return {batch: measure_ms_per_image(in_calls_of(batch), largest)[1] for batch in CALIBRATION_BATCHES}

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
        size = self.model_batch
        chunks = [fn(items[i : i + size]) for i in range(0, len(items), size)]
        return np.concatenate(chunks, axis=0)

    def _embed_image_chunk(self, frames: list[np.ndarray]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self._embed_pixels(self.preprocess(frames, device=self.device))

    def _embed_pixels(self, inputs: dict) -> np.ndarray:
        """Preprocessed images -> float32 unit embeddings, at the model's precision (`inputs` is left as it is)."""
        import torch

        with torch.inference_mode():
            if self._weights_dtype != torch.float32:
                inputs = {**inputs, "pixel_values": inputs["pixel_values"].to(self._weights_dtype)}
            rows = len(inputs["pixel_values"])
            compiled = self._compiled is not None and self._compiled.takes(rows)
            pooled = self._compiled(inputs) if compiled else self._pooled_images(inputs)
            return _normalise(pooled).cpu().numpy().astype(np.float32, copy=False)

    def _pooled_images(self, inputs: dict):
        return _pooled(self._forward_images(inputs), "image")

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

    def _image_tower(self):
        return self.model.vision_model

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

    @property
    def precisions(self) -> dict[str, str]:
        """The precision each encoder runs at, for the records. Not part of `ids`: indexes compare those, and
        vectors of another precision (within cosine 0.99 on CPU) need no re-indexing."""
        return {"siglip": self.siglip.precision, "dinov2": self.dinov2.precision}

    def embed_images(self, images: "np.ndarray | Sequence[np.ndarray]") -> tuple[np.ndarray, np.ndarray]:
        """SigLIP2 and DINOv2 unit vectors of the same images."""
        return self.siglip.embed_images(images), self.dinov2.embed_images(images)

    @property
    def appearance_dim(self) -> int:
        return self.dinov2.dim

    def appearance(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """DINOv2 unit vectors of object crops of any sizes (a tracker's re-identification)."""
        return self.dinov2.embed_images(crops)


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
    # SigLIP's compiled graph guards on a transformers registry that running DINOv2 the first time grows: warmed
    # again now, it recompiles here rather than in the first batch
    siglip.warm_up()
    return Encoders(siglip, dinov2)


__all__ = ["SiglipEncoder", "Dinov2Encoder", "Encoders", "load_encoders"]
