"""The video encoder as the emulator sees it: one frame size per call, calibrated on libvpx VP8.

The numbers come from ``bench/calibrate_vp8.py``, which drives libvpx VP8 with exactly the
realtime CBR settings of aiortc's ``Vp8Encoder`` and writes ``loki/data/vp8_calibration.json``.
What the model reproduces, and where each piece comes from:

* Steady state (measured): the mean frame size is ``achieved(target) / fps``, where
  ``achieved`` is libvpx's measured output rate. Below its floor (the rate at the largest allowed
  quantizer, qmax 56) libvpx cannot go lower, whatever the target. Frame sizes around the mean
  are lognormal with an AR(1) correlation of log sizes, both measured per target.
* Rate control (structure from libvpx, time constants fitted to the measured step responses):
  libvpx's one-pass CBR keeps a buffer balance in bits (``bits_off_target``, updated by
  ``per_frame_bandwidth - frame_bits`` after every frame and clipped to the maximum buffer size
  but, for camera content, never from below: vp8/encoder/onyx_if.c). Each frame's target is
  lowered by ``min(percent_low, undershoot_pct) / 200`` when the balance is under the optimal
  level and raised by ``min(percent_high, overshoot_pct) / 200`` when above, the percentages
  being the distance to the optimal level in per cent of it (vp8/encoder/ratectrl.c,
  ``calc_pframe_target_size``). A new target rescales the optimal and maximum levels and clips
  the balance to the new maximum (``vp8_change_config``). The quantizer then follows the frame
  target with a lag: a first-order tracking with the fitted ``tau_up_ms`` / ``tau_down_ms``.
  Together these give what libvpx measurably does: a raised target is reached only after the
  (now larger) optimal buffer is filled, a cut target briefly overshoots, a keyframe is paid back
  by smaller frames, and a long spell below the floor leaves a debt that keeps the output at half
  the target for seconds after the target rises again.
* Keyframes (measured): the first one after an open and later ones (periodic or requested) are
  multiples of the current mean frame, and the frames that follow them are shaped by a measured
  per-frame profile (above the floor libvpx pays a keyframe back with smaller frames; at the
  floor the frames after it are larger, so a keyframe there costs 1.3-2 times its own extra).
  Each is interpolated over the target. The profile already holds libvpx's payback, so the
  buffer is charged only the net cost of keyframe plus profile, once, when the keyframe is made.
* Reconfiguration: ``retarget="live"`` changes the target on the open encoder
  (``vpx_codec_enc_config_set``, as libwebrtc's ``LibvpxVp8Encoder::SetRates`` does);
  ``retarget="reopen"`` is aiortc 1.16: a target more than 10 % away from the rate the encoder
  was opened with throws the encoder away and opens a new one, which starts with a keyframe and
  a fresh buffer (aiortc/codecs/vpx.py, ``Vp8Encoder.encode``).

* Frame dropping (``drop_frames=True``, libwebrtc's default for camera video, which sets
  ``rc_dropframe_thresh = 30`` in ``LibvpxVp8Encoder``; aiortc leaves it off): libvpx's
  one-pass CBR decimation (vp8/encoder/onyx_if.c): with the balance under the drop mark
  (30 % of the optimal level) the encoder drops 1, 2 or 3 of every 2, 3 or 4 frames as the
  balance falls under 75, 50 and 25 % of the mark, and each dropped frame refills the balance
  by one frame's budget. On top, as libwebrtc's ``VideoStreamEncoder`` frame dropper does for
  an encoder that cannot meet its target, every frame is dropped while the debt exceeds
  :data:`MAX_DEBT_S` of the target; this is what lets a sender follow a target below libvpx's
  floor, at a lower frame rate, instead of queueing seconds of video. :meth:`encode` returns a
  size of 0 for a dropped frame.

Cost: a handful of float operations per call; random numbers are drawn in blocks.
"""

from __future__ import annotations

import bisect
import functools
import json
import math
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

import numpy as np

