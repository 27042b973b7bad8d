"""Generated footage for tests, the demo and the benchmark.

Everything is deterministic (scene index / seed) and vectorised with numpy; videos are written with
PyAV as H.264 (libx264, yuv420p) in .mp4.

- `scene_image(i, size)`: the base look of scene ``i`` (background colour + pattern, no mover).
- `write_scene_video(...)`: concatenated scenes, each with a small moving object.
- `write_high_motion_video(...)` / `write_static_camera_video(...)`: 720p benchmark inputs.
- `write_vfr_video(...)`: frames at arbitrary (irregular) media times.
- `write_corrupt_video(...)`, `truncate_file(...)`: broken inputs.
"""

from __future__ import annotations

import colorsys
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

__all__ = [
    "Scene",
    "scene_image",
    "write_scene_video",
    "write_high_motion_video",
    "write_static_camera_video",
    "write_vfr_video",
    "write_corrupt_video",
    "truncate_file",
]


@dataclass
class Scene:
    name: str
    duration: float  # seconds


# --------------------------------------------------------------------------------------------- looks

_GOLDEN = 0.6180339887498949
_N_PATTERNS = 6


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255.0


def _scene_colours(index: int) -> tuple[np.ndarray, np.ndarray]:
    hue = (index * _GOLDEN) % 1.0
    bg = _hsv(hue, 0.85, (0.9, 0.45, 0.7)[index % 3])
    fg = _hsv(hue + 0.5, 0.6, (0.25, 0.95, 0.1)[index % 3])
    return bg, fg


def _pattern_mask(index: int, width: int, height: int) -> np.ndarray:
    """A [0, 1] float32 mask (H, W) whose kind, angle and frequency depend on `index`."""
    s = float(min(width, height))
    u = (np.arange(width, dtype=np.float32) / s)[None, :]  # unit = short side
    v = (np.arange(height, dtype=np.float32) / s)[:, None]
    kind = index % _N_PATTERNS
    angle = np.deg2rad((index * 47) % 180)
    c, sn = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    freq = np.float32(3.0 + (index * 5) % 9)  # periods per short side
    along = u * c + v * sn
    across = v * c - u * sn
    two_pi = np.float32(2 * np.pi)
    if kind == 0:  # stripes
        m = np.sin(two_pi * freq * along) > 0
    elif kind == 1:  # checkerboard (rotated)
        m = (np.floor(along * freq) + np.floor(across * freq)) % 2 == 0
    elif kind == 2:  # concentric rings around an off-centre point
        cx, cy = 0.3 + 0.1 * (index % 4), 0.3 + 0.1 * (index % 3)
        m = np.sin(two_pi * freq * np.hypot(u - np.float32(cx), v - np.float32(cy))) > 0
    elif kind == 3:  # smooth gradient with a slow wave on top
        g = along - along.min()
        g /= max(float(g.max()), 1e-6)
        m = np.clip(g + np.float32(0.15) * np.sin(two_pi * 2 * across), 0, 1)
    elif kind == 4:  # dot grid
        fu, fv = (along * freq) % 1.0 - 0.5, (across * freq) % 1.0 - 0.5
        m = np.hypot(fu, fv) < 0.3
    else:  # plaid / interference
        m = 0.5 + 0.25 * (np.sin(two_pi * freq * along) + np.sin(two_pi * (freq / 2) * across))
    return np.asarray(m, dtype=np.float32)


def scene_image(index: int, size: tuple[int, int] = (320, 240)) -> np.ndarray:
    """Base look of scene `index` (no mover): uint8 RGB array of shape (H, W, 3); size is (W, H).

    Scenes differ in background colour (hue stepped by the golden ratio, three brightness levels)
    AND in pattern (stripes, rotated checkerboard, rings, gradient, dots, plaid; angle and frequency
    vary with the index as well)."""
    width, height = int(size[0]), int(size[1])
    bg, fg = _scene_colours(index)
    m = _pattern_mask(index, width, height)[..., None]
    img = bg + (fg - bg) * m
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------- drawing


