"""Synthetic generators: shapes, mean rates, determinism under a seed."""

from __future__ import annotations

import numpy as np
import pytest

from traces import generators
from traces.generators import (
    CELLULAR_STATES,
    CELLULAR_TRANSITIONS,
    LinkState,
    constant,
    markov_modulated,
    nominal_mean_bps,
    periodic_outages,
    random_walk,
    stationary_time_share,
    steps,
)
from traces.trace import Trace, TraceError

BITS_PER_OPPORTUNITY = 1500 * 8


def delivered_bps(trace: Trace, start_ms: int, end_ms: int) -> float:
    """Rate in (start, end] counting 1500-byte packets, the unit the rates were written in."""
    n = trace.opportunities_between(start_ms, end_ms)
    return n * BITS_PER_OPPORTUNITY * 1000 / (end_ms - start_ms)


def assert_mean_is_nominal(trace: Trace) -> None:
    """The count is the built-from rate's bits over 12000, floored (+1 if the period was
    closed): nothing is lost or invented between the rate and the opportunities."""
    lengths = trace.meta["step_lengths_ms"].tolist()
    millibps = np.rint(trace.meta["step_rates_bps"] * 1000).astype(np.int64).tolist()
    microbits = sum(r * n for r, n in zip(millibps, lengths, strict=True))
    expected = microbits // (BITS_PER_OPPORTUNITY * 10**6)
    assert trace.opportunities_ms.size == expected + trace.meta["appended_final_opportunity"]
    assert trace.opportunities_ms.size * BITS_PER_OPPORTUNITY * 1000 / trace.period_ms == (
        pytest.approx(
            nominal_mean_bps(trace), abs=2 * BITS_PER_OPPORTUNITY * 1000 / trace.period_ms
        )
    )


def test_constant_twelve_mbps_is_seq_1_1000() -> None:
    trace = constant(12e6, 1000)
    assert trace.opportunities_ms.tolist() == list(range(1, 1001))
    assert trace.mean_capacity_bps == pytest.approx(12e6 * 1504 / 1500)


def test_constant_low_rate() -> None:
    trace = constant(2.5e6, 60_000)
    assert_mean_is_nominal(trace)
    assert trace.opportunities_ms.size == 12_500
    assert delivered_bps(trace, 0, 60_000) == pytest.approx(2.5e6)


def test_steps_follow_the_schedule() -> None:
    trace = steps([(10_000, 4e6), (5_000, 1.5e6), (10_000, 3e6)])
    assert trace.period_ms == 25_000
    assert delivered_bps(trace, 0, 10_000) == pytest.approx(4e6, rel=1e-3)
    assert delivered_bps(trace, 10_000, 15_000) == pytest.approx(1.5e6, rel=1e-3)
    assert delivered_bps(trace, 15_000, 25_000) == pytest.approx(3e6, rel=1e-3)
    assert_mean_is_nominal(trace)
    with pytest.raises(TraceError):
        steps([])
    with pytest.raises(TraceError):
        steps([(0, 1e6)])


def test_periodic_outages_are_silent() -> None:
    trace = periodic_outages(3e6, period_ms=10_000, outage_ms=2_000, duration_ms=35_000)
    assert trace.period_ms == 35_000
    for start in (8_000, 18_000, 28_000):
        assert trace.opportunities_between(start, start + 2_000) == 0
        assert delivered_bps(trace, start - 8_000, start) == pytest.approx(3e6, rel=1e-3)
    assert delivered_bps(trace, 30_000, 35_000) == pytest.approx(3e6, rel=1e-3)
    assert_mean_is_nominal(trace)
    with pytest.raises(TraceError):
        periodic_outages(3e6, period_ms=1000, outage_ms=1000, duration_ms=5000)


def test_outage_at_the_end_only_gets_the_closing_opportunity() -> None:
    trace = periodic_outages(3e6, period_ms=10_000, outage_ms=2_000, duration_ms=20_000)
    assert trace.opportunities_between(18_000, 20_000) == 1
    assert trace.opportunities_ms[-1] == 20_000
    assert trace.meta["appended_final_opportunity"] is True


def test_random_walk_stays_within_bounds_and_moves() -> None:
    trace = random_walk(120_000, start_bps=2e6, min_bps=0.5e6, max_bps=4e6, volatility=0.2, seed=11)
    rates = trace.meta["step_rates_bps"]
    assert rates.min() >= 0.5e6 - 1e-6 and rates.max() <= 4e6 + 1e-6
    assert rates.max() / rates.min() > 3  # it actually wanders
    assert trace.period_ms == 120_000
    assert_mean_is_nominal(trace)


def test_reflection_handles_big_jumps() -> None:
    lo, hi = np.log(1.0), np.log(2.0)
    for x in np.linspace(-10, 10, 101):
        assert lo - 1e-12 <= generators._reflect(float(x), lo, hi) <= hi + 1e-12


def test_markov_long_run_mean_matches_the_chain() -> None:
    """Two simulated hours: the mean rate is the dwell-weighted stationary mean. Across 20
    seeds the run-to-run spread is 2.4 % (sd) and the bias 0.3 %, so 8 % is over 3 sd."""
    trace = markov_modulated(7_200_000, seed=1)
    share = stationary_time_share(CELLULAR_STATES, np.array(CELLULAR_TRANSITIONS))
    expected_bps = float(share @ np.array([s.rate_bps for s in CELLULAR_STATES]))
    assert nominal_mean_bps(trace) == pytest.approx(expected_bps, rel=0.08)
    assert_mean_is_nominal(trace)


def test_markov_visits_states_with_their_rates() -> None:
    states = (LinkState("low", 1e6, 2_000), LinkState("high", 8e6, 2_000))
    trace = markov_modulated(
        60_000,
        states=states,
        transitions=((0.0, 1.0), (1.0, 0.0)),
        fluctuation=0.0,
        initial_state=0,
        seed=4,
    )
    rates = set(trace.meta["step_rates_bps"].tolist())
    assert rates == {1e6, 8e6}
    assert trace.meta["step_rates_bps"][0] == 1e6
    with pytest.raises(TraceError, match="row-stochastic"):
        markov_modulated(1000, states=states, transitions=((0.5, 0.4), (1.0, 0.0)))


@pytest.mark.parametrize(
    "make",
    [
        lambda seed: random_walk(30_000, start_bps=2e6, min_bps=1e5, max_bps=9e6, seed=seed),
        lambda seed: markov_modulated(30_000, seed=seed),
    ],
    ids=["walk", "markov"],
)
def test_same_seed_same_trace_other_seed_other_trace(make) -> None:
    a, b, c = make(5), make(5), make(6)
    assert np.array_equal(a.opportunities_ms, b.opportunities_ms)
    assert a.meta["params"] == b.meta["params"]
    assert not np.array_equal(a.opportunities_ms, c.opportunities_ms)


def test_durations_not_multiple_of_the_step_are_exact() -> None:
    assert random_walk(12_345, start_bps=1e6, min_bps=1e5, max_bps=2e6).period_ms == 12_345
    assert markov_modulated(12_345).period_ms == 12_345
    with pytest.raises(TraceError):
        constant(1e6, 0)
