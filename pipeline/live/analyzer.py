"""Live analysis of camera streams: frames with features in; clip windows, alerts and thumbnails out.

One `StreamAnalyzer` holds, per camera, the open clip window and the last processed pts, plus the
standing-query `Matcher`. Its whole state is a checkpoint (`state_dict`): restored, and fed the stream
again from the checkpoint's offsets, it produces exactly what an uninterrupted run produces; frames at
or before a camera's last processed pts are skipped, so replays change nothing.

The monitor spreads cameras over analyzer shards (`camera_shard`), each a `StreamAnalyzer` of its own, fed
its cameras' frames only (`shard_batches`); of a decoder's poll, its driver reads the `PollReceipt`, never the
frames. A state is per camera except for the query book, which every shard holds whole: `cameras_state`
narrows a state to some cameras and `merge_states` joins such parts, so states saved with one shard count can
be shared out over another.

With `track.live` on, a `pipeline.live.tracker.StreamTracker` beside each analyzer tracks the same cameras; a
shard's checkpoint state holds its sections too ("tracking", "track_alerts"), which `cameras_state` and
`merge_states` share out by camera like the analyzer's. Standing queries on tracks are the tracker's: the
analyzer's matcher holds those on frames.
"""

from __future__ import annotations

import base64
import logging
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pipeline.live.match import Matcher
from pipeline.live.queries import StandingQuery
from pipeline.records import (
    Alert,
    ClipEmbedding,
    Frame,
    FrameBatch,
    FrameFeatures,
    Keyframe,
    ModelIds,
    TrackEvent,
)
from pipeline.search.embed import ClipWindow, ClipWindower, FeatureCarry
from pipeline.storage.codecs import decode_image, encode_jpeg
from pipeline.storage.layout import camera_source_id, keyframe_key
from pipeline.tracking import EndedTrack

STATE_VERSION = 1

log = logging.getLogger(__name__)


class StateLost(RuntimeError):
    """A stage holding stream state (an analyzer, a tracker, a sink) was restarted after a loss and not given its state
    again: it refuses the calls made for its predecessor until the monitor reloads it."""


def camera_of(frame: Frame) -> str:
    return frame.camera or frame.source


@dataclass(frozen=True)
class PollReceipt:
    """What a poll of a monitor's decoder took, its frames aside (they go to the next stage on their own): how
    many frames, the next offset of each Kafka partition read ("topic:partition"), each camera's latest pts,
    and whether the source ended (a file; Kafka never ends)."""

    frames: int
    offsets: dict[str, int]
    latest_pts: dict[str, float]
    finished: bool = False

    @classmethod
    def of(cls, frames: list[Frame], offsets: dict[str, int], finished: bool = False) -> PollReceipt:
        latest: dict[str, float] = {}
        for frame in frames:
            camera = camera_of(frame)
            latest[camera] = max(frame.pts, latest.get(camera, frame.pts))
        return cls(len(frames), offsets, latest, finished)


def camera_shard(camera: str, shards: int) -> int:
    """The shard (of `shards`) holding a camera's state: a stable hash, so the same one in every run."""
    return zlib.crc32(camera.encode()) % shards


def shard_batches(batch: FrameBatch, shards: int) -> list[FrameBatch]:
    """`batch` split by the shard of each frame's camera: each shard's frames in order, with their feature rows
    (a frame the models skipped has none). A shard none of whose cameras is in the batch gets an empty one."""
    frames: list[list[Frame]] = [[] for _ in range(shards)]
    rows: list[list[int]] = [[] for _ in range(shards)]
    moving = 0
    for frame in batch.frames:
        shard = camera_shard(camera_of(frame), shards)
        frames[shard].append(frame)
        if frame.runs_models:
            rows[shard].append(moving)
            moving += 1
    if batch.siglip is None or batch.dinov2 is None:
        return [FrameBatch(part) for part in frames]
    return [FrameBatch(part, batch.siglip[taken], batch.dinov2[taken]) for part, taken in zip(frames, rows)]


