"""When a decoded frame is rendered: libwebrtc's ``VCMTiming`` with its ``JitterEstimator``.

A frame renders at ``capture + base transit + current delay`` or when it is decoded, whichever
is later, and never before the previous frame. The target delay is a jitter estimate — 2.33
standard deviations of the frame-delay variation plus 10 ms of OS jitter — plus one RTT once
:data:`NACK_LIMIT` frames needed a retransmission (``JitterEstimator::GetJitterEstimate`` with
the NACK RTT multiplier of 1), so retransmitted packets arrive inside the buffer instead of
freezing the video. Frames delayed by retransmission do not update the variance, as in
libwebrtc. The current delay rises to the target at once and falls by at most
:data:`DELAY_DECREASE_US_PER_S` per second of capture time.

The frame-delay variance is a plain exponential average (about one second of frames) rather
than libwebrtc's Kalman filter on frame size; the rules that decide freezes are kept.
"""

from __future__ import annotations

NACK_LIMIT = 3
NOISE_STD_DEVS = 2.33
OS_JITTER_US = 10_000
DELAY_DECREASE_US_PER_S = 100_000
JITTER_ALPHA = 1.0 / 30.0
MAX_PLAYOUT_DELAY_US = 10_000_000


class PlayoutTiming:
    __slots__ = (
        "_current_delay_us",
        "_delay_var_us2",
        "_frames_nacked",
        "_last_capture_us",
        "_last_complete_us",
        "_last_render_us",
        "_min_transit_us",
    )

    def __init__(self) -> None:
        self._frames_nacked = 0
        self._min_transit_us: int | None = None
        self._delay_var_us2 = 0.0
        self._current_delay_us = 0.0
        self._last_capture_us: int | None = None
        self._last_complete_us = 0
        self._last_render_us = 0

    def render_time_us(
        self, capture_us: int, decoded_us: int, retransmitted: bool, rtt_us: int
    ) -> int:
        """Playout time of the next decoded frame, in the receiver's clock.

        ``capture_us`` may be in another clock (the sender's): only differences and the
        minimum transit matter.
        """
        if retransmitted:
            self._frames_nacked += 1
        transit = decoded_us - capture_us
        if self._min_transit_us is None or transit < self._min_transit_us:
            self._min_transit_us = transit
        last_capture = self._last_capture_us
        elapsed = 0
        if last_capture is not None:
            elapsed = max(0, capture_us - last_capture)
            if not retransmitted:
                d = (decoded_us - self._last_complete_us) - (capture_us - last_capture)
                self._delay_var_us2 += JITTER_ALPHA * (d * d - self._delay_var_us2)
        self._last_capture_us = capture_us
        self._last_complete_us = decoded_us
        target = NOISE_STD_DEVS * self._delay_var_us2**0.5 + OS_JITTER_US
        if self._frames_nacked >= NACK_LIMIT:
            target += rtt_us
        target = min(target, MAX_PLAYOUT_DELAY_US)
        cur = self._current_delay_us
        if target >= cur:
            cur = target
        else:
            cur = max(target, cur - DELAY_DECREASE_US_PER_S * elapsed / 1e6)
        self._current_delay_us = cur
        render = max(decoded_us, capture_us + self._min_transit_us + int(cur), self._last_render_us)
        self._last_render_us = render
        return render

    @property
    def current_delay_us(self) -> float:
        return self._current_delay_us
