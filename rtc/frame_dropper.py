"""Drop every frame while the encoder is deep in debt: what lets a sender follow a target below
libvpx's floor.

At 640x360 libvpx VP8 cannot produce less than about 370 kbps at 30 fps even at its largest
quantizer (``loki/data/vp8_calibration.json``). Its own one-pass CBR decimation
(``rc_dropframe_thresh``, on in libwebrtc) drops at most 3 of every 4 frames; libwebrtc's
``VideoStreamEncoder`` adds a frame dropper for encoders whose rate control it does not trust,
VP8 among them. The emulator's encoder model (``loki.emu.encoder``) reproduces that pair as one
rule on libvpx's buffer balance: every frame is dropped while the balance is more than
:data:`loki.emu.encoder.MAX_DEBT_S` of the target in debt. This class keeps the same balance
beside the real libvpx — filled at the target over the frame's duration, emptied by each encoded
frame's bits, capped at the buffer size, never clipped from below, starting at the initial level
— so the live encoder drops frames when the emulated one would.
"""

from __future__ import annotations

from loki.emu.encoder import MAX_DEBT_S


class DebtFrameDropper:
    """The buffer balance of a CBR encoder, and whether it is too deep in debt to encode."""

    __slots__ = ("_balance_bits", "_buffer_s", "_target_bps", "frames_dropped")

    def __init__(self, target_bps: float, buffer_s: float, initial_s: float) -> None:
        self._target_bps = float(target_bps)
        self._buffer_s = buffer_s
        self._balance_bits = initial_s * self._target_bps
        self.frames_dropped = 0

    def set_target(self, target_bps: float) -> None:
        """A new target rescales the buffer: a balance above it is clipped, as libvpx's
        ``vp8_change_config`` does."""
        self._target_bps = float(target_bps)
        self._balance_bits = min(self._balance_bits, self._max_bits)

    @property
    def _max_bits(self) -> float:
        return self._buffer_s * self._target_bps

    @property
    def balance_bits(self) -> float:
        return self._balance_bits

    def should_drop(self, keyframe_requested: bool) -> bool:
        """Whether to skip the next frame (a requested keyframe is never skipped)."""
        return not keyframe_requested and self._balance_bits < -MAX_DEBT_S * self._target_bps

    def on_frame(self, size_bytes: int, duration_s: float) -> None:
        """A frame covering ``duration_s`` was encoded (``size_bytes`` 0: dropped)."""
        if size_bytes == 0:
            self.frames_dropped += 1
        balance = self._balance_bits + self._target_bps * duration_s - 8.0 * size_bytes
        self._balance_bits = min(balance, self._max_bits)
