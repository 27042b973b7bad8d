"""The baseline vigil is compared with: archive indexing written the way a tutorial would.

OpenCV reads every frame of the file and keeps one per second of media time, converts BGR to RGB, and
each kept frame goes through the Hugging Face processors (the PIL fallback classes, one frame at a
time) and both models in fp32 with batch 1 under `torch.inference_mode`. Nothing here is tuned on
purpose: no keyframe seeking, no resizing in the decoder, no batching, no still-frame skipping. OpenCV
and torch keep their default thread counts.

The per-stage seconds are bookkeeping only (a few `perf_counter` calls per frame), so the benchmark
can say where the baseline's time goes.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from transformers import AutoImageProcessor, AutoModel, AutoProcessor

from pipeline.models import ModelSource

STAGES = ("decode", "preprocess", "siglip", "dinov2")


@dataclass
class NaiveModels:
    siglip: Any
    siglip_processor: Any
    dinov2: Any
    dinov2_processor: Any


@dataclass
class NaiveRun:
    frames: int = 0
    stage_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))


def load_naive_models(source: ModelSource) -> NaiveModels:
    """The checkpoints exactly as a tutorial loads them: Auto classes, default dtype (fp32)."""
    return NaiveModels(
        siglip=AutoModel.from_pretrained(source.siglip).eval(),
        siglip_processor=AutoProcessor.from_pretrained(source.siglip),
        dinov2=AutoModel.from_pretrained(source.dinov2).eval(),
        dinov2_processor=AutoImageProcessor.from_pretrained(source.dinov2),
    )


@contextmanager
def _timed(run: NaiveRun, stage: str):
    started = time.perf_counter()
    yield
    run.stage_seconds[stage] += time.perf_counter() - started


def embed_frame(models: NaiveModels, rgb: np.ndarray, run: NaiveRun) -> tuple[np.ndarray, np.ndarray]:
    """One RGB frame -> (SigLIP image features, DINOv2 pooler output), batch 1, fp32."""
    with torch.inference_mode():
        with _timed(run, "preprocess"):
            siglip_inputs = models.siglip_processor(images=rgb, return_tensors="pt")
            dinov2_inputs = models.dinov2_processor(images=rgb, return_tensors="pt")
        with _timed(run, "siglip"):
            siglip = models.siglip.get_image_features(**siglip_inputs).pooler_output
        with _timed(run, "dinov2"):
            dinov2 = models.dinov2(**dinov2_inputs).pooler_output
    return siglip[0].numpy(), dinov2[0].numpy()


def warm_up(models: NaiveModels, size: tuple[int, int]) -> None:
    """One untimed call, so first-call allocations are not billed to the run."""
    embed_frame(models, np.zeros((size[1], size[0], 3), np.uint8), NaiveRun())


def run_naive(video: Path, models: NaiveModels, fps: float = 1.0) -> NaiveRun:
    """Embed one frame per 1/fps seconds of `video`; returns the frame count and per-stage seconds."""
    run = NaiveRun()
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise RuntimeError(f"OpenCV cannot open {video}")
    next_ms = 0.0
    try:
        while True:
            with _timed(run, "decode"):
                ok, bgr = capture.read()
                keep = ok and capture.get(cv2.CAP_PROP_POS_MSEC) >= next_ms
                if keep:
                    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            if not ok:
                break
            if not keep:
                continue
            next_ms += 1000.0 / fps
            embed_frame(models, rgb, run)
            run.frames += 1
    finally:
        capture.release()
    return run
