"""The multi-object tracker: one instance per camera, one verb, `update`, called once per frame.

Each frame (ByteTrack's two stages, with BoT-SORT's appearance cost):

1. Every track's Kalman state is predicted one frame ahead.
2. High-score detections are matched to all tracks (tentative, confirmed and lost) by a cost fusing 1 - IoU with
   the cosine distance of appearance vectors, gated by both.
3. Lost tracks left over are matched to the high-score detections left over by appearance alone, wherever they
   are: an object that reappears far from where its track predicted it keeps its id (re-identification).
4. Low-score detections (occluded, blurred objects) are matched to the confirmed tracks left over by IoU alone,
   so a track survives while its object is hard to see; they never start tracks.
5. High-score detections left over start tentative tracks; a tentative track is confirmed after
   `confirm_hits` hits and dropped the first frame it misses. A confirmed track missed is lost, kept for
   `reid_frames` frames, then dropped.
6. Reported: the confirmed tracks that took a detection, and the tracks lost for at most `report_lost_frames`
   frames, at their predicted boxes (state "lost"): a detector misses a visible object now and then, and a
   short gap in its track is a gap in the output otherwise. Each reported track names the detection it took
   (`Track.detection`, None while lost); `include_tentative` reports the tentative tracks too, for callers
   that keep something of a track's every detection (its first sightings precede its confirmation).

All tracks live in stacked arrays (one row per track, in order of birth), so a frame costs a fixed number of
array operations whatever the number of objects.
"""

from __future__ import annotations

import numpy as np

from pipeline.config import TrackConfig
from pipeline.detection import iou_matrix
from pipeline.records import TRACK_STATES, Detections, Track
from pipeline.tracking import kalman
from pipeline.tracking.association import FORBIDDEN, assign, cosine_distance, fused_cost

TENTATIVE, CONFIRMED, LOST = (TRACK_STATES.index(name) for name in ("tentative", "confirmed", "lost"))

STATE_VERSION = 1


