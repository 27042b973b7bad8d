"""Object detection: frames in, one `Detections` per frame out, for the tracker (`pipeline.tracking`).

- `base` (`Detector`): the interface, one verb, `detect(frames) -> list[Detections]`; detectors keep their
  state per camera (`camera_of`: the frame's camera, else its source), so cameras' frames may be interleaved.
- `motion` (`MotionDetector`): background subtraction (OpenCV's MOG2) per camera, no weights; its `moving`
  gates heavier detectors to the frames in which something moves.
- `owl` (`OwlDetector`): open-vocabulary detection of phrases with OWLv2 / OWL-ViT; `nms` its per-class
  suppression and the boxes' overlap (`iou_matrix`, the tracker's too).
- `appearance` (`crop_appearance`): each detection's crop embedded by DINOv2 (a `CropEncoder`), a batch's crops in
  one call.

The settings, `DetectConfig` (the `detect` section of `pipeline.config`), are exported here too;
`build_detector` makes the detector a section names.
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.config import DetectConfig
from pipeline.detection.appearance import CropEncoder, crop_appearance, crop_boxes
from pipeline.detection.base import Detector, camera_of
from pipeline.detection.motion import MotionDetector
from pipeline.detection.nms import iou_matrix, nms
from pipeline.detection.owl import OwlDetector


def build_detector(
    config: DetectConfig, *, phrases: Sequence[str] | None = None, device: str = "auto", batch_size: int = 8
) -> Detector:
    """The detector `config.kind` names. `phrases` (the owl detector's; else `config.phrases`), `device` and
    `batch_size` (frames per model call) matter to the owl detector only."""
    if config.kind == "owl":
        return OwlDetector.from_pretrained(config, phrases=phrases, device=device, batch_size=batch_size)
    return MotionDetector(config)


__all__ = [
    "CropEncoder",
    "DetectConfig",
    "Detector",
    "MotionDetector",
    "OwlDetector",
    "build_detector",
    "camera_of",
    "crop_appearance",
    "crop_boxes",
    "iou_matrix",
    "nms",
]
