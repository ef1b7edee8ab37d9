"""A VP8 encoder for aiortc whose target follows the controller without restarting the codec.

aiortc's own ``Vp8Encoder`` reopens libvpx, starting with a keyframe, whenever the target moves
by more than 10 %; a controller that updates every feedback interval would force a keyframe
storm. This encoder keeps one libvpx context open and changes its target with
``vpx_codec_enc_config_set`` (:mod:`rtc.libvpx`), as libwebrtc's ``LibvpxVp8Encoder::SetRates``
does. Keyframes come only when asked for (PLI/FIR: aiortc passes ``force_keyframe``), at the
optional periodic interval, or from libvpx's own ``kf_max_dist``.

The rate-control settings are aiortc 1.16's (as FFmpeg turns them into a libvpx
configuration), the same ones ``bench/calibrate_vp8.py`` measured for the emulator's encoder
model, so that a live session and ``loki emulate`` drive the same encoder behaviour. Frame
dropping is on by default, as in libwebrtc and in the emulator's model: libvpx's own
decimation (``rc_dropframe_thresh`` 30) and :class:`rtc.frame_dropper.DebtFrameDropper`, which
skips every frame while the encoder is deep in debt. Without it a target below libvpx's floor
(about 370 kbps at 640x360) is overshot at 30 fps instead of followed at a lower frame rate. A
dropped frame yields no payloads (aiortc sends nothing) and keeps its picture id for the next.

Packetisation follows libwebrtc's ``RtpPacketizerVp8``: one partition, payloads split into
equal parts of at most :data:`MAX_PAYLOAD_BYTES` (the emulator's packet size), each with a
payload descriptor carrying a 15-bit picture id.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from aiortc.codecs.base import Encoder
from aiortc.codecs.vpx import VpxPayloadDescriptor
from av import VideoFrame
from av.frame import Frame

from loki.emu.encoder import DROP_FRAMES_WATER_MARK_PCT
from rtc.frame_dropper import DebtFrameDropper
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
    LibvpxError,
    load_libvpx,
)

#: RTP payload per packet, descriptor included: the emulator's MAX_RTP_PAYLOAD_BYTES.
MAX_PAYLOAD_BYTES = 1200
VIDEO_CLOCK_HZ = 90_000
PICTURE_ID_MOD = 1 << 15
#: aiortc's encoder limits are for its REMB loop; the controller's own bounds apply here, with
#: a floor so that libvpx is never asked for less than 1 kbps.
MIN_TARGET_KBPS = 1

# aiortc 1.16 Vp8Encoder as FFmpeg configures libvpx (aiortc/codecs/vpx.py, libvpxenc.c):
# bufsize = bitrate -> 1000 ms buffer, optimal 5/6 of it, initial 3/4; CBR; realtime.
CPU_USED = -6
MIN_QUANTIZER = 2
MAX_QUANTIZER = 56
UNDERSHOOT_PCT = 100
OVERSHOOT_PCT = 15
BUFFER_MS = 1000
BUFFER_OPTIMAL_MS = 833
BUFFER_INITIAL_MS = 750
NOISE_SENSITIVITY = 4
STATIC_THRESHOLD = 1
KF_MAX_DIST_FRAMES = 3000
#: PyAV opens libvpx with a microsecond time base and one-tick frame durations.
TIMEBASE_DEN = 1_000_000
#: Duration charged to the first frame, before frame timestamps give one.
FIRST_FRAME_S = 1 / 30


@dataclass(frozen=True, slots=True)
class EncodedFrameInfo:
    """One encoded frame, for the sender's log (keyframe counts, sent rate against target)."""

    rtp_timestamp: int
    picture_id: int
    size_bytes: int
    keyframe: bool
    target_bps: int
    encode_us: int


