"""The one interface every detector has: frames in, one `Detections` per frame out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from pipeline.records import Detections, Frame


def camera_of(frame: Frame) -> str:
    """The key a detector's per-camera state is kept under: the camera id, else the source (a file)."""
    return frame.camera or frame.source


class Detector(ABC):
    """Finds objects in frames. Frames of several cameras may be interleaved in one call or across calls; each
    camera's frames must come in pts order, since a detector may keep state per camera (`camera_of`)."""

    @property
    @abstractmethod
    def class_names(self) -> list[str]:
        """Each class id's name (a class id indexes this list)."""

    def add_phrases(self, phrases: Sequence[str]) -> None:
        """An open-vocabulary detector also finds these (new class ids after its others); one of fixed classes
        cannot, and ignores them."""

    @abstractmethod
    def detect(self, frames: Sequence[Frame]) -> list[Detections]:
        """One `Detections` per frame, in frame order, boxes in that frame's pixel coordinates."""
