"""Search filters: which clip rows a search may return, by source and by time.

A time range is on one of two clocks. The wall clock (Unix seconds) places a clip by its recording time: live
clips carry the camera's clock, file clips the file's recording start plus media time; clips whose recording
time is unknown never match it. Media time (seconds into each source) needs no recording time at all.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

import numpy as np


class FilterError(ValueError):
    """A filter the user gave cannot be understood (the message names it)."""


def parse_instant(text: str, *, name: str = "time") -> tuple[float, Literal["wall", "media"]]:
    """A point in time: ISO 8601 (wall clock; no zone means UTC) or plain seconds (media time)."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds) or seconds < 0:
            raise FilterError(f"{name} {text!r}: seconds must be a finite number >= 0")
        return seconds, "media"
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise FilterError(f"{name} {text!r} is neither ISO 8601 (2026-11-30T08:00:00Z) nor seconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp(), "wall"


@dataclass(frozen=True)
class TimeRange:
    """Clips overlapping [start, end) on `clock`; an open end is None."""

    start: float | None = None
    end: float | None = None
    clock: Literal["wall", "media"] = "wall"

    def __post_init__(self):
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise FilterError(f"the time range ends ({self.end}) before it starts ({self.start})")

    @classmethod
    def parse(cls, start: str | None, end: str | None) -> TimeRange | None:
        """From `--from` / `--to` texts (either may be None; both None: no range). Both ends on one clock."""
        ends = [parse_instant(text, name=name) if text else None for text, name in ((start, "--from"), (end, "--to"))]
        clocks = {end[1] for end in ends if end is not None}
        if not clocks:
            return None
        if len(clocks) > 1:
            raise FilterError("--from and --to must both be ISO 8601 times or both be seconds into the video")
        low, high = (None if end is None else end[0] for end in ends)
        return cls(low, high, clocks.pop())

    def overlaps(self, starts: np.ndarray, ends: np.ndarray, recorded: np.ndarray) -> np.ndarray:
        """Which clips [start, end) overlap the range; `recorded` is each clip's wall-clock start (NaN: unknown)."""
        if self.clock == "wall":
            starts, ends = recorded, recorded + (ends - starts)
        mask = np.isfinite(starts)
        if self.start is not None:
            mask &= ends > self.start
        if self.end is not None:
            mask &= starts < self.end
        return mask


@dataclass
class FilterColumns:
    """A segment's rows as filters read them: source ids, media start and end, recorded time (NaN: unknown)."""

    source_ids: np.ndarray  # object
    starts: np.ndarray
    ends: np.ndarray
    recorded: np.ndarray
    _rows: dict[str, np.ndarray] | None = None

    def rows_of(self, sources: Collection[str]) -> np.ndarray:
        """The row numbers of the given sources, ascending: a camera filter costs its own rows, not the
        segment's (built once a segment, on the first filtered search)."""
        if self._rows is None:
            rows: dict[str, list[int]] = {}
            for number, source_id in enumerate(self.source_ids):
                rows.setdefault(source_id, []).append(number)
            self._rows = {source_id: np.array(numbers, dtype=np.int64) for source_id, numbers in rows.items()}
        parts = [self._rows[source_id] for source_id in sources if source_id in self._rows]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


@dataclass(frozen=True)
class ClipFilter:
    """Rows of the given source ids (None: all) within the time range (None: any time)."""

    sources: frozenset[str] | None = None
    time: TimeRange | None = None

    @classmethod
    def of(cls, sources: Collection[str] | None = None, time: TimeRange | None = None) -> ClipFilter | None:
        """The filter, or None when it lets every row through."""
        if sources is None and time is None:
            return None
        return cls(None if sources is None else frozenset(sources), time)

    def mask(self, columns: FilterColumns) -> np.ndarray:
        """Which of a segment's rows pass."""
        if self.sources is None:
            return self.time.overlaps(columns.starts, columns.ends, columns.recorded)
        rows = columns.rows_of(self.sources)
        if self.time is not None:
            rows = rows[self.time.overlaps(columns.starts[rows], columns.ends[rows], columns.recorded[rows])]
        mask = np.zeros(len(columns.starts), bool)
        mask[rows] = True
        return mask
