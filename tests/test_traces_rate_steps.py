"""Rate steps -> opportunities: the exact per-millisecond rule, the final append, cuts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from traces.rate_steps import (
    close_period,
    opportunities_from_rate_steps,
    trace_from_rate_steps,
)
from traces.trace import TraceError


def reference(lengths_ms: list[int], rates_bps: list[float]) -> list[int]:
    """The README's rule written out literally, in exact integers (1e-3 bit/s, 1e-6 bit)."""
    out: list[int] = []
    total = 0
    done = 0
    ms = 0
    for length, rate in zip(lengths_ms, rates_bps, strict=True):
        units = round(rate * 1000)
        for _ in range(length):
            ms += 1
            total += units
            while total >= (done + 1) * 12_000_000_000:  # 1500 bytes
                done += 1
                out.append(ms)
    return out


def test_twelve_mbps_is_one_opportunity_per_ms() -> None:
    assert opportunities_from_rate_steps([1000], [12e6]).tolist() == list(range(1, 1001))


def test_fractional_rates_accumulate_without_drift() -> None:
    # 1.2 Mbit/s = 150 bytes/ms: one opportunity every 10 ms, exactly, for a long time.
    ops = opportunities_from_rate_steps([3_600_000], [1.2e6])
    assert ops.size == 360_000
    assert np.all(ops == np.arange(10, 3_600_001, 10))


def test_rates_with_nine_decimals_of_mbps_are_exact() -> None:
    # 0.1 + 0.2 style rates would drift in float; 3 x 4 Mbit/s steps sum to 12 per ms.
    ops = opportunities_from_rate_steps(
        [1, 1, 1] * 1000, [4.000000001e6, 3.999999999e6, 4e6] * 1000
    )
    assert ops.tolist() == list(range(3, 3001, 3))


def test_zero_rate_and_zero_length_steps() -> None:
    ops = opportunities_from_rate_steps([500, 0, 500, 10], [0.0, 1e9, 12e6, 0.0])
    assert ops.tolist() == list(range(501, 1001))


def test_remainder_carries_across_steps() -> None:
    # 6 Mbit/s = 750 bytes/ms: half an opportunity carried from step to step.
    ops = opportunities_from_rate_steps([1, 1, 1, 1], [6e6] * 4)
    assert ops.tolist() == [2, 4]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=300),
            st.one_of(
                st.just(0.0),
                st.floats(min_value=0, max_value=60e6, allow_nan=False),
                st.integers(min_value=0, max_value=60_000).map(lambda k: k * 1000.0),
            ),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_matches_the_literal_rule(steps: list[tuple[int, float]]) -> None:
    lengths = [d for d, _ in steps]
    rates = [r for _, r in steps]
    assert opportunities_from_rate_steps(lengths, rates).tolist() == reference(lengths, rates)


def test_long_high_rate_trace_stays_exact() -> None:
    # 1 Gbit/s for 10 s: the running total reaches 1e16 internal units, far past float's
    # exact integers.
    ops = opportunities_from_rate_steps([10_000], [1.2e9])
    assert ops.size == 1_000_000
    assert np.all(np.bincount(ops)[1:] == 100)


def test_step_too_large_to_convert_is_refused_not_wrapped() -> None:
    with pytest.raises(TraceError, match="too large"):
        opportunities_from_rate_steps([2000], [4e12])


def test_refuses_negative_or_non_finite_rates() -> None:
    with pytest.raises(TraceError, match="negative"):
        opportunities_from_rate_steps([10, 10], [1e6, -1.0])
    with pytest.raises(TraceError, match="finite"):
        opportunities_from_rate_steps([10], [float("nan")])
    with pytest.raises(TraceError, match="negative length"):
        opportunities_from_rate_steps([10, -1], [1e6, 1e6])


def test_close_period_appends_only_when_needed() -> None:
    ops, appended = close_period(np.array([3, 10]), 10)
    assert ops.tolist() == [3, 10] and not appended
    ops, appended = close_period(np.array([3, 7]), 10)
    assert ops.tolist() == [3, 7, 10] and appended
    ops, appended = close_period(np.array([], dtype=np.int64), 10)
    assert ops.tolist() == [10] and appended


def test_trace_period_is_the_duration() -> None:
    trace = trace_from_rate_steps("half", [1000], [6e6])
    assert trace.period_ms == 1000
    assert trace.opportunities_ms.size == 500
    assert trace.meta["appended_final_opportunity"] is False
    idle = trace_from_rate_steps("idle", [700, 300], [12e6, 0.0])
    assert idle.opportunities_ms[-2:].tolist() == [700, 1000]
    assert idle.meta["appended_final_opportunity"] is True


def test_cut_is_a_slice_of_the_continuous_conversion() -> None:
    lengths = [333, 250, 417, 1000]
    rates = [3.3e6, 0.7e6, 9.1e6, 2.2e6]
    full = opportunities_from_rate_steps(lengths, rates)
    cut = trace_from_rate_steps("cut", lengths, rates, start_ms=400, duration_ms=1200)
    expected = full[(full > 400) & (full <= 1600)] - 400
    body = (
        cut.opportunities_ms[:-1]
        if cut.meta["appended_final_opportunity"]
        else cut.opportunities_ms
    )
    assert body.tolist() == expected.tolist()
    assert cut.period_ms == 1200


def test_cut_past_the_end_holds_the_last_rate() -> None:
    trace = trace_from_rate_steps("long", [500], [12e6], duration_ms=800)
    assert trace.opportunities_ms.tolist() == list(range(1, 801))
