"""Object detection: frames in, one `Detections` per frame out, for the tracker (`pipeline.tracking`).

- `base` (`Detector`): the interface, one verb, `detect(frames) -> list[Detections]`; detectors keep their
  state per camera (`camera_of`: the frame's camera, else its source), so cameras' frames may be interleaved.
- `motion` (`MotionDetector`): background subtraction (OpenCV's MOG2) per camera, no weights; its `moving`
  gates heavier detectors to the frames in which something moves.

The settings, `DetectConfig` (the `detect` section of `pipeline.config`), are exported here too.
"""

from __future__ import annotations

from pipeline.config import DetectConfig
from pipeline.detection.base import Detector, camera_of
from pipeline.detection.motion import MotionDetector

__all__ = ["DetectConfig", "Detector", "MotionDetector", "camera_of"]
