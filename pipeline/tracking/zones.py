"""Zones and lines on a camera's picture, and where tracked objects are relative to them.

Coordinates are pixels of the frames the tracker is given, x to the right and y down. An object is placed by
one point of its box, its anchor: by default the bottom centre, its feet, because zones and lines are drawn on
the ground and a standing person's box centre is half a body above it. Every test runs over all objects at once
(arrays of points), so a frame costs a few array operations per zone and line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.config import LineConfig, ZoneConfig
from pipeline.records import CROSSING_DIRECTIONS

# Each anchor as fractions of the box's width and height from its top-left corner.
ANCHORS = {"bottom_center": (0.5, 1.0), "center": (0.5, 0.5)}


def anchor_points(boxes: np.ndarray, anchor: str = "bottom_center") -> np.ndarray:
    """The anchor point x, y (N, 2) of each box x1, y1, x2, y2 (N, 4)."""
    across, down = ANCHORS[anchor]
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack(
        [boxes[:, 0] + across * (boxes[:, 2] - boxes[:, 0]), boxes[:, 1] + down * (boxes[:, 3] - boxes[:, 1])], axis=1
    )


@dataclass(eq=False)
class PolygonZone:
    """A named polygon, its corners (K, 2) in order around it (either way round; a self-crossing one counts its
    overlaps by the even-odd rule)."""

    name: str
    polygon: np.ndarray

    def __post_init__(self) -> None:
        self.polygon = np.asarray(self.polygon, dtype=np.float64)
        if self.polygon.ndim != 2 or self.polygon.shape[1] != 2 or len(self.polygon) < 3:
            raise ValueError(f"zone {self.name!r}: a polygon needs at least 3 points x, y, got {self.polygon.shape}")

    @classmethod
    def from_config(cls, config: ZoneConfig) -> PolygonZone:
        return cls(config.name, config.polygon)

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Whether each point x, y (N, 2) is inside (N,) bool. Ray casting: a ray from the point to the right
        crosses the edges an odd number of times from inside. An edge counts when it straddles the ray's height
        (one end above, the other at or below), so a point level with a corner is counted once."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        x, y = points[:, :1], points[:, 1:]  # columns (N, 1) against the edges (K,)
        x1, y1 = self.polygon.T
        x2, y2 = np.roll(self.polygon, -1, axis=0).T
        straddles = (y1 > y) != (y2 > y)
        # where along each straddling edge the ray's height is met (others have no such point: left at 0)
        fraction = np.divide(y - y1, y2 - y1, out=np.zeros(straddles.shape), where=straddles)
        crossed = straddles & (x < x1 + fraction * (x2 - x1))
        return crossed.sum(axis=1) % 2 == 1


@dataclass(eq=False)
class Line:
    """A named line segment from `start` to `end` (x, y each). Its sides are as seen facing from `start` to
    `end` on the picture; `direction` says which crossings count: "left_to_right", "right_to_left" or "both"."""

    name: str
    start: np.ndarray
    end: np.ndarray
    direction: str = "both"

    def __post_init__(self) -> None:
        self.start = np.asarray(self.start, dtype=np.float64).reshape(2)
        self.end = np.asarray(self.end, dtype=np.float64).reshape(2)
        if np.array_equal(self.start, self.end):
            raise ValueError(f"line {self.name!r}: needs 2 distinct points")
        if self.direction not in (*CROSSING_DIRECTIONS, "both"):
            raise ValueError(f"line {self.name!r}: direction must be one of {(*CROSSING_DIRECTIONS, 'both')}")

    @classmethod
    def from_config(cls, config: LineConfig) -> Line:
        return cls(config.name, config.points[0], config.points[1], config.direction)

    def counts(self, direction: str) -> bool:
        """Whether crossings in `direction` ("left_to_right" or "right_to_left") count on this line."""
        return self.direction in ("both", direction)

    def measure(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each point's signed distance from the line in pixels (N,), positive on its right, and its position
        along it (N,): 0 at `start`, 1 at `end` (the segment's span is 0 to 1)."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        along_line = self.end - self.start
        length = float(np.hypot(*along_line))
        offsets = points - self.start
        # the cross product's sign: with y pointing down, positive is to the right facing from start to end
        distances = (along_line[0] * offsets[:, 1] - along_line[1] * offsets[:, 0]) / length
        positions = offsets @ along_line / length**2
        return distances, positions