class Tracker:
    """Tracks the objects of one camera across frames; ids count 1, 2, 3, ... per instance."""

    # the per-track arrays, one row per track (the appearance rows, held only once there are any, besides)
    _COLUMNS = (
        "_ids",
        "_states",
        "_means",
        "_covariances",
        "_class_ids",
        "_scores",
        "_hits",
        "_born",
        "_last_frame",
        "_has_appearance",
        "_detection",
    )

    def __init__(self, config: TrackConfig | None = None) -> None:
        self.config = config or TrackConfig()
        self.frame = 0  # updates so far: the number of the frame last given
        self._next_id = 1
        self._ids = np.zeros(0, dtype=np.int64)
        self._states = np.zeros(0, dtype=np.int8)
        self._means = np.zeros((0, kalman.STATE_DIM))
        self._covariances = np.zeros((0, *kalman.COVARIANCE_SHAPE))
        self._class_ids = np.zeros(0, dtype=np.int32)
        self._scores = np.zeros(0)
        self._hits = np.zeros(0, dtype=np.int64)
        self._born = np.zeros(0, dtype=np.int64)  # the frame a track started in
        self._last_frame = np.zeros(0, dtype=np.int64)  # the frame a track last took a detection in
        # (T, D) unit vectors, an EMA of each track's detections; None until a detection brings appearance
        self._appearance: np.ndarray | None = None
        self._has_appearance = np.zeros(0, dtype=bool)
        # the row of this frame's detections each track took, -1 for none: per-frame output, not state, so it
        # is reset each update (and `state()` leaves it out)
        self._detection = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        """Tracks held: tentative, confirmed and lost."""
        return len(self._ids)

    def held_ids(self) -> set[int]:
        """The ids of the tracks held: a track not among them is let go for good (its id never comes back)."""
        return set(self._ids.tolist())

    def update(self, detections: Detections, *, include_tentative: bool = False) -> list[Track]:
        """Take one frame's detections; return the confirmed tracks that took a detection in it and those lost
        for at most `report_lost_frames` frames (at their predicted boxes), by id. `include_tentative` adds the
        tentative tracks (each took a detection this frame: a tentative track that misses one is dropped)."""
        config = self.config
        appearance = detections.appearance
        if appearance is not None:
            self._admit_appearance(appearance.shape[1])  # first: a mismatch leaves the tracker as it was
        self.frame += 1
        self._detection = np.full(len(self._ids), -1, dtype=np.int64)
        if len(self._ids):
            # A lost track's size stops changing: its last size velocity, unchecked, would grow or shrink it away.
            self._means[self._states == LOST, 6:] = 0
            self._means, self._covariances = kalman.predict(self._means, self._covariances)
        predicted = kalman.means_to_boxes(self._means)
        scores, boxes, class_ids = detections.scores, detections.boxes, detections.class_ids
        high = np.flatnonzero(scores >= config.high_score)
        low = np.flatnonzero((scores >= config.low_score) & (scores < config.high_score))
        track_free = np.ones(len(self._ids), dtype=bool)
        high_free = np.ones(len(high), dtype=bool)
        # (track rows, detection indices) followed by the Kalman filter, and those re-identified far away
        followed: list[tuple[np.ndarray, np.ndarray]] = []
        reidentified: tuple[np.ndarray, np.ndarray] | None = None

        # 1. high-score detections against every track: IoU fused with appearance
        if len(self._ids) and len(high):
            distance = None if appearance is None else cosine_distance(self._appearance, appearance[high])
            cost = fused_cost(
                iou_matrix(predicted, boxes[high]),
                distance,
                self._has_appearance,
                iou_gate=config.iou_gate,
                appearance_weight=config.appearance_weight,
                appearance_gate=config.appearance_gate,
            )
            cost[self._class_ids[:, None] != class_ids[high][None, :]] = FORBIDDEN
            rows, columns = assign(cost)
            followed.append((rows, high[columns]))
            track_free[rows] = False
            high_free[columns] = False

        # 2. lost tracks left over against high-score detections left over, by appearance alone
        if appearance is not None:
            lost = np.flatnonzero(track_free & (self._states == LOST) & self._has_appearance)
            candidates = np.flatnonzero(high_free)  # positions in `high`
            if len(lost) and len(candidates):
                distance = cosine_distance(self._appearance[lost], appearance[high[candidates]])
                same_class = self._class_ids[lost][:, None] == class_ids[high[candidates]][None, :]
                rows, columns = assign(np.where((distance <= config.appearance_gate) & same_class, distance, FORBIDDEN))
                reidentified = (lost[rows], high[candidates[columns]])
                track_free[lost[rows]] = False
                high_free[candidates[columns]] = False

        # 3. low-score detections against confirmed tracks left over, by IoU alone
        confirmed = np.flatnonzero(track_free & (self._states == CONFIRMED))
        if len(confirmed) and len(low):
            iou = iou_matrix(predicted[confirmed], boxes[low])
            same_class = self._class_ids[confirmed][:, None] == class_ids[low][None, :]
            rows, columns = assign(np.where((iou >= config.low_iou_gate) & same_class, 1.0 - iou, FORBIDDEN))
            followed.append((confirmed[rows], low[columns]))
            track_free[confirmed[rows]] = False

        if followed:
            rows = np.concatenate([pair[0] for pair in followed])
            taken = np.concatenate([pair[1] for pair in followed])
            self._means[rows], self._covariances[rows] = kalman.update(
                self._means[rows], self._covariances[rows], kalman.boxes_to_measurements(boxes[taken])
            )
            self._take(rows, taken, detections)
        if reidentified is not None:
            rows, taken = reidentified
            # far from its prediction: the track's motion starts afresh there, with no velocity from the jump
            self._means[rows], self._covariances[rows] = kalman.initiate(kalman.boxes_to_measurements(boxes[taken]))
            self._take(rows, taken, detections)
        self._miss(track_free)
        births = high[high_free]
        births = births[scores[births] >= config.birth_score]
        if len(births):
            self._start(births, detections)
        return self._reported(include_tentative)

    def state(self) -> dict:
        """Everything the tracker holds, as plain JSON types (lists, numbers, strings), for `from_state`. Floats
        round-trip exactly through JSON, so a restored tracker continues exactly as this one would."""
        appearance = self._appearance.tolist() if self._appearance is not None else None
        return {
            "version": STATE_VERSION,
            "frame": self.frame,
            "next_id": self._next_id,
            "appearance_dim": None if self._appearance is None else int(self._appearance.shape[1]),
            "tracks": [
                {
                    "id": int(self._ids[row]),
                    "state": TRACK_STATES[self._states[row]],
                    "mean": self._means[row].tolist(),
                    "covariance": self._covariances[row].tolist(),
                    "class_id": int(self._class_ids[row]),
                    "score": float(self._scores[row]),
                    "hits": int(self._hits[row]),
                    "born": int(self._born[row]),
                    "last_frame": int(self._last_frame[row]),
                    "appearance": appearance[row] if appearance is not None and self._has_appearance[row] else None,
                }
                for row in range(len(self._ids))
            ],
        }

    @classmethod
    def from_state(cls, config: TrackConfig | None, state: dict) -> Tracker:
        """A tracker continuing from `state()` (of a tracker of the same configuration). A state that is not one
        raises ValueError naming the problem."""
        try:
            return cls._restored(config, state)
        except (KeyError, TypeError, IndexError) as exc:
            raise ValueError(f"not a tracker state: {type(exc).__name__}: {exc}") from None

    @classmethod
    def _restored(cls, config: TrackConfig | None, state: dict) -> Tracker:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"tracker state version {state.get('version')!r} is not {STATE_VERSION}")
        tracker = cls(config)
        tracker.frame = int(state["frame"])
        tracker._next_id = int(state["next_id"])
        tracks = state["tracks"]
        count = len(tracks)
        tracker._ids = np.array([track["id"] for track in tracks], dtype=np.int64)
        tracker._states = np.array([TRACK_STATES.index(track["state"]) for track in tracks], dtype=np.int8)
        tracker._means = np.array([track["mean"] for track in tracks], dtype=np.float64).reshape(
            count, kalman.STATE_DIM
        )
        tracker._covariances = np.array([track["covariance"] for track in tracks], dtype=np.float64).reshape(
            count, *kalman.COVARIANCE_SHAPE
        )
        tracker._class_ids = np.array([track["class_id"] for track in tracks], dtype=np.int32)
        tracker._scores = np.array([track["score"] for track in tracks], dtype=np.float64)
        tracker._hits = np.array([track["hits"] for track in tracks], dtype=np.int64)
        tracker._born = np.array([track["born"] for track in tracks], dtype=np.int64)
        tracker._last_frame = np.array([track["last_frame"] for track in tracks], dtype=np.int64)
        tracker._has_appearance = np.array([track["appearance"] is not None for track in tracks], dtype=bool)
        dim = state["appearance_dim"]
        if dim is not None:
            tracker._appearance = np.zeros((count, int(dim)), dtype=np.float32)
            for row, track in enumerate(tracks):
                if track["appearance"] is not None:
                    tracker._appearance[row] = track["appearance"]
        if len(set(tracker._ids.tolist())) != count or (count and tracker._ids.max() >= tracker._next_id):
            raise ValueError("tracker state: track ids must be distinct and below next_id")
        return tracker

    def _admit_appearance(self, dim: int) -> None:
        """Make room for appearance vectors of `dim` dimensions (tracks without one yet have a zero row)."""
        if self._appearance is None:
            self._appearance = np.zeros((len(self._ids), dim), dtype=np.float32)
        elif self._appearance.shape[1] != dim:
            raise ValueError(
                f"detection appearance has {dim} dimensions, but this tracker's tracks have {self._appearance.shape[1]}"
            )

    def _take(self, rows: np.ndarray, taken: np.ndarray, detections: Detections) -> None:
        """Tracks `rows` took detections `taken` (their Kalman states already corrected)."""
        self._scores[rows] = detections.scores[taken]
        self._detection[rows] = taken
        self._hits[rows] += 1
        self._last_frame[rows] = self.frame
        states = self._states[rows]
        states[states == LOST] = CONFIRMED
        states[(states == TENTATIVE) & (self._hits[rows] >= self.config.confirm_hits)] = CONFIRMED
        self._states[rows] = states
        if detections.appearance is None:
            return
        # Only high-score detections refresh the appearance: a low-score one is often occluded or blurred.
        high = detections.scores[taken] >= self.config.high_score
        rows, vectors = rows[high], detections.appearance[taken[high]]
        momentum = np.where(self._has_appearance[rows], np.float32(self.config.appearance_momentum), np.float32(0))
        blended = momentum[:, None] * self._appearance[rows] + (1 - momentum[:, None]) * vectors
        self._appearance[rows] = blended / np.linalg.norm(blended, axis=1, keepdims=True)
        self._has_appearance[rows] = True

    def _miss(self, missed: np.ndarray) -> None:
        """Tracks that took no detection this frame: a tentative one is dropped, a confirmed one lost, a lost
        one dropped once lost for more than `reid_frames` frames."""
        states = self._states
        lost_too_long = self.frame - self._last_frame > self.config.reid_frames
        dropped = missed & ((states == TENTATIVE) | lost_too_long)
        self._states[missed & (states == CONFIRMED)] = LOST
        if dropped.any():
            kept = ~dropped
            for column in self._COLUMNS:
                setattr(self, column, getattr(self, column)[kept])
            if self._appearance is not None:
                self._appearance = self._appearance[kept]

    def _start(self, births: np.ndarray, detections: Detections) -> None:
        """New tracks, one per detection `births`."""
        count = len(births)
        means, covariances = kalman.initiate(kalman.boxes_to_measurements(detections.boxes[births]))
        state = CONFIRMED if self.config.confirm_hits <= 1 else TENTATIVE
        new = {
            "_ids": np.arange(self._next_id, self._next_id + count),
            "_states": np.full(count, state, dtype=np.int8),
            "_means": means,
            "_covariances": covariances,
            "_class_ids": detections.class_ids[births],
            "_scores": detections.scores[births].astype(np.float64),
            "_hits": np.ones(count, dtype=np.int64),
            "_born": np.full(count, self.frame),
            "_last_frame": np.full(count, self.frame),
            "_has_appearance": np.full(count, detections.appearance is not None),
            "_detection": births,
        }
        self._next_id += count
        for column in self._COLUMNS:
            setattr(self, column, np.concatenate([getattr(self, column), new[column]]))
        if self._appearance is not None:
            vectors = (
                detections.appearance[births]
                if detections.appearance is not None
                else np.zeros((count, self._appearance.shape[1]), dtype=np.float32)
            )
            self._appearance = np.concatenate([self._appearance, vectors])

    def _reported(self, include_tentative: bool) -> list[Track]:
        """The confirmed tracks that took a detection this frame (and the tentative ones, all of which did, when
        `include_tentative`), and the tracks lost for at most `report_lost_frames` frames (their box the
        prediction, their score their last detection's)."""
        rows = np.flatnonzero(
            ((self._states == CONFIRMED) & (self._last_frame == self.frame))
            | ((self._states == LOST) & (self.frame - self._last_frame <= self.config.report_lost_frames))
            | (include_tentative & (self._states == TENTATIVE))
        )
        boxes = kalman.means_to_boxes(self._means[rows]).tolist()
        ages = (self.frame - self._born[rows] + 1).tolist()
        return [
            Track(
                track_id,
                tuple(box),
                score,
                class_id,
                self.frame,
                hits,
                age,
                TRACK_STATES[state],
                None if detection < 0 else detection,
            )
            for track_id, box, score, class_id, hits, age, state, detection in zip(
                self._ids[rows].tolist(),
                boxes,
                self._scores[rows].tolist(),
                self._class_ids[rows].tolist(),
                self._hits[rows].tolist(),
                ages,
                self._states[rows].tolist(),
                self._detection[rows].tolist(),
            )
        ]
