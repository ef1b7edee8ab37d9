"""The one interface both acknowledged-rate estimators share, so GoogCC can switch with a flag.

Mirrors libwebrtc's ``AcknowledgedBitrateEstimatorInterface``
(``modules/congestion_controller/goog_cc/acknowledged_bitrate_estimator_interface.h``): since
2023-08-30 (``0fa90c3878``) upstream creates a :class:`RobustThroughputEstimator` by default and
the Bayesian :class:`AcknowledgedBitrateEstimator` only with
``WebRTC-Bwe-RobustThroughputEstimatorSettings/enabled:false/``; here that trial is the
``use_robust_throughput_estimator`` argument of :func:`create_acknowledged_bitrate_estimator`.

Packet-feedback input, for both: three parallel sequences (lists, or int64 numpy arrays: the
robust estimator's work is compiled and takes arrays without a conversion) with
one entry per *received* packet, sorted as libwebrtc's ``PacketResult::ReceiveTimeOrder`` sorts
(arrival time, then send time, then sequence number):

* ``send_time_us``: sender clock, integer microseconds;
* ``arrival_time_us``: receiver clock, integer microseconds (only differences matter);
* ``size_bytes``: the packet size plus any ``prior_unacked_data`` (bytes sent without transport
  sequence numbers just before it), as libwebrtc adds the two.

Lost packets must be left out (libwebrtc filters them before these estimators, too).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class AcknowledgedBitrateEstimatorInterface(Protocol):
    """What GoogCC needs from an acknowledged-rate (throughput) estimator."""

    def incoming_packet_feedback_vector(
        self,
        send_time_us: Sequence[int],
        arrival_time_us: Sequence[int],
        size_bytes: Sequence[int],
    ) -> None:
        """Add the received packets of one feedback report (see the module docstring)."""
        ...

    def bitrate(self) -> int | None:
        """The acknowledged rate in bps, or None before there is enough data."""
        ...

    def peek_rate(self) -> int | None:
        """A provisional rate in bps for use before :meth:`bitrate` has a value."""
        ...

    def set_alr(self, in_alr: bool) -> None:
        """Tell the estimator whether the sender is application limited now."""
        ...

    def set_alr_ended_time(self, alr_ended_time_us: int) -> None:
        """Tell the estimator when the sender left application-limited mode."""
        ...


def create_acknowledged_bitrate_estimator(
    use_robust_throughput_estimator: bool = True,
) -> AcknowledgedBitrateEstimatorInterface:
    """The default estimator (robust), or the Bayesian one when the flag is False."""
    if use_robust_throughput_estimator:
        from gcc.robust_throughput_estimator import RobustThroughputEstimator

        return RobustThroughputEstimator()
    from gcc.acknowledged_bitrate_estimator import AcknowledgedBitrateEstimator

    return AcknowledgedBitrateEstimator()
