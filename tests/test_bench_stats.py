"""Paired bootstrap: relative-change math, intervals around known effects, coverage, pairing."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bench.lib.summary import json_safe
from loki.stats import (
    PairedChange,
    derive_seed,
    paired_relative_change,
    relative_change,
)


def lognormal_mean_one(rng: np.random.Generator, sigma: float, n: int) -> np.ndarray:
    """Multiplicative noise with expectation exactly 1."""
    return rng.lognormal(-(sigma**2) / 2, sigma, n)


def test_relative_change_math() -> None:
    assert float(relative_change(3.0, 2.0)) == pytest.approx(0.5)
    assert float(relative_change(1.0, 4.0)) == pytest.approx(-0.75)
    assert float(relative_change(0.0, 0.0)) == 0.0  # no stalls either way: no change
    assert float(relative_change(0.2, 0.0)) == math.inf
    assert float(relative_change(0.0, 0.5)) == -1.0
    out = relative_change(np.array([2.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0]))
    np.testing.assert_array_equal(out, [1.0, 0.0, np.inf])


def test_exact_scaling_gives_a_point_interval() -> None:
    rng = np.random.default_rng(1)
    base = rng.lognormal(0, 1, 50)
    for stat in ("mean", "p95"):
        ch = paired_relative_change(0.5 * base, base, stat, resamples=300, seed=0)
        # Every resample scales both sides alike: the change is -50 % in each of them.
        assert ch.estimate == pytest.approx(-0.5)
        assert ch.ci_low == pytest.approx(-0.5)
        assert ch.ci_high == pytest.approx(-0.5)
        assert ch.pairs == 50 and ch.significant


def test_known_effect_of_the_mean() -> None:
    rng = np.random.default_rng(2)
    base = rng.lognormal(0, 0.8, 400)
    cand = 0.8 * base * lognormal_mean_one(rng, 0.3, 400)
    ch = paired_relative_change(cand, base, "mean", resamples=2000, seed=3)
    assert ch.estimate == pytest.approx(-0.2, abs=0.04)
    assert ch.ci_low < -0.2 < ch.ci_high
    assert ch.ci_high < 0 and ch.significant
    assert ch.candidate == pytest.approx(cand.mean())
    assert ch.baseline == pytest.approx(base.mean())


def test_no_effect_interval_contains_zero() -> None:
    rng = np.random.default_rng(4)
    base = rng.lognormal(0, 0.8, 300)
    cand = base * lognormal_mean_one(rng, 0.3, 300)
    ch = paired_relative_change(cand, base, "mean", resamples=1000, seed=5)
    assert ch.ci_low < 0 < ch.ci_high
    assert not ch.significant


def test_interval_coverage_near_nominal() -> None:
    """Over many data sets with a true -20 % change, about 95 % of intervals contain it."""
    rng = np.random.default_rng(6)
    reps, n, hits = 300, 80, 0
    for i in range(reps):
        base = rng.lognormal(0, 0.5, n)
        cand = 0.8 * base * lognormal_mean_one(rng, 0.2, n)
        ch = paired_relative_change(cand, base, "mean", resamples=400, seed=i)
        hits += ch.ci_low <= -0.2 <= ch.ci_high
    assert 0.89 <= hits / reps <= 0.99


def test_pairing_narrows_the_interval() -> None:
    """Trace-to-trace spread cancels out of paired resamples but not of independent ones."""
    rng = np.random.default_rng(7)
    n = 100
    base = rng.lognormal(0, 1.5, n)  # traces differ by orders of magnitude
    cand = 0.9 * base * lognormal_mean_one(rng, 0.05, n)
    paired = paired_relative_change(cand, base, "mean", resamples=1000, seed=8)
    boot = np.random.default_rng(9)
    unpaired = np.array(
        [
            cand[boot.integers(0, n, n)].mean() / base[boot.integers(0, n, n)].mean() - 1
            for _ in range(1000)
        ]
    )
    lo, hi = np.quantile(unpaired, [0.025, 0.975])
    assert paired.significant and paired.ci_high < 0
    assert lo < 0 < hi  # without pairing the 10 % gain is lost in the spread
    assert (paired.ci_high - paired.ci_low) < 0.2 * (hi - lo)


def test_resamples_draw_sessions_jointly() -> None:
    """A candidate equal to its baseline has exactly zero change in every resample."""
    base = np.random.default_rng(10).lognormal(0, 1, 60)
    ch = paired_relative_change(base.copy(), base, "p95", resamples=500, seed=11)
    assert ch.ci_low == 0.0 and ch.ci_high == 0.0


def test_seeded_and_order_independent_seeds() -> None:
    rng = np.random.default_rng(12)
    base = rng.lognormal(0, 1, 40)
    cand = base * lognormal_mean_one(rng, 0.5, 40)
    a = paired_relative_change(cand, base, "mean", resamples=300, seed=derive_seed(0, "x"))
    b = paired_relative_change(cand, base, "mean", resamples=300, seed=derive_seed(0, "x"))
    c = paired_relative_change(cand, base, "mean", resamples=300, seed=derive_seed(0, "y"))
    assert a == b
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)
    assert derive_seed(3, "rl", "stall") == derive_seed(3, "rl", "stall")


def test_nan_pairs_dropped_from_both_sides() -> None:
    cand = np.array([1.0, np.nan, 3.0, 4.0])
    base = np.array([2.0, 2.0, np.nan, 4.0])
    ch = paired_relative_change(cand, base, "mean", resamples=100)
    assert ch.pairs == 2
    assert ch.estimate == pytest.approx((1 + 4) / (2 + 4) - 1)


def test_zero_baseline_is_infinite_and_json_null() -> None:
    cand = np.array([0.0, 0.1, 0.0, 0.0])
    base = np.zeros(4)
    ch = paired_relative_change(cand, base, "mean", resamples=200, seed=0)
    assert ch.estimate == math.inf
    assert ch.ci_low == 0.0  # resamples that miss the stalled session show no change
    assert ch.ci_high == math.inf
    text = json.dumps(json_safe(ch.to_dict()), allow_nan=False)
    assert json.loads(text)["estimate"] is None


def test_rejects_unpaired_shapes() -> None:
    with pytest.raises(ValueError, match="equal 1-D"):
        paired_relative_change(np.ones(3), np.ones(4), "mean")
    empty = paired_relative_change(np.array([np.nan]), np.array([1.0]), "mean")
    assert isinstance(empty, PairedChange) and empty.pairs == 0 and math.isnan(empty.estimate)
