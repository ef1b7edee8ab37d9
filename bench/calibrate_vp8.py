"""Measure libvpx VP8 as aiortc drives it, and write the encoder model's calibration.

    python bench/calibrate_vp8.py --out loki/data/vp8_calibration.json

What is measured, per resolution (640x360 and 1280x720 at 30 fps):

* steady state, for each target: achieved rate, delta-frame size distribution (mean ratio, CV,
  lognormal sigma, autocorrelation of log sizes), keyframe sizes (the first after open and forced
  ones mid-stream) relative to the mean delta frame, and the frames that follow a keyframe;
* the floor: what libvpx produces at the largest quantizer aiortc allows (qmax 56), probed with a
  target far below it;
* the response to a target change made on the open encoder (``vpx_codec_enc_config_set``, as
  libwebrtc's ``LibvpxVp8Encoder::SetRates`` does): steps up and down, a long spell below the
  floor followed by a step up, and a GCC-like sawtooth used only to validate the fitted model.

The encoder settings are aiortc 1.16's ``Vp8Encoder`` (aiortc/codecs/vpx.py) as FFmpeg's
libvpxenc turns them into a ``vpx_codec_enc_cfg``. PyAV cannot change the target of an open
libvpx context (setting ``bit_rate`` is ignored; checked below and recorded), so libvpx itself is
driven through ctypes: the very library PyAV bundles, with the configuration FFmpeg would build.
Before anything else the script checks that this path produces byte-identical frame sizes to
aiortc's own encoder, including aiortc's reopen on a target change.

The synthetic content is generated directly in YUV: a textured, colour-tinted background panned
like a hand-held camera (speed varying over seconds), a textured object moving and changing
across a sixth of the frame, and sensor noise. It is deterministic in the frame index.

Output: a small JSON file with the figures, the fitted time constants of
``loki.emu.encoder.VideoEncoderModel`` and metadata. Runtime: about 2 minutes on one core.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import datetime
import json
import math
import os
import platform
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loki.emu.encoder import EncoderCalibration, VideoEncoderModel
from rtc.libvpx import (
    CFG_OFFSETS,
    CTX_BYTES,
    IMG_BYTES,
    VP8E_SET_CPUUSED,
    VP8E_SET_NOISE_SENSITIVITY,
    VP8E_SET_STATIC_THRESHOLD,
    VP8E_SET_TOKEN_PARTITIONS,
    VPX_CBR,
    VPX_CODEC_CX_FRAME_PKT,
    VPX_DL_REALTIME,
    VPX_EFLAG_FORCE_KF,
    VPX_FRAME_IS_KEY,
    VPX_IMG_FMT_I420,
    Libvpx,
    load_libvpx,
)

FPS = 30
FRAME_MS = 1000.0 / FPS
#: aiortc's video clock (VIDEO_CLOCK_RATE) and per-frame step (VIDEO_PTIME * clock).
VIDEO_CLOCK_HZ = 90_000
PTS_STEP_90K = 3000

# aiortc 1.16 Vp8Encoder settings (aiortc/codecs/vpx.py) and what FFmpeg's libvpxenc makes of
# them: bufsize = bitrate -> rc_buf_sz = 1000 ms; rc_buf_optimal_sz = 5/6 of it; avcodec_open2
# sets rc_initial_buffer_occupancy to 3/4 of bufsize -> rc_buf_initial_sz = 750 ms;
# minrate = maxrate = bitrate -> CBR. PyAV opens the context with time base 1/1e6 (no framerate
# set) and libvpxenc passes a duration of 1 tick.
RC_SETTINGS: dict[str, Any] = {
    "end_usage": "CBR",
    "deadline": "realtime",
    "cpu_used": -6,
    "lag_in_frames": 0,
    "min_quantizer": 2,
    "max_quantizer": 56,
    "undershoot_pct": 100,
    "overshoot_pct": 15,
    "buffer_max_ms": 1000,
    "buffer_optimal_ms": 833,
    "buffer_initial_ms": 750,
    "noise_sensitivity": 4,
    "static_threshold": 1,
    "token_partitions": 1,
    "kf_max_dist": 3000,
    "threads": 1,
    "timebase": "1/1000000",
    "frame_drop": "off",
}

RESOLUTIONS = ((640, 360), (1280, 720))
#: Steady-state targets; the lowest is a floor probe, far below what libvpx can reach.
STEADY_KBPS = (50, 150, 300, 600, 1200, 2400, 4000)
#: Target steps on the open encoder: (from kbps, to kbps), chosen above each floor.
STEPS_KBPS = {
    "640x360": ((600, 2400), (2400, 600), (1200, 1500), (1500, 1200)),
    "1280x720": ((1500, 4000), (4000, 1500), (2400, 3000), (3000, 2400)),
}
#: A long spell far below the floor, then a step up: (from kbps, to kbps).
DEBT_KBPS = {"640x360": (150, 1200), "1280x720": (300, 3000)}
#: Start of the GCC-like sawtooth used to validate the model.
RAMP_START_KBPS = {"640x360": 500, "1280x720": 1500}

# Frame windows (frames at 30 fps).
WARMUP_FRAMES = 60
STEADY_END_FRAME = 450
KEY_PROBE_FRAMES = (450, 540, 630)
STEADY_TOTAL_FRAMES = 720
KEY_PROFILE_FRAMES = 45
OPEN_PROFILE_FRAMES = WARMUP_FRAMES - 1
STEP_AT_FRAME = 150
STEP_AFTER_FRAMES = 210
DEBT_HOLD_FRAMES = 300
TAIL_FRAMES = 60
SMOOTH_FRAMES = 15
SETTLE_BAND = 0.15
FIT_BLOCK_FRAMES = 10
TAU_GRID_MS = (33, 67, 100, 150, 200, 300, 450, 700, 1000, 1500, 2200, 3300)


def log(msg: str) -> None:
    print(msg, flush=True)


# -- content ---------------------------------------------------------------------------------
def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    base = rng.normal(0.0, 1.0, (h // cell + 2, w // cell + 2))
    tex = np.kron(base, np.ones((cell, cell)))[:h, :w]
    k = np.ones(cell + 1) / (cell + 1)
    tex = np.apply_along_axis(lambda r: np.convolve(r, k, "same"), 1, tex)
    tex = np.apply_along_axis(lambda c: np.convolve(c, k, "same"), 0, tex)
    return tex / tex.std()


class SyntheticContent:
    """Deterministic camera-like YUV 4:2:0 frames, built once and cropped per frame (fast)."""

    MARGIN = 128
    FINE_NOISE = 4.0
    SENSOR_NOISE = 3
    NOISE_PLANES = 7

    def __init__(self, width: int, height: int, seed: int = 1) -> None:
        rng = np.random.default_rng(seed)
        self.width, self.height = width, height
        m = self.MARGIN
        hh, ww = height + 2 * m, width + 2 * m
        yy, xx = np.mgrid[0:hh, 0:ww]
        luma = (
            120
            + 50 * np.sin(xx / (width / 7)) * np.cos(yy / (height / 5))
            + 22 * _smooth_noise(rng, hh, ww, 8)
            + 12 * _smooth_noise(rng, hh, ww, 2)
            + self.FINE_NOISE * rng.normal(0.0, 1.0, (hh, ww))
        )
        self.luma = np.clip(luma, 16, 235).astype(np.int16)
        self.cb = np.clip(128 + 18 * _smooth_noise(rng, hh // 2, ww // 2, 8), 16, 240)
        self.cr = np.clip(128 - 14 * _smooth_noise(rng, hh // 2, ww // 2, 8), 16, 240)
        self.cb = self.cb.astype(np.uint8)
        self.cr = self.cr.astype(np.uint8)
        ow, oh = width // 3, height // 2
        obj = (
            110
            + 60 * _smooth_noise(rng, 2 * oh, ow, 3)
            + self.FINE_NOISE * rng.normal(0.0, 1.0, (2 * oh, ow))
        )
        self.obj = np.clip(obj, 16, 235).astype(np.int16)
        n = self.SENSOR_NOISE
        self.noise = [
            rng.integers(-n, n + 1, (height, width)).astype(np.int16)
            for _ in range(self.NOISE_PLANES)
        ]

    def planes(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        w, h, m = self.width, self.height, self.MARGIN
        ox = int(m + (m - 8) * math.sin(i / 45.0))
        oy = int(m + 0.6 * (m - 8) * math.sin(i / 61.0))
        y = self.luma[oy : oy + h, ox : ox + w] + self.noise[i % self.NOISE_PLANES]
        oh, ow = self.obj.shape[0] // 2, self.obj.shape[1]
        bx = int((w - ow) * (0.5 + 0.45 * math.sin(i / 17.0)))
        by = int((h - oh) * (0.5 + 0.45 * math.cos(i / 23.0)))
        s = int(oh * (0.5 + 0.5 * math.sin(i / 9.0)))
        y[by : by + oh, bx : bx + ow] = self.obj[s : s + oh]
        u = self.cb[oy // 2 : oy // 2 + h // 2, ox // 2 : ox // 2 + w // 2]
        v = self.cr[oy // 2 : oy // 2 + h // 2, ox // 2 : ox // 2 + w // 2]
        return np.clip(y, 0, 255).astype(np.uint8), u, v

    def i420(self, i: int) -> np.ndarray:
        y, u, v = self.planes(i)
        return np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)])

    def video_frame(self, i: int):
        """The same frame as aiortc's VideoStreamTrack would hand it: 90 kHz pts."""
        import av

        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        for plane, data in zip(frame.planes, self.planes(i), strict=True):
            plane.update(np.ascontiguousarray(data))
        frame.pts = i * PTS_STEP_90K
        frame.time_base = Fraction(1, VIDEO_CLOCK_HZ)
        return frame


