"""LinkCapacityEstimator: where the link's capacity lies, learnt from the rates at overuse.

Adapted from libwebrtc ``modules/congestion_controller/goog_cc/link_capacity_estimator.cc``
(upstream, mid-2024). Each overuse is a sample of the capacity (the acknowledged rate when the
queue started to build); an EMA of those samples and of their normalised squared error gives an
estimate and a band ``estimate +- 3 sigma``. AIMD uses it to switch from multiplicative to
additive increase near a known capacity, and drops it when the throughput leaves the band.

Works in kbps like libwebrtc: samples are rounded to whole kbps (``DataRate::kbps()``), bounds
are truncated back to bps (``DataRate::KilobitsPerSec(double)``).
"""

from __future__ import annotations

import math

from gcc.units import f32, kbps_to_bps, rounded_kbps

#: EMA weight of a sample taken at overuse, and of a probe result.
OVERUSE_ALPHA = 0.05
PROBE_ALPHA = 0.5
#: Normalised variance bounds (libwebrtc's float literals 0.4f and 2.5f): 0.4 is about
#: 14 kbps of deviation at 500 kbps, 2.5 about 35 kbps.
DEVIATION_MIN_KBPS = f32(0.4)
DEVIATION_MAX_KBPS = f32(2.5)
INITIAL_DEVIATION_KBPS = 0.4
#: The bounds lie this many standard deviations from the estimate.
BOUND_SIGMAS = 3


class LinkCapacityEstimator:
    """EMA of the link capacity with a variance band, in kbps internally."""

    __slots__ = ("_deviation_kbps", "_estimate_kbps")

    def __init__(self) -> None:
        self._estimate_kbps: float | None = None
        self._deviation_kbps = INITIAL_DEVIATION_KBPS

    def upper_bound_bps(self) -> float | int:
        """Top of the band; infinite while there is no estimate."""
        if self._estimate_kbps is None:
            return math.inf
        return kbps_to_bps(self._estimate_kbps + BOUND_SIGMAS * self.deviation_estimate_kbps())

    def lower_bound_bps(self) -> int:
        """Bottom of the band, never negative; 0 while there is no estimate."""
        if self._estimate_kbps is None:
            return 0
        return kbps_to_bps(
            max(0.0, self._estimate_kbps - BOUND_SIGMAS * self.deviation_estimate_kbps())
        )

    def reset(self) -> None:
        """Forget the estimate (the variance is kept, as in libwebrtc)."""
        self._estimate_kbps = None

    def on_overuse_detected(self, acknowledged_rate_bps: int) -> None:
        """The acknowledged rate when an overuse was detected: a capacity sample."""
        self._update(acknowledged_rate_bps, OVERUSE_ALPHA)

    def on_probe_rate(self, probe_rate_bps: int) -> None:
        """A probe's measured rate: a stronger capacity sample."""
        self._update(probe_rate_bps, PROBE_ALPHA)

    def _update(self, capacity_sample_bps: int, alpha: float) -> None:
        sample_kbps = float(rounded_kbps(capacity_sample_bps))
        if self._estimate_kbps is None:
            estimate_kbps = sample_kbps
        else:
            estimate_kbps = (1 - alpha) * self._estimate_kbps + alpha * sample_kbps
        self._estimate_kbps = estimate_kbps
        # Variance of the samples, normalised by the estimate.
        norm = max(estimate_kbps, 1.0)
        error_kbps = estimate_kbps - sample_kbps
        deviation = (1 - alpha) * self._deviation_kbps + alpha * error_kbps * error_kbps / norm
        self._deviation_kbps = min(max(deviation, DEVIATION_MIN_KBPS), DEVIATION_MAX_KBPS)

    def has_estimate(self) -> bool:
        return self._estimate_kbps is not None

    def estimate_bps(self) -> int:
        """The capacity estimate; only valid when :meth:`has_estimate`."""
        if self._estimate_kbps is None:
            raise ValueError("LinkCapacityEstimator has no estimate")
        return kbps_to_bps(self._estimate_kbps)

    def deviation_estimate_kbps(self) -> float:
        """Standard deviation of the capacity in kbps: ``sqrt(normalised variance * estimate)``."""
        if self._estimate_kbps is None:
            raise ValueError("LinkCapacityEstimator has no estimate")
        return math.sqrt(self._deviation_kbps * self._estimate_kbps)
