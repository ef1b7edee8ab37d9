"""Synthetic camera video for live sessions, generated directly in YUV 4:2:0.

The content is the one ``bench/calibrate_vp8.py`` measured libvpx on (same construction, same
seed): a textured, colour-tinted background panned like a hand-held camera, a textured object
moving across a sixth of the frame, and sensor noise. Encoding the same content is what lets
the emulator's calibrated encoder model and a live session be compared. Everything expensive
is built once; a frame is a crop, one add and a clip (about 1 ms at 640x360, 4 ms at 720p).

:class:`SyntheticVideoTrack` is an aiortc ``MediaStreamTrack`` that hands out those frames in
real time at a fixed rate, like a camera: if the consumer falls more than a frame behind, the
frames it missed are skipped (and counted), not queued.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from fractions import Fraction

import numpy as np
from aiortc.mediastreams import MediaStreamTrack
from av import VideoFrame

VIDEO_CLOCK_HZ = 90_000
DEFAULT_FPS = 30.0

MARGIN_PX = 128
FINE_NOISE = 4.0
SENSOR_NOISE = 3
NOISE_PLANES = 7
CONTENT_SEED = 1


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    base = rng.normal(0.0, 1.0, (h // cell + 2, w // cell + 2))
    tex = np.kron(base, np.ones((cell, cell)))[:h, :w]
    k = np.ones(cell + 1) / (cell + 1)
    tex = np.apply_along_axis(lambda r: np.convolve(r, k, "same"), 1, tex)
    tex = np.apply_along_axis(lambda c: np.convolve(c, k, "same"), 0, tex)
    return tex / tex.std()


class SyntheticContent:
    """Deterministic camera-like frames: ``planes(i)`` is frame ``i`` as Y, U, V arrays."""

    def __init__(self, width: int, height: int, seed: int = CONTENT_SEED) -> None:
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise ValueError(f"frame size must be positive and even, got {width}x{height}")
        rng = np.random.default_rng(seed)
        self.width, self.height = width, height
        m = MARGIN_PX
        hh, ww = height + 2 * m, width + 2 * m
        yy, xx = np.mgrid[0:hh, 0:ww]
        luma = (
            120
            + 50 * np.sin(xx / (width / 7)) * np.cos(yy / (height / 5))
            + 22 * _smooth_noise(rng, hh, ww, 8)
            + 12 * _smooth_noise(rng, hh, ww, 2)
            + FINE_NOISE * rng.normal(0.0, 1.0, (hh, ww))
        )
        self._luma = np.clip(luma, 16, 235).astype(np.int16)
        cb = np.clip(128 + 18 * _smooth_noise(rng, hh // 2, ww // 2, 8), 16, 240)
        cr = np.clip(128 - 14 * _smooth_noise(rng, hh // 2, ww // 2, 8), 16, 240)
        self._cb = cb.astype(np.uint8)
        self._cr = cr.astype(np.uint8)
        ow, oh = width // 3, height // 2
        obj = (
            110
            + 60 * _smooth_noise(rng, 2 * oh, ow, 3)
            + FINE_NOISE * rng.normal(0.0, 1.0, (2 * oh, ow))
        )
        self._obj = np.clip(obj, 16, 235).astype(np.int16)
        n = SENSOR_NOISE
        self._noise = [
            rng.integers(-n, n + 1, (height, width)).astype(np.int16) for _ in range(NOISE_PLANES)
        ]
        self._y = np.empty((height, width), dtype=np.int16)

    def planes(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        w, h, m = self.width, self.height, MARGIN_PX
        ox = int(m + (m - 8) * math.sin(i / 45.0))
        oy = int(m + 0.6 * (m - 8) * math.sin(i / 61.0))
        y = self._y
        np.add(self._luma[oy : oy + h, ox : ox + w], self._noise[i % NOISE_PLANES], out=y)
        oh, ow = self._obj.shape[0] // 2, self._obj.shape[1]
        bx = int((w - ow) * (0.5 + 0.45 * math.sin(i / 17.0)))
        by = int((h - oh) * (0.5 + 0.45 * math.cos(i / 23.0)))
        s = int(oh * (0.5 + 0.5 * math.sin(i / 9.0)))
        y[by : by + oh, bx : bx + ow] = self._obj[s : s + oh]
        u = self._cb[oy // 2 : oy // 2 + h // 2, ox // 2 : ox // 2 + w // 2]
        v = self._cr[oy // 2 : oy // 2 + h // 2, ox // 2 : ox // 2 + w // 2]
        return np.clip(y, 0, 255).astype(np.uint8), u, v

    def video_frame(self, i: int, fps: float = DEFAULT_FPS) -> VideoFrame:
        """Frame ``i`` as aiortc's tracks hand frames out: 90 kHz pts."""
        frame = VideoFrame(self.width, self.height, "yuv420p")
        for plane, data in zip(frame.planes, self.planes(i), strict=True):
            if plane.line_size == data.shape[1]:
                plane.update(np.ascontiguousarray(data))
            else:  # a padded plane: copy row by row into the aligned buffer
                view = np.frombuffer(plane, dtype=np.uint8).reshape(-1, plane.line_size)
                view[: data.shape[0], : data.shape[1]] = data
        frame.pts = round(i * VIDEO_CLOCK_HZ / fps)
        frame.time_base = Fraction(1, VIDEO_CLOCK_HZ)
        return frame


class SyntheticVideoTrack(MediaStreamTrack):
    """A real-time video track of :class:`SyntheticContent`.

    ``clock_us`` is the session clock; ``on_capture(pts_90k, capture_us)`` is told when each
    frame is handed out (its capture time, for frame delay at the receiver).
    """

    kind = "video"

    def __init__(
        self,
        width: int,
        height: int,
        clock_us: Callable[[], int],
        *,
        fps: float = DEFAULT_FPS,
        on_capture: Callable[[int, int], None] | None = None,
    ) -> None:
        super().__init__()
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.content = SyntheticContent(width, height)
        self.fps = fps
        self._clock_us = clock_us
        self._on_capture = on_capture
        self._start_us: int | None = None
        self._index = 0
        self.frames_skipped = 0

    @property
    def start_us(self) -> int | None:
        """Capture time of the first frame, or None before it."""
        return self._start_us

    async def recv(self) -> VideoFrame:
        now = self._clock_us()
        if self._start_us is None:
            self._start_us = now
        frame_us = 1e6 / self.fps
        due_us = self._start_us + self._index * frame_us
        if now < due_us:
            await asyncio.sleep((due_us - now) / 1e6)
        elif now - due_us > frame_us:
            late = int((now - due_us) // frame_us)
            self._index += late
            self.frames_skipped += late
        frame = self.content.video_frame(self._index, self.fps)
        capture_us = self._clock_us()
        if self._on_capture is not None:
            self._on_capture(frame.pts, capture_us)
        self._index += 1
        return frame
