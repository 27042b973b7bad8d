"""SigLIP (image + text) and DINOv2 (image) encoders: unit-norm float32 embeddings from uint8 RGB frames.

Checkpoints load through ``AutoModel`` / ``AutoImageProcessor`` / ``AutoTokenizer`` (so SigLIP's
``"siglip"`` and NaFlex ``"siglip2"`` model types both work), local files first. Image preprocessing is
done on tensors, batched, following the checkpoint's own processor config (resize with antialiasing,
center crop, rescale, normalise), matched to the Hugging Face PIL processors.

The library never changes torch's global thread count: callers decide.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import re
import socket
import threading
import time
import urllib.parse
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from pipeline.models.random_weights import UNTRAINED_MARKER
from pipeline.records import ModelIds

TEXT_MAX_LENGTH = 64
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
BF16_MIN_COSINE = 0.99  # bf16 is used on CPU only if it keeps embeddings this close to fp32


@dataclass(frozen=True)
class ModelSource:
    """Where the two encoders come from: a Hugging Face id or a local checkpoint folder each."""

    siglip: str
    dinov2: str


DEFAULT_MODELS = ModelSource("google/siglip2-base-patch16-224", "facebook/dinov2-small")

_SPEC_FORMS = (
    "use one of: 'default' (or nothing) for "
    f"{DEFAULT_MODELS.siglip},{DEFAULT_MODELS.dinov2}; 'tiny' for small random-weight checkpoints "
    "(plumbing tests only); 'SIGLIP,DINOV2' with a Hugging Face id or a local folder each; or a folder "
    "containing siglip/ and dinov2/ subfolders"
)


class ModelUnavailableError(RuntimeError):
    """The weights of a model could not be loaded; the message says how to provide them."""


def _guidance(model_id: str) -> str:
    return (
        "How to provide the weights:\n"
        f"  1. on a machine with internet access, download them: `huggingface-cli download {model_id}` "
        f"(or `hf download {model_id}`), then copy ~/.cache/huggingface to this machine "
        "(or point HF_HOME at the copied folder);\n"
        "  2. or pass local checkpoint folders: --models SIGLIP_DIR,DINOV2_DIR (or the VIGIL_MODELS "
        "environment variable);\n"
        "  3. or use --models tiny for untrained random-weight checkpoints (plumbing tests only, "
        "never accuracy)."
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
        from pipeline.models.random_weights import tiny_checkpoints

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


# ----------------------------------------------------------------------------------------------
# Loading


_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
_reachability: dict[str, tuple[float, bool]] = {}


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set: never touch the network."""
    return _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE"))


def _hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP check of the hub (or of the HTTPS proxy, if one is set), cached for a minute.

    Without it, transformers retries an unresolvable hub for about 30 s per file before failing.
    """
    endpoint = _hub_endpoint()
    cached = _reachability.get(endpoint)
    if cached and time.monotonic() - cached[0] < 60:
        return cached[1]
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urllib.parse.urlparse(proxy or endpoint)
    host = url.hostname or ""
    port = url.port or (443 if url.scheme == "https" else 80)
    result: dict[str, bool] = {}

    def probe() -> None:  # in a thread: name resolution has no timeout of its own
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result["ok"] = True
        except OSError:
            result["ok"] = False

    thread = threading.Thread(target=probe, name="vigil-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    ok = bool(result.get("ok"))
    _reachability[endpoint] = (time.monotonic(), ok)
    return ok


@dataclass
class _Loaded:
    model: Any
    image_processor: Any
    tokenizer: Any
    model_id: str
    untrained: bool


def _locate(id_or_dir: str, default_id: str = "<model-id>") -> tuple[str, str]:
    """("dir", absolute folder) for an existing folder, ("hub", id) for a plausible hub id."""
    if not isinstance(id_or_dir, str) or not id_or_dir.strip():
        raise ModelUnavailableError(f"empty model id or folder {id_or_dir!r}.\n{_guidance(default_id)}")
    text = id_or_dir.strip()
    path = Path(text).expanduser()
    if path.is_dir():
        return "dir", str(path.absolute())
    looks_like_path = text.startswith(("/", ".", "~")) or "\\" in text or not _REPO_ID.match(text)
    if looks_like_path or path.exists():
        raise ModelUnavailableError(
            f"model folder {text} does not exist (or is not a folder).\n{_guidance(default_id)}"
        )
    return "hub", text


class _SiglipDefaultTokenFilter(logging.Filter):
    """Drop one false alarm: transformers 5 builds a default SiglipTextConfig() while saving/loading any
    SigLIP checkpoint, and that default (bos 49406 / eos 49407 with vocab 32000) fails its own validation."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not ("within the vocabulary" in msg and ("got 49406" in msg or "got 49407" in msg))


