"""The ``--models`` / ``VIGIL_MODELS`` value: its forms, and how it resolves to a ModelSource."""

from __future__ import annotations

from pathlib import Path

from pipeline.models.random_weights import tiny_checkpoints
from pipeline.models.sources import DEFAULT_MODELS, ModelSource

_SPEC_FORMS = (
    "use one of: 'default' (or nothing) for "
    f"{DEFAULT_MODELS.siglip},{DEFAULT_MODELS.dinov2}; 'tiny' for small random-weight checkpoints "
    "(plumbing tests only); 'SIGLIP,DINOV2' with a Hugging Face id or a local folder each; or a folder "
    "containing siglip/ and dinov2/ subfolders"
)


def resolve_models(spec: "str | ModelSource | None") -> ModelSource:
    """Turn a ``--models`` / ``VIGIL_MODELS`` value into a ModelSource.

    None or "default" -> DEFAULT_MODELS; "tiny" -> locally built random checkpoints;
    "A,B" -> (A, B), each a Hugging Face id or a local folder; a folder with siglip/ and dinov2/
    subfolders -> those two folders. Anything else raises ValueError explaining these forms.
    """
    if isinstance(spec, ModelSource):
        return spec
    if spec is None:
        return DEFAULT_MODELS
    if not isinstance(spec, str):
        raise ValueError(f"model spec must be a string, got {type(spec).__name__}; {_SPEC_FORMS}")
    text = spec.strip()
    if text == "" or text.lower() == "default":
        return DEFAULT_MODELS
    if text.lower() == "tiny":
        return tiny_checkpoints()
    if "," in text:
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"model spec {spec!r} must name exactly two models 'SIGLIP,DINOV2'; {_SPEC_FORMS}")
        return ModelSource(parts[0], parts[1])
    folder = Path(text).expanduser()
    if folder.is_dir() and (folder / "siglip").is_dir() and (folder / "dinov2").is_dir():
        return ModelSource(str((folder / "siglip").absolute()), str((folder / "dinov2").absolute()))
    if folder.is_dir():
        raise ValueError(f"folder {text!r} has no siglip/ and dinov2/ subfolders; {_SPEC_FORMS}")
    raise ValueError(f"model spec {spec!r} names a single model, but two are needed; {_SPEC_FORMS}")


__all__ = ["resolve_models"]
