"""Standing queries to alerts: per-frame scores, calibration per (query, camera), events with hysteresis.

Plain Python (no Ray, no Kafka). The monitor feeds `Matcher.process` each camera's frames in pts order
(`FrameFeatures`: source = camera id, unit SigLIP2 and DINOv2 vectors) with the frame's keyframe key, and
writes the `Alert`s it returns to Kafka and the store.

Queries (`pipeline.live.queries`)
    `StandingQuery` is the definition (validated, JSON): id, a phrase in any language *or* a reference to
    an example image, cameras (a list, or None for all), threshold, hysteresis, min_duration, release,
    cooldown, max_gap and the calibration mode. `EncodedQuery` is a definition plus its vectors (SigLIP2
    text vector, or SigLIP2 + DINOv2 image vectors) and the model ids that made them; `encode_query`
    makes one. Queries are added and removed while the matcher runs (`add`, `remove`, `list`).

Scores, per frame with SigLIP2 vector v and DINOv2 vector d (all unit vectors, so dots are cosines)
    Stage 1, the query's raw evidence x:
      text query q, modes "calibrated" and "prompts": the margin over K neutral background prompts
      (`NEUTRAL_PROMPTS`, encoded once per matcher) n_1..n_K,
            x = <q,v> - tau * log( sum_k exp(<n_k,v> / tau) )
        i.e. tau times the log-odds that the frame is better described by the query than by the neutral
        prompts (softmax with temperature tau, `match.temperature`, about 1 / SigLIP's logit scale).
        It is positive only when the query beats the soft maximum of the neutral prompts, it cancels
        shifts that raise every text's cosine on a frame (night, blur, a busy scene), and a query that
        matches everything about as well as "a photo" or "a street" stays at or below 0 on every frame.
      text query, modes "camera" and "raw": x = <q,v>.
      example-image query (SigLIP2 s, DINOv2 e): x = (<s,v> + <e,d>) / 2, the index's image-search score;
        a frame identical to the example gets x = 1, the maximum.
    Stage 2, against the camera's own recent distribution (modes "calibrated" and "camera"; an image
    query in "calibrated" mode uses this stage only): H = the last `match.history` stage-1 values of
    this (query, camera), before the current frame,
            score = (x - median(H)) / max(1.4826 * MAD(H), min_spread)
        a robust z-score (MAD = median absolute deviation; 1.4826 * MAD estimates a standard deviation;
        `match.min_spread` keeps a still camera, whose scores do not vary, from dividing by ~0). While H
        has fewer than `match.warmup` values the score is None: the pair is warming up and cannot open
        an event. Every frame's x enters H (also frames inside events): the median tolerates events
        shorter than half the history, and a lasting change of the scene becomes the new normal
        instead of an event that never ends. Memory: `history` floats per (query, camera).
    Mode "prompts" scores x of stage 1 (text queries only); mode "raw" scores the raw cosine x.
    Default thresholds: 4.0 (robust z units) in "calibrated" / "camera" mode, with hysteresis 1.5;
    "prompts" and "raw" are in cosine units and need an explicit threshold (hysteresis defaults to 0.01).

Events, per (query, camera), in media time only (frame pts, never the wall clock); low = threshold - hysteresis
    - idle -> pending at the first frame with score >= threshold (and pts >= the cooldown's end);
    - pending -> idle as soon as a frame scores below the threshold (min_duration suppresses blips);
    - pending -> open when pts - start >= min_duration with every frame >= threshold. The event is
      confirmed: the optional `Verifier` is asked once (with the peak frame's image); if it rejects, the
      event is silent (no alert) but runs its course, so it cannot retrigger until it ends. Otherwise an
      Alert with status "open" (end and peak so far) is emitted at once, i.e. min_duration after start;
    - open: a frame >= low extends the event (`end` = its pts) and may raise the peak; the event closes
      when frames stay below low for `release` seconds (pts of the first low frame + release), or when
      the camera's next frame comes more than `max_gap` seconds after the previous one (then at the
      last frame seen), or on `remove` / `flush`. An alerted event then emits the same Alert with status
      "closed" and the final end, peak score, peak pts and keyframe;
    - after any event (alerted or rejected) the next one may start no earlier than end + cooldown.
    One alert id per event: `Alert.make_id(query id, camera, start)`, so replays give the same ids.

State and replays
    `state_dict()` is JSON-compatible (the encoded queries, each camera's last pts, each pair's event
    state and score history); `load_state_dict()` restores it, so checkpoint + replay of the stream from the
    checkpoint's offsets yields the same alerts as an uninterrupted run. A frame whose pts is <= the last
    processed pts of its camera is ignored (a replay of frames already seen, or out of order): processing
    the same frames twice changes nothing and emits nothing.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from pipeline.config import MatchConfig
from pipeline.live.queries import Z_MODES, EncodedQuery, StandingQuery, encode_query
from pipeline.records import Alert, FrameFeatures, ModelIds
from pipeline.storage.layout import camera_source_id
from pipeline.storage.layout import keyframe_key as default_keyframe_key

log = logging.getLogger(__name__)

STATE_VERSION = 1
MAD_TO_SIGMA = 1.4826

# Background descriptions a specific query has to beat on the same frame (stage 1 of calibration).
NEUTRAL_PROMPTS: tuple[str, ...] = (
    "a photo",
    "a picture",
    "an image",
    "a photo of something",
    "a scene",
    "an empty scene",
    "an ordinary scene",
    "a street",
    "a road",
    "a room",
    "a hallway",
    "a building",
    "a wall",
    "the ground",
    "the sky",
    "trees",
    "a parking lot",
    "an outdoor scene",
    "an indoor scene",
    "a security camera view",
    "a blurry photo",
    "a dark photo",
)

# ---------------------------------------------------------------------------------------------- scores


def neutral_margin(query_cosine: float, neutral_cosines: np.ndarray, temperature: float) -> float:
    """tau * log-odds of the query against the neutral prompts: q - tau * log(sum_k exp(n_k / tau))."""
    scaled = np.asarray(neutral_cosines, dtype=np.float64) / temperature
    top = float(scaled.max())
    return float(query_cosine) - temperature * (top + math.log(float(np.exp(scaled - top).sum())))


def robust_z(value: float, history: Sequence[float], min_spread: float) -> float:
    """(value - median) / max(1.4826 * MAD, min_spread) over `history`."""
    values = np.asarray(history, dtype=np.float64)
    median = float(np.median(values))
    mad = float(np.median(np.abs(values - median)))
    return (float(value) - median) / max(MAD_TO_SIGMA * mad, min_spread)


# ---------------------------------------------------------------------------------------------- verification


@runtime_checkable
class Verifier(Protocol):
    """Asked once per event, before it alerts (a detector or a vision-language model). `keyframe_image` is the
    peak frame's RGB image when the matcher has it (passed to `process`, or read via `image_loader`), else None."""

    def confirm(self, alert: Alert, keyframe_image: np.ndarray | None) -> bool: ...


