"""Precision "int8-compiled" on CPU: an image tower quantized to int8 by torchao and compiled by torch.compile.

torch's dynamic quantization ("int8") runs each Linear as an opaque kernel, with the GELUs, layer norms and
attention between them in eager fp32. torchao's int8 (weights per channel, activations per token, quantized on
each call) compiled by Inductor fuses those into the int8 matrix products: SigLIP2-base ran 1.3x faster than
"int8" on an AVX-512 EPYC, and its image vectors stay closer to fp32's (min cosine 0.9999 against 0.9993).

Compiling costs time: about 35 s for SigLIP2-base on 2 cores the first time a shape is seen on a machine, about
5 s in later processes (Inductor's on-disk cache). So the tower is compiled for one call size, a call nearly that
full is padded up to it, and a shorter one runs eager ("int8"): padding a call of 5 to 8 costs more than the
eager call (72 against 94 ms per image, measured with SigLIP2-base). "auto" tries this precision only for models
slow enough to repay the compile.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

from pipeline.models.hub import ModelUnavailableError


class CompileUnavailableError(ModelUnavailableError):
    """torch.compile cannot build the tower here (no C++ compiler, an unsupported operator, ...)."""


def quantize_int8(module: Any) -> None:
    """torchao int8 dynamic quantization of every Linear in `module`, in place."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    quantize_(module, Int8DynamicActivationInt8WeightConfig())


def _pad_rows(value: Any, rows: int) -> Any:
    """A tensor with its first dimension padded to `rows` by repeating its last row (a valid input: padding with
    zeros could be an impossible mask or shape); anything else as it is."""
    import torch

    if not isinstance(value, torch.Tensor) or value.shape[0] >= rows:
        return value
    return torch.cat([value, value[-1:].expand(rows - value.shape[0], *value.shape[1:])])


# A call this full of the compiled size or more is padded up to it; a shorter one is better run eager.
PAD_FROM = 0.75


class FixedSizeCompiled:
    """`forward` (input tensors by name -> one (B, D) tensor) compiled for calls of exactly `call_size` rows:
    a call it `takes` but shorter is padded and its result cut back, so one compiled graph serves them all."""

    def __init__(self, forward: Callable[..., Any], call_size: int):
        import torch

        self.call_size = int(call_size)
        self._forward = torch.compile(forward, dynamic=False)

    def takes(self, rows: int) -> bool:
        """Whether a call of `rows` images is worth running here (padded), rather than eager."""
        return PAD_FROM * self.call_size <= rows <= self.call_size

    def __call__(self, inputs: dict) -> Any:
        import torch

        rows = int(inputs["pixel_values"].shape[0])
        if rows > self.call_size:
            raise ValueError(f"a call of {rows} images to a tower compiled for {self.call_size}")
        # always in inference mode, the warm-up too: a graph is compiled for one grad mode, another recompiles
        with torch.inference_mode():
            return self._forward({name: _pad_rows(value, self.call_size) for name, value in inputs.items()})[:rows]

    def warm_up(self, inputs: dict) -> None:
        """Compile now (a first call), so a failure is reported where the precision is chosen, not mid-run."""
        try:
            with warnings.catch_warnings():  # torchao's tensors lack a hash for one of Inductor's caches: noise
                warnings.filterwarnings("ignore", message=".*_stable_hash_for_caching")
                self(inputs)
        except Exception as exc:  # noqa: BLE001 - Inductor raises many kinds; each means "not here"
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CompileUnavailableError(f"torch.compile failed: {first_line[:300]}") from exc
