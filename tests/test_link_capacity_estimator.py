"""Tests of LinkCapacityEstimator (libwebrtc has no unit test file for it).

Expected values are worked by hand from the rules in gcc-reference.md: samples rounded to whole
kbps, EMA with alpha 0.05 (overuse) or 0.5 (probe), normalised variance clamped to
[0.4f, 2.5f], bounds ``estimate +- 3 * sqrt(variance * estimate)`` truncated to bps.
"""

from __future__ import annotations

import math

import pytest

from gcc.link_capacity_estimator import (
    DEVIATION_MAX_KBPS,
    DEVIATION_MIN_KBPS,
    LinkCapacityEstimator,
)


def test_no_estimate_means_unbounded() -> None:
    link = LinkCapacityEstimator()
    assert not link.has_estimate()
    assert link.upper_bound_bps() == math.inf
    assert link.lower_bound_bps() == 0
    with pytest.raises(ValueError):
        link.estimate_bps()


def test_float32_clamp_bounds() -> None:
    assert DEVIATION_MIN_KBPS == 0.4000000059604645  # 0.4f, not 0.4
    assert DEVIATION_MAX_KBPS == 2.5


def test_first_sample_is_the_estimate_rounded_to_kbps() -> None:
    link = LinkCapacityEstimator()
    link.on_overuse_detected(300_499)  # DataRate::kbps() rounds to 300
    assert link.has_estimate()
    assert link.estimate_bps() == 300_000
    # Variance 0.95 * 0.4 = 0.38 is clamped up to 0.4f: sigma = sqrt(0.4f * 300) = 10.954 kbps.
    assert link.deviation_estimate_kbps() == pytest.approx(10.954451231720343, rel=1e-15)
    assert link.upper_bound_bps() == 332_863
    assert link.lower_bound_bps() == 267_136


def test_half_kbps_rounds_up() -> None:
    link = LinkCapacityEstimator()
    link.on_overuse_detected(300_500)
    assert link.estimate_bps() == 301_000


def test_overuse_sample_moves_estimate_by_five_percent() -> None:
    link = LinkCapacityEstimator()
    link.on_overuse_detected(300_000)
    link.on_overuse_detected(400_000)
    # 0.95 * 300 + 0.05 * 400 = 305 kbps; variance 0.95 * 0.4f + 0.05 * 95^2 / 305 = 1.8595.
    assert link.estimate_bps() == 305_000
    assert link.upper_bound_bps() == 376_444
    assert link.lower_bound_bps() == 233_555


def test_probe_sample_moves_estimate_halfway_and_variance_saturates() -> None:
    link = LinkCapacityEstimator()
    link.on_overuse_detected(300_000)
    link.on_overuse_detected(400_000)
    link.on_probe_rate(1_000_000)
    assert link.estimate_bps() == 652_500
    # The variance (93.5 unclamped) is capped at 2.5: sigma = sqrt(2.5 * 652.5) kbps.
    sigma_kbps = math.sqrt(2.5 * 652.5)
    assert link.deviation_estimate_kbps() == sigma_kbps
    assert link.upper_bound_bps() == int((652.5 + 3 * sigma_kbps) * 1000)


def test_lower_bound_is_never_negative() -> None:
    link = LinkCapacityEstimator()
    link.on_overuse_detected(1_000)  # 1 kbps, sigma sqrt(0.4f) = 0.63 kbps: 1 - 1.9 < 0
    assert link.lower_bound_bps() == 0
    assert link.upper_bound_bps() == int((1 + 3 * math.sqrt(DEVIATION_MIN_KBPS)) * 1000)


def test_reset_drops_estimate_but_keeps_variance() -> None:
    link = LinkCapacityEstimator()
    link.on_overuse_detected(300_000)
    link.on_overuse_detected(400_000)
    link.reset()
    assert not link.has_estimate()
    assert link.upper_bound_bps() == math.inf
    link.on_overuse_detected(200_000)
    # Variance continues from 1.8595: 0.95 * 1.8595 + 0 = 1.7665.
    assert link.deviation_estimate_kbps() == pytest.approx(
        math.sqrt(0.95 * 1.8595082023837528 * 200), rel=1e-12
    )