def cameras_state(state: dict, keep: Callable[[str], bool]) -> dict:
    """A shard's state (a `StreamAnalyzer.state_dict()`, and a tracker's sections with `track.live`; a tracker's
    alone for `vigil track --kafka`) narrowed to the cameras `keep` accepts; the query books stay whole."""
    narrowed = dict(state)
    if "tracking" in state:
        narrowed["tracking"] = {camera: saved for camera, saved in state["tracking"].items() if keep(camera)}
    if "track_alerts" in state:
        alerts = state["track_alerts"]
        narrowed["track_alerts"] = {**alerts, "alerted": [a for a in alerts["alerted"] if keep(a["camera"])]}
    if "matcher" in state:  # the analyzer's sections
        matcher = state["matcher"]
        narrowed |= {
            "last_pts": {camera: pts for camera, pts in state["last_pts"].items() if keep(camera)},
            "windows": {camera: window for camera, window in state["windows"].items() if keep(camera)},
            "matcher": {
                **matcher,
                "cameras": {camera: pts for camera, pts in matcher["cameras"].items() if keep(camera)},
                "pairs": [pair for pair in matcher["pairs"] if keep(pair["camera"])],
            },
        }
    return narrowed


def merge_states(states: list[dict]) -> dict:
    """One state of the cameras of `states` (of one kind, see `cameras_state`), each camera in one of them; a query
    held by several takes the definition of the first that holds it."""
    first = dict(states[0])
    if any("tracking" in state for state in states):
        first["tracking"] = {camera: saved for state in states for camera, saved in state.get("tracking", {}).items()}
    if any("track_alerts" in state for state in states):
        held = [state.get("track_alerts", {}) for state in states]
        first["track_alerts"] = {
            "queries": list({q["id"]: q for part in reversed(held) for q in part.get("queries", [])}.values()),
            "alerted": [entry for part in held for entry in part.get("alerted", [])],
        }
    if "matcher" in first:  # the analyzer's sections
        queries: dict[str, dict] = {}
        for state in states:
            for query in state["matcher"]["queries"]:
                queries.setdefault(query["query"]["id"], query)
        first |= {
            "last_pts": {camera: pts for state in states for camera, pts in state["last_pts"].items()},
            "windows": {camera: window for state in states for camera, window in state["windows"].items()},
            "matcher": {
                **first["matcher"],
                "queries": list(queries.values()),
                "cameras": {camera: pts for state in states for camera, pts in state["matcher"]["cameras"].items()},
                "pairs": [pair for state in states for pair in state["matcher"]["pairs"]],
            },
        }
    return first


@dataclass
class StreamOutput:
    """What one batch of frames produced; everything in it is keyed deterministically."""

    clips: list[tuple[ClipEmbedding, Keyframe]] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    thumbnails: list[tuple[str, np.ndarray]] = field(default_factory=list)
    track_events: list[TrackEvent] = field(default_factory=list)  # empty unless `track.live`
    ended_tracks: list[EndedTrack] = field(default_factory=list)  # the same

    def extend(self, other: StreamOutput) -> None:
        self.clips += other.clips
        self.alerts += other.alerts
        self.thumbnails += other.thumbnails
        self.track_events += other.track_events
        self.ended_tracks += other.ended_tracks


def _jpeg(image: np.ndarray) -> str:
    return base64.b64encode(encode_jpeg(image, quality=90)).decode()


def _pixels(text: str) -> np.ndarray:
    return decode_image(base64.b64decode(text))


