"""libwebrtc's unit-arithmetic rounding rules, as plain-int helpers for the throughput half of GCC.

libwebrtc computes with strong types (``DataRate`` in bps, ``DataSize`` in bytes, ``TimeDelta`` and
``Timestamp`` in microseconds) whose operators round in specific ways; matching its unit-test
vectors exactly needs the same rounding. Facts from ``rtc_base/units/unit_base.h`` and
``api/units/data_rate.h`` (upstream, mid-2024):

* ``Unit * double`` and ``Unit / double`` round half away from zero (``std::llround``).
* ``DataRate::BitsPerSec(double)`` and ``KilobitsPerSec(float)`` truncate toward zero.
* ``DataSize / TimeDelta`` gives bps ``= bytes * 8e6 / us`` in integer (truncating) division.
* ``DataSize / DataRate`` gives us ``= bytes * 8e6 / bps`` in integer (truncating) division.
* ``DataRate * TimeDelta`` gives bytes ``= (bps * us + 4e6) / 8e6`` (rounded to nearest).
* ``Timestamp::ms()`` rounds to the nearest millisecond, halves upward.

Times are integer microseconds and rates integer bps throughout; infinite timestamps are
``math.inf`` / ``-math.inf`` (Python compares them with ints correctly).
"""

from __future__ import annotations

import math
import struct

US_PER_S = 1_000_000
US_PER_MS = 1_000
#: bits per byte times microseconds per second: the factor in every bytes/us <-> bps conversion.
BIT_US_PER_BYTE_S = 8 * US_PER_S

_FLOAT32 = struct.Struct("f")


def llround(value: float) -> int:
    """Round half away from zero, as ``std::llround`` (Python's ``round`` rounds half to even)."""
    floor = math.floor(value)
    frac = value - floor  # exact for doubles
    if frac > 0.5 or (frac == 0.5 and value >= 0):
        return floor + 1
    return floor


def scale_rate(rate_bps: int, factor: float) -> int:
    """``DataRate * double``: the product rounded half away from zero."""
    return llround(rate_bps * factor)


def rate_bps(size_bytes: int, duration_us: int) -> int:
    """``DataSize / TimeDelta``: bits per second, truncated; ``duration_us`` must be > 0."""
    return size_bytes * BIT_US_PER_BYTE_S // duration_us


def transfer_time_us(size_bytes: int, rate: int) -> int:
    """``DataSize / DataRate``: microseconds to carry ``size_bytes`` at ``rate`` bps, truncated."""
    return size_bytes * BIT_US_PER_BYTE_S // rate


def size_bytes_at(rate: int, duration_us: int) -> int:
    """``DataRate * TimeDelta``: bytes sent at ``rate`` bps for ``duration_us``, rounded."""
    return (rate * duration_us + BIT_US_PER_BYTE_S // 2) // BIT_US_PER_BYTE_S


def us_to_ms(time_us: int) -> int:
    """``Timestamp::ms()``: nearest millisecond, halves rounded up."""
    return (time_us + US_PER_MS // 2) // US_PER_MS


def f32(value: float) -> float:
    """Round a double to the nearest float32 (libwebrtc's ``float`` arithmetic).

    For ``+ - * /`` of float32 operands, computing in double and rounding once to float32 gives
    the correctly rounded float32 result (double has more than twice float32's precision).
    """
    return _FLOAT32.unpack(_FLOAT32.pack(value))[0]


#: float32 constants as the doubles they widen to (``0.9f`` is not ``0.9``).
F32_0_02 = f32(0.02)
F32_0_1 = f32(0.1)
F32_0_9 = f32(0.9)
F32_0_95 = f32(0.95)
