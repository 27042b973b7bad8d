"""Live sources (RTSP, HTTP, RTMP, ...) as a sampled frame stream that survives drops.

`read_live(url, camera=..., fps=...)` opens the stream with PyAV, samples it at `fps` frames per second
of media time like `decode_frames`, and when the stream ends or fails it reopens it with exponential
backoff (forever by default; `max_reconnects` bounds the consecutive attempts that bring no frame).

Times are one camera timeline per stream: the first frame is at 0, and every reconnection continues
after the last frame sent, so pts never go backwards however the server restarts its own clock.
The gap across a reconnection is the outage measured on the wall clock (at least one frame period), so
an event seen before and after an outage is not glued together. A frame without pts (RTSP's first
frame can have none) takes the previous one's plus a frame period. Every frame carries the wall-clock time
it was decoded (`Frame.wallclock`), which dates its clips.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import av
import numpy as np

from pipeline.media.decode import SamplingGrid, apply_rotation, check_fps, output_size
from pipeline.records import Frame

__all__ = ["LIVE_SCHEMES", "is_live", "ReconnectPolicy", "LiveSourceLost", "LiveStats", "LiveStream", "read_live"]

log = logging.getLogger(__name__)

LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")


def is_live(source: str) -> bool:
    """True for a network stream URL (scheme://...), False for a file path."""
    scheme, sep, _ = str(source).partition("://")
    return bool(sep) and scheme.lower() in LIVE_SCHEMES


class LiveSourceLost(ConnectionError):
    """The stream could not be reopened within `max_reconnects` consecutive attempts."""


@dataclass(frozen=True)
class ReconnectPolicy:
    max_reconnects: int | None = None  # consecutive reopen attempts without a frame; None = forever
    backoff: float = 0.5  # seconds before the first reopen, doubling ...
    backoff_max: float = 10.0  # ... up to this
    open_timeout: float = 10.0  # seconds to open the stream
    read_timeout: float = 10.0  # seconds without data before the stream counts as dropped

    def delay(self, attempt: int) -> float:
        return min(self.backoff_max, self.backoff * 2 ** max(0, attempt - 1))


@dataclass
class LiveStats:
    connections: int = 0  # successful opens
    reconnects: int = 0  # reopen attempts after a drop (successful or not)
    drops: list[str] = field(default_factory=list)  # why each connection or attempt ended


def _open_options(url: str, rtsp_transport: str) -> dict[str, str]:
    options = {
        # probe little: live streams announce their format at once, and probing delays the first frame
        "analyzeduration": "1000000",
        "probesize": "500000",
    }
    if url.lower().startswith(("rtsp://", "rtsps://")):
        options["rtsp_transport"] = rtsp_transport
    return options


class LiveStream(Iterator[Frame]):
    """The iterator `read_live` returns; `stats` tells connections, reconnects and drops."""

    def __init__(self, url, camera, fps, short_side, policy, rtsp_transport, stop):
        self.url = url
        self.camera = camera
        self.fps = check_fps(fps)
        self.short_side = short_side
        self.policy = policy
        self.rtsp_transport = rtsp_transport
        self.stop = stop
        self.stats = LiveStats()
        self._gen = self._run()

    def __next__(self) -> Frame:
        return next(self._gen)

    def close(self) -> None:
        self._gen.close()

    def _stopped(self) -> bool:
        return self.stop is not None and self.stop()

    def _run(self) -> Iterator[Frame]:
        grid = SamplingGrid(self.fps)
        index = 0
        last_pts: float | None = None  # camera timeline
        last_wall: float | None = None
        failures = 0  # consecutive reopen attempts that brought no frame
        first = True
        while not self._stopped():
            if not first:
                failures += 1
                if self.policy.max_reconnects is not None and failures > self.policy.max_reconnects:
                    raise LiveSourceLost(
                        f"{self.url}: no frames after {self.policy.max_reconnects} reconnection attempt(s); "
                        f"last: {self.stats.drops[-1] if self.stats.drops else 'unknown'}"
                    )
                self.stats.reconnects += 1
                delay = self.policy.delay(failures)
                log.warning(
                    "%s: %s; reconnecting in %.1f s (attempt %d)", self.url, self.stats.drops[-1], delay, failures
                )
                if _sleep(delay, self._stopped):
                    return
            first = False
            try:
                container = av.open(
                    self.url,
                    options=_open_options(self.url, self.rtsp_transport),
                    timeout=(self.policy.open_timeout, self.policy.read_timeout),
                )
            except Exception as exc:  # av.FFmpegError, OSError, timeouts
                self.stats.drops.append(f"cannot open: {exc}")
                continue
            self.stats.connections += 1
            offset: float | None = None  # camera time = stream time + offset, for this connection
            stream_last: float | None = None
            period = 1.0 / self.fps
            try:
                with container:
                    if not container.streams.video:
                        self.stats.drops.append("no video stream")
                        continue
                    stream = container.streams.video[0]
                    stream.thread_type = "AUTO"
                    rate = stream.average_rate or stream.guessed_rate
                    if rate:
                        period = 1.0 / float(rate)
                    for vf in container.decode(stream):
                        t = vf.time
                        if t is None:
                            t = (stream_last + period) if stream_last is not None else 0.0
                        stream_last = t
                        if offset is None:
                            if last_pts is None:
                                offset = -t  # the camera timeline starts at 0
                            else:
                                gap = max(period, time.monotonic() - last_wall)
                                offset = last_pts + gap - t
                        pts = round(t + offset, 6)
                        if last_pts is not None and pts <= last_pts:  # the stream's clock jumped back
                            offset = last_pts + period - t
                            pts = round(t + offset, 6)
                        last_pts, last_wall = pts, time.monotonic()
                        failures = 0
                        if not grid.take(pts):
                            continue
                        w, h = output_size(vf.width, vf.height, self.short_side)
                        rgb = vf.reformat(width=w, height=h, format="rgb24").to_ndarray()
                        image = np.ascontiguousarray(apply_rotation(rgb, getattr(vf, "rotation", 0)))
                        yield Frame(self.camera, pts, index, image, camera=self.camera, wallclock=time.time())
                        index += 1
                        if self._stopped():
                            return
                self.stats.drops.append("stream ended")
            except Exception as exc:  # a read error or timeout: the stream dropped
                self.stats.drops.append(f"stream failed: {exc}")


def _sleep(seconds: float, stopped: Callable[[], bool]) -> bool:
    """Sleep in small steps; True when `stopped()` became true meanwhile."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if stopped():
            return True
        time.sleep(min(0.1, max(0.0, end - time.monotonic())))
    return stopped()


def read_live(
    url: str,
    *,
    camera: str,
    fps: float = 1.0,
    short_side: int | None = 256,
    policy: ReconnectPolicy | None = None,
    rtsp_transport: str = "tcp",
    stop: Callable[[], bool] | None = None,
) -> LiveStream:
    """Sampled RGB frames of a live stream, reconnecting when it drops (see the module doc).

    Raises `LiveSourceLost` once `policy.max_reconnects` consecutive reopen attempts brought no frame.
    `stop()` (checked between frames and while waiting to reconnect) ends the stream cleanly."""
    if rtsp_transport not in ("tcp", "udp"):
        raise ValueError(f"rtsp_transport must be tcp or udp, got {rtsp_transport!r}")
    return LiveStream(str(url), camera, fps, short_side, policy or ReconnectPolicy(), rtsp_transport, stop)
