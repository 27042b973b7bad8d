"""A constant-velocity Kalman filter over boxes, for all tracks at once.

A track's state is [cx, cy, w, h, vx, vy, vw, vh]: the box's centre and size and their velocities per frame
(width and height rather than an aspect ratio, as BoT-SORT, so a box changing shape is followed). The noise
scales with the box's size, so a small far object and a large near one are tracked alike (ByteTrack's and
BoT-SORT's weights).

The motion couples each coordinate only with its own velocity and every noise is diagonal, so the 8 x 8
covariance is, exactly, four independent 2 x 2 blocks, one per coordinate: (position variance, position-velocity
covariance, velocity variance). They are kept as covariances of shape (T, 3, 4), [0] the position variances,
[1] the covariances, [2] the velocity variances of cx, cy, w, h, and the filter is a few element-wise array
operations, whatever the number of tracks. Means are (T, 8); everything is float64.
"""

from __future__ import annotations

import numpy as np

# Noise standard deviations as fractions of the box's width (for cx, w) or height (for cy, h).
POSITION_NOISE = 1.0 / 20
VELOCITY_NOISE = 1.0 / 160

STATE_DIM = 8
COVARIANCE_SHAPE = (3, 4)  # per track: the 2 x 2 blocks of cx, cy, w, h


def boxes_to_measurements(boxes: np.ndarray) -> np.ndarray:
    """x1, y1, x2, y2 (N, 4) -> cx, cy, w, h (N, 4), float64."""
    boxes = np.asarray(boxes, dtype=np.float64)
    sizes = boxes[:, 2:] - boxes[:, :2]
    return np.concatenate([boxes[:, :2] + sizes / 2, sizes], axis=1)


def means_to_boxes(means: np.ndarray) -> np.ndarray:
    """The boxes x1, y1, x2, y2 (T, 4) of states (T, 8)."""
    centres, half = means[:, :2], means[:, 2:4] / 2
    return np.concatenate([centres - half, centres + half], axis=1)


def _scales(means_or_measurements: np.ndarray) -> np.ndarray:
    """(T, 4) [w, h, w, h]: the scale of each coordinate's noise."""
    sizes = means_or_measurements[:, 2:4]
    return np.concatenate([sizes, sizes], axis=1)


def initiate(measurements: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """New tracks from measurements cx, cy, w, h (N, 4): their means (at rest) and covariances (N, 3, 4)."""
    count = len(measurements)
    means = np.zeros((count, STATE_DIM))
    means[:, :4] = measurements
    scales = _scales(measurements)
    covariances = np.zeros((count, 3, 4))
    covariances[:, 0] = (2 * POSITION_NOISE * scales) ** 2
    covariances[:, 2] = (10 * VELOCITY_NOISE * scales) ** 2
    return means, covariances


def predict(means: np.ndarray, covariances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every state one frame ahead: position += velocity; P = F P F^T + Q, block by block."""
    scales = _scales(means)
    position, cross, velocity = covariances[:, 0], covariances[:, 1], covariances[:, 2]
    predicted = np.empty_like(covariances)
    predicted[:, 0] = position + 2 * cross + velocity + (POSITION_NOISE * scales) ** 2
    predicted[:, 1] = cross + velocity
    predicted[:, 2] = velocity + (VELOCITY_NOISE * scales) ** 2
    means = means.copy()
    means[:, :4] += means[:, 4:]
    return means, predicted


def update(means: np.ndarray, covariances: np.ndarray, measurements: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """States (M, 8) corrected by their measurements cx, cy, w, h (M, 4). Per coordinate the innovation variance
    is s = P_pp + R, the gain K = (P_pp, P_pv) / s, and P - K s K^T the corrected covariance."""
    position, cross, velocity = covariances[:, 0], covariances[:, 1], covariances[:, 2]
    innovation_variance = position + (POSITION_NOISE * _scales(means)) ** 2
    position_gain, velocity_gain = position / innovation_variance, cross / innovation_variance
    innovation = measurements - means[:, :4]
    means = means.copy()
    means[:, :4] += position_gain * innovation
    means[:, 4:] += velocity_gain * innovation
    corrected = np.empty_like(covariances)
    corrected[:, 0] = position - position_gain * position
    corrected[:, 1] = cross - position_gain * cross
    corrected[:, 2] = velocity - velocity_gain * cross
    return means, corrected
