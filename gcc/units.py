"""libwebrtc's unit-type rounding rules, as helpers over plain ints and floats.

libwebrtc's delay-based estimator computes with strong unit types (``Timestamp``, ``TimeDelta``
in microseconds, ``DataRate`` in bps, ``DataSize`` in bytes) whose operators round in particular
ways. Matching its unit-test vectors bit for bit needs the same rounding, so the rules live here,
named, instead of being re-derived at each call site. Facts from ``rtc_base/units/unit_base.h``
and ``api/units/{data_rate,time_delta,timestamp}.h`` (upstream, mid-2024):

* ``Unit * double`` and ``Unit / double`` round half away from zero (``std::round``).
* ``FromValue(double)`` (``DataRate::BitsPerSec``, ``KilobitsPerSec``, ``TimeDelta::Seconds``
  with a double) truncates toward zero; an infinite double gives an infinite unit.
* ``ms<double>()`` is ``us * (1 / 1000.0)``, a multiplication, not ``us / 1000``: the two can
  differ in the last bit, and the trendline filter sees the difference.
* ``Timestamp::ms()`` and ``DataRate::kbps()`` (one-sided units) round halves up.
* ``DataRate * TimeDelta`` gives bytes ``(bps * us + 4e6) / 8e6``; ``DataSize / TimeDelta``
  gives bps ``bytes * 8e6 / us`` with truncating integer division.

Infinite rates are ``math.inf`` (Python compares it with ints correctly).
"""

from __future__ import annotations

import math
import struct

US_PER_MS = 1_000
US_PER_S = 1_000_000
#: ``ToFraction<1000, double>``'s factor: ``1 / static_cast<double>(1000)``.
MS_PER_US = 1.0 / 1000.0
#: ``ToFraction<1000000, double>``'s factor.
S_PER_US = 1.0 / 1_000_000.0
#: bits per byte times microseconds per second: the factor of every bytes/us <-> bps conversion.
BIT_US_PER_BYTE_S = 8 * US_PER_S

_FLOAT32 = struct.Struct("f")


def llround(value: float) -> int:
    """Round half away from zero, as ``std::round`` does (Python rounds half to even)."""
    floor = math.floor(value)
    frac = value - floor  # exact for doubles below 2**52
    if frac > 0.5 or (frac == 0.5 and value >= 0):
        return floor + 1
    return floor


def truncate_rate_bps(value_bps: float) -> float | int:
    """``DataRate::BitsPerSec(double)``: truncated toward zero, infinity kept infinite."""
    if math.isinf(value_bps):
        return value_bps
    return int(value_bps)


def kbps_to_bps(value_kbps: float) -> int:
    """``DataRate::KilobitsPerSec(double)``: ``value * 1000`` truncated toward zero."""
    return int(value_kbps * 1000)


def rounded_kbps(rate_bps: int) -> int:
    """``DataRate::kbps()``: the nearest kbps, halves rounded up."""
    return (rate_bps + 500) // 1000


def seconds_to_us(value_s: float) -> int:
    """``TimeDelta::Seconds(double)``: ``value * 1e6`` truncated toward zero."""
    return int(value_s * US_PER_S)


def timestamp_ms(time_us: int) -> int:
    """``Timestamp::ms()``: the nearest millisecond, halves rounded up (timestamps are >= 0)."""
    return (time_us + 500) // US_PER_MS


def size_at_rate_bytes(rate_bps: int, duration_us: int) -> int:
    """``DataRate * TimeDelta``: bytes carried at ``rate_bps`` for ``duration_us``, rounded."""
    return (rate_bps * duration_us + BIT_US_PER_BYTE_S // 2) // BIT_US_PER_BYTE_S


def rate_bps(size_bytes: int, duration_us: int) -> int:
    """``DataSize / TimeDelta``: bits per second, truncated; ``duration_us`` must be > 0."""
    return size_bytes * BIT_US_PER_BYTE_S // duration_us


def transfer_time_us(size_bytes: int, rate_bps: int) -> int:
    """``DataSize / DataRate``: microseconds to carry ``size_bytes`` at ``rate_bps``, truncated."""
    return size_bytes * BIT_US_PER_BYTE_S // rate_bps


def scale_rate(rate_bps: int, factor: float) -> int:
    """``DataRate * double``: the product rounded half away from zero."""
    return llround(rate_bps * factor)


def f32(value: float) -> float:
    """Round a double to the nearest float32 (libwebrtc's ``float`` arithmetic).

    The double a C++ ``float`` literal widens to (``0.4f`` is not ``0.4``). For ``+ - * /`` of
    float32 operands, computing in double and rounding once to float32 gives the correctly
    rounded float32 result (double has more than twice float32's precision).
    """
    return _FLOAT32.unpack(_FLOAT32.pack(value))[0]


#: float32 constants as the doubles they widen to (``0.9f`` is not ``0.9``).
F32_0_02 = f32(0.02)
F32_0_1 = f32(0.1)
F32_0_9 = f32(0.9)
F32_0_95 = f32(0.95)
