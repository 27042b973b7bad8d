"""Optional keyframe captions: a `Captioner` protocol and a Hugging Face vision-language implementation.

Off by default: a summary needs no captioner. `TransformersCaptioner("HuggingFaceTB/SmolVLM-256M-Instruct")`
(or any image-text-to-text checkpoint: BLIP, PaliGemma, Qwen2-VL, SmolVLM, ... or a local folder) loads
on first use with `from_pretrained`, local files first, and writes one sentence per keyframe. Tests use a
fake; this project never ships or downloads caption weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from pipeline.models.hub import ModelUnavailableError, hub_offline

DEFAULT_PROMPT = "Describe this image in one short sentence."


@runtime_checkable
class Captioner(Protocol):
    """Anything that turns RGB uint8 images (H, W, 3) into one sentence each."""

    model_id: str

    def caption(self, images: Sequence[np.ndarray]) -> list[str]: ...


class CaptionerUnavailableError(ModelUnavailableError):
    """The captioning model could not be loaded; the message says how to provide it."""


class TransformersCaptioner:
    """A transformers image-text-to-text model (``AutoModelForImageTextToText``), loaded lazily by id or folder."""

    def __init__(
        self,
        model_id: str,
        *,
        device: str = "cpu",
        prompt: str = DEFAULT_PROMPT,
        max_new_tokens: int = 40,
        batch_size: int = 4,
    ):
        self.model_id = model_id
        self.device = device
        self.prompt = prompt
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size = max(1, int(batch_size))
        self._model: Any = None
        self._processor: Any = None

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModelForImageTextToText, AutoProcessor

        last: Exception | None = None
        for local_only in (True, False):
            if not local_only and hub_offline():
                break
            try:
                self._processor = AutoProcessor.from_pretrained(self.model_id, local_files_only=local_only)
                self._model = (
                    AutoModelForImageTextToText.from_pretrained(self.model_id, local_files_only=local_only)
                    .to(self.device)
                    .eval()
                )
                return
            except Exception as exc:  # noqa: BLE001 - any failure means "cannot use this model"
                last = exc
        raise CaptionerUnavailableError(
            f"cannot load the captioning model {self.model_id}: {type(last).__name__}: {last}\n"
            f"Download it where the hub is reachable (`hf download {self.model_id}`) and copy the Hugging Face "
            "cache here, or pass a local folder saved with save_pretrained; or leave captions off."
        ) from last

    def _inputs(self, images: list[np.ndarray]):
        processor = self._processor
        if getattr(processor, "chat_template", None):
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.prompt}]}]
            text = processor.apply_chat_template(messages, add_generation_prompt=True)
            return processor(images=[[image] for image in images], text=[text] * len(images), return_tensors="pt")
        return processor(images=list(images), return_tensors="pt")  # captioning heads without a prompt (BLIP)

    def caption(self, images: Sequence[np.ndarray]) -> list[str]:
        import torch

        self._load()
        captions: list[str] = []
        for i in range(0, len(images), self.batch_size):
            chunk = [np.asarray(image) for image in images[i : i + self.batch_size]]
            inputs = self._inputs(chunk).to(self.device)
            with torch.inference_mode():
                out = self._model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
            prompt_length = inputs["input_ids"].shape[1] if "input_ids" in inputs else 0
            texts = self._processor.batch_decode(out[:, prompt_length:], skip_special_tokens=True)
            captions += [" ".join(text.split()) for text in texts]
        return captions


__all__ = ["Captioner", "CaptionerUnavailableError", "TransformersCaptioner", "DEFAULT_PROMPT"]
