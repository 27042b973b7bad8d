"""The models: where they come from, how they load, and the encoders and captioner built on them.

Split the way Hugging Face splits a model: sources (which checkpoints), specs (the ``--models`` value),
hub (loading, offline detection and guidance), preprocessing (tensors in), precision (device and dtype),
encoders (SigLIP2 and DINOv2), random_weights (untrained checkpoints for tests and benchmarks) and
captioner. Code outside this package imports from here.
"""

from __future__ import annotations

from pipeline.models.captioner import DEFAULT_PROMPT, Captioner, CaptionerUnavailableError, TransformersCaptioner
from pipeline.models.encoders import Dinov2Encoder, Encoders, SiglipEncoder, load_encoders
from pipeline.models.hub import LoadedCheckpoint, ModelUnavailableError, hub_offline, hub_reachable, load_checkpoint
from pipeline.models.precision import (
    FAITHFUL_MIN_COSINE,
    PrecisionTrial,
    calibration_photographs,
    choose_cpu_precision,
    min_cosine,
    resolve_device,
)
from pipeline.models.preprocessing import TensorPreprocessor
from pipeline.models.random_weights import (
    UNTRAINED_MARKER,
    build_random_checkpoints,
    default_cache_dir,
    tiny_checkpoints,
    tiny_owl_checkpoint,
)
from pipeline.models.sources import DEFAULT_MODELS, ModelSource
from pipeline.models.specs import resolve_models

__all__ = [
    "FAITHFUL_MIN_COSINE",
    "ModelSource",
    "DEFAULT_MODELS",
    "resolve_models",
    "ModelUnavailableError",
    "LoadedCheckpoint",
    "load_checkpoint",
    "hub_offline",
    "hub_reachable",
    "TensorPreprocessor",
    "choose_cpu_precision",
    "PrecisionTrial",
    "min_cosine",
    "calibration_photographs",
    "resolve_device",
    "SiglipEncoder",
    "Dinov2Encoder",
    "Encoders",
    "load_encoders",
    "build_random_checkpoints",
    "tiny_checkpoints",
    "tiny_owl_checkpoint",
    "default_cache_dir",
    "UNTRAINED_MARKER",
    "Captioner",
    "CaptionerUnavailableError",
    "TransformersCaptioner",
    "DEFAULT_PROMPT",
]