#: The calibration file, inside the ``loki`` package.
CALIBRATION_RESOURCE = "data/vp8_calibration.json"
DEFAULT_RESOLUTION = "640x360"
#: aiortc's ``DEFAULT_BITRATE``: the rate an encoder opens with when nobody set a target.
DEFAULT_INITIAL_TARGET_BPS = 500_000
#: aiortc reopens the encoder when the target moves more than this fraction from the open rate.
REOPEN_THRESHOLD = 0.1
#: A table entry whose output exceeds its target by more than this is limited by the floor.
FLOOR_LIMITED_RATIO = 1.02
#: A VP8 inter frame with every macroblock skipped still has headers; no frame is smaller.
MIN_FRAME_BYTES = 20
#: libwebrtc's ``rc_dropframe_thresh`` for VP8: the drop mark in per cent of the optimal level.
DROP_FRAMES_WATER_MARK_PCT = 30
#: A debt deeper than this many seconds of the target drops every frame.
MAX_DEBT_S = 0.5
#: Standard normals drawn per refill of the noise buffer.
NOISE_BLOCK = 4096

Retarget = Literal["live", "reopen"]


@dataclass(frozen=True, slots=True)
class EncoderCalibration:
    """The measured behaviour of libvpx VP8 at one resolution (one entry of the JSON file).

    Per-target tables are sorted by ``target_bps`` and interpolated over log(target).
    """

    resolution: str
    target_bps: tuple[float, ...]
    achieved_bps: tuple[float, ...]
    log_sigma: tuple[float, ...]
    log_acf1: tuple[float, ...]
    keyframe_ratio: tuple[float, ...]
    first_keyframe_ratio: tuple[float, ...]
    #: Per target: sizes of the frames after a keyframe, relative to the mean frame.
    post_keyframe_profile: tuple[tuple[float, ...], ...]
    #: Per target: sizes of the frames after the opening keyframe, relative to the mean frame.
    post_open_profile: tuple[tuple[float, ...], ...]
    keyframe_log_sigma: float
    floor_bps: float
    buffer_initial_s: float
    buffer_optimal_s: float
    buffer_max_s: float
    undershoot_pct: float
    overshoot_pct: float
    tau_up_ms: float
    tau_down_ms: float

    def __post_init__(self) -> None:
        n = len(self.target_bps)
        tables = (
            self.achieved_bps,
            self.log_sigma,
            self.log_acf1,
            self.keyframe_ratio,
            self.first_keyframe_ratio,
            self.post_keyframe_profile,
            self.post_open_profile,
        )
        if n < 2 or any(len(t) != n for t in tables):
            raise ValueError("EncoderCalibration: per-target tables must share a length >= 2")
        for profiles in (self.post_keyframe_profile, self.post_open_profile):
            if len({len(p) for p in profiles}) != 1:
                raise ValueError("EncoderCalibration: profiles must share a length")
        if list(self.target_bps) != sorted(self.target_bps) or self.target_bps[0] <= 0:
            raise ValueError("EncoderCalibration: target_bps must be positive and sorted")
        if not any(
            a <= t * FLOOR_LIMITED_RATIO
            for t, a in zip(self.target_bps, self.achieved_bps, strict=True)
        ):
            raise ValueError("EncoderCalibration: every entry is floor-limited")
        if self.tau_up_ms <= 0 or self.tau_down_ms <= 0:
            raise ValueError("EncoderCalibration: time constants must be > 0")

    @classmethod
    def from_dict(cls, data: dict[str, Any], resolution: str) -> EncoderCalibration:
        """Build from the parsed calibration JSON (the whole file) for one resolution."""
        try:
            res = data["resolutions"][resolution]
        except KeyError:
            known = ", ".join(sorted(data.get("resolutions", {})))
            raise ValueError(f"no calibration for {resolution!r} (have: {known})") from None
        rc = data["rc_settings"]
        steady = sorted(res["steady"], key=lambda p: p["target_bps"])
        model = res["model"]

        def col(name: str) -> tuple[float, ...]:
            return tuple(float(p[name]) for p in steady)

        def profiles(name: str) -> tuple[tuple[float, ...], ...]:
            return tuple(tuple(float(v) for v in p[name]) for p in steady)

        return cls(
            resolution=resolution,
            target_bps=col("target_bps"),
            achieved_bps=col("achieved_bps"),
            log_sigma=col("delta_log_sigma"),
            log_acf1=col("delta_log_acf1"),
            keyframe_ratio=col("keyframe_ratio"),
            first_keyframe_ratio=col("first_keyframe_ratio"),
            post_keyframe_profile=profiles("post_keyframe_profile"),
            post_open_profile=profiles("post_open_profile"),
            keyframe_log_sigma=float(res["keyframe_log_sigma"]),
            floor_bps=float(res["floor_bps"]),
            buffer_initial_s=float(rc["buffer_initial_ms"]) / 1000.0,
            buffer_optimal_s=float(rc["buffer_optimal_ms"]) / 1000.0,
            buffer_max_s=float(rc["buffer_max_ms"]) / 1000.0,
            undershoot_pct=float(rc["undershoot_pct"]),
            overshoot_pct=float(rc["overshoot_pct"]),
            tau_up_ms=float(model["tau_up_ms"]),
            tau_down_ms=float(model["tau_down_ms"]),
        )

    @classmethod
    def load(cls, resolution: str = DEFAULT_RESOLUTION) -> EncoderCalibration:
        """The committed calibration (``loki/data/vp8_calibration.json``) for ``resolution``."""
        return _load_default(resolution)

    def interpolate(self, target_bps: float) -> dict[str, Any]:
        """Every per-target figure at ``target_bps`` (log-linear; clamped at the table's ends).

        The output rate is the target times libvpx's achieved/target ratio, interpolated only
        between targets it could meet, and never below the floor: interpolating the
        floor-limited entries themselves would put a false ramp between the floor and the first
        target above it.
        """
        return _TargetTables(self).figures(target_bps)