# ---------------------------------------------------------------------------------------------- state


@dataclass
class _Pair:
    """Event and calibration state of one (query, camera)."""

    history: deque
    phase: str = "idle"  # idle | pending | open
    start: float | None = None
    end: float | None = None  # pts of the last frame >= low (>= threshold while pending)
    peak: float | None = None
    peak_pts: float | None = None
    peak_key: str | None = None
    below_since: float | None = None
    last_pts: float | None = None  # last frame of this camera this pair saw
    cooldown_until: float | None = None
    alerted: bool = False
    rejected: bool = False
    verified: bool | None = None
    peak_image: Any = field(default=None, repr=False)  # in memory only, for the verifier

    def to_json(self) -> dict:
        return {
            "phase": self.phase,
            "start": self.start,
            "end": self.end,
            "peak": self.peak,
            "peak_pts": self.peak_pts,
            "peak_key": self.peak_key,
            "below_since": self.below_since,
            "last_pts": self.last_pts,
            "cooldown_until": self.cooldown_until,
            "alerted": self.alerted,
            "rejected": self.rejected,
            "verified": self.verified,
            "history": [float(x) for x in self.history],
        }

    @classmethod
    def from_json(cls, data: dict, history: int) -> "_Pair":
        values = {
            k: data.get(k)
            for k in (
                "phase",
                "start",
                "end",
                "peak",
                "peak_pts",
                "peak_key",
                "below_since",
                "last_pts",
                "cooldown_until",
                "verified",
            )
        }
        if values["phase"] not in ("idle", "pending", "open"):
            raise ValueError(f"unknown event phase {values['phase']!r} in matcher state")
        return cls(
            history=deque((float(x) for x in data.get("history", [])), maxlen=history),
            alerted=bool(data.get("alerted")),
            rejected=bool(data.get("rejected")),
            **values,
        )

    def reset_event(self) -> None:
        self.phase = "idle"
        self.start = self.end = self.peak = self.peak_pts = self.peak_key = self.below_since = None
        self.alerted = self.rejected = False
        self.verified = None
        self.peak_image = None


