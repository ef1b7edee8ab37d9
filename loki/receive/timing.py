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

import numpy as np
from numba import njit

NACK_LIMIT = 3
NOISE_STD_DEVS = 2.33
OS_JITTER_US = 10_000
DELAY_DECREASE_US_PER_S = 100_000
JITTER_ALPHA = 1.0 / 30.0
MAX_PLAYOUT_DELAY_US = 10_000_000


# State, in arrays so that compiled code (the emulator's receiver) and the class below share
# one implementation. Integer fields:
FRAMES_NACKED = 0
MIN_TRANSIT_US = 1
HAS_MIN_TRANSIT = 2
LAST_CAPTURE_US = 3
HAS_LAST_CAPTURE = 4
LAST_COMPLETE_US = 5
LAST_RENDER_US = 6
N_INTS = 7
# Float fields:
DELAY_VAR_US2 = 0
CURRENT_DELAY_US = 1
#: The exponent of the standard deviation, 0.5, read from the state at run time: with a
#: compile-time 0.5 the compiler turns ``x ** 0.5`` into a square root, which differs from
#: the C library's ``pow`` (what CPython calls) in the last bit now and then.
SQRT_EXPONENT = 2
N_FLOATS = 3


def new_timing_state() -> tuple[np.ndarray, np.ndarray]:
    ints = np.zeros(N_INTS, dtype=np.int64)
    floats = np.zeros(N_FLOATS)
    floats[SQRT_EXPONENT] = 0.5
    return ints, floats


@njit(cache=True)
def render_time(
    ints: np.ndarray,
    floats: np.ndarray,
    capture_us: int,
    decoded_us: int,
    retransmitted: bool,
    rtt_us: int,
) -> int:
    """Playout time of the next decoded frame, in the receiver's clock.

    ``capture_us`` may be in another clock (the sender's): only differences and the minimum
    transit matter.
    """
    if retransmitted:
        ints[FRAMES_NACKED] += 1
    transit = decoded_us - capture_us
    if not ints[HAS_MIN_TRANSIT] or transit < ints[MIN_TRANSIT_US]:
        ints[MIN_TRANSIT_US] = transit
        ints[HAS_MIN_TRANSIT] = 1
    elapsed = 0
    if ints[HAS_LAST_CAPTURE]:
        last_capture = ints[LAST_CAPTURE_US]
        elapsed = max(0, capture_us - last_capture)
        if not retransmitted:
            d = (decoded_us - ints[LAST_COMPLETE_US]) - (capture_us - last_capture)
            floats[DELAY_VAR_US2] += JITTER_ALPHA * (d * d - floats[DELAY_VAR_US2])
    ints[LAST_CAPTURE_US] = capture_us
    ints[HAS_LAST_CAPTURE] = 1
    ints[LAST_COMPLETE_US] = decoded_us
    target = NOISE_STD_DEVS * floats[DELAY_VAR_US2] ** floats[SQRT_EXPONENT] + OS_JITTER_US
    if ints[FRAMES_NACKED] >= NACK_LIMIT:
        target += rtt_us
    target = min(target, MAX_PLAYOUT_DELAY_US)
    cur = floats[CURRENT_DELAY_US]
    if target >= cur:
        cur = target
    else:
        cur = max(target, cur - DELAY_DECREASE_US_PER_S * elapsed / 1e6)
    floats[CURRENT_DELAY_US] = cur
    render = max(decoded_us, capture_us + ints[MIN_TRANSIT_US] + int(cur), ints[LAST_RENDER_US])
    ints[LAST_RENDER_US] = render
    return render


class PlayoutTiming:
    __slots__ = ("floats", "ints")

    def __init__(self) -> None:
        self.ints, self.floats = new_timing_state()

    def render_time_us(
        self, capture_us: int, decoded_us: int, retransmitted: bool, rtt_us: int
    ) -> int:
        """Playout time of the next decoded frame, in the receiver's clock.

        ``capture_us`` may be in another clock (the sender's): only differences and the
        minimum transit matter.
        """
        return int(
            render_time(self.ints, self.floats, capture_us, decoded_us, retransmitted, rtt_us)
        )

    @property
    def current_delay_us(self) -> float:
        return float(self.floats[CURRENT_DELAY_US])


def _warm_up() -> None:
    """Load the compiled code now (from numba's cache) rather than at the first packet: the first
    compiled call in a process takes about 0.15 s, a stall a live sender or relay must not
    have mid-session."""
    PlayoutTiming().render_time_us(0, 1_000, False, 0)


_warm_up()