class _TargetTables:
    """A calibration's tables over log(target), prepared once: an encoder looks its figures up
    at every target change (hundreds of times a minute under GCC), so the logarithms and the
    list of entries libvpx could meet are not rebuilt each time."""

    __slots__ = ("cal", "met_ratios", "met_xs", "xs")

    def __init__(self, cal: EncoderCalibration) -> None:
        self.cal = cal
        self.xs = [math.log(t) for t in cal.target_bps]
        met = [
            (math.log(t), a / t)
            for t, a in zip(cal.target_bps, cal.achieved_bps, strict=True)
            if a <= t * FLOOR_LIMITED_RATIO
        ]
        self.met_xs = [m[0] for m in met]
        self.met_ratios = [m[1] for m in met]

    def position(self, target_bps: float) -> tuple[float, int, float]:
        """log(target), the table entry below it and the weight of the one above."""
        x = math.log(max(target_bps, 1.0))
        xs = self.xs
        i = bisect.bisect_right(xs, x) - 1
        if i < 0:
            i, w = 0, 0.0
        elif i >= len(xs) - 1:
            i, w = len(xs) - 2, 1.0
        else:
            w = (x - xs[i]) / (xs[i + 1] - xs[i])
        return x, i, w

    def achieved_bps(self, target_bps: float, x: float) -> float:
        met_xs = self.met_xs
        met_ratios = self.met_ratios
        k = bisect.bisect_right(met_xs, x) - 1
        if k < 0:
            ratio = met_ratios[0]
        elif k >= len(met_xs) - 1:
            ratio = met_ratios[-1]
        else:
            x0, x1 = met_xs[k], met_xs[k + 1]
            r0, r1 = met_ratios[k], met_ratios[k + 1]
            ratio = r0 + (x - x0) / (x1 - x0) * (r1 - r0)
        return max(target_bps * ratio, self.cal.floor_bps)

    @staticmethod
    def at(table: tuple[float, ...], i: int, w: float) -> float:
        return table[i] + w * (table[i + 1] - table[i])

    @staticmethod
    def profile_at(table: tuple[tuple[float, ...], ...], i: int, w: float) -> list[float]:
        return [a + w * (b - a) for a, b in zip(table[i], table[i + 1], strict=True)]

    def figures(self, target_bps: float) -> dict[str, Any]:
        cal = self.cal
        x, i, w = self.position(target_bps)
        at = self.at
        return {
            "achieved_bps": self.achieved_bps(target_bps, x),
            "log_sigma": at(cal.log_sigma, i, w),
            "log_acf1": min(max(at(cal.log_acf1, i, w), -0.99), 0.99),
            "keyframe_ratio": at(cal.keyframe_ratio, i, w),
            "first_keyframe_ratio": at(cal.first_keyframe_ratio, i, w),
            "post_keyframe_profile": self.profile_at(cal.post_keyframe_profile, i, w),
            "post_open_profile": self.profile_at(cal.post_open_profile, i, w),
        }