class StreamAnalyzer:
    def __init__(
        self,
        matcher: Matcher,
        *,
        window: float,
        models: ModelIds,
        tracked: bool = False,
    ):
        """`tracked`: a StreamTracker runs beside this analyzer (`track.live`), holding the queries on tracks."""
        self.matcher = matcher
        self.window = window
        self.models = models
        self.tracked = tracked
        self._windowers: dict[str, ClipWindower] = {}
        self._last_pts: dict[str, float] = {}
        self._carry = FeatureCarry()
        self._track_queries: set[str] = set()  # the queries on tracks seen (each new one warned of, untracked)

    def _windower(self, camera: str) -> ClipWindower:
        if camera not in self._windowers:
            sid = camera_source_id(camera)
            self._windowers[camera] = ClipWindower(window=self.window, source_id=sid, models=self.models)
        return self._windowers[camera]

    def process(self, batch: FrameBatch) -> StreamOutput:
        """An extracted batch of frames of any cameras (pts order within each camera)."""
        out = StreamOutput()
        # Replayed frames pass through the carry too: a still frame after them needs their features.
        for frame, feats in self._carry.per_frame(batch.for_models()):
            camera = camera_of(frame)
            if camera in self._last_pts and frame.pts <= self._last_pts[camera]:
                continue  # a replay of a frame already analysed
            self._last_pts[camera] = frame.pts
            feats = FrameFeatures(camera, frame.pts, feats.siglip, feats.dinov2)
            out.clips += self._windower(camera).push(frame, feats)
            out.alerts += self.matcher.process(feats, image=frame.image)
            if self.matcher.is_peak(camera, frame.pts):
                out.thumbnails.append((keyframe_key(camera_source_id(camera), frame.pts), frame.image))
        return out

    def sync_queries(self, stored: list[tuple[StandingQuery, np.ndarray | None]]) -> StreamOutput:
        """Follow the stored standing queries (with their example images): add new ones, drop deleted or
        changed ones (their open events close: the returned alerts; a changed one is then added anew).
        Queries already held are not encoded again."""
        for query, _ in stored:
            if query.kind == "track" and query.id not in self._track_queries and not self.tracked:
                log.warning("standing query %r watches tracks, but track.live is off: it cannot alert", query.id)
        self._track_queries = {query.id for query, _ in stored if query.kind == "track"}
        matcher = self.matcher
        wanted = {query.id: (query, image) for query, image in stored if query.kind != "track"}
        out = StreamOutput()
        for held in matcher.list():
            if held.id not in wanted or wanted[held.id][0] != held:
                out.alerts += matcher.remove(held.id)
        for query, image in wanted.values():
            if query.id not in matcher:
                matcher.add(query, image=image)
        return out

    def flush(self) -> StreamOutput:
        """End of the streams: close every window and event."""
        out = StreamOutput(alerts=self.matcher.flush())
        for windower in self._windowers.values():
            out.clips += windower.flush()
        return out

    def state_dict(self) -> dict:
        windows = {}
        for camera, windower in self._windowers.items():
            if windower.current is None:
                continue
            current = windower.current
            windows[camera] = {
                "start": current.start,
                "end": current.end,
                "frames": [
                    {
                        "pts": frame.pts,
                        "index": frame.index,
                        "wallclock": frame.wallclock,  # dates the window's clip
                        "siglip": feats.siglip.tolist(),
                        "dinov2": feats.dinov2.tolist(),
                        "jpeg": _jpeg(frame.image),
                    }
                    for frame, feats in zip(current.frames, current.features)
                ],
            }
        return {
            "version": STATE_VERSION,
            "last_pts": dict(self._last_pts),
            "windows": windows,
            "matcher": self.matcher.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Go on from `state`; the streams are read again from where it leaves off (their first frames are moving
        ones, so features carried from frames after that point are dropped)."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"stream state version {state.get('version')!r} is not {STATE_VERSION}")
        self.matcher.load_state_dict(state["matcher"])
        self._last_pts = {camera: float(pts) for camera, pts in state["last_pts"].items()}
        self._windowers = {}
        self._carry = FeatureCarry()
        for camera, saved in state["windows"].items():
            window = ClipWindow(start=saved["start"], end=saved["end"])
            for item in saved["frames"]:
                # Checkpoints from before frames kept their wall clock have none: the window's later frames date it.
                frame = Frame(
                    camera,
                    item["pts"],
                    item["index"],
                    _pixels(item["jpeg"]),
                    camera=camera,
                    wallclock=item.get("wallclock"),
                )
                window.add(
                    frame,
                    FrameFeatures(
                        camera,
                        item["pts"],
                        np.asarray(item["siglip"], np.float32),
                        np.asarray(item["dinov2"], np.float32),
                    ),
                )
            self._windower(camera).current = window

    def forget_cameras(self) -> None:
        """Start every camera afresh (the streams are read again from their start); the queries stay."""
        self.load_state_dict(cameras_state(self.state_dict(), lambda camera: False))
