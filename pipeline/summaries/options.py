"""The settings of one summary."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.summaries.errors import SummarizeError


@dataclass(frozen=True)
class SummaryOptions:
    keyframes: int | None = None  # exact number of keyframes; None = chosen from duration and content
    max_keyframes: int = 48  # ceiling of the automatic choice
    sensitivity: float = 4.0  # a cut stands this many robust deviations above the local median change
    min_change: float = 0.1  # and changes the DINOv2 embedding by at least this cosine distance
    min_shot: float = 1.0  # seconds between cuts
    context: float = 30.0  # seconds either side over which the adaptive threshold is measured
    tags_per_shot: int = 5
    max_lines: int = 24  # lines of the text summary (segments are merged down to this many)
    shots_from: str = "auto"  # auto | frames | clips
    thumb_width: int = 240

    def __post_init__(self):
        if self.keyframes is not None and self.keyframes < 1:
            raise SummarizeError(f"--keyframes must be at least 1, got {self.keyframes}")
        if self.shots_from not in ("auto", "frames", "clips"):
            raise SummarizeError(f"shots_from must be auto, frames or clips, got {self.shots_from!r}")
        if self.max_keyframes < 1 or self.tags_per_shot < 0 or self.max_lines < 1 or self.min_shot < 0:
            raise SummarizeError("max_keyframes and max_lines must be >= 1; tags_per_shot and min_shot >= 0")
