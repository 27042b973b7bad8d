"""Tensor preprocessing, model-matched: batched torch image preprocessing that follows a checkpoint's own
image processor config (resize with antialiasing, center crop, rescale, normalise), matched to the Hugging
Face PIL processors; and the text length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

TEXT_MAX_LENGTH = 64  # tokens per text, padded or truncated; SigLIP 2 was trained with 64


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
            return cls(
                mode="naflex",
                patch_size=int(_get(ip, "patch_size")),
                max_num_patches=int(_get(ip, "max_num_patches")),
                **common,
            )
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
            return cls(
                mode="shortest_edge",
                shortest_edge=int(size["shortest_edge"]),
                longest_edge=int(size.get("longest_edge", 0)),
                crop=crop,
                **common,
            )
        raise ValueError(f"unsupported image processor size {size!r}: expected height/width or shortest_edge")

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
            x = x[..., top : top + ch, left : left + cw]
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
            if not batch.flags.writeable:  # e.g. a decoded picture's buffer: torch wants memory it may write
                batch = batch.copy()
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


__all__ = ["TEXT_MAX_LENGTH", "TensorPreprocessor", "naflex_size", "as_image_list"]
