"""Model sources: the checkpoints the two encoders load (a hub id or a local folder each), and the default pair."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSource:
    """Where the two encoders come from: a Hugging Face id or a local checkpoint folder each."""

    siglip: str
    dinov2: str


DEFAULT_MODELS = ModelSource("google/siglip2-base-patch16-224", "facebook/dinov2-small")

__all__ = ["ModelSource", "DEFAULT_MODELS"]
