"""Live analysis of camera streams: frames with features in; clip windows, alerts and thumbnails out.

One `StreamAnalyzer` holds, per camera, the open clip window and the last processed pts, plus the
standing-query `Matcher`. Its whole state is a checkpoint (`state_dict`): restored, and fed the stream
again from the checkpoint's offsets, it produces exactly what an uninterrupted run produces; frames at
or before a camera's last processed pts are skipped, so replays change nothing.
"""

from __future__ import annotations

import base64
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
)
from pipeline.search.embed import ClipWindow, ClipWindower, FeatureCarry
from pipeline.storage.codecs import decode_image, encode_jpeg
from pipeline.storage.layout import camera_source_id, keyframe_key

STATE_VERSION = 1


@dataclass
class StreamOutput:
    """What one batch of frames produced; everything in it is keyed deterministically."""

    clips: list[tuple[ClipEmbedding, Keyframe]] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    thumbnails: list[tuple[str, np.ndarray]] = field(default_factory=list)

    def extend(self, other: StreamOutput) -> None:
        self.clips += other.clips
        self.alerts += other.alerts
        self.thumbnails += other.thumbnails


def _jpeg(image: np.ndarray) -> str:
    return base64.b64encode(encode_jpeg(image, quality=90)).decode()


def _pixels(text: str) -> np.ndarray:
    return decode_image(base64.b64decode(text))


class StreamAnalyzer:
    def __init__(self, matcher: Matcher, *, window: float, models: ModelIds):
        self.matcher = matcher
        self.window = window
        self.models = models
        self._windowers: dict[str, ClipWindower] = {}
        self._last_pts: dict[str, float] = {}
        self._carry = FeatureCarry()

    def _windower(self, camera: str) -> ClipWindower:
        if camera not in self._windowers:
            sid = camera_source_id(camera)
            self._windowers[camera] = ClipWindower(window=self.window, source_id=sid, models=self.models)
        return self._windowers[camera]

    def process(self, batch: FrameBatch) -> StreamOutput:
        """An extracted batch of frames of any cameras (pts order within each camera)."""
        out = StreamOutput()
        # Replayed frames pass through the carry too: a still frame after them needs their features.
        for frame, feats in self._carry.per_frame(batch):
            camera = frame.camera or frame.source
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
        matcher = self.matcher
        wanted = {query.id: (query, image) for query, image in stored}
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
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"stream state version {state.get('version')!r} is not {STATE_VERSION}")
        self.matcher.load_state_dict(state["matcher"])
        self._last_pts = {camera: float(pts) for camera, pts in state["last_pts"].items()}
        self._windowers = {}
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
