"""The null extractor (`monitor.extractor: null`): for benchmarking the data plane only, never for results.

`NullEncoders` stands in for `Encoders` in an extractor: no model runs. Each frame's SigLIP2 and DINOv2
"features" are unit vectors of the checkpoints' real sizes, made from the frame's mean colours on a coarse
grid (every 8th pixel) by a fixed random projection: cheap (tens of microseconds a frame), deterministic
(the same frame gives the same vectors in every process), and different for different pictures, so the
stages after the extractor (clip windows, matching against the standing queries, the sink's writes and the
index) do their usual work on every frame. The vectors mean nothing: a query's score against them is noise.

Honesty: it runs only beside random-weight checkpoints (those carrying `UNTRAINED_MARKER`), so everything
the monitor writes with it is marked untrained (`ModelIds.untrained`), like the checkpoints' own outputs;
its `ids` are marked untrained too. Only the checkpoints' configurations are read (their sizes), never
their weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.models.random_weights import UNTRAINED_MARKER
from pipeline.models.sources import ModelSource
from pipeline.models.specs import resolve_models
from pipeline.records import ModelIds

GRID = 4  # cells per side of the mean-colour grid
STRIDE = 8  # pixels read along each axis: every 8th (the mean of a downsampled frame)
SEEDS = {"siglip": 1301, "dinov2": 1302}  # of the fixed projections (one per model)


class NullExtractorRefused(ValueError):
    """The null extractor was asked to stand beside checkpoints that are not random-weight ones."""


def colour_grid(image: np.ndarray) -> np.ndarray:
    """An RGB uint8 frame (H, W, 3) -> the mean colour of each of GRID x GRID cells of every STRIDE-th
    pixel, centred (values in [-0.5, 0.5]), followed by a constant 1 (so no frame maps to a zero vector)."""
    small = np.asarray(image)[::STRIDE, ::STRIDE, :3]
    h, w = (small.shape[0] // GRID) * GRID, (small.shape[1] // GRID) * GRID
    if h == 0 or w == 0:  # smaller than the grid: one cell, repeated
        cells = np.broadcast_to(small.reshape(-1, 3).mean(axis=0), (GRID * GRID, 3))
    else:
        cells = small[:h, :w].reshape(GRID, h // GRID, GRID, w // GRID, 3).mean(axis=(1, 3)).reshape(-1, 3)
    return np.append(cells.reshape(-1) / 255.0 - 0.5, 1.0).astype(np.float32)


def projection(dim: int, seed: int) -> np.ndarray:
    """The fixed (GRID * GRID * 3 + 1, dim) Gaussian projection of one model's vectors."""
    return np.random.default_rng(seed).standard_normal((GRID * GRID * 3 + 1, dim)).astype(np.float32)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32, copy=False)


def _is_untrained(where: str) -> bool:
    """Whether a checkpoint (a folder or a cached hub id) carries the random-weight marker."""
    if Path(where).is_dir():
        return (Path(where) / UNTRAINED_MARKER).is_file()
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(where, UNTRAINED_MARKER), str)
    except Exception:  # noqa: BLE001 - no cache, no marker
        return False


def checkpoint_dims(source: ModelSource) -> tuple[int, int]:
    """The SigLIP2 image-embedding and DINOv2 sizes, from the checkpoints' configurations only."""
    from transformers import AutoConfig

    siglip = AutoConfig.from_pretrained(source.siglip)
    dinov2 = AutoConfig.from_pretrained(source.dinov2)
    return int(siglip.vision_config.hidden_size), int(dinov2.hidden_size)


class NullEncoders:
    """`embed_images`, `appearance` and `ids` as `pipeline.models.Encoders` has them, with no model: see the
    module."""

    def __init__(self, ids: ModelIds, siglip_dim: int, dinov2_dim: int):
        self.ids = ModelIds(ids.siglip, ids.dinov2, untrained=True)
        self.siglip_dim, self.dinov2_dim = int(siglip_dim), int(dinov2_dim)
        self._siglip = projection(self.siglip_dim, SEEDS["siglip"])
        self._dinov2 = projection(self.dinov2_dim, SEEDS["dinov2"])

    @classmethod
    def from_models(cls, spec: str | ModelSource) -> NullEncoders:
        """For the checkpoints a `models` value names (their sizes and ids); `NullExtractorRefused` unless both
        are random-weight checkpoints: outputs that mean nothing must never pass for a trained model's."""
        source = resolve_models(spec)
        trained = [where for where in (source.siglip, source.dinov2) if not _is_untrained(where)]
        if trained:
            raise NullExtractorRefused(
                f"monitor.extractor null (benchmarking the data plane only) needs random-weight checkpoints "
                f"(models: tiny, or a folder from pipeline.models.build_random_checkpoints); "
                f"{', '.join(trained)} has no {UNTRAINED_MARKER}"
            )
        siglip_dim, dinov2_dim = checkpoint_dims(source)
        return cls(ModelIds(source.siglip, source.dinov2, untrained=True), siglip_dim, dinov2_dim)

    def embed_images(self, images: np.ndarray | Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """uint8 RGB images (B, H, W, 3) or a sequence of (H, W, 3) -> float32 (B, siglip dim) and (B, dinov2
        dim), unit rows."""
        if len(images) == 0:
            return np.zeros((0, self.siglip_dim), np.float32), np.zeros((0, self.dinov2_dim), np.float32)
        grids = np.stack([colour_grid(image) for image in images])
        return _unit_rows(grids @ self._siglip), _unit_rows(grids @ self._dinov2)

    @property
    def appearance_dim(self) -> int:
        return self.dinov2_dim

    def appearance(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """The "DINOv2" vectors of crops of any sizes."""
        return self.embed_images(crops)[1]


__all__ = ["NullEncoders", "NullExtractorRefused", "colour_grid", "checkpoint_dims"]