def _disk(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (x * x + y * y) <= radius * radius


def _paste_mask(img: np.ndarray, mask: np.ndarray, x0: int, y0: int, colour) -> None:
    """Paint `colour` where `mask` is set, with the mask's top-left at (x0, y0); clipped to the image."""
    h, w = img.shape[:2]
    mh, mw = mask.shape
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + mw, w), min(y0 + mh, h)
    if xa >= xb or ya >= yb:
        return
    sub = mask[ya - y0 : yb - y0, xa - x0 : xb - x0]
    img[ya:yb, xa:xb][sub] = colour


def _fill_rect(img: np.ndarray, x0: int, y0: int, w: int, h: int, colour) -> None:
    H, W = img.shape[:2]
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + w, W), min(y0 + h, H)
    if xa < xb and ya < yb:
        img[ya:yb, xa:xb] = colour


# BT.601 limited range: what swscale assumes for untagged SD/HD frames in both directions, so the
# decoder's RGB matches what we painted.
_RGB2YUV = (
    np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]], np.float32) / 255.0
)
_YUV_OFFSET = np.array([16.0, 128.0, 128.0], np.float32)


def _rgb_to_yuv(rgb) -> np.ndarray:
    """RGB (..., 3) in 0..255 -> YUV (..., 3) float32 (BT.601 limited range)."""
    return np.asarray(rgb, np.float32) @ _RGB2YUV.T + _YUV_OFFSET


def _yuv_planes(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB uint8 (H, W, 3), H and W even -> uint8 planes Y (H, W), U and V (H/2, W/2)."""
    yuv = _rgb_to_yuv(rgb)
    h, w = yuv.shape[:2]
    chroma = yuv[..., 1:].reshape(h // 2, 2, w // 2, 2, 2).mean(axis=(1, 3))
    to8 = lambda a: np.clip(a + 0.5, 0, 255).astype(np.uint8)  # noqa: E731
    return to8(yuv[..., 0]), to8(chroma[..., 0]), to8(chroma[..., 1])


def _scene_yuv(index: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_yuv_planes(scene_image(index, size))` computed on the 2-D mask (the colour is linear in it)."""
    width, height = int(size[0]), int(size[1])
    bg, fg = (_rgb_to_yuv(c) for c in _scene_colours(index))
    m = _pattern_mask(index, width, height)
    m2 = m.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))
    to8 = lambda a: np.clip(a + 0.5, 0, 255).astype(np.uint8)  # noqa: E731
    d = fg - bg
    return to8(bg[0] + d[0] * m), to8(bg[1] + d[1] * m2), to8(bg[2] + d[2] * m2)