@functools.lru_cache(maxsize=1)
def _calibration_json() -> dict[str, Any]:
    text = resources.files("loki").joinpath(CALIBRATION_RESOURCE).read_text(encoding="utf-8")
    return json.loads(text)


@functools.lru_cache(maxsize=8)
def _load_default(resolution: str) -> EncoderCalibration:
    return EncoderCalibration.from_dict(_calibration_json(), resolution)


class VideoEncoderModel:
    """Frame sizes of a libvpx VP8 realtime CBR encoder following a changing target.

    Call :meth:`set_target` whenever the controller's target changes, :meth:`encode` once per
    captured frame, :meth:`request_keyframe` on a PLI. ``keyframe_interval_s`` of 0 means
    keyframes only on open and on request (aiortc's ``gop_size`` of 3000 frames is 100 s).
    ``noise=False`` gives the expected size of every frame, for tests and for fitting.
    """

    def __init__(
        self,
        calibration: EncoderCalibration | None = None,
        fps: float = 30.0,
        keyframe_interval_s: float = 0.0,
        seed: int = 0,
        *,
        resolution: str = DEFAULT_RESOLUTION,
        initial_target_bps: float = DEFAULT_INITIAL_TARGET_BPS,
        retarget: Retarget = "live",
        noise: bool = True,
        drop_frames: bool = True,
    ) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        if keyframe_interval_s < 0:
            raise ValueError(f"keyframe_interval_s must be >= 0, got {keyframe_interval_s}")
        if retarget not in ("live", "reopen"):
            raise ValueError(f"retarget must be 'live' or 'reopen', got {retarget!r}")
        if not initial_target_bps > 0:
            raise ValueError(f"initial_target_bps must be > 0, got {initial_target_bps}")
        self.calibration = calibration or EncoderCalibration.load(resolution)
        cal = self.calibration
        self._tables = _TargetTables(cal)
        self.fps = float(fps)
        self.retarget: Retarget = retarget
        self._frame_ms = 1000.0 / self.fps
        self._key_every_frames = (
            max(1, round(keyframe_interval_s * self.fps)) if keyframe_interval_s > 0 else 0
        )
        self._noise = noise
        self._drop_frames = drop_frames
        self._decimation_factor = 0
        self._decimation_count = 0
        self.frames_dropped = 0
        self._rng = np.random.default_rng(seed)
        self._normals: list[float] = []
        self._next_normal = 0
        self._z = 0.0
        self._floor_bps = cal.floor_bps
        self._under = cal.undershoot_pct / 100.0
        self._over = cal.overshoot_pct / 100.0
        self._key_sigma = cal.keyframe_log_sigma if noise else 0.0
        # First-order gains, cached for the frame interval they were computed for.
        self._alpha_dt_ms = -1.0
        self._alpha_up = 0.0
        self._alpha_down = 0.0

        self._open_bps = float(initial_target_bps)
        self._apply_target(self._open_bps)
        self._opened = False
        self._reopen_pending = False
        self._key_requested = False
        self._frames_since_key = 0
        self._last_ms: float | None = None
        self._buffer_bits = 0.0
        self._level_bps = self._achieved_bps
        # Multipliers for the frames after a keyframe; consumed one per frame.
        self._profile: list[float] = []
        self._profile_pos = 0

    # -- the public calls ------------------------------------------------------------------
    @property
    def target_bps(self) -> float:
        """The target the encoder runs at (in reopen mode, the rate it was last opened with)."""
        return self._open_bps

    @property
    def level_bps(self) -> float:
        """The rate the encoder's quantizer currently produces, before per-frame variation."""
        return self._level_bps

    @property
    def buffer_bits(self) -> float:
        """libvpx's buffer balance (``bits_off_target``); negative is a debt."""
        return self._buffer_bits

    def set_target(self, target_bps: float, at_ms: float) -> None:
        """The controller's new target; takes effect from the next encoded frame.

        ``at_ms`` is part of the emulator's interface; the rate controller itself reacts per
        frame, as libvpx does, so the time of the change does not enter the model.
        """
        del at_ms
        if not target_bps > 0:
            raise ValueError(f"target_bps must be > 0, got {target_bps}")
        target_bps = float(target_bps)
        if self.retarget == "reopen" and self._opened:
            # aiortc opens lazily at whatever target is set, then reopens on a > 10 % change.
            if abs(target_bps - self._open_bps) / self._open_bps > REOPEN_THRESHOLD:
                self._open_bps = target_bps
                self._apply_target(target_bps)
                self._reopen_pending = True
            return
        self._open_bps = target_bps
        self._apply_target(target_bps)
        if self._buffer_bits > self._max_bits:
            self._buffer_bits = self._max_bits

    def request_keyframe(self) -> None:
        """A PLI/FIR: the next frame is a keyframe."""
        self._key_requested = True

    def encode(self, at_ms: float) -> tuple[int, bool]:
        """Encode the frame captured at ``at_ms``; returns its size in bytes and keyframe flag."""
        if not self._opened or self._reopen_pending:
            return self._open(at_ms)
        dt_ms = self._frame_ms if self._last_ms is None else at_ms - self._last_ms
        if dt_ms <= 0:
            dt_ms = self._frame_ms
        self._last_ms = at_ms
        if dt_ms != self._alpha_dt_ms:
            cal = self.calibration
            self._alpha_dt_ms = dt_ms
            self._alpha_up = 1.0 - math.exp(-dt_ms / cal.tau_up_ms)
            self._alpha_down = 1.0 - math.exp(-dt_ms / cal.tau_down_ms)

        # libvpx's frame target: per-frame bandwidth scaled by the buffer's distance to optimal
        # (the distance bounded by -undershoot and overshoot).
        optimal = self._optimal_bits
        dev = (self._buffer_bits - optimal) / optimal
        if dev < 0.0:
            bound = -self._under
            scale = 1.0 + 0.5 * (bound if bound > dev else dev)
        else:
            bound = self._over
            scale = 1.0 + 0.5 * (bound if bound < dev else dev)
        goal_bps = self._achieved_bps * scale
        if goal_bps < self._floor_bps:
            goal_bps = self._floor_bps
        level = self._level_bps
        if goal_bps > level:
            level += (goal_bps - level) * self._alpha_up
        else:
            level += (goal_bps - level) * self._alpha_down
        self._level_bps = level
        mean_bytes = level / (8.0 * self.fps)

        if self._drop_frames and not self._key_requested and self._should_drop():
            self.frames_dropped += 1
            balance = self._buffer_bits + self._drain_bits_per_frame
            self._buffer_bits = balance if balance < self._max_bits else self._max_bits
            return 0, False
        self._frames_since_key += 1
        if self._key_requested or (
            self._key_every_frames and self._frames_since_key >= self._key_every_frames
        ):
            cal = self.calibration
            return self._keyframe(
                mean_bytes,
                self._at_target(cal.keyframe_ratio),
                self._profile_at_target(cal.post_keyframe_profile),
            )
        size = mean_bytes * self._delta_noise()
        shape = 1.0
        if self._profile_pos < len(self._profile):
            shape = self._profile[self._profile_pos]
            self._profile_pos += 1
        return self._emit(size * shape, size)

    # -- internals -------------------------------------------------------------------------
    def _should_drop(self) -> bool:
        """libvpx's decimation plus libwebrtc's drop-while-deep-in-debt (module docstring)."""
        level = self._buffer_bits
        if level < -MAX_DEBT_S * self._open_bps:
            return True
        mark = self._optimal_bits * DROP_FRAMES_WATER_MARK_PCT / 100.0
        f = self._decimation_factor
        if level > 0.75 * mark and f > 0:
            f -= 1
        elif level > mark and f == 0:
            pass
        elif level < 0.25 * mark and f in (2, 3):
            f = 3
        elif level < 0.5 * mark and f in (1, 2):
            f = 2
        elif level < 0.75 * mark and f in (0, 1):
            f = 1
        self._decimation_factor = f
        if f == 0:
            self._decimation_count = 0
            return False
        if self._decimation_count > 0:
            self._decimation_count -= 1
            return True
        self._decimation_count = f
        return False

    def _apply_target(self, target_bps: float) -> None:
        """Per-target figures, looked up once per target change rather than per frame.

        The keyframe figures are only needed at a keyframe: their table position is kept and
        they are interpolated then (:meth:`_at_target`, :meth:`_profile_at_target`).
        """
        cal = self.calibration
        tables = self._tables
        x, i, w = tables.position(target_bps)
        at = tables.at
        self._achieved_bps = tables.achieved_bps(target_bps, x)
        # libvpx drains the buffer at the target; above the floor it settles at its own
        # measured achieved rate, so that is the drain there (no slow drift of the balance).
        self._drain_bits_per_frame = min(target_bps, self._achieved_bps) / self.fps
        self._sigma = at(cal.log_sigma, i, w) if self._noise else 0.0
        self._rho = min(max(at(cal.log_acf1, i, w), -0.99), 0.99)
        self._innovation = math.sqrt(1.0 - self._rho * self._rho)
        self._half_var = 0.5 * self._sigma * self._sigma
        self._table_pos = (i, w)
        self._optimal_bits = cal.buffer_optimal_s * target_bps
        self._max_bits = cal.buffer_max_s * target_bps

    def _at_target(self, table: tuple[float, ...]) -> float:
        """A per-target keyframe figure at the current target."""
        i, w = self._table_pos
        return _TargetTables.at(table, i, w)

    def _profile_at_target(self, table: tuple[tuple[float, ...], ...]) -> list[float]:
        """A keyframe profile (post-keyframe or post-open) at the current target."""
        i, w = self._table_pos
        return _TargetTables.profile_at(table, i, w)

    def _open(self, at_ms: float) -> tuple[int, bool]:
        """A fresh libvpx encoder: initial buffer, quantizer at the target, keyframe first."""
        self._opened = True
        self._reopen_pending = False
        self._last_ms = at_ms
        self._buffer_bits = self.calibration.buffer_initial_s * self._open_bps
        self._level_bps = self._achieved_bps
        self._z = 0.0
        mean_bytes = self._achieved_bps / (8.0 * self.fps)
        cal = self.calibration
        return self._keyframe(
            mean_bytes,
            self._at_target(cal.first_keyframe_ratio),
            self._profile_at_target(cal.post_open_profile),
        )

    def _keyframe(self, mean_bytes: float, ratio: float, profile: list[float]) -> tuple[int, bool]:
        """Emit a keyframe and arm the profile of the frames after it.

        The buffer is charged the net extra of keyframe plus profile now; the keyframe and the
        profiled frames are then accounted as ordinary frames, so the payback already in the
        measured profile is not paid a second time by the rate controller.
        """
        extra = ratio - 1.0 + sum(profile) - len(profile)
        self._buffer_bits -= 8.0 * mean_bytes * extra
        self._profile = profile
        self._profile_pos = 0
        self._key_requested = False
        self._frames_since_key = 0
        return self._emit(mean_bytes * ratio * self._key_noise(), mean_bytes, True)

    def _emit(self, size: float, charged: float, is_key: bool = False) -> tuple[int, bool]:
        """Round and bound the size; settle the buffer with ``charged`` bytes."""
        size_bytes = int(size + 0.5)
        if size_bytes < MIN_FRAME_BYTES:
            size_bytes = MIN_FRAME_BYTES
        balance = self._buffer_bits + self._drain_bits_per_frame - 8.0 * charged
        self._buffer_bits = balance if balance < self._max_bits else self._max_bits
        return size_bytes, is_key

    def _normal(self) -> float:
        i = self._next_normal
        normals = self._normals
        if i >= len(normals):
            normals = self._normals = self._rng.standard_normal(NOISE_BLOCK).tolist()
            i = 0
        self._next_normal = i + 1
        return normals[i]

    def _delta_noise(self) -> float:
        """Lognormal factor with mean 1 whose log follows an AR(1) process."""
        if not self._noise:
            return 1.0
        z = self._rho * self._z + self._innovation * self._normal()
        self._z = z
        return math.exp(self._sigma * z - self._half_var)

    def _key_noise(self) -> float:
        if not self._noise:
            return 1.0
        s = self._key_sigma
        return math.exp(s * self._normal() - 0.5 * s * s)
