"""libvpx's VP8 encoder through ctypes: the one library PyAV already bundles.

PyAV cannot change the target of an open libvpx context (setting ``bit_rate`` is ignored, see
``shared/docs/aiortc-notes.md``), and aiortc reopens the codec, with a keyframe, whenever the
target moves by more than 10 %. libwebrtc's ``LibvpxVp8Encoder::SetRates`` instead calls
``vpx_codec_enc_config_set`` on the open encoder, which libvpx's VP8 applies from the next frame
without a keyframe (``vp8_change_config``). This module gives Python that call.

Only the handful of ``vpx_codec_enc_cfg`` fields the encoder sets are touched, at byte offsets
of the 64-bit layout that are checked against libvpx's own VP8 defaults before use; the ABI
version ``vpx_codec_enc_init_ver`` insists on is found by asking it. Both checks fail loudly
on a libvpx whose layout differs, instead of encoding with a garbled configuration.
"""

from __future__ import annotations

import ctypes
import glob
import os
from functools import cache

# libvpx API constants (vpx/vpx_encoder.h, vpx/vp8cx.h, vpx/vpx_image.h).
VPX_IMG_FMT_I420 = 0x102
VPX_CODEC_CX_FRAME_PKT = 0
VPX_FRAME_IS_KEY = 0x1
VPX_EFLAG_FORCE_KF = 0x1
VPX_DL_REALTIME = 1
VPX_CBR = 1
VP8E_SET_CPUUSED = 13
VP8E_SET_NOISE_SENSITIVITY = 15
VP8E_SET_STATIC_THRESHOLD = 17
VP8E_SET_TOKEN_PARTITIONS = 18

#: Byte offsets of the ``vpx_codec_enc_cfg`` fields used (64-bit layout).
CFG_OFFSETS = {
    "g_threads": 4,
    "g_w": 12,
    "g_h": 16,
    "g_timebase_num": 28,
    "g_timebase_den": 32,
    "g_lag_in_frames": 44,
    "rc_dropframe_thresh": 48,
    "rc_end_usage": 72,
    "rc_target_bitrate": 112,
    "rc_min_quantizer": 116,
    "rc_max_quantizer": 120,
    "rc_undershoot_pct": 124,
    "rc_overshoot_pct": 128,
    "rc_buf_sz": 132,
    "rc_buf_initial_sz": 136,
    "rc_buf_optimal_sz": 140,
    "kf_max_dist": 168,
}
#: libvpx's VP8 defaults at those offsets: the proof that the layout is the one assumed.
CFG_DEFAULTS = {
    "g_w": 320,
    "g_h": 240,
    "g_timebase_num": 1,
    "g_timebase_den": 30,
    "rc_target_bitrate": 256,
    "rc_min_quantizer": 4,
    "rc_max_quantizer": 63,
    "rc_undershoot_pct": 100,
    "rc_overshoot_pct": 100,
    "rc_buf_sz": 6000,
    "rc_buf_initial_sz": 4000,
    "rc_buf_optimal_sz": 5000,
    "kf_max_dist": 128,
}
#: Opaque buffers comfortably larger than the structs they hold.
CFG_WORDS = 1024
CTX_BYTES = 512
IMG_BYTES = 512
MAX_ABI_VERSION = 200


class LibvpxError(RuntimeError):
    """libvpx is missing, differs from the assumed layout, or refused a call."""


class _CxFrame(ctypes.Structure):
    _fields_ = (
        ("buf", ctypes.c_void_p),
        ("sz", ctypes.c_size_t),
        ("pts", ctypes.c_int64),
        ("duration", ctypes.c_ulong),
        ("flags", ctypes.c_uint32),
        ("partition_id", ctypes.c_int),
    )


class _CxPacket(ctypes.Structure):
    _fields_ = (("kind", ctypes.c_int), ("frame", _CxFrame))


class Libvpx:
    """The loaded library, its VP8 encoder interface and ABI version."""

    def __init__(self, path: str) -> None:
        self.path = path
        lib = ctypes.CDLL(path)
        lib.vpx_codec_vp8_cx.restype = ctypes.c_void_p
        lib.vpx_codec_version_str.restype = ctypes.c_char_p
        lib.vpx_codec_enc_config_default.argtypes = (
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_uint,
        )
        lib.vpx_codec_enc_init_ver.argtypes = (
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_long,
            ctypes.c_int,
        )
        lib.vpx_codec_enc_config_set.argtypes = (ctypes.c_void_p, ctypes.c_void_p)
        lib.vpx_codec_control_.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_int)
        lib.vpx_codec_encode.argtypes = (
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_int64,
            ctypes.c_ulong,
            ctypes.c_long,
            ctypes.c_ulong,
        )
        lib.vpx_codec_get_cx_data.restype = ctypes.POINTER(_CxPacket)
        lib.vpx_codec_get_cx_data.argtypes = (ctypes.c_void_p, ctypes.c_void_p)
        lib.vpx_codec_destroy.argtypes = (ctypes.c_void_p,)
        lib.vpx_img_wrap.restype = ctypes.c_void_p
        lib.vpx_img_wrap.argtypes = (
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
        )
        self.lib = lib
        self.iface = ctypes.c_void_p(lib.vpx_codec_vp8_cx())
        self.version = lib.vpx_codec_version_str().decode()
        self._check_cfg_layout()
        self.abi_version = self._find_abi_version()

    def default_cfg(self) -> ctypes.Array:
        cfg = (ctypes.c_uint32 * CFG_WORDS)()
        if self.lib.vpx_codec_enc_config_default(self.iface, cfg, 0) != 0:
            raise LibvpxError("vpx_codec_enc_config_default failed")
        return cfg

    def _check_cfg_layout(self) -> None:
        cfg = self.default_cfg()
        for name, want in CFG_DEFAULTS.items():
            got = cfg[CFG_OFFSETS[name] // 4]
            if got != want:
                raise LibvpxError(
                    f"libvpx {self.version}: vpx_codec_enc_cfg layout differs ({name} = {got}, "
                    f"expected the default {want})"
                )

    def _find_abi_version(self) -> int:
        # vpx_codec_enc_init_ver accepts only its own VPX_ENCODER_ABI_VERSION.
        for version in range(1, MAX_ABI_VERSION):
            ctx = (ctypes.c_uint8 * CTX_BYTES)()
            if (
                self.lib.vpx_codec_enc_init_ver(ctx, self.iface, self.default_cfg(), 0, version)
                == 0
            ):
                self.lib.vpx_codec_destroy(ctx)
                return version
        raise LibvpxError(f"libvpx {self.version}: no encoder ABI version accepted")


def find_libvpx() -> str:
    """Path of the libvpx shared library bundled with PyAV."""
    import av

    pattern = os.path.join(os.path.dirname(av.__file__), os.pardir, "av.libs", "libvpx*.so*")
    found = sorted(glob.glob(pattern))
    if not found:
        raise LibvpxError(f"no libvpx bundled with PyAV (looked for {pattern})")
    return os.path.realpath(found[0])


@cache
def load_libvpx() -> Libvpx:
    """The process-wide :class:`Libvpx` (loaded and checked once)."""
    return Libvpx(find_libvpx())
