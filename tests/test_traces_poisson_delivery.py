"""Poisson-timed deliveries: each 200 ms keeps its capacity; its milliseconds are drawn."""

import numpy as np
import pytest

from traces.generators import constant, steps
from traces.poisson_delivery import poisson_delivery


def _per_window(ops: np.ndarray, window_ms: int = 200) -> np.ndarray:
    return np.bincount((np.maximum(ops, 1) - 1) // window_ms)


def test_every_window_keeps_its_opportunities_and_the_period_stays():
    """200 ms windows: OpenNetLab's capacity steps every 200 ms survive."""
    trace = steps([(3_000, 2e6), (200, 0.3e6), (400, 6e6), (200, 0), (3_300, 1e6)])
    out = poisson_delivery(trace, seed=3)
    assert out.period_ms == trace.period_ms
    assert out.opportunities_ms.size == trace.opportunities_ms.size
    assert np.array_equal(_per_window(out.opportunities_ms), _per_window(trace.opportunities_ms))
    assert np.all(np.diff(out.opportunities_ms) >= 0) and out.opportunities_ms[0] >= 1


def test_deliveries_become_bursty_at_the_millisecond_scale():
    """A 3 Mbps cooked link delivers about one opportunity every 4 ms, like a metronome; a
    Poisson process at that rate has 10-ms counts with a coefficient of variation near
    1 / sqrt(2.5) = 0.63."""
    trace = constant(3e6, 20_000)

    def cv_10ms(ops):
        counts = np.bincount(ops, minlength=20_001)[1:20_001].reshape(-1, 10).sum(1)
        return counts.std() / counts.mean()

    assert cv_10ms(trace.opportunities_ms) < 0.25
    assert 0.5 < cv_10ms(poisson_delivery(trace, seed=1).opportunities_ms) < 0.75


def test_same_seed_same_trace_and_other_seeds_differ():
    trace = constant(2e6, 5_000)
    a = poisson_delivery(trace, seed=7).opportunities_ms
    assert np.array_equal(a, poisson_delivery(trace, seed=7).opportunities_ms)
    assert not np.array_equal(a, poisson_delivery(trace, seed=8).opportunities_ms)


def test_a_short_last_window_stays_inside_the_period():
    trace = constant(12e6, 1_150)  # the last window is 150 ms long
    out = poisson_delivery(trace, seed=0).opportunities_ms
    assert out.max() == 1_150
    assert np.count_nonzero(out > 1_000) == np.count_nonzero(trace.opportunities_ms > 1_000)


def test_bad_window_is_refused():
    with pytest.raises(ValueError, match="window_ms"):
        poisson_delivery(constant(1e6, 1_000), seed=0, window_ms=0)
