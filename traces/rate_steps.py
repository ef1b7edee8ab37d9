"""Turn a piecewise-constant rate into mahimahi delivery opportunities, exactly.

Every throughput-based source (cooked series, OpenNetLab JSON, the synthetic generators) goes
through here, so they all follow the rule the shared trace sets were converted with
(``../shared/traces/README.md``): the rate is held constant over each step, integrated per
millisecond, and millisecond ``m`` (covering ``[m-1, m)``) gets one opportunity each time the
running total passes another 1500 bytes. When the last millisecond has no opportunity, one is
appended there so that the loop period (the last timestamp) equals the duration.

The sum is kept in integers: rates are rounded to 1e-3 bit/s (so any rate written with up to
9 decimals of Mbit/s is exact) and the running total is counted in 1e-6 bit. Floating-point
accumulation would land an opportunity one millisecond early or late whenever the total falls
on a multiple of 1500 bytes, which it does for round rates such as 12 Mbit/s.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from traces.trace import Trace, TraceError

#: Bytes the running total must pass for one opportunity (a 1500-byte IP packet; mahimahi adds
#: its 4-byte TUN header on top, see ``BYTES_PER_OPPORTUNITY``).
BYTES_PER_CONVERSION_STEP = 1500
#: Integer rate unit: 1 bit/s is 1000 units.
RATE_UNITS_PER_BPS = 1000
#: Running-total unit (rate unit x ms = 1e-6 bit); one opportunity is this many units.
UNITS_PER_OPPORTUNITY = BYTES_PER_CONVERSION_STEP * 8 * RATE_UNITS_PER_BPS * 1000
#: Rates above this cannot be held exactly in the integer arithmetic (4.5 Tbit/s).
MAX_RATE_BPS = 4.5e12
#: A step's rate x length must stay below this for int64 arithmetic (about 3.8e8 opportunities).
_MAX_STEP_UNITS = 1 << 62


def rate_units_from_bps(rates_bps: Sequence[float] | np.ndarray) -> np.ndarray:
    """Rates in the integer unit (1e-3 bit/s), refusing negative, non-finite or absurd ones."""
    rates = np.asarray(rates_bps, dtype=np.float64)
    if rates.size and not np.all(np.isfinite(rates)):
        raise TraceError(f"rate step {int(np.argmin(np.isfinite(rates)))} is not a finite number")
    if rates.size and rates.min() < 0:
        raise TraceError(f"rate step {int(np.argmin(rates))} is negative ({rates.min()} bit/s)")
    if rates.size and rates.max() > MAX_RATE_BPS:
        raise TraceError(f"rate step {int(np.argmax(rates))} exceeds {MAX_RATE_BPS:g} bit/s")
    return np.rint(rates * RATE_UNITS_PER_BPS).astype(np.int64)


def opportunities_from_rate_steps(
    lengths_ms: Sequence[int] | np.ndarray, rates_bps: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Opportunity times (1-based ms, no final append) for consecutive constant-rate steps.

    Step ``i`` lasts ``lengths_ms[i]`` whole milliseconds at ``rates_bps[i]``; steps of length 0
    are ignored. Vectorised: only the running total modulo one opportunity is carried, so it never
    leaves int64, however long the trace.
    """
    lengths = np.asarray(lengths_ms, dtype=np.int64)
    units = rate_units_from_bps(rates_bps)
    if lengths.shape != units.shape or lengths.ndim != 1:
        raise TraceError("need one length per rate step")
    if lengths.size and lengths.min() < 0:
        raise TraceError(f"rate step {int(np.argmin(lengths))} has a negative length")
    starts_ms = np.concatenate(([0], np.cumsum(lengths)[:-1])) if lengths.size else lengths
    keep = lengths > 0
    starts_ms, lengths, units = starts_ms[keep], lengths[keep], units[keep]
    if lengths.size == 0:
        return np.zeros(0, dtype=np.int64)
    if np.any(units > _MAX_STEP_UNITS // lengths):
        # Only reachable with ~4e8 opportunities in one step (gigabytes of trace).
        raise TraceError("a rate step is too large to convert (rate x length overflows)")
    step_units = units * lengths
    # Only the running total modulo one opportunity matters; the remainders of whole steps
    # sum without overflow (each is < UNITS_PER_OPPORTUNITY).
    rem_before = np.concatenate(([0], np.cumsum(step_units % UNITS_PER_OPPORTUNITY)[:-1]))
    rem_before %= UNITS_PER_OPPORTUNITY
    counts = (rem_before + step_units) // UNITS_PER_OPPORTUNITY
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    step_of = np.repeat(np.arange(lengths.size), counts)
    first_of_step = np.concatenate(([0], np.cumsum(counts)[:-1]))
    # The k-th opportunity of a step (1-based) needs k*U - rem_before more units.
    k_in_step = np.arange(1, total + 1) - first_of_step[step_of]
    needed = k_in_step * UNITS_PER_OPPORTUNITY - rem_before[step_of]
    ms_in_step = -(-needed // units[step_of])  # ceil; units > 0 wherever counts > 0
    return starts_ms[step_of] + ms_in_step


def close_period(opportunities_ms: np.ndarray, duration_ms: int) -> tuple[np.ndarray, bool]:
    """Append an opportunity at ``duration_ms`` when none falls there, so period == duration.

    Returns the array and whether one was appended (the shared sets record the same flag).
    """
    if duration_ms <= 0:
        raise TraceError(f"duration must be > 0 ms (got {duration_ms})")
    ops = np.asarray(opportunities_ms, dtype=np.int64)
    if ops.size and ops[-1] == duration_ms:
        return ops, False
    return np.append(ops, np.int64(duration_ms)), True


def trace_from_rate_steps(
    name: str,
    lengths_ms: Sequence[int] | np.ndarray,
    rates_bps: Sequence[float] | np.ndarray,
    *,
    start_ms: int = 0,
    duration_ms: int | None = None,
    meta: dict | None = None,
) -> Trace:
    """A looping trace from rate steps, optionally cut to ``(start_ms, start_ms+duration_ms]``.

    The cut is taken from the continuous conversion and re-based to 0 (the running total is not
    restarted at ``start_ms``): that is how the shared sets made their ``_partK`` files and their
    2 MB truncations. Without a cut the whole series is used. ``meta`` gains
    ``appended_final_opportunity``.
    """
    lengths = np.asarray(lengths_ms, dtype=np.int64)
    rates = np.asarray(rates_bps, dtype=np.float64)
    series_ms = int(lengths.sum())
    if duration_ms is None:
        duration_ms = series_ms - start_ms
    if start_ms < 0 or duration_ms <= 0:
        raise TraceError(f"{name}: empty cut (start {start_ms} ms, duration {duration_ms} ms)")
    end_ms = start_ms + duration_ms
    if end_ms > series_ms:
        # Hold the last rate up to the requested end rather than silently shortening.
        if rates.size == 0:
            raise TraceError(f"{name}: no rate steps")
        lengths = np.append(lengths, end_ms - series_ms)
        rates = np.append(rates, rates[-1])
    elif end_ms < series_ms:
        # Nothing after the cut matters: clip the steps there before converting.
        step_end_ms = np.cumsum(lengths)
        last = int(np.searchsorted(step_end_ms, end_ms))  # first step reaching end_ms
        lengths = lengths[: last + 1].copy()
        lengths[-1] -= int(step_end_ms[last]) - end_ms
        rates = rates[: last + 1]
    ops = opportunities_from_rate_steps(lengths, rates)
    ops = ops[(ops > start_ms) & (ops <= end_ms)] - start_ms
    ops, appended = close_period(ops, duration_ms)
    out_meta = dict(meta or {})
    out_meta["appended_final_opportunity"] = appended
    return Trace(name, ops, out_meta)