def pts_us(i: int) -> int:
    """PyAV's rescale of a 90 kHz pts to the codec's 1/1e6 time base (round half up)."""
    return (2 * i * PTS_STEP_90K * 1_000_000 // VIDEO_CLOCK_HZ + 1) // 2


# -- libvpx through ctypes -------------------------------------------------------------------
class Vp8Encoder:
    """One libvpx VP8 encoder configured as aiortc's (through FFmpeg) would be."""

    def __init__(self, vpx: Libvpx, width: int, height: int, target_kbps: int) -> None:
        self.vpx = vpx
        self.width, self.height = width, height
        self.cfg = vpx.default_cfg()
        rc = RC_SETTINGS
        for name, value in (
            ("g_w", width),
            ("g_h", height),
            ("g_timebase_num", 1),
            ("g_timebase_den", 1_000_000),
            ("g_threads", rc["threads"]),
            ("g_lag_in_frames", rc["lag_in_frames"]),
            ("rc_end_usage", VPX_CBR),
            ("rc_target_bitrate", target_kbps),
            ("rc_min_quantizer", rc["min_quantizer"]),
            ("rc_max_quantizer", rc["max_quantizer"]),
            ("rc_undershoot_pct", rc["undershoot_pct"]),
            ("rc_overshoot_pct", rc["overshoot_pct"]),
            ("rc_buf_sz", rc["buffer_max_ms"]),
            ("rc_buf_initial_sz", rc["buffer_initial_ms"]),
            ("rc_buf_optimal_sz", rc["buffer_optimal_ms"]),
            ("kf_max_dist", rc["kf_max_dist"]),
        ):
            self.cfg[CFG_OFFSETS[name] // 4] = value
        self.ctx = (ctypes.c_uint8 * CTX_BYTES)()
        lib = vpx.lib
        if lib.vpx_codec_enc_init_ver(self.ctx, vpx.iface, self.cfg, 0, vpx.abi_version) != 0:
            raise RuntimeError("vpx_codec_enc_init failed")
        for control, value in (
            (VP8E_SET_CPUUSED, rc["cpu_used"]),
            (VP8E_SET_NOISE_SENSITIVITY, rc["noise_sensitivity"]),
            (VP8E_SET_STATIC_THRESHOLD, rc["static_threshold"]),
            (VP8E_SET_TOKEN_PARTITIONS, 0),  # VP8_ONE_TOKENPARTITION
        ):
            if lib.vpx_codec_control_(self.ctx, control, value) != 0:
                raise RuntimeError(f"vpx_codec_control {control} failed")
        self.img = (ctypes.c_uint8 * IMG_BYTES)()
        self._iter = ctypes.c_void_p(0)

    def set_target_kbps(self, target_kbps: int) -> None:
        """Change the target on the open encoder, as libwebrtc does on every rate update."""
        self.cfg[CFG_OFFSETS["rc_target_bitrate"] // 4] = target_kbps
        if self.vpx.lib.vpx_codec_enc_config_set(self.ctx, self.cfg) != 0:
            raise RuntimeError("vpx_codec_enc_config_set failed")

    def encode(self, i420: np.ndarray, pts: int, force_key: bool = False) -> tuple[int, bool]:
        lib = self.vpx.lib
        lib.vpx_img_wrap(self.img, VPX_IMG_FMT_I420, self.width, self.height, 1, i420.ctypes.data)
        flags = VPX_EFLAG_FORCE_KF if force_key else 0
        if lib.vpx_codec_encode(self.ctx, self.img, pts, 1, flags, VPX_DL_REALTIME) != 0:
            raise RuntimeError("vpx_codec_encode failed")
        self._iter.value = None
        size, is_key = 0, False
        while True:
            pkt = lib.vpx_codec_get_cx_data(self.ctx, ctypes.byref(self._iter))
            if not pkt:
                break
            if pkt.contents.kind == VPX_CODEC_CX_FRAME_PKT:
                size += pkt.contents.frame.sz
                is_key |= bool(pkt.contents.frame.flags & VPX_FRAME_IS_KEY)
        return size, is_key

    def close(self) -> None:
        self.vpx.lib.vpx_codec_destroy(self.ctx)


# -- runs ------------------------------------------------------------------------------------
@dataclasses.dataclass
class Run:
    """Per-frame sizes of one encoder run, with what was done to the encoder and when."""

    sizes: np.ndarray
    keys: np.ndarray
    #: (frame index, target kbps) for every target set, the first being the open.
    targets: list[tuple[int, int]]
    key_requests: list[int]
    seconds: float


def encode_run(
    vpx: Libvpx,
    content: SyntheticContent,
    schedule: dict[int, int],
    n_frames: int,
    key_requests: tuple[int, ...] = (),
) -> Run:
    """Open at ``schedule[0]`` kbps and change the target on the open encoder per schedule."""
    t0 = time.perf_counter()
    enc = Vp8Encoder(vpx, content.width, content.height, schedule[0])
    sizes = np.zeros(n_frames)
    keys = np.zeros(n_frames, dtype=bool)
    for i in range(n_frames):
        if i and i in schedule:
            enc.set_target_kbps(schedule[i])
        sizes[i], keys[i] = enc.encode(content.i420(i), pts_us(i), i in key_requests)
    enc.close()
    return Run(
        sizes,
        keys,
        sorted(schedule.items()),
        list(key_requests),
        time.perf_counter() - t0,
    )


def check_aiortc_equivalence(vpx: Libvpx, content: SyntheticContent) -> dict[str, Any]:
    """aiortc's own Vp8Encoder against the ctypes path: fresh open, then aiortc's reopen."""
    from aiortc.codecs.vpx import Vp8Encoder as AiortcVp8Encoder
    from aiortc.codecs.vpx import VpxPayloadDescriptor

    n, switch, first_kbps, second_kbps = 90, 45, 500, 1200
    enc = AiortcVp8Encoder()
    enc.target_bitrate = first_kbps * 1000
    theirs = []
    for i in range(n):
        if i == switch:
            enc.target_bitrate = second_kbps * 1000  # > 10 % change: aiortc reopens
        payloads, _ = enc.encode(content.video_frame(i))
        theirs.append(sum(len(VpxPayloadDescriptor.parse(p)[1]) for p in payloads))
    ours = []
    mine = Vp8Encoder(vpx, content.width, content.height, first_kbps)
    for i in range(n):
        if i == switch:
            mine.close()
            mine = Vp8Encoder(vpx, content.width, content.height, second_kbps)
        ours.append(mine.encode(content.i420(i), pts_us(i))[0])
    mine.close()
    diff = int(np.max(np.abs(np.array(theirs) - np.array(ours))))
    return {
        "frames": n,
        "open_kbps": first_kbps,
        "reopen_at_frame": switch,
        "reopen_kbps": second_kbps,
        "identical": bool(diff == 0),
        "max_abs_diff_bytes": diff,
    }


def check_open_context_bit_rate(content: SyntheticContent) -> dict[str, Any]:
    """Does setting ``bit_rate`` on PyAV's open libvpx context change anything?"""
    from aiortc.codecs.vpx import Vp8Encoder as AiortcVp8Encoder

    before_kbps, after_kbps, n = 1200, 400, 150
    enc = AiortcVp8Encoder()
    enc.target_bitrate = before_kbps * 1000
    sizes = []
    for i in range(n):
        frame = content.video_frame(i)
        if i == 0:
            payloads, _ = enc.encode(frame)
            sizes.append(sum(len(p) for p in payloads))
            continue
        if i == n // 2:
            enc.codec.bit_rate = after_kbps * 1000
        sizes.append(sum(p.size for p in enc.codec.encode(frame)))
    s = np.array(sizes, dtype=float)
    rate_before = float(s[WARMUP_FRAMES // 2 : n // 2].mean() * 8 * FPS)
    rate_after = float(s[n // 2 + 30 :].mean() * 8 * FPS)
    return {
        "set_bit_rate_bps": after_kbps * 1000,
        "from_bps": before_kbps * 1000,
        "rate_before_bps": round(rate_before),
        "rate_after_bps": round(rate_after),
        "has_effect": bool(rate_after < 0.8 * rate_before),
    }


# -- figures ---------------------------------------------------------------------------------
def _acf(x: np.ndarray, lags: int) -> list[float]:
    d = x - x.mean()
    den = float(np.dot(d, d))
    return [float(np.dot(d[:-k], d[k:]) / den) for k in range(1, lags + 1)]


def steady_figures(run: Run, target_kbps: int) -> dict[str, Any]:
    s = run.sizes
    delta = s[WARMUP_FRAMES:STEADY_END_FRAME]
    mean = float(delta.mean())
    per_frame_target = target_kbps * 1000 / 8 / FPS
    logs = np.log(delta)
    key_ratios = [float(s[k] / mean) for k in KEY_PROBE_FRAMES]
    post = np.mean([s[k + 1 : k + 1 + KEY_PROFILE_FRAMES] for k in KEY_PROBE_FRAMES], axis=0)
    post /= mean
    return {
        "target_bps": target_kbps * 1000,
        "achieved_bps": round(mean * 8 * FPS),
        "achieved_ratio": round(mean / per_frame_target, 4),
        "delta_mean_bytes": round(mean, 1),
        "delta_cv": round(float(delta.std() / mean), 4),
        "delta_log_sigma": round(float(logs.std()), 4),
        "delta_log_acf": [round(a, 3) for a in _acf(logs, 5)],
        "delta_log_acf1": round(_acf(logs, 1)[0], 4),
        "delta_size_acf1": round(_acf(delta, 1)[0], 4),
        "delta_p05_ratio": round(float(np.percentile(delta, 5) / mean), 3),
        "delta_p95_ratio": round(float(np.percentile(delta, 95) / mean), 3),
        "keyframe_ratio": round(float(np.exp(np.mean(np.log(key_ratios)))), 3),
        "keyframe_ratios": [round(r, 3) for r in key_ratios],
        "first_keyframe_ratio": round(float(s[0] / mean), 3),
        "post_keyframe_ratio": round(float(post[0]), 3),
        "post_keyframe_profile": [round(float(r), 3) for r in post],
        "post_open_profile": [round(float(r), 3) for r in s[1 : 1 + OPEN_PROFILE_FRAMES] / mean],
        "all_keyframes_flagged": bool(
            run.keys[0] and all(run.keys[k] for k in KEY_PROBE_FRAMES) and run.keys.sum() == 4
        ),
        "encode_fps": round(STEADY_TOTAL_FRAMES / run.seconds, 1),
    }


def provisional_calibration(res: dict[str, Any], key: str) -> EncoderCalibration:
    """The model's calibration from the figures so far (time constants not yet fitted)."""
    data = {
        "rc_settings": RC_SETTINGS,
        "resolutions": {key: {**res, "model": {"tau_up_ms": 1.0, "tau_down_ms": 1.0}}},
    }
    return EncoderCalibration.from_dict(data, key)


def step_figures(run: Run, at: int, steady_bps: float) -> dict[str, Any]:
    """The response to the target change at frame ``at``, against the new steady rate.

    ``settle_ms`` is when the 15-frame centred mean last leaves +-15 % of the steady rate the
    new target gives (None if it has not settled by the end of the run); ``excess_ms`` is the
    bytes sent over (or, negative, under) that rate, in ms of it; ``first_order_tau_ms`` the
    time constant of the first-order lag with the same excess.
    """
    s = run.sizes
    old = float(s[at - TAIL_FRAMES : at].mean())
    post = s[at : at + STEP_AFTER_FRAMES]
    new = steady_bps / 8 / FPS
    k = np.ones(SMOOTH_FRAMES) / SMOOTH_FRAMES
    ma = np.convolve(post, k, "valid") / new  # ma[j] is centred on post frame j + 7
    outside = np.nonzero(np.abs(ma - 1.0) > SETTLE_BAND)[0]
    settled = len(outside) == 0 or outside[-1] < len(ma) - 1
    settle_frames = 0 if len(outside) == 0 else int(outside[-1] + 1 + SMOOTH_FRAMES // 2)
    excess_ms = float((post - new).sum() / new * FRAME_MS)
    change = old / new - 1.0
    return {
        "before_bps": round(old * 8 * FPS),
        "steady_bps": round(steady_bps),
        "tail_bps": round(float(post[-TAIL_FRAMES:].mean()) * 8 * FPS),
        "settle_ms": round(settle_frames * FRAME_MS) if settled else None,
        "peak_ratio": round(float(ma.max()), 3),
        "trough_ratio": round(float(ma.min()), 3),
        "excess_ms": round(excess_ms, 1),
        "first_order_tau_ms": round(excess_ms / change, 1) if abs(change) > 0.05 else None,
        "first_frame_ratio": round(float(post[0] / new), 3),
        "rate_1s_bps": [round(float(post[j : j + 30].mean()) * 8 * FPS) for j in range(0, 180, 30)],
    }


def model_trajectory(cal: EncoderCalibration, run: Run) -> np.ndarray:
    """The noise-free model driven by the run's schedule: expected size of every frame."""
    model = VideoEncoderModel(
        cal, fps=FPS, noise=False, initial_target_bps=run.targets[0][1] * 1000
    )
    changes = dict(run.targets)
    requests = set(run.key_requests)
    out = np.zeros(len(run.sizes))
    for i in range(len(run.sizes)):
        at_ms = i * FRAME_MS
        if i and i in changes:
            model.set_target(changes[i] * 1000, at_ms)
        if i in requests:
            model.request_keyframe()
        out[i] = model.encode(at_ms)[0]
    return out


def block_means(x: np.ndarray, block: int) -> np.ndarray:
    n = len(x) // block * block
    return x[:n].reshape(-1, block).mean(axis=1)


def fit_error(cal: EncoderCalibration, runs: list[tuple[Run, int]]) -> float:
    """RMS log error of 5-frame mean sizes over every post-step window."""
    errs = []
    for run, at in runs:
        pred = model_trajectory(cal, run)[at : at + STEP_AFTER_FRAMES]
        meas = run.sizes[at : at + STEP_AFTER_FRAMES]
        errs.append(
            np.log(block_means(pred, FIT_BLOCK_FRAMES) / block_means(meas, FIT_BLOCK_FRAMES))
        )
    e = np.concatenate(errs)
    return float(np.sqrt(np.mean(e * e)))


def window_rate_error(pred: np.ndarray, meas: np.ndarray, start: int) -> dict[str, float]:
    p = block_means(pred[start:], FPS) * 8 * FPS
    m = block_means(meas[start:], FPS) * 8 * FPS
    rel = np.abs(p / m - 1.0)
    return {
        "mean_abs_rel_error": round(float(rel.mean()), 4),
        "max_abs_rel_error": round(float(rel.max()), 4),
    }


def ramp_schedule(start_kbps: int, n_frames: int) -> dict[int, int]:
    """GCC-like: +8 %/s every 100 ms, a 0.85x cut every 5 s (one 0.5x cut), 3 frames apart."""
    sched, rate = {}, float(start_kbps)
    for i in range(0, n_frames, 3):
        if i and i % 150 == 0:
            rate *= 0.5 if i == 450 else 0.85
        elif i:
            rate *= 1.08 ** (3 / FPS)
        sched[i] = round(rate)
    return sched


# -- main ------------------------------------------------------------------------------------
def calibrate_resolution(
    vpx: Libvpx, width: int, height: int, quick: bool
) -> tuple[dict[str, Any], list[tuple[Run, int]], Run]:
    key = f"{width}x{height}"
    content = SyntheticContent(width, height)
    out: dict[str, Any] = {"width": width, "height": height}

    log(f"[{key}] checking the ctypes path against aiortc's Vp8Encoder ...")
    out["aiortc_equivalence"] = check_aiortc_equivalence(vpx, content)
    log(f"[{key}]   {out['aiortc_equivalence']}")
    if not out["aiortc_equivalence"]["identical"]:
        raise RuntimeError("ctypes libvpx path differs from aiortc's encoder; figures void")

    steady = []
    targets = (*STEADY_KBPS[::2], STEADY_KBPS[-1]) if quick else STEADY_KBPS
    for kbps in sorted(set(targets)):
        run = encode_run(vpx, content, {0: kbps}, STEADY_TOTAL_FRAMES, KEY_PROBE_FRAMES)
        fig = steady_figures(run, kbps)
        steady.append(fig)
        log(
            f"[{key}] steady {kbps:5d} kbps -> {fig['achieved_bps'] / 1000:7.0f} kbps, "
            f"cv {fig['delta_cv']:.3f}, key x{fig['keyframe_ratio']:.1f} "
            f"(first x{fig['first_keyframe_ratio']:.1f}), {fig['encode_fps']:.0f} fps"
        )
    out["steady"] = steady
    # The lowest rate libvpx produced at any target: with the quantizer at qmax it cannot go
    # lower, and the floor probe (a target far below) measures exactly that.
    out["floor_bps"] = min(f["achieved_bps"] for f in steady)
    key_logs = [math.log(r / f["keyframe_ratio"]) for f in steady for r in f["keyframe_ratios"]]
    out["keyframe_log_sigma"] = round(float(np.std(key_logs)), 4)

    cal = provisional_calibration(out, key)

    def steady_bps(kbps: int) -> float:
        return cal.interpolate(kbps * 1000)["achieved_bps"]

    fit_runs: list[tuple[Run, int]] = []
    steps = []
    step_pairs = STEPS_KBPS[key][:2] if quick else STEPS_KBPS[key]
    for a, b in step_pairs:
        run = encode_run(vpx, content, {0: a, STEP_AT_FRAME: b}, STEP_AT_FRAME + STEP_AFTER_FRAMES)
        fig = {
            "kind": "step",
            "from_bps": a * 1000,
            "to_bps": b * 1000,
            **step_figures(run, STEP_AT_FRAME, steady_bps(b)),
        }
        steps.append(fig)
        fit_runs.append((run, STEP_AT_FRAME))
        log(
            f"[{key}] step {a}->{b} kbps: settle {fig['settle_ms']} ms, peak x{fig['peak_ratio']}, "
            f"trough x{fig['trough_ratio']}, excess {fig['excess_ms']} ms"
        )
    a, b = DEBT_KBPS[key]
    run = encode_run(
        vpx, content, {0: a, DEBT_HOLD_FRAMES: b}, DEBT_HOLD_FRAMES + STEP_AFTER_FRAMES
    )
    fig = {
        "kind": "after_floor",
        "from_bps": a * 1000,
        "to_bps": b * 1000,
        "hold_ms": round(DEBT_HOLD_FRAMES * FRAME_MS),
        **step_figures(run, DEBT_HOLD_FRAMES, steady_bps(b)),
    }
    steps.append(fig)
    fit_runs.append((run, DEBT_HOLD_FRAMES))
    log(
        f"[{key}] {a} kbps for {DEBT_HOLD_FRAMES / FPS:.0f} s then {b} kbps: 1-s rates "
        f"{[r // 1000 for r in fig['rate_1s_bps']]} kbps"
    )
    out["steps"] = steps

    n_ramp = 300 if quick else 600
    ramp = encode_run(vpx, content, ramp_schedule(RAMP_START_KBPS[key], n_ramp), n_ramp)
    log(f"[{key}] sawtooth run done ({n_ramp} frames)")
    return out, fit_runs, ramp


def fit_model(
    data: dict[str, Any], key: str, fit_runs: list[tuple[Run, int]], ramp: Run
) -> dict[str, Any]:
    """Grid-search the two quantizer time constants; validate on the sawtooth.

    The error profiles along each axis are kept: the step-down lag is well determined, the
    step-up lag much less so, because after a raise libvpx is held back mainly by refilling
    its (now larger) optimal buffer, which the model's buffer term already carries.
    """
    res = data["resolutions"][key]
    grid = np.zeros((len(TAU_GRID_MS), len(TAU_GRID_MS)))
    for i, up in enumerate(TAU_GRID_MS):
        for j, down in enumerate(TAU_GRID_MS):
            res["model"] = {"tau_up_ms": up, "tau_down_ms": down}
            grid[i, j] = fit_error(EncoderCalibration.from_dict(data, key), fit_runs)
    i, j = np.unravel_index(int(grid.argmin()), grid.shape)
    up, down = TAU_GRID_MS[i], TAU_GRID_MS[j]
    res["model"] = {"tau_up_ms": up, "tau_down_ms": down}
    cal = EncoderCalibration.from_dict(data, key)
    model: dict[str, Any] = {
        "tau_up_ms": up,
        "tau_down_ms": down,
        "fit_block_frames": FIT_BLOCK_FRAMES,
        "fit_rms_log_error": round(float(grid[i, j]), 4),
        "fit_grid_ms": list(TAU_GRID_MS),
        "fit_error_over_tau_up": [round(float(e), 4) for e in grid[:, j]],
        "fit_error_over_tau_down": [round(float(e), 4) for e in grid[i, :]],
    }
    per_step = []
    for (run, at), fig in zip(fit_runs, res["steps"], strict=True):
        pred = model_trajectory(cal, run)
        post = pred[at : at + STEP_AFTER_FRAMES]
        new = fig["steady_bps"] / 8 / FPS
        per_step.append(
            {
                "from_bps": fig["from_bps"],
                "to_bps": fig["to_bps"],
                "measured_excess_ms": fig["excess_ms"],
                "model_excess_ms": round(float((post - new).sum() / new * FRAME_MS), 1),
                "model_rate_1s_bps": [
                    round(float(post[j : j + 30].mean()) * 8 * FPS) for j in range(0, 180, 30)
                ],
            }
        )
    model["steps"] = per_step
    pred = model_trajectory(cal, ramp)
    model["sawtooth_validation"] = {
        "start_bps": RAMP_START_KBPS[key] * 1000,
        "frames": len(ramp.sizes),
        "model": window_rate_error(pred, ramp.sizes, WARMUP_FRAMES),
    }
    # Baseline: an encoder that jumps to its steady achieved rate at once (no rate control).
    instant = dataclasses.replace(
        cal, tau_up_ms=1e-3, tau_down_ms=1e-3, undershoot_pct=0.0, overshoot_pct=0.0
    )
    base = model_trajectory(instant, ramp)
    model["sawtooth_validation"]["instant_baseline"] = window_rate_error(
        base, ramp.sizes, WARMUP_FRAMES
    )
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("loki/data/vp8_calibration.json"))
    parser.add_argument("--quick", action="store_true", help="fewer runs (smoke test only)")
    args = parser.parse_args(argv)

    import aiortc
    import av

    t_start = time.perf_counter()
    vpx = load_libvpx()
    log(f"libvpx {vpx.version} (ABI {vpx.abi_version}) from {os.path.basename(vpx.path)}")
    data: dict[str, Any] = {
        "schema": 1,
        "meta": {
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "command": "python bench/calibrate_vp8.py " + " ".join(argv or sys.argv[1:]),
            "quick": args.quick,
            "libvpx": vpx.version,
            "libvpx_abi": vpx.abi_version,
            "pyav": av.__version__,
            "libavcodec": ".".join(map(str, av.library_versions["libavcodec"])),
            "aiortc": aiortc.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "fps": FPS,
            "content": (
                "synthetic YUV: textured background panned like a hand-held camera, a textured "
                "object moving across 1/6 of the frame, sensor noise +-3"
            ),
        },
        "rc_settings": RC_SETTINGS,
        "resolutions": {},
    }
    pending = []
    for width, height in RESOLUTIONS:
        key = f"{width}x{height}"
        res, fit_runs, ramp = calibrate_resolution(vpx, width, height, args.quick)
        data["resolutions"][key] = res
        pending.append((key, fit_runs, ramp))
        if key == "640x360":
            log(f"[{key}] PyAV: setting bit_rate on the open context ...")
            data["pyav_open_context_bit_rate"] = check_open_context_bit_rate(
                SyntheticContent(width, height)
            )
            log(f"[{key}]   {data['pyav_open_context_bit_rate']}")
    for key, fit_runs, ramp in pending:
        model = fit_model(data, key, fit_runs, ramp)
        data["resolutions"][key]["model"] = model
        saw = model["sawtooth_validation"]
        log(
            f"[{key}] fitted tau_up {model['tau_up_ms']} ms, tau_down {model['tau_down_ms']} ms "
            f"(rms log error {model['fit_rms_log_error']}); sawtooth 1-s rate error "
            f"{saw['model']['mean_abs_rel_error']:.3f} "
            f"(instant baseline {saw['instant_baseline']['mean_abs_rel_error']:.3f})"
        )
    data["meta"]["runtime_s"] = round(time.perf_counter() - t_start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    log(f"wrote {args.out} in {data['meta']['runtime_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