def _install_log_filter() -> None:
    target = logging.getLogger("transformers.configuration_utils")
    if not any(isinstance(f, _SiglipDefaultTokenFilter) for f in target.filters):
        target.addFilter(_SiglipDefaultTokenFilter())


@contextlib.contextmanager
def _no_progress_bars():
    """Hide transformers' per-load "Loading weights" bars (noise in actor logs); warnings stay visible."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    if enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _load_checkpoint(id_or_dir: str, *, with_tokenizer: bool, default_id: str = "<model-id>") -> _Loaded:
    import torch
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    kind, where = _locate(id_or_dir, default_id)
    _install_log_filter()

    def attempt(local_only: bool) -> tuple[Any, Any, Any]:
        with _no_progress_bars():
            return _attempt(local_only)

    def _attempt(local_only: bool) -> tuple[Any, Any, Any]:
        model = AutoModel.from_pretrained(where, local_files_only=local_only, dtype=torch.float32)
        image_processor = AutoImageProcessor.from_pretrained(where, local_files_only=local_only, backend="pil")
        tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=local_only) if with_tokenizer else None
        return model, image_processor, tokenizer

    if kind == "dir":
        try:
            parts = attempt(True)
        except Exception as exc:  # noqa: BLE001 - any failure means "can't use this folder"
            raise ModelUnavailableError(
                f"could not load the checkpoint in folder {where}: {type(exc).__name__}: {exc}\n"
                f"{_guidance(default_id)}"
            ) from exc
        untrained = (Path(where) / UNTRAINED_MARKER).is_file()
        return _Loaded(*parts, model_id=where, untrained=untrained)

    try:
        parts = attempt(True)
    except Exception as local_exc:  # noqa: BLE001
        if hub_offline():
            raise ModelUnavailableError(
                f"model {where} is not in the local Hugging Face cache ({_hf_cache_dir()}) and HF_HUB_OFFLINE "
                f"is set, so it cannot be downloaded.\n{_guidance(where)}"
            ) from local_exc
        if not hub_reachable():
            raise ModelUnavailableError(
                f"model {where} is not in the local Hugging Face cache ({_hf_cache_dir()}) and the hub "
                f"({_hub_endpoint()}) is unreachable from this machine.\n{_guidance(where)}"
            ) from local_exc
        try:
            parts = attempt(False)
        except Exception as exc:  # noqa: BLE001
            raise ModelUnavailableError(
                f"could not download model {where} from {_hub_endpoint()}: {type(exc).__name__}: {exc}\n"
                f"{_guidance(where)}"
            ) from exc
    untrained = False
    try:
        from huggingface_hub import try_to_load_from_cache

        untrained = isinstance(try_to_load_from_cache(where, UNTRAINED_MARKER), str)
    except Exception:  # noqa: BLE001 - the marker is optional
        pass
    return _Loaded(*parts, model_id=where, untrained=untrained)


def _hf_cache_dir() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # noqa: BLE001
        return "~/.cache/huggingface/hub"


# ----------------------------------------------------------------------------------------------
# Tensor preprocessing, model-matched


_RESAMPLE_MODES = {0: "nearest-exact", 1: "bicubic", 2: "bilinear", 3: "bicubic", 4: "bilinear", 5: "bilinear"}


def _get(obj: Any, name: str, default: Any = None) -> Any:
    value = getattr(obj, name, None)
    if value is None and isinstance(obj, dict):
        value = obj.get(name)
    return default if value is None else value


def _size_dict(value: Any) -> dict:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if v is not None}
    keys = ("height", "width", "shortest_edge", "longest_edge", "max_height", "max_width")
    return {k: getattr(value, k) for k in keys if getattr(value, k, None) is not None}


def naflex_size(height: int, width: int, patch_size: int, max_num_patches: int, eps: float = 1e-5) -> tuple[int, int]:
    """SigLIP 2 NaFlex target size: the largest patch-aligned size with at most max_num_patches patches."""

    def scaled(scale: float, size: int) -> int:
        return int(max(patch_size, math.ceil(size * scale / patch_size) * patch_size))

    lo, hi = eps / 10, 100.0
    while hi - lo >= eps:
        mid = (lo + hi) / 2
        if (scaled(mid, height) / patch_size) * (scaled(mid, width) / patch_size) <= max_num_patches:
            lo = mid
        else:
            hi = mid
    return scaled(lo, height), scaled(lo, width)


@dataclass(frozen=True)
class TensorPreprocessor:
    """Batched torch preprocessing that follows a Hugging Face image processor's config.

    mode "fixed": resize to (height, width); "shortest_edge": resize the short side (then usually
    center crop); "naflex": SigLIP 2 patch sequences padded to max_num_patches.
    """

    mode: str
    height: int = 0
    width: int = 0
    shortest_edge: int = 0
    longest_edge: int = 0
    crop: tuple[int, int] | None = None
    interpolation: str = "bilinear"
    do_resize: bool = True
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    patch_size: int = 16
    max_num_patches: int = 256

    @classmethod
    def from_image_processor(cls, ip: Any) -> "TensorPreprocessor":
        resample = _get(ip, "resample", 2)
        interpolation = _RESAMPLE_MODES.get(int(resample), "bilinear")
        mean = _get(ip, "image_mean", (0.5, 0.5, 0.5))
        std = _get(ip, "image_std", (0.5, 0.5, 0.5))
        mean = tuple(float(m) for m in (mean if isinstance(mean, (list, tuple)) else [mean] * 3))
        std = tuple(float(s) for s in (std if isinstance(std, (list, tuple)) else [std] * 3))
        common = dict(
            interpolation=interpolation,
            do_resize=bool(_get(ip, "do_resize", True)),
            do_rescale=bool(_get(ip, "do_rescale", True)),
            rescale_factor=float(_get(ip, "rescale_factor", 1 / 255)),
            do_normalize=bool(_get(ip, "do_normalize", True)),
            mean=mean,
            std=std,
        )
        if _get(ip, "max_num_patches") is not None and _get(ip, "patch_size") is not None:
            return cls(mode="naflex", patch_size=int(_get(ip, "patch_size")),
                       max_num_patches=int(_get(ip, "max_num_patches")), **common)
        size = _size_dict(_get(ip, "size"))
        crop = None
        if _get(ip, "do_center_crop", False):
            crop_size = _size_dict(_get(ip, "crop_size"))
            if "height" not in crop_size or "width" not in crop_size:
                raise ValueError(f"unsupported crop_size {crop_size!r} in the image processor config")
            crop = (int(crop_size["height"]), int(crop_size["width"]))
        if "height" in size and "width" in size:
            return cls(mode="fixed", height=int(size["height"]), width=int(size["width"]), crop=crop, **common)
        if "shortest_edge" in size:
            return cls(mode="shortest_edge", shortest_edge=int(size["shortest_edge"]),
                       longest_edge=int(size.get("longest_edge", 0)), crop=crop, **common)
        raise ValueError(f"unsupported image processor size {size!r}: expected height/width or shortest_edge")

    @property
    def output_size(self) -> tuple[int, int] | None:
        """(height, width) of pixel_values, when fixed."""
        if self.crop:
            return self.crop
        if self.mode == "fixed" and self.do_resize:
            return (self.height, self.width)
        return None

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        if not self.do_resize:
            return height, width
        if self.mode == "fixed":
            return self.height, self.width
        if self.mode == "naflex":
            return naflex_size(height, width, self.patch_size, self.max_num_patches)
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
        if self.longest_edge and new_long > self.longest_edge:
            new_short, new_long = int(self.longest_edge * new_short / new_long), self.longest_edge
        return (new_long, new_short) if width <= height else (new_short, new_long)

    def _resize_crop_normalise(self, x, device):
        """x: float tensor (n, 3, H, W) with values 0..255."""
        import torch
        import torch.nn.functional as F

        h, w = self.target_size(x.shape[-2], x.shape[-1])
        if (h, w) != tuple(x.shape[-2:]):
            if self.interpolation.startswith("nearest"):
                x = F.interpolate(x, size=(h, w), mode=self.interpolation)
            else:
                x = F.interpolate(x, size=(h, w), mode=self.interpolation, align_corners=False, antialias=True)
            x = x.clamp_(0, 255).round_()  # the PIL processors resize in uint8
        if self.crop:
            ch, cw = self.crop
            H, W = x.shape[-2:]
            if H < ch or W < cw:  # pad like transformers' center_crop does
                ph, pw = max(ch - H, 0), max(cw - W, 0)
                top, left = math.ceil(ph / 2), math.ceil(pw / 2)
                x = F.pad(x, (left, pw - left, top, ph - top))
                H, W = x.shape[-2:]
            top, left = (H - ch) // 2, (W - cw) // 2
            x = x[..., top:top + ch, left:left + cw]
        if self.do_rescale:
            x = x * self.rescale_factor
        if self.do_normalize:
            mean = torch.tensor(self.mean, dtype=x.dtype, device=device).view(1, 3, 1, 1)
            std = torch.tensor(self.std, dtype=x.dtype, device=device).view(1, 3, 1, 1)
            x = (x - mean) / std
        return x

    def __call__(self, images: "np.ndarray | Sequence[np.ndarray]", device: str = "cpu") -> dict:
        """uint8 RGB images (any size, mixed sizes allowed) -> model inputs (dict of tensors)."""
        import torch

        frames = as_image_list(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, frame in enumerate(frames):
            groups.setdefault(frame.shape[:2], []).append(i)
        outputs: list[Any] = [None] * len(frames)
        for idx in groups.values():
            batch = np.stack([frames[i] for i in idx]) if len(idx) > 1 else frames[idx[0]][None]
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(device).permute(0, 3, 1, 2).float()
            x = self._resize_crop_normalise(x, device)
            for j, i in enumerate(idx):
                outputs[i] = x[j]
        if self.mode != "naflex":
            if len({tuple(o.shape) for o in outputs}) != 1:
                raise ValueError("images of different sizes need an image processor with a fixed output size")
            return {"pixel_values": torch.stack(outputs)}
        return self._patchify(outputs, device)

    def _patchify(self, images: list, device) -> dict:
        import torch

        p, n_max = self.patch_size, self.max_num_patches
        values = torch.zeros((len(images), n_max, 3 * p * p), dtype=torch.float32, device=device)
        mask = torch.zeros((len(images), n_max), dtype=torch.int32, device=device)
        shapes = torch.zeros((len(images), 2), dtype=torch.int64, device=device)
        for i, img in enumerate(images):
            c, h, w = img.shape
            nh, nw = h // p, w // p
            patches = img[:, : nh * p, : nw * p].reshape(c, nh, p, nw, p).permute(1, 3, 2, 4, 0).reshape(nh * nw, -1)
            values[i, : nh * nw] = patches
            mask[i, : nh * nw] = 1
            shapes[i, 0], shapes[i, 1] = nh, nw
        return {"pixel_values": values, "pixel_attention_mask": mask, "spatial_shapes": shapes}


def as_image_list(images: "np.ndarray | Sequence[np.ndarray]") -> list[np.ndarray]:
    """uint8 RGB (B,H,W,3), (H,W,3) or a sequence of (H,W,3) -> list of (H,W,3) uint8 arrays."""
    if isinstance(images, np.ndarray):
        if images.ndim == 4:
            items = list(images)
        elif images.ndim in (2, 3):
            items = [images]
        else:
            raise ValueError(f"expected uint8 images (B,H,W,3) or (H,W,3), got shape {images.shape}")
    else:
        items = [np.asarray(im) for im in images]
    out = []
    for im in items:
        if im.dtype != np.uint8:
            raise ValueError(f"images must be uint8 RGB, got dtype {im.dtype}")
        if im.ndim == 2:
            im = np.repeat(im[:, :, None], 3, axis=2)
        elif im.ndim == 3 and im.shape[2] == 1:
            im = np.repeat(im, 3, axis=2)
        elif im.ndim == 3 and im.shape[2] == 4:
            im = im[:, :, :3]
        if im.ndim != 3 or im.shape[2] != 3 or im.shape[0] == 0 or im.shape[1] == 0:
            raise ValueError(f"expected an RGB image (H,W,3), got shape {im.shape}")
        out.append(im)
    return out


# ----------------------------------------------------------------------------------------------
# Device and precision


def min_cosine(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Smallest row-wise cosine similarity between two (B, D) arrays."""
    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(candidate, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"expected two (B, D) arrays of the same shape, got {a.shape} and {b.shape}")
    num = (a * b).sum(axis=1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.min(num / np.maximum(den, 1e-12)))