class _Yuv:
    """A packed yuv420p canvas (the layout `VideoFrame.from_ndarray(..., "yuv420p")` takes) with
    writable plane views, so frames are painted without any per-frame RGB->YUV conversion."""

    def __init__(self, width: int, height: int):
        self.w, self.h = width, height
        self.buf = np.empty((height * 3 // 2, width), np.uint8)
        flat = self.buf.reshape(-1)
        n, c = width * height, (width // 2) * (height // 2)
        self.y = flat[:n].reshape(height, width)
        self.u = flat[n : n + c].reshape(height // 2, width // 2)
        self.v = flat[n + c : n + 2 * c].reshape(height // 2, width // 2)

    def rect(self, x0: int, y0: int, w: int, h: int, yuv) -> None:
        x0, y0 = x0 & ~1, y0 & ~1
        _fill_rect(self.y, x0, y0, w, h, int(yuv[0]))
        _fill_rect(self.u, x0 // 2, y0 // 2, (w + 1) // 2, (h + 1) // 2, int(yuv[1]))
        _fill_rect(self.v, x0 // 2, y0 // 2, (w + 1) // 2, (h + 1) // 2, int(yuv[2]))

    def disk(self, mask: np.ndarray, mask2: np.ndarray, x0: int, y0: int, yuv) -> None:
        """`mask` at full resolution, `mask2` the same shape at half resolution (for chroma)."""
        x0, y0 = x0 & ~1, y0 & ~1
        _paste_mask(self.y, mask, x0, y0, int(yuv[0]))
        _paste_mask(self.u, mask2, x0 // 2, y0 // 2, int(yuv[1]))
        _paste_mask(self.v, mask2, x0 // 2, y0 // 2, int(yuv[2]))


# --------------------------------------------------------------------------------------------- writer


class _Writer:
    """H.264 mp4 writer taking RGB uint8 frames at integer pts in `time_base` units."""

    def __init__(
        self,
        path,
        size: tuple[int, int],
        *,
        fps: float = 30,
        time_base: Fraction | None = None,
        gop: int | None = None,
        preset: str = "veryfast",
        crf: int = 23,
        rotation: int = 0,
        faststart: bool = False,
        threads: int = 2,
    ):
        width, height = int(size[0]), int(size[1])
        if width % 2 or height % 2:
            raise ValueError(f"yuv420p needs even sizes, got {width}x{height}")
        options = {"movflags": "+faststart"} if faststart else {}
        self.container = av.open(str(path), mode="w", format="mp4", options=options)
        rate = Fraction(fps).limit_denominator(1001)
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self.stream.time_base = time_base or 1 / rate
        self.stream.codec_context.time_base = time_base or 1 / rate
        x264 = [f"threads={threads}"]
        if gop is not None:
            # A fixed GOP like a camera: a keyframe exactly every `gop` frames, no extra scene-cut IDRs.
            x264 += [f"keyint={gop}", f"min-keyint={gop}", "scenecut=0"]
        self.stream.options = {"preset": preset, "crf": str(crf), "x264-params": ":".join(x264)}
        if rotation:
            self.stream.set_display_rotation(rotation)
        self.count = 0

    def write(self, rgb: np.ndarray, pts: int | None = None) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.count if pts is None else int(pts)
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.count += 1

    def write_yuv(self, buf: np.ndarray, pts: int | None = None) -> None:
        """`buf` is a packed yuv420p image of shape (H * 3 // 2, W) (see `_Yuv`)."""
        frame = av.VideoFrame.from_ndarray(buf, format="yuv420p")
        frame.pts = self.count if pts is None else int(pts)
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.count += 1

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        else:  # don't mask the original error
            try:
                self.container.close()
            except Exception:
                pass


# --------------------------------------------------------------------------------------------- videos


def write_scene_video(
    path,
    scenes: Sequence[Scene],
    *,
    fps: int = 30,
    size: tuple[int, int] = (320, 240),
    gop: int | None = None,
    seed: int = 0,
    rotation: int = 0,
    faststart: bool = False,
) -> list[tuple[str, float, float]]:
    """Write scenes back to back; returns (name, start, end) per scene in media seconds.

    Scene `i` looks like `scene_image(i, size)` plus a small moving square. Each scene spans
    round(duration * fps) frames, so boundaries are exact frame times. `gop` fixes the keyframe
    interval in frames (None = encoder default); `rotation` (degrees counter-clockwise, the value a
    reader sees in `VideoFrame.rotation`) stores a display matrix; `faststart` puts the moov atom first.
    """
    width, height = int(size[0]), int(size[1])
    rng = np.random.default_rng(seed)
    side = max(4, min(width, height) // 8)
    bounds: list[tuple[str, float, float]] = []
    with _Writer(path, (width, height), fps=fps, gop=gop, rotation=rotation, faststart=faststart) as w:
        for i, scene in enumerate(scenes):
            n = max(1, int(round(scene.duration * fps)))
            base = scene_image(i, (width, height))
            mover = np.array([0, 0, 0] if base.mean() > 127 else [255, 255, 255], np.uint8)
            start_frame = w.count
            phase = rng.uniform(0, 2 * np.pi, size=2)
            for k in range(n):
                t = k / fps
                img = base.copy()
                x = int((width - side) * (0.5 + 0.45 * np.sin(1.3 * t + phase[0])))
                y = int((height - side) * (0.5 + 0.45 * np.sin(0.9 * t + phase[1])))
                _fill_rect(img, x, y, side, side, mover)
                w.write(img)
            bounds.append((scene.name, start_frame / fps, w.count / fps))
    return bounds


def write_vfr_video(
    path, times: Iterable[float], *, size: tuple[int, int] = (320, 240), time_base: Fraction = Fraction(1, 1000)
) -> list[float]:
    """Variable frame rate: one frame at each of `times` (seconds, increasing); returns the exact times
    as representable in `time_base` (what a reader should see as pts)."""
    width, height = int(size[0]), int(size[1])
    ticks = [int(round(t / time_base)) for t in times]
    if any(b <= a for a, b in zip(ticks, ticks[1:])):
        raise ValueError("times must be strictly increasing (after rounding to the time base)")
    # The nominal rate only matters for rate control; pts carry the real timing.
    with _Writer(path, (width, height), fps=30, time_base=time_base) as w:
        for k, tick in enumerate(ticks):
            img = scene_image(k % _N_PATTERNS, (width, height))
            w.write(img, pts=tick)
    return [float(tick * time_base) for tick in ticks]


def _encoding(fps: int, keyframe_every: float | None) -> dict:
    """The writer's GOP and preset: a keyframe every `keyframe_every` seconds (ultrafast: no B-frames, no
    deblocking), or with None x264's own GOP (up to 250 frames, keyframes at scene cuts) and the writer's
    default preset (B-frames, deblocking), as a phone or an editing tool encodes."""
    if keyframe_every is None:
        return {}
    return {"gop": max(1, round(keyframe_every * fps)), "preset": "ultrafast"}


def write_high_motion_video(
    path,
    seconds: float,
    size: tuple[int, int] = (1280, 720),
    fps: int = 30,
    seed: int = 0,
    keyframe_every: float | None = 1.0,
) -> list[float]:
    """Lots of motion everywhere: a panning texture, many moving shapes, a scene cut every 2-4 s.
    Keyframe every `keyframe_every` seconds (None: the encoder's default GOP). Returns the cut times (seconds).

    Frames are painted straight into yuv420p planes (the texture is converted once per shot), so
    generation costs little more than the ultrafast encode."""
    width, height = int(size[0]), int(size[1])
    rng = np.random.default_rng(seed)
    n_frames = max(1, int(round(seconds * fps)))
    cuts, f = [], 0  # shot boundaries (frame numbers)
    while f < n_frames:
        cuts.append(f)
        f += int(rng.uniform(2.0, 4.0) * fps)
    n_shapes = 14
    short = min(width, height)
    pan = (short // 3) & ~1  # how far the camera pans around inside the bigger texture
    canvas = _Yuv(width, height)
    with _Writer(path, (width, height), fps=fps, **_encoding(fps, keyframe_every)) as w:
        shot = -1
        for k in range(n_frames):
            if shot + 1 < len(cuts) and k == cuts[shot + 1]:
                shot += 1
                ty, tu, tv = _scene_yuv(int(rng.integers(0, 1000)), (width + 2 * pan, height + 2 * pan))
                pos = rng.uniform([0, 0], [width, height], size=(n_shapes, 2))
                vel = rng.uniform(-12, 12, size=(n_shapes, 2)) * (30.0 / fps)
                sizes = (rng.integers(short // 20, short // 7, size=n_shapes) // 4) * 4 + 4
                colours = _rgb_to_yuv(rng.integers(0, 256, size=(n_shapes, 3))).round()
                round_ = rng.random(n_shapes) < 0.5
                disks = {int(s): (_disk(int(s) // 2), _disk(int(s) // 4)) for s in sizes}
                pan_phase = rng.uniform(0, 2 * np.pi, size=2)
            t = k / fps
            ox = int(pan * (1 + np.sin(1.7 * t + pan_phase[0]))) & ~1
            oy = int(pan * (1 + np.sin(1.1 * t + pan_phase[1]))) & ~1
            canvas.y[:] = ty[oy : oy + height, ox : ox + width]
            canvas.u[:] = tu[oy // 2 : oy // 2 + height // 2, ox // 2 : ox // 2 + width // 2]
            canvas.v[:] = tv[oy // 2 : oy // 2 + height // 2, ox // 2 : ox // 2 + width // 2]
            pos += vel
            for d, lim in ((0, width), (1, height)):  # bounce off the borders
                out = (pos[:, d] < 0) | (pos[:, d] > lim)
                vel[out, d] *= -1
                pos[:, d] = np.clip(pos[:, d], 0, lim)
            for j in range(n_shapes):
                s = int(sizes[j])
                x0, y0 = int(pos[j, 0]) - s // 2, int(pos[j, 1]) - s // 2
                if round_[j]:
                    canvas.disk(*disks[s], x0, y0, colours[j])
                else:
                    canvas.rect(x0, y0, s, s, colours[j])
            w.write_yuv(canvas.buf)
    return [c / fps for c in cuts]


def _cctv_background(width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = np.linspace(0, 1, height, dtype=np.float32)[:, None, None]
    sky, ground = np.array([150, 170, 190], np.float32), np.array([90, 95, 85], np.float32)
    horizon = 0.45
    img = np.where(v < horizon, sky * (1 - 0.3 * v), ground * (0.8 + 0.4 * (v - horizon)))
    img = np.broadcast_to(img, (height, width, 3)).copy()
    # "buildings" along the horizon and a road
    x = 0
    while x < width:
        bw = int(rng.integers(width // 20, width // 6))
        bh = int(rng.integers(height // 10, height // 3))
        shade = rng.uniform(60, 140)
        img[int(horizon * height) - bh : int(horizon * height), x : x + bw] = (shade, shade * 0.95, shade * 0.9)
        x += bw + int(rng.integers(0, width // 30))
    img[int(0.7 * height) : int(0.85 * height)] = (70, 70, 75)
    img[int(0.77 * height) : int(0.78 * height), :: max(1, width // 16)] = (220, 220, 200)
    # fixed fine texture (constant over time: the camera does not move)
    img += rng.normal(0, 4, size=(height, width, 1)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_static_camera_video(
    path,
    seconds: float,
    size: tuple[int, int] = (1280, 720),
    fps: int = 30,
    seed: int = 0,
    keyframe_every: float | None = 1.0,
) -> list[tuple[float, float]]:
    """A fixed CCTV-like background with long perfectly still stretches (identical input frames); a
    person-sized block crosses for 3 s in each 20 s cycle (present ~15% of the time). Keyframe every
    `keyframe_every` seconds (None: the encoder's default GOP). Returns the (start, end) seconds of every
    crossing."""
    width, height = int(size[0]), int(size[1])
    rng = np.random.default_rng(seed)
    n_frames = max(1, int(round(seconds * fps)))
    cycle, crossing = 20 * fps, 3 * fps
    events: list[tuple[int, int]] = []
    for c0 in range(0, n_frames, cycle):
        start = c0 + int(rng.integers(fps, cycle - crossing))
        if start < n_frames:
            events.append((start, min(start + crossing, n_frames)))
    background = _Yuv(width, height)
    background.y[:], background.u[:], background.v[:] = _yuv_planes(_cctv_background(width, height, seed))
    canvas = _Yuv(width, height)
    mh, mw = height // 3, max(2, height // 8)
    y0 = int(0.82 * height) - mh
    colour = _rgb_to_yuv([250, 220, 80]).round()  # bright: strong luma contrast, like a hi-vis jacket
    with _Writer(path, (width, height), fps=fps, **_encoding(fps, keyframe_every)) as w:
        e = 0
        for k in range(n_frames):
            while e < len(events) and k >= events[e][1]:
                e += 1
            if e < len(events) and events[e][0] <= k:
                a, b = events[e]
                x = int(-mw + (width + mw) * (k - a) / max(1, b - a - 1))
                canvas.buf[:] = background.buf
                canvas.rect(x, y0, mw, mh, colour)
                w.write_yuv(canvas.buf)
            else:
                w.write_yuv(background.buf)
    return [(a / fps, b / fps) for a, b in events]


# --------------------------------------------------------------------------------------------- broken


def write_corrupt_video(path, size_bytes: int = 4096, seed: int = 0) -> None:
    """A file with a video name and nothing but garbage bytes."""
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        f.write(rng.integers(0, 256, size=size_bytes, dtype=np.uint8).tobytes())


def truncate_file(src, dst, fraction: float) -> int:
    """Copy the first `fraction` (0..1) of `src` to `dst`; returns the number of bytes written."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError("fraction must be in [0, 1]")
    n = int(os.path.getsize(src) * fraction)
    with open(src, "rb") as f:
        data = f.read(n)
    with open(dst, "wb") as f:
        f.write(data)
    return n