class LiveVp8Encoder(Encoder):
    """An aiortc ``Encoder`` over one long-lived libvpx VP8 context.

    :meth:`set_target_bps` may be called from any thread; the new target is applied by the
    encoding thread before the next frame, so libvpx is only ever touched by one thread.
    """

    def __init__(
        self,
        initial_target_bps: int,
        *,
        keyframe_interval_s: float = 0.0,
        threads: int = 1,
        on_frame: Callable[[EncodedFrameInfo], None] | None = None,
        clock_us: Callable[[], int] | None = None,
        libvpx: Libvpx | None = None,
        drop_frames: bool = True,
        skip_frame: Callable[[], bool] | None = None,
    ) -> None:
        """``skip_frame``, asked in the encoding thread before each frame, True to leave the
        frame unencoded (the controller's congestion-window frame drop, ``Controller.skip_frame``);
        the next frame then spans the skipped time, as it does for libvpx in libwebrtc."""
        if initial_target_bps <= 0:
            raise ValueError(f"initial_target_bps must be > 0, got {initial_target_bps}")
        if keyframe_interval_s < 0:
            raise ValueError(f"keyframe_interval_s must be >= 0, got {keyframe_interval_s}")
        self._vpx = libvpx or load_libvpx()
        self._threads = threads
        self._keyframe_interval_s = keyframe_interval_s
        self._on_frame = on_frame
        self._clock_us = clock_us
        self._wanted_bps = int(initial_target_bps)
        self._applied_bps = 0
        self._ctx: ctypes.Array | None = None
        self._cfg: ctypes.Array | None = None
        self._img = (ctypes.c_uint8 * IMG_BYTES)()
        self._iter = ctypes.c_void_p(0)
        self._size: tuple[int, int] | None = None
        self._last_key_pts_s: float | None = None
        self._last_pts_s: float | None = None
        self._drop_frames = drop_frames
        self._skip_frame = skip_frame
        #: Frames left unencoded because ``skip_frame`` said so.
        self.frames_skipped = 0
        self._dropper = DebtFrameDropper(
            self._wanted_bps, BUFFER_MS / 1000, BUFFER_INITIAL_MS / 1000
        )
        self.picture_id = 0
        self.frames = 0
        self.keyframes = 0
        self.reconfigurations = 0

    @property
    def frames_dropped(self) -> int:
        """Frames skipped by libvpx's decimation or by the debt rule."""
        return self._dropper.frames_dropped

    # -- rate ----------------------------------------------------------------------------------
    def set_target_bps(self, target_bps: int) -> None:
        """The controller's target for the video payload; applied before the next frame."""
        self._wanted_bps = max(int(target_bps), MIN_TARGET_KBPS * 1000)

    @property
    def target_bps(self) -> int:
        return self._wanted_bps

    # -- aiortc's Encoder interface --------------------------------------------------------------
    def encode(self, frame: Frame, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        assert isinstance(frame, VideoFrame)
        pts_s = float(frame.pts * frame.time_base) if frame.pts is not None else 0.0
        if self._skip_frame is not None and self._skip_frame():
            self.frames_skipped += 1  # before any conversion: a skipped frame costs nothing
            return [], round(pts_s * VIDEO_CLOCK_HZ)
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        t0 = self._clock_us() if self._clock_us else 0
        if self._size != (frame.width, frame.height):
            self._open(frame.width, frame.height)
        self._apply_target()
        if (
            self._keyframe_interval_s > 0
            and self._last_key_pts_s is not None
            and pts_s - self._last_key_pts_s >= self._keyframe_interval_s
        ):
            force_keyframe = True
        duration_s = FIRST_FRAME_S if self._last_pts_s is None else pts_s - self._last_pts_s
        self._last_pts_s = pts_s
        timestamp = round(pts_s * VIDEO_CLOCK_HZ)
        if self._drop_frames and self._dropper.should_drop(force_keyframe):
            self._dropper.on_frame(0, duration_s)
            return [], timestamp
        i420 = np.ascontiguousarray(frame.to_ndarray())
        data, is_key = self._encode_i420(i420, round(pts_s * TIMEBASE_DEN), force_keyframe)
        self._dropper.on_frame(len(data), duration_s)
        if not data:
            return [], timestamp  # libvpx's decimation dropped it
        if is_key:
            self.keyframes += 1
            self._last_key_pts_s = pts_s
        self.frames += 1
        payloads = packetize(data, self.picture_id)
        if self._on_frame is not None:
            t1 = self._clock_us() if self._clock_us else 0
            self._on_frame(
                EncodedFrameInfo(
                    rtp_timestamp=timestamp,
                    picture_id=self.picture_id,
                    size_bytes=len(data),
                    keyframe=is_key,
                    target_bps=self._applied_bps,
                    encode_us=t1 - t0,
                )
            )
        self.picture_id = (self.picture_id + 1) % PICTURE_ID_MOD
        return payloads, timestamp

    def pack(self, packet: object) -> tuple[list[bytes], int]:
        raise NotImplementedError("LiveVp8Encoder encodes raw frames only")

    # -- libvpx ----------------------------------------------------------------------------------
    def _open(self, width: int, height: int) -> None:
        self.close()
        vpx = self._vpx
        cfg = vpx.default_cfg()
        self._applied_bps = self._wanted_bps
        self._dropper.set_target(self._applied_bps)
        for name, value in (
            ("g_w", width),
            ("g_h", height),
            ("g_timebase_num", 1),
            ("g_timebase_den", TIMEBASE_DEN),
            ("g_threads", self._threads),
            ("g_lag_in_frames", 0),
            ("rc_dropframe_thresh", DROP_FRAMES_WATER_MARK_PCT if self._drop_frames else 0),
            ("rc_end_usage", VPX_CBR),
            ("rc_target_bitrate", self._target_kbps(self._applied_bps)),
            ("rc_min_quantizer", MIN_QUANTIZER),
            ("rc_max_quantizer", MAX_QUANTIZER),
            ("rc_undershoot_pct", UNDERSHOOT_PCT),
            ("rc_overshoot_pct", OVERSHOOT_PCT),
            ("rc_buf_sz", BUFFER_MS),
            ("rc_buf_initial_sz", BUFFER_INITIAL_MS),
            ("rc_buf_optimal_sz", BUFFER_OPTIMAL_MS),
            ("kf_max_dist", KF_MAX_DIST_FRAMES),
        ):
            cfg[CFG_OFFSETS[name] // 4] = value
        ctx = (ctypes.c_uint8 * CTX_BYTES)()
        if vpx.lib.vpx_codec_enc_init_ver(ctx, vpx.iface, cfg, 0, vpx.abi_version) != 0:
            raise LibvpxError(f"vpx_codec_enc_init failed for {width}x{height}")
        for control, value in (
            (VP8E_SET_CPUUSED, CPU_USED),
            (VP8E_SET_NOISE_SENSITIVITY, NOISE_SENSITIVITY),
            (VP8E_SET_STATIC_THRESHOLD, STATIC_THRESHOLD),
            (VP8E_SET_TOKEN_PARTITIONS, 0),  # VP8_ONE_TOKENPARTITION
        ):
            if vpx.lib.vpx_codec_control_(ctx, control, value) != 0:
                vpx.lib.vpx_codec_destroy(ctx)
                raise LibvpxError(f"vpx_codec_control({control}, {value}) failed")
        self._ctx, self._cfg, self._size = ctx, cfg, (width, height)

    @staticmethod
    def _target_kbps(target_bps: int) -> int:
        return max(MIN_TARGET_KBPS, round(target_bps / 1000))

    def _apply_target(self) -> None:
        wanted = self._wanted_bps
        if wanted == self._applied_bps:
            return
        self._dropper.set_target(wanted)
        kbps = self._target_kbps(wanted)
        assert self._cfg is not None
        if kbps != self._cfg[CFG_OFFSETS["rc_target_bitrate"] // 4]:
            self._cfg[CFG_OFFSETS["rc_target_bitrate"] // 4] = kbps
            if self._vpx.lib.vpx_codec_enc_config_set(self._ctx, self._cfg) != 0:
                raise LibvpxError("vpx_codec_enc_config_set failed")
            self.reconfigurations += 1
        self._applied_bps = wanted

    def _encode_i420(self, i420: np.ndarray, pts: int, force_key: bool) -> tuple[bytes, bool]:
        lib = self._vpx.lib
        assert self._size is not None
        width, height = self._size
        lib.vpx_img_wrap(self._img, VPX_IMG_FMT_I420, width, height, 1, i420.ctypes.data)
        flags = VPX_EFLAG_FORCE_KF if force_key else 0
        if lib.vpx_codec_encode(self._ctx, self._img, pts, 1, flags, VPX_DL_REALTIME) != 0:
            raise LibvpxError("vpx_codec_encode failed")
        self._iter.value = None
        chunks: list[bytes] = []
        is_key = False
        while True:
            pkt = lib.vpx_codec_get_cx_data(self._ctx, ctypes.byref(self._iter))
            if not pkt:
                break
            if pkt.contents.kind == VPX_CODEC_CX_FRAME_PKT:
                f = pkt.contents.frame
                chunks.append(ctypes.string_at(f.buf, f.sz))
                is_key |= bool(f.flags & VPX_FRAME_IS_KEY)
        return b"".join(chunks), is_key

    def close(self) -> None:
        if self._ctx is not None:
            self._vpx.lib.vpx_codec_destroy(self._ctx)
            self._ctx = None
            self._size = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def packetize(frame: bytes, picture_id: int) -> list[bytes]:
    """RTP payloads for one VP8 frame: equal parts, each behind a payload descriptor."""
    first = VpxPayloadDescriptor(partition_start=1, partition_id=0, picture_id=picture_id)
    rest = VpxPayloadDescriptor(partition_start=0, partition_id=0, picture_id=picture_id)
    head_first, head_rest = bytes(first), bytes(rest)
    room = MAX_PAYLOAD_BYTES - len(head_first)
    n = max(1, math.ceil(len(frame) / room))
    base, extra = divmod(len(frame), n)
    out: list[bytes] = []
    pos = 0
    for i in range(n):
        size = base + (1 if i < extra else 0)
        out.append((head_first if i == 0 else head_rest) + frame[pos : pos + size])
        pos += size
    return out