def cpu_bf16_is_fast() -> bool:
    """Whether this CPU runs bf16 natively (oneDNN's AVX512-BF16/AMX path). Without it, bf16 is
    emulated and several times slower than fp32 (seen: 0.35 vs 2.4 images/s for SigLIP-base on AVX2)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # noqa: BLE001 - private op; assume the slow case
        return False


def choose_cpu_precision(fp32: np.ndarray, bf16: np.ndarray, threshold: float = BF16_MIN_COSINE,
                         bf16_fast: bool = True) -> str:
    """The "auto" rule on CPU: "bf16" if bf16 keeps every embedding within `threshold` cosine
    of fp32 (minimum over the calibration batch) and the CPU runs bf16 natively, else "fp32"."""
    return "bf16" if bf16_fast and min_cosine(fp32, bf16) >= threshold else "fp32"


def resolve_device(device: str = "auto") -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)  # raises on nonsense
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}: use 'auto', 'cpu' or 'cuda[:N]'")
    return str(dev)


def calibration_images(n: int = 4, size: int = 224) -> np.ndarray:
    """Deterministic structured RGB images (gradients, checkerboard, rings, blocks), uint8 (n, size, size, 3)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    imgs = []
    for k in range(n):
        kind = k % 4
        if kind == 0:  # colour gradient
            img = np.stack([xx, yy, 1 - xx * yy], axis=-1)
        elif kind == 1:  # coloured checkerboard
            cells = ((xx * 8).astype(int) + (yy * 8).astype(int)) % 2
            img = np.where(cells[..., None] == 1, [0.9, 0.2, 0.1], [0.1, 0.3, 0.8])
        elif kind == 2:  # concentric rings
            r = np.sqrt((xx - 0.5) ** 2 + (yy - 0.5) ** 2)
            ring = 0.5 + 0.5 * np.sin(r * 40 + k)
            img = np.stack([ring, 1 - ring, 0.5 * np.ones_like(ring)], axis=-1)
        else:  # blocks with diagonal stripes
            img = np.zeros((size, size, 3), dtype=np.float32)
            img[: size // 2, : size // 2] = [1.0, 0.9, 0.1]
            img[size // 2:, size // 2:] = [0.1, 0.8, 0.3]
            stripes = (((xx + yy) * 12).astype(int) % 2).astype(np.float32)
            img[: size // 2, size // 2:] = stripes[: size // 2, size // 2:, None] * [0.8, 0.1, 0.9]
        imgs.append(np.clip(np.asarray(img, dtype=np.float32) * 255, 0, 255).astype(np.uint8))
    return np.stack(imgs)


CALIBRATION_TEXTS = ("a photo of a cat", "一辆红色的汽车", "una persona caminando de noche", "an empty street")


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

    def __init__(self, loaded: _Loaded, *, device: str = "auto", precision: str = "auto", batch_size: int = 16):
        import torch

        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        model_type = getattr(loaded.model.config, "model_type", "?")
        if model_type not in self.expected_types:
            raise ModelUnavailableError(
                f"{loaded.model_id} is a {model_type!r} checkpoint, but the {self.kind} encoder needs one of "
                f"{self.expected_types}.\n{_guidance(self.default_model_id)}"
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
        loaded = _load_checkpoint(id_or_dir, with_tokenizer=cls.with_tokenizer, default_id=cls.default_model_id)
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
        self.precision_reason = f"{choice}: bf16 calibration min cosine {self.calibration_cosine:.5f} " \
                                f"(threshold {BF16_MIN_COSINE})"
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
        chunks = [fn(items[i:i + self.batch_size]) for i in range(0, len(items), self.batch_size)]
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
        tokens = self.tokenizer(texts, padding="max_length", max_length=self.text_max_length, truncation=True,
                                return_tensors="pt")
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
        return ModelIds(self.siglip.model_id, self.dinov2.model_id,
                        untrained=bool(self.siglip.untrained or self.dinov2.untrained))

    def embed_images(self, images: "np.ndarray | Sequence[np.ndarray]") -> tuple[np.ndarray, np.ndarray]:
        """SigLIP2 and DINOv2 unit vectors of the same images."""
        return self.siglip.embed_images(images), self.dinov2.embed_images(images)


def load_encoders(spec_or_source: "str | ModelSource | None" = None, *, device: str = "auto",
                  precision: str = "auto", batch_size: int = 16) -> Encoders:
    """Load both encoders from a ModelSource or a spec accepted by resolve_models."""
    source = resolve_models(spec_or_source)
    siglip = SiglipEncoder.from_pretrained(source.siglip, device=device, precision=precision, batch_size=batch_size)
    dinov2 = Dinov2Encoder.from_pretrained(source.dinov2, device=device, precision=precision, batch_size=batch_size)
    return Encoders(siglip, dinov2)


__all__ = [
    "ModelSource", "DEFAULT_MODELS", "resolve_models", "ModelUnavailableError", "SiglipEncoder", "Dinov2Encoder",
    "Encoders", "load_encoders", "TensorPreprocessor", "choose_cpu_precision", "min_cosine", "calibration_images",
    "hub_reachable", "hub_offline", "resolve_device", "cpu_bf16_is_fast",
]
