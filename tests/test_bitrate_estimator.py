"""Tests for the Bayesian BitrateEstimator.

libwebrtc has no unit test for ``BitrateEstimator`` alone (its acknowledged-estimator test mocks
it), so these check the rules of ``bitrate_estimator.cc`` directly, with expected values worked
out independently in numpy float32 (the arithmetic libwebrtc uses).
"""

from __future__ import annotations

import numpy as np
import pytest

from gcc.bitrate_estimator import BitrateEstimator, BitrateEstimatorConfig

F32 = np.float32


def bayes_step(estimate: float, var: float, sample: float, scale: float = 10.0):
    """One filter update as libwebrtc writes it, in numpy float32 (symmetry cap 0)."""
    est, var, s = F32(estimate), F32(var), F32(sample)
    uncertainty = F32(F32(scale) * np.abs(est - s)) / (est + min(s, F32(0)))
    sample_var = uncertainty * uncertainty
    pred_var = var + F32(5)
    return (sample_var * est + pred_var * s) / (sample_var + pred_var), (
        sample_var * pred_var / (sample_var + pred_var)
    )


def feed_steps(est: BitrateEstimator, start_ms: int, end_ms: int, size: int, alr=False) -> None:
    """One packet of ``size`` bytes every 10 ms in [start_ms, end_ms)."""
    for t_ms in range(start_ms, end_ms, 10):
        est.update(t_ms * 1000, size, alr)


def test_no_estimate_until_first_500ms_window() -> None:
    est = BitrateEstimator()
    feed_steps(est, 0, 500, 1000)
    assert est.bitrate() is None
    est.update(500_000, 1000, False)  # Window full: 50 packets x 1000 B over 500 ms.
    assert est.bitrate() == 800_000


def test_first_sample_initialises_and_equal_sample_keeps_estimate() -> None:
    est = BitrateEstimator()
    feed_steps(est, 0, 660, 1000)  # Samples at 500 ms (500 ms window) and 650 ms (150 ms).
    assert est.bitrate() == 800_000


def test_rate_step_moves_estimate_by_bayesian_weighting() -> None:
    est = BitrateEstimator()
    feed_steps(est, 0, 650, 1000)
    feed_steps(est, 650, 810, 2000)  # 150 ms window at 1600 kbps, sampled at 800 ms.
    e, v = bayes_step(800, 50, 800)
    e, v = bayes_step(e, v, 1600)
    assert est.bitrate() == int(F32(e * F32(1000))) == 838_095
    feed_steps(est, 810, 960, 2000)  # Second 1600 kbps sample, at 950 ms.
    e, v = bayes_step(e, v, 1600)
    assert est.bitrate() == int(F32(e * F32(1000))) == 918_583


def test_expect_fast_rate_change_adds_variance() -> None:
    slow, fast = BitrateEstimator(), BitrateEstimator()
    for est in (slow, fast):
        feed_steps(est, 0, 650, 1000)
        est.update(650_000, 2000, False)  # Emits the second 800 kbps sample (variance -> 0).
    fast.expect_fast_rate_change()
    for est in (slow, fast):
        feed_steps(est, 660, 810, 2000)
    e, v = bayes_step(800, 50, 800)
    e_fast, _ = bayes_step(e, v + F32(200), 1600)
    assert fast.bitrate() == int(F32(e_fast * F32(1000)))
    assert fast.bitrate() > slow.bitrate() == 838_095


def test_alr_scale_applies_only_to_lower_samples_in_alr() -> None:
    config = BitrateEstimatorConfig(uncertainty_scale_in_alr=20.0)
    est = BitrateEstimator(config)
    feed_steps(est, 0, 650, 2000, alr=True)  # 1600 kbps: initial estimate, then equal sample.
    feed_steps(est, 650, 810, 1000, alr=True)  # An 800 kbps sample in ALR: scale 20.
    e, v = bayes_step(1600, 50, 1600)
    e, _ = bayes_step(e, v, 800, scale=20.0)
    assert est.bitrate() == int(F32(e * F32(1000)))
    plain = BitrateEstimator(config)
    feed_steps(plain, 0, 650, 2000)
    feed_steps(plain, 650, 810, 1000)  # Same samples outside ALR: scale 10, a bigger drop.
    assert plain.bitrate() < est.bitrate()


def test_peek_rate_covers_partial_window() -> None:
    est = BitrateEstimator()
    assert est.peek_rate() is None
    feed_steps(est, 0, 110, 1000)  # 11 packets counted over 100 ms.
    assert est.peek_rate() == 11_000 * 8 * 1_000_000 // 100_000 == 880_000


def test_gap_longer_than_window_drops_accumulated_bytes() -> None:
    est = BitrateEstimator()
    feed_steps(est, 0, 300, 1000)  # Last packet at 290 ms: window 290 ms, 30 000 B.
    # 810 ms silence: the bytes so far are dropped; the window is (290 + 810) % 500 = 100 ms.
    est.update(1_100_000, 1000, False)
    assert est.bitrate() is None
    assert est.peek_rate() == 1000 * 8_000_000 // 100_000 == 80_000


def test_time_going_backwards_resets_window() -> None:
    est = BitrateEstimator()
    feed_steps(est, 100, 400, 1000)
    est.update(50_000, 1000, False)
    assert est.peek_rate() is None  # Window length 0 after the reset.
    feed_steps(est, 60, 550, 1000)
    est.update(550_000, 1000, False)
    assert est.bitrate() == 800_000


def test_times_round_to_nearest_millisecond() -> None:
    est = BitrateEstimator()
    est.update(0, 1000, False)
    est.update(499_500, 1000, False)  # 499.5 ms rounds up to 500 ms: the window is full.
    assert est.bitrate() == 16_000  # 8 * 1000 B / 500 ms = 16 kbps.


def test_config_rejects_out_of_range_window() -> None:
    with pytest.raises(ValueError, match="window_ms"):
        BitrateEstimatorConfig(window_ms=100)