# ---------------------------------------------------------------------------------------------- matcher


class Matcher:
    """Standing queries over per-camera frame features; see the module docstring for scores and events.

    `process(features, keyframe_key=None, image=None)` returns the alerts the frame caused: "open" ones
    when events are confirmed, "closed" ones (same ids) when they end. `remove(id)` and `flush()` return the
    "closed" alerts of the events they end. All methods are thread-safe (queries may be added from another
    thread while frames are processed).
    """

    def __init__(
        self,
        models: ModelIds,
        *,
        neutral: np.ndarray | None = None,
        encoders: Any = None,
        settings: MatchConfig | None = None,
        verifier: Verifier | None = None,
        image_loader: Callable[[str], np.ndarray | None] | None = None,
        neutral_prompts: Sequence[str] = NEUTRAL_PROMPTS,
    ):
        self.models = models
        self.settings = settings or MatchConfig()
        self.encoders = encoders
        self.verifier = verifier
        self.image_loader = image_loader
        self.neutral_prompts = tuple(neutral_prompts)
        if neutral is not None:
            neutral = np.asarray(neutral, dtype=np.float32)
            if neutral.ndim != 2 or neutral.shape[0] == 0:
                raise ValueError(f"neutral prompt vectors must be (K, dim) with K >= 1, got {neutral.shape}")
        self.neutral = neutral
        self._queries: dict[str, EncodedQuery] = {}
        self._pairs: dict[tuple[str, str], _Pair] = {}
        self._last_pts: dict[str, float] = {}
        self._lock = threading.RLock()
        self._matrix: dict[str, np.ndarray] | None = None
        self.ignored = 0  # frames skipped as replays / out of order

    @classmethod
    def from_encoders(cls, encoders: Any, **kwargs: Any) -> "Matcher":
        """A matcher using `encoders` (pipeline.models.Encoders) for queries; the neutral prompts are encoded once."""
        prompts = tuple(kwargs.pop("neutral_prompts", NEUTRAL_PROMPTS))
        neutral = encoders.siglip.embed_texts(list(prompts))
        return cls(encoders.ids, neutral=neutral, encoders=encoders, neutral_prompts=prompts, **kwargs)

    # -- the query book ------------------------------------------------------------------------
    def add(self, query: StandingQuery | EncodedQuery | dict, *, image: np.ndarray | None = None) -> EncodedQuery:
        """Add a query (a definition, encoded here with the matcher's encoders, or an already encoded one).

        Adding the same definition again is a no-op; a different definition under an existing id is an
        error (remove it first, which closes its events)."""
        if isinstance(query, dict):
            query = StandingQuery.from_json(query)
        if isinstance(query, StandingQuery):
            existing = self._queries.get(query.id)
            if existing is not None and existing.query == query and image is None:
                return existing
            if self.encoders is None:
                raise ValueError("this matcher has no encoders: add an EncodedQuery instead")
            encoded = encode_query(query, self.encoders, image=image)
        else:
            encoded = query
        if encoded.models != self.models:
            raise ValueError(
                f"query {encoded.id!r} was encoded with {encoded.models}, but the frames come from "
                f"{self.models}: encode it again with these models"
            )
        if encoded.query.calibration in ("calibrated", "prompts") and encoded.query.kind == "text":
            if self.neutral is None:
                raise ValueError(
                    f"query {encoded.id!r} is calibrated against neutral prompts, but this matcher has "
                    "none: build it with Matcher.from_encoders or pass neutral="
                )
            if self.neutral.shape[1] != encoded.siglip.shape[0]:
                raise ValueError("neutral prompt vectors and the query's SigLIP vector differ in dimension")
        with self._lock:
            existing = self._queries.get(encoded.id)
            if existing is not None:
                if _same(existing, encoded):
                    return existing
                raise ValueError(f"a different query with id {encoded.id!r} exists: remove it first")
            self._queries[encoded.id] = encoded
            self._matrix = None
            return encoded

    def remove(self, query_id: str) -> list[Alert]:
        """Drop a query; its open, alerted events close now (the returned "closed" alerts)."""
        with self._lock:
            if query_id not in self._queries:
                raise KeyError(f"no standing query {query_id!r}")
            encoded = self._queries.pop(query_id)
            self._matrix = None
            alerts = []
            for key in sorted(k for k in self._pairs if k[0] == query_id):
                pair = self._pairs.pop(key)
                if pair.phase == "open" and pair.alerted:
                    alerts.append(self._alert(encoded.query, key[1], pair, "closed"))
            return alerts

    def list(self) -> list[StandingQuery]:
        with self._lock:
            return [encoded.query for encoded in self._queries.values()]

    def get(self, query_id: str) -> EncodedQuery:
        with self._lock:
            return self._queries[query_id]

    def __contains__(self, query_id: str) -> bool:
        return query_id in self._queries

    def __len__(self) -> int:
        return len(self._queries)

    # -- scoring -------------------------------------------------------------------------------
    def _stacked(self) -> dict[str, np.ndarray]:
        if self._matrix is None:
            encoded = list(self._queries.values())
            dim_s = encoded[0].siglip.shape[0] if encoded else 0
            self._matrix = {
                "ids": [e.id for e in encoded],
                "siglip": np.stack([e.siglip for e in encoded]) if encoded else np.zeros((0, dim_s), np.float32),
                "image": np.array([e.query.kind == "image" for e in encoded], dtype=bool),
            }
        return self._matrix

    def _stage1(self, features: FrameFeatures, camera: str) -> dict[str, float]:
        """Stage-1 values x of the queries watching this camera (see the module docstring)."""
        stacked = self._stacked()
        ids = stacked["ids"]
        if not ids:
            return {}
        frame_s = np.asarray(features.siglip, dtype=np.float32)
        cos_s = stacked["siglip"] @ frame_s
        neutral = None
        out: dict[str, float] = {}
        for i, qid in enumerate(ids):
            encoded = self._queries[qid]
            query = encoded.query
            if not query.watches(camera):
                continue
            if query.kind == "image":
                cos_d = float(encoded.dinov2 @ np.asarray(features.dinov2, dtype=np.float32))
                out[qid] = (float(cos_s[i]) + cos_d) / 2.0
            elif query.calibration in ("calibrated", "prompts"):
                if neutral is None:
                    neutral = self.neutral @ frame_s
                out[qid] = neutral_margin(float(cos_s[i]), neutral, self.settings.temperature)
            else:
                out[qid] = float(cos_s[i])
        return out

    def _calibrated(self, query: StandingQuery, pair: _Pair | None, x: float) -> float | None:
        if query.calibration not in Z_MODES:
            return x
        if pair is None or len(pair.history) < self.settings.warmup:
            return None
        return robust_z(x, pair.history, self.settings.min_spread)

    def score(self, features: FrameFeatures) -> dict[str, float | None]:
        """The scores this frame would get, per watching query, without changing any state (None: warming up)."""
        camera = str(features.source)
        with self._lock:
            stage1 = self._stage1(features, camera)
            return {
                qid: self._calibrated(self._queries[qid].query, self._pairs.get((qid, camera)), x)
                for qid, x in stage1.items()
            }

    # -- events --------------------------------------------------------------------------------
    def process(
        self, features: FrameFeatures, *, keyframe_key: str | None = None, image: np.ndarray | None = None
    ) -> list[Alert]:
        """Feed one frame of one camera (pts order per camera). Returns the alerts it caused.

        `keyframe_key`: the store key of this frame's keyframe/thumbnail (default: the store layout's
        `keyframes/{camera_source_id(camera)}/{pts_ms}.jpg`). `image`: the frame's pixels, kept only while the
        frame is the peak of an unconfirmed event and only when a verifier is set."""
        camera = str(features.source)
        pts = float(features.pts)
        if not math.isfinite(pts):
            raise ValueError(f"{camera}: frame pts must be finite, got {features.pts!r}")
        with self._lock:
            last = self._last_pts.get(camera)
            if last is not None and pts <= last:
                self.ignored += 1
                return []
            self._last_pts[camera] = pts
            key = keyframe_key or default_keyframe_key(camera_source_id(camera), pts)
            alerts: list[Alert] = []
            for qid, x in self._stage1(features, camera).items():
                query = self._queries[qid].query
                pair = self._pairs.get((qid, camera))
                if pair is None:
                    pair = self._pairs[(qid, camera)] = _Pair(history=deque(maxlen=self.settings.history))
                score = self._calibrated(query, pair, x)
                if query.calibration in Z_MODES:
                    pair.history.append(float(x))
                alerts.extend(self._step(query, camera, pair, pts, score, key, image))
            return alerts

    def process_many(self, frames: Iterable[FrameFeatures | tuple[FrameFeatures, str | None]]) -> list[Alert]:
        """`process` over frames (or (frame, keyframe key) pairs), alerts concatenated in order."""
        alerts: list[Alert] = []
        for item in frames:
            features, key = item if isinstance(item, tuple) else (item, None)
            alerts.extend(self.process(features, keyframe_key=key))
        return alerts

    def flush(self, camera: str | None = None) -> list[Alert]:
        """End every event (of one camera, or all): at the end of a finite stream or when a camera goes away."""
        with self._lock:
            alerts = []
            for (qid, cam), pair in sorted(self._pairs.items()):
                if camera is not None and cam != camera:
                    continue
                alerts.extend(self._end(self._queries[qid].query, cam, pair))
            return alerts

    def drop_camera(self, camera: str) -> list[Alert]:
        """Forget a camera that went away for good: close its events, drop its state (history, last pts)."""
        with self._lock:
            alerts = self.flush(camera)
            self._pairs = {k: v for k, v in self._pairs.items() if k[1] != camera}
            self._last_pts.pop(camera, None)
            return alerts

    def is_peak(self, camera: str, pts: float) -> bool:
        """True when the frame at `pts` is the peak so far of an event of `camera`: its thumbnail may become
        an alert's keyframe, so the monitor stores it."""
        with self._lock:
            return any(
                cam == camera and pair.phase != "idle" and pair.peak_pts == pts
                for (_, cam), pair in self._pairs.items()
            )

    def _step(
        self,
        query: StandingQuery,
        camera: str,
        pair: _Pair,
        pts: float,
        score: float | None,
        key: str,
        image: np.ndarray | None,
    ) -> list[Alert]:
        alerts: list[Alert] = []
        if pair.last_pts is not None and pts - pair.last_pts > query.max_gap and pair.phase != "idle":
            alerts.extend(self._end(query, camera, pair))  # the camera was silent too long
        pair.last_pts = pts
        high = score is not None and score >= query.threshold
        if pair.phase == "idle":
            if high and (pair.cooldown_until is None or pts >= pair.cooldown_until):
                pair.phase, pair.start, pair.end = "pending", pts, pts
                self._peak(pair, score, pts, key, image)
                alerts.extend(self._maybe_confirm(query, camera, pair, pts))
        elif pair.phase == "pending":
            if high:
                pair.end = pts
                self._peak(pair, score, pts, key, image)
                alerts.extend(self._maybe_confirm(query, camera, pair, pts))
            else:
                pair.reset_event()  # a blip shorter than min_duration
        else:  # open
            if score is not None and score >= query.low:
                pair.end, pair.below_since = pts, None
                self._peak(pair, score, pts, key, None)
            else:
                if pair.below_since is None:
                    pair.below_since = pts
                if pts - pair.below_since >= query.release:
                    alerts.extend(self._end(query, camera, pair))
        return alerts

    def _peak(self, pair: _Pair, score: float, pts: float, key: str, image: np.ndarray | None) -> None:
        if pair.peak is None or score > pair.peak:
            pair.peak, pair.peak_pts, pair.peak_key = float(score), pts, key
            pair.peak_image = image if (self.verifier is not None and pair.phase == "pending") else None

    def _maybe_confirm(self, query: StandingQuery, camera: str, pair: _Pair, pts: float) -> list[Alert]:
        if pts - pair.start < query.min_duration:
            return []
        pair.phase = "open"
        alert = self._alert(query, camera, pair, "open")
        if self.verifier is not None:
            image = pair.peak_image
            if image is None and self.image_loader is not None:
                try:
                    image = self.image_loader(pair.peak_key)
                except Exception as exc:  # noqa: BLE001 - a missing keyframe must not stop the monitor
                    log.warning("could not load keyframe %s for verification: %s", pair.peak_key, exc)
            pair.peak_image = None
            try:
                ok = bool(self.verifier.confirm(alert, image))
            except Exception as exc:  # noqa: BLE001 - fail open: an alert is better than a silent miss
                log.warning(
                    "verifier failed on %s (query %s, camera %s): %s; alerting unverified",
                    alert.id,
                    query.id,
                    camera,
                    exc,
                )
            else:
                if not ok:
                    pair.rejected = True
                    return []
                pair.verified = True
                alert = self._alert(query, camera, pair, "open")
        pair.alerted = True
        return [alert]

    def _end(self, query: StandingQuery, camera: str, pair: _Pair) -> list[Alert]:
        """Close whatever event the pair has: a pending one vanishes; an open one starts the cooldown."""
        alerts = []
        if pair.phase == "open":
            if pair.alerted:
                alerts.append(self._alert(query, camera, pair, "closed"))
            pair.cooldown_until = pair.end + query.cooldown
        pair.reset_event()
        return alerts

    def _alert(self, query: StandingQuery, camera: str, pair: _Pair, status: str) -> Alert:
        return Alert(
            id=Alert.make_id(query.id, camera, pair.start),
            query_id=query.id,
            camera=camera,
            start=pair.start,
            end=pair.end,
            peak_score=pair.peak,
            peak_pts=pair.peak_pts,
            keyframe_key=pair.peak_key,
            models=self.models,
            status=status,
            query_text=query.text,
            query_image=query.image,
            verified=pair.verified,
        )

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue exactly here, JSON-compatible (see the module docstring)."""
        with self._lock:
            return {
                "version": STATE_VERSION,
                "models": {
                    "siglip": self.models.siglip,
                    "dinov2": self.models.dinov2,
                    "untrained": self.models.untrained,
                },
                "neutral_prompts": list(self.neutral_prompts),
                "queries": [encoded.to_json() for encoded in self._queries.values()],
                "cameras": dict(sorted(self._last_pts.items())),
                "pairs": [
                    {"query": qid, "camera": cam, **pair.to_json()} for (qid, cam), pair in sorted(self._pairs.items())
                ],
            }

    def load_state_dict(self, state: dict) -> None:
        """Replace the queries and all state with a checkpoint's (made by a matcher with the same models)."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"matcher state version {state.get('version')!r} is not {STATE_VERSION}")
        models = ModelIds(**state["models"])
        if models != self.models:
            raise ValueError(f"matcher state was made with {models}, this matcher uses {self.models}")
        if tuple(state.get("neutral_prompts", ())) != self.neutral_prompts:
            raise ValueError("matcher state was made with other neutral prompts")
        queries = [EncodedQuery.from_json(q) for q in state["queries"]]
        pairs = {}
        for item in state["pairs"]:
            pairs[(item["query"], item["camera"])] = _Pair.from_json(item, self.settings.history)
        with self._lock:
            self._queries = {}
            self._matrix = None
            for encoded in queries:
                self.add(encoded)
            self._pairs = {k: v for k, v in pairs.items() if k[0] in self._queries}
            self._last_pts = {str(k): float(v) for k, v in state["cameras"].items()}


def _same(a: EncodedQuery, b: EncodedQuery) -> bool:
    return (
        a.query == b.query
        and a.models == b.models
        and np.array_equal(a.siglip, b.siglip)
        and (
            (a.dinov2 is None and b.dinov2 is None)
            or (a.dinov2 is not None and b.dinov2 is not None and np.array_equal(a.dinov2, b.dinov2))
        )
    )


__all__ = [
    "NEUTRAL_PROMPTS",
    "Matcher",
    "Verifier",
    "neutral_margin",
    "robust_z",
]
