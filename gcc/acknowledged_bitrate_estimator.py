"""AcknowledgedBitrateEstimator: feeds acknowledged packets to the Bayesian BitrateEstimator.

Adapted from ``modules/congestion_controller/goog_cc/acknowledged_bitrate_estimator.cc``
(upstream, mid-2024). This was GoogCC's acknowledged-rate estimator until 2023-08-30; upstream
still selects it with ``WebRTC-Bwe-RobustThroughputEstimatorSettings/enabled:false/`` (here:
``create_acknowledged_bitrate_estimator(use_robust_throughput_estimator=False)``).

The one thing it adds to :class:`~gcc.bitrate_estimator.BitrateEstimator` is the ALR exit: the
first packet *sent* after application-limited mode ended tells the filter to expect a fast rate
change, because throughput measured while the sender had little to send says nothing about the
link. Input format: :mod:`gcc.acknowledged_bitrate_estimator_interface`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from gcc.bitrate_estimator import BitrateEstimator


class AcknowledgedBitrateEstimator:
    """Acknowledged rate from received packets via the Bayesian :class:`BitrateEstimator`."""

    __slots__ = ("_alr_ended_time_us", "_bitrate_estimator", "_in_alr")

    def __init__(self, bitrate_estimator: BitrateEstimator | None = None) -> None:
        self._bitrate_estimator = bitrate_estimator or BitrateEstimator()
        self._in_alr = False
        self._alr_ended_time_us: int | None = None

    def incoming_packet_feedback_vector(
        self,
        send_time_us: Sequence[int],
        arrival_time_us: Sequence[int],
        size_bytes: Sequence[int],
    ) -> None:
        """Add one report's received packets, sorted by arrival (see the interface module)."""
        if isinstance(arrival_time_us, np.ndarray):
            send_time_us = np.asarray(send_time_us).tolist()
            arrival_time_us = arrival_time_us.tolist()
            size_bytes = np.asarray(size_bytes).tolist()
        update = self._bitrate_estimator.update
        in_alr = self._in_alr
        for s_us, r_us, n_bytes in zip(send_time_us, arrival_time_us, size_bytes, strict=True):
            alr_ended_us = self._alr_ended_time_us
            if alr_ended_us is not None and s_us > alr_ended_us:
                self._bitrate_estimator.expect_fast_rate_change()
                self._alr_ended_time_us = None
            update(r_us, n_bytes, in_alr)

    def bitrate(self) -> int | None:
        """The Bayesian estimate in bps, or None before the first 500 ms window completes."""
        return self._bitrate_estimator.bitrate()

    def peek_rate(self) -> int | None:
        """Rate of the window being filled, in bps."""
        return self._bitrate_estimator.peek_rate()

    def set_alr_ended_time(self, alr_ended_time_us: int) -> None:
        """The next packet sent after this time triggers ``expect_fast_rate_change``."""
        self._alr_ended_time_us = alr_ended_time_us

    def set_alr(self, in_alr: bool) -> None:
        """Mark later samples as taken in application-limited mode."""
        self._in_alr = in_alr
