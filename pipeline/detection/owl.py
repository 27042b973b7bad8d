"""An open-vocabulary detector: OWLv2 or OWL-ViT (transformers) prompted with phrases.

Each frame is scored against every phrase on every box the model proposes (one per image patch); a box's score
is the sigmoid of its best phrase's logit (as transformers' `post_process_object_detection`) and that phrase's
index its class id. Boxes scoring at least `detect.score_threshold` are clipped to the frame, suppressed per
phrase (`nms`) and cut to the `detect.max_detections` best.

Frames are preprocessed on tensors (`TensorPreprocessor`, the checkpoint's own size, mean and std), batched by
size. OWLv2 pads a frame to a square at its bottom and right before resizing, and its boxes are fractions of
that square; OWL-ViT stretches the frame, and its boxes are fractions of the frame.

torch and transformers are imported where they are used, as the encoders do.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.config import MAX_PHRASES, DetectConfig
from pipeline.detection.base import Detector
from pipeline.detection.nms import nms
from pipeline.models import (
    LoadedCheckpoint,
    ModelUnavailableError,
    TensorPreprocessor,
    load_checkpoint,
    resolve_device,
)
from pipeline.records import Detections, Frame

OWL_MODEL_TYPES = ("owlv2", "owlvit")

log = logging.getLogger(__name__)
_MIN_SIDE = 1.0  # pixels: the least width and height of a box reported


class OwlDetector(Detector):
    """Boxes of the configured phrases (class id: the phrase's index), from an OWLv2 / OWL-ViT checkpoint.

    `untrained` is True for random-weight checkpoints: their detections prove the plumbing, never accuracy.
    Keeps no state per camera.
    """

    def __init__(
        self,
        loaded: LoadedCheckpoint,
        config: DetectConfig | None = None,
        *,
        phrases: Sequence[str] | None = None,
        device: str = "auto",
        batch_size: int = 8,
    ) -> None:
        config = config or DetectConfig(kind="owl")
        model_type = getattr(loaded.model.config, "model_type", "?")
        if model_type not in OWL_MODEL_TYPES:
            raise ModelUnavailableError(
                f"{loaded.model_id} is a {model_type!r} checkpoint, but the owl detector needs one of {OWL_MODEL_TYPES}"
            )
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if phrases is not None:  # the phrases of standing queries, given apart from the config: the same rules
            config = DetectConfig.model_validate({**config.model_dump(), "phrases": list(phrases)})
        self.config = config
        self.phrases = list(self.config.phrases)
        self.model_id = loaded.model_id
        self.untrained = loaded.untrained
        self.batch_size = int(batch_size)
        self.device = resolve_device(device)
        self.model = loaded.model.eval().to(self.device)
        self.preprocess = TensorPreprocessor.from_image_processor(loaded.image_processor)
        self.pad_to_square = bool(getattr(loaded.image_processor, "do_pad", False))
        self._tokenizer = loaded.tokenizer
        self._text_length = int(loaded.model.config.text_config.max_position_embeddings)
        self._tokenize()

    def _tokenize(self) -> None:
        tokens = self._tokenizer(
            self.phrases, padding="max_length", max_length=self._text_length, truncation=True, return_tensors="pt"
        )
        self._input_ids = tokens["input_ids"].to(self.device)
        self._attention_mask = tokens["attention_mask"].to(self.device)

    def add_phrases(self, phrases: Sequence[str]) -> None:
        """Also find `phrases` (those not found yet), each the next class id: the ids of the others stay. At most
        MAX_PHRASES in all (each costs every frame a little): past them, the rest are left out and said so."""
        new = [phrase for phrase in dict.fromkeys(phrases) if phrase not in self.phrases]
        room = MAX_PHRASES - len(self.phrases)
        if len(new) > room:
            log.warning("the owl detector finds at most %d phrases: %s left out", MAX_PHRASES, ", ".join(new[room:]))
            new = new[:room]
        if new:
            self.phrases += new
            self._tokenize()

    @classmethod
    def from_pretrained(
        cls,
        config: DetectConfig | None = None,
        *,
        phrases: Sequence[str] | None = None,
        device: str = "auto",
        batch_size: int = 8,
    ) -> OwlDetector:
        """Load `config.model` (a hub id or a folder; local files first) as the hub loads every model: an
        unavailable one raises ModelUnavailableError saying how to provide it."""
        from transformers import AutoModelForZeroShotObjectDetection

        config = config or DetectConfig(kind="owl")
        loaded = load_checkpoint(
            config.model,
            with_tokenizer=True,
            default_id=DetectConfig.model_fields["model"].default,
            model_class=AutoModelForZeroShotObjectDetection,
        )
        return cls(loaded, config, phrases=phrases, device=device, batch_size=batch_size)

    @property
    def class_names(self) -> list[str]:
        return self.phrases

    def detect(self, frames: Sequence[Frame]) -> list[Detections]:
        detections: list[Detections] = []
        for start in range(0, len(frames), self.batch_size):
            detections += self._detect_batch(frames[start : start + self.batch_size])
        return detections

    def _inputs(self, frames: Sequence[Frame]) -> dict[str, Any]:
        images = [frame.image for frame in frames]
        if self.pad_to_square:
            images = [_padded_to_square(image) for image in images]
        pixels = self.preprocess(images, device=self.device)["pixel_values"]
        # the model pairs each image with its own copy of the queries: (frames x phrases, tokens)
        return {
            "pixel_values": pixels,
            "input_ids": self._input_ids.repeat(len(frames), 1),
            "attention_mask": self._attention_mask.repeat(len(frames), 1),
        }

    def _detect_batch(self, frames: Sequence[Frame]) -> list[Detections]:
        import torch

        with torch.inference_mode():
            outputs = self.model(**self._inputs(frames))
            best = outputs.logits.float().max(dim=-1)  # (frames, boxes): each box's best phrase
            scores, class_ids = torch.sigmoid(best.values).cpu().numpy(), best.indices.cpu().numpy()
            boxes = outputs.pred_boxes.float().cpu().numpy()  # (frames, boxes, 4) cx, cy, w, h in [0, 1]
        return [self._frame_detections(f, b, s, c) for f, b, s, c in zip(frames, boxes, scores, class_ids)]

    def _frame_detections(
        self, frame: Frame, boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray
    ) -> Detections:
        config = self.config
        height, width = frame.image.shape[:2]
        keep = scores >= config.score_threshold
        boxes, scores, class_ids = boxes[keep], scores[keep], class_ids[keep]
        # fractions of the padded square (OWLv2) or of the frame (OWL-ViT) -> frame pixels, clipped to the frame
        scale = np.array([max(height, width)] * 2 if self.pad_to_square else [width, height], dtype=np.float32)
        centres, sizes = boxes[:, :2] * scale, boxes[:, 2:] * scale
        corners = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
        corners = np.clip(corners, 0, np.array([width, height, width, height], dtype=np.float32))
        # a box wholly in OWLv2's padding clips to nothing; one thinner than a pixel is no object, and its
        # aspect ratio would poison the Kalman state of a track it matched
        real = (corners[:, 2] - corners[:, 0] >= _MIN_SIDE) & (corners[:, 3] - corners[:, 1] >= _MIN_SIDE)
        corners, scores, class_ids = corners[real], scores[real], class_ids[real]
        kept = nms(corners, scores, class_ids, config.nms_iou, config.max_detections)
        return Detections(corners[kept], scores[kept], class_ids[kept])

    def __repr__(self) -> str:
        flag = ", untrained" if self.untrained else ""
        return f"{type(self).__name__}({self.model_id!r}, phrases={self.phrases}, {self.device}{flag})"


def _padded_to_square(image: np.ndarray) -> np.ndarray:
    """The frame at the top left of a black square (OWLv2's processor pads with zeros at the bottom and right)."""
    height, width = image.shape[:2]
    if height == width:
        return image
    side = max(height, width)
    square = np.zeros((side, side, 3), dtype=image.dtype)
    square[:height, :width] = image
    return square
