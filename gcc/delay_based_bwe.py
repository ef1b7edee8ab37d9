"""DelayBasedBwe: the delay-based half of send-side GCC, one call per feedback report.

Adapted from libwebrtc ``modules/congestion_controller/goog_cc/delay_based_bwe.cc`` (upstream,
mid-2024). Per report:

1. Received packets are taken in receive order (ties: send time, then sequence order).
2. Each goes through :class:`InterArrivalDelta` (5 ms send groups); every completed pair of groups
   feeds :class:`TrendlineEstimator`. If no feedback arrived for more than 2 s, both start over:
   deltas across such a gap say nothing about the queue.
3. The detector's verdict drives :class:`AimdRateControl`:

   * overusing, with an acknowledged rate: cut to ``0.85 * acked - 5 kbps`` at most once per RTT
     (sooner if the acked rate fell below half the estimate);
   * overusing before any acknowledged rate exists: halve the estimate, so a bad start rate
     cannot build a standing queue. libwebrtc's comment says "every 200 ms", but its check
     compares ``estimate / 2 - 1 bps`` with half the estimate and so always passes: the
     estimate halves on every report while the overuse lasts (reproduced here);
   * otherwise a probe result, if any, is imposed as the estimate; without one, AIMD increases
     or holds.

``recovered_from_overuse`` reports an Underusing -> Normal transition of the detector within
the report (libwebrtc's name; the loss-based side uses it). libwebrtc's separate audio detector
(``WebRTC-Bwe-SeparateAudioPackets``, off by default) and network-state predictor are left out.

Interface: times are integer microseconds, rates integer bps. Packets come as parallel sequences
(lists, or numpy arrays converted once with ``tolist``) in transport sequence order, lost
packets marked with :data:`loki.api.NOT_RECEIVED_US` as arrival time; or as a whole
:class:`loki.api.TransportFeedback` via :meth:`DelayBasedBwe.incoming_transport_feedback`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

from gcc.aimd_rate_control import (
    AimdRateControl,
    AimdRateControlConfig,
    NetworkStateEstimate,
    RateControlState,
)
from gcc.bandwidth_usage import BandwidthUsage
from gcc.inter_arrival_delta import InterArrivalDelta, compute_deltas_state
from gcc.trendline_estimator import (
    HYPOTHESIS,
    TrendlineEstimator,
    TrendlineEstimatorSettings,
    update_trendline_state,
)
from gcc.units import MS_PER_US
from loki.api import NOT_RECEIVED_US, TransportFeedback

#: Feedback gap after which grouping and trendline start over (``kStreamTimeOut``).
STREAM_TIMEOUT_US = 2_000_000
#: Send-time group length (``kSendTimeGroupLength``).
SEND_TIME_GROUP_LENGTH_US = 5_000

_NORMAL = BandwidthUsage.NORMAL
_UNDERUSING = BandwidthUsage.UNDERUSING
_OVERUSING = BandwidthUsage.OVERUSING
_NORMAL_CODE = int(_NORMAL)
_UNDERUSING_CODE = int(_UNDERUSING)


@njit(cache=True)
def _detect_over_report(
    inter_arrival_state: np.ndarray,
    send_time_us: np.ndarray,
    arrival_time_us: np.ndarray,
    size_bytes: np.ndarray,
    at_us: int,
    prev_detector_state: int,
    fs: np.ndarray,
    ints: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    raws: np.ndarray,
    trendline_settings: np.ndarray,
    cap_uncertainty: float,
) -> bool:
    """A report's received packets (receive order) through the send-time grouping and every
    completed pair of groups through the trendline detector: the per-packet part of
    ``IncomingPacketFeedbackVector``, compiled. True if the detector went from Underusing to
    Normal on the way (``prev_detector_state`` is its state before the report)."""
    deltas = compute_deltas_state(
        inter_arrival_state, send_time_us, arrival_time_us, at_us, size_bytes
    )
    recovered = False
    for j in range(deltas.shape[0]):
        # TimeDelta::ms<double>() and Timestamp::ms(), as libwebrtc feeds the trendline.
        update_trendline_state(
            fs,
            ints,
            xs,
            ys,
            raws,
            trendline_settings,
            cap_uncertainty,
            deltas[j, 1] * MS_PER_US,
            deltas[j, 0] * MS_PER_US,
            (deltas[j, 3] + 500) // 1000,
        )
        state = ints[HYPOTHESIS]
        if prev_detector_state == _UNDERUSING_CODE and state == _NORMAL_CODE:
            recovered = True
        prev_detector_state = state
    return recovered


@dataclass(slots=True)
class DelayBasedBweResult:
    """libwebrtc's ``DelayBasedBwe::Result``: what one report did to the estimate."""

    #: The estimate was (re)computed and ``target_bitrate_bps`` is valid.
    updated: bool = False
    #: ``target_bitrate_bps`` comes from a probe result.
    probe: bool = False
    target_bitrate_bps: int = 0
    #: The detector went from Underusing to Normal during this report.
    recovered_from_overuse: bool = False
    #: Kept for callers written against older libwebrtc; the ALR-limited back-off experiment
    #: that set it no longer exists upstream, so it is always False.
    backoff_in_alr: bool = False
    #: The detector's verdict after this report.
    delay_detector_state: BandwidthUsage = _NORMAL


class DelayBasedBwe:
    """Delay-based bandwidth estimate: InterArrivalDelta -> TrendlineEstimator -> AIMD."""

    __slots__ = (
        "_delay_detector",
        "_inter_arrival",
        "_last_seen_packet_us",
        "_prev_bitrate_bps",
        "_prev_state",
        "_rate_control",
        "_trendline_settings",
    )

    def __init__(
        self,
        aimd_config: AimdRateControlConfig | None = None,
        trendline_settings: TrendlineEstimatorSettings | None = None,
    ) -> None:
        self._trendline_settings = trendline_settings
        self._inter_arrival = InterArrivalDelta(SEND_TIME_GROUP_LENGTH_US)
        self._delay_detector = TrendlineEstimator(trendline_settings)
        self._last_seen_packet_us: int | None = None
        self._rate_control = AimdRateControl(aimd_config, send_side=True)
        self._prev_bitrate_bps = 0
        self._prev_state = _NORMAL

    # -- configuration, as GoogCcNetworkController calls it ------------------------------------

    def on_rtt_update(self, rtt_us: int) -> None:
        """The average RTT: paces repeated cuts and the additive increase."""
        self._rate_control.set_rtt(rtt_us)

    def set_start_bitrate(self, start_bitrate_bps: int) -> None:
        self._rate_control.set_start_bitrate(start_bitrate_bps)

    def set_min_bitrate(self, min_bitrate_bps: int) -> None:
        self._rate_control.set_min_bitrate(min_bitrate_bps)

    # -- queries -------------------------------------------------------------------------------

    def latest_estimate(self) -> int | None:
        """The AIMD estimate, or None while it is not valid (libwebrtc ``LatestEstimate``)."""
        if not self._rate_control.valid_estimate():
            return None
        return self._rate_control.latest_estimate()

    def last_estimate(self) -> int:
        """The estimate last reported in a result, 0 before any (libwebrtc ``last_estimate``)."""
        return self._prev_bitrate_bps

    def last_state(self) -> BandwidthUsage:
        """The detector state as of the last report."""
        return self._prev_state

    def raise_estimate_to(self, bitrate_bps: int) -> None:
        """AIMD's estimate raised to ``bitrate_bps`` if below (see AimdRateControl)."""
        self._rate_control.raise_estimate_to(bitrate_bps)

    def rate_control_state(self) -> RateControlState:
        """The AIMD state machine's state (see AimdRateControl)."""
        return self._rate_control.rate_control_state

    def link_capacity_estimate_bps(self) -> int | None:
        """AIMD's link capacity estimate; None while unknown."""
        return self._rate_control.link_capacity_estimate_bps()

    def detector_trend_ratio(self) -> float:
        """The detector's last modified trend over its threshold (0 before the first).

        Above 1 the path is overusing, below -1 underusing: the delay signal GCC's AIMD reads,
        exposed for learned controllers that imitate it (``loki.features``).
        """
        detector = self._delay_detector
        trend = detector.modified_trend
        if trend != trend or detector.threshold <= 0:
            return 0.0
        return trend / detector.threshold

    def get_expected_bwe_period_us(self) -> int:
        """Expected time between overuses (see :class:`AimdRateControl`)."""
        return self._rate_control.get_expected_bandwidth_period_us()

    # -- updates -------------------------------------------------------------------------------

    def trigger_overuse(self, at_us: int, link_capacity_bps: int | None) -> int:
        """Force an overuse decision (libwebrtc ``TriggerOveruse``); returns the new estimate."""
        return self._rate_control.update(_OVERUSING, link_capacity_bps, at_us)

    def incoming_transport_feedback(
        self,
        report: TransportFeedback,
        acked_bitrate_bps: int | None,
        probe_bitrate_bps: int | None,
        in_alr: bool = False,
        network_estimate: NetworkStateEstimate | None = None,
    ) -> DelayBasedBweResult:
        """:meth:`incoming_packet_feedback_vector` for a whole report, at its feedback time."""
        return self.incoming_packet_feedback_vector(
            report.send_time_us.tolist(),
            report.arrival_time_us.tolist(),
            report.size_bytes.tolist(),
            acked_bitrate_bps,
            probe_bitrate_bps,
            report.feedback_time_us,
            in_alr,
            network_estimate,
        )

    def incoming_packet_feedback_vector(
        self,
        send_time_us: Sequence[int],
        arrival_time_us: Sequence[int],
        size_bytes: Sequence[int],
        acked_bitrate_bps: int | None,
        probe_bitrate_bps: int | None,
        at_us: int,
        in_alr: bool = False,
        network_estimate: NetworkStateEstimate | None = None,
    ) -> DelayBasedBweResult:
        """Process one feedback report and update the estimate.

        The three sequences are per packet, in transport sequence order; an arrival time of
        ``NOT_RECEIVED_US`` marks a lost packet (ignored here: loss is the loss-based side's).
        ``acked_bitrate_bps`` is the acknowledged-rate estimate (None before there is one),
        ``probe_bitrate_bps`` a probe result completed by this report (or None), ``at_us`` the
        time the report was received, in the same clock as ``send_time_us``.
        """
        order = self._receive_order(send_time_us, arrival_time_us)
        return self.incoming_packets_in_receive_order(
            [send_time_us[i] for i in order],
            [arrival_time_us[i] for i in order],
            [size_bytes[i] for i in order],
            acked_bitrate_bps,
            probe_bitrate_bps,
            at_us,
            in_alr,
            network_estimate,
        )

    def incoming_packets_in_receive_order(
        self,
        send_time_us: Sequence[int],
        arrival_time_us: Sequence[int],
        size_bytes: Sequence[int],
        acked_bitrate_bps: int | None,
        probe_bitrate_bps: int | None,
        at_us: int,
        in_alr: bool = False,
        network_estimate: NetworkStateEstimate | None = None,
    ) -> DelayBasedBweResult:
        """:meth:`incoming_packet_feedback_vector` for a report's *received* packets only,
        already in receive order (arrival time, then send time, then sequence number).

        For a caller that has that order at hand (GoogCC sorts by arrival for the acknowledged
        rate anyway): it saves sorting the report twice.
        """
        if len(arrival_time_us) == 0:
            # All lost, or no packets: libwebrtc's "very late feedback"; nothing to learn.
            return DelayBasedBweResult()

        recovered_from_overuse = False
        prev_detector_state = self._delay_detector.state()
        last_seen_us = self._last_seen_packet_us
        if last_seen_us is None or at_us - last_seen_us > STREAM_TIMEOUT_US:
            self._inter_arrival = InterArrivalDelta(SEND_TIME_GROUP_LENGTH_US)
            self._delay_detector = TrendlineEstimator(self._trendline_settings)
            # libwebrtc compares with the state from before the reset, so a timed-out
            # Underusing detector counts as recovered.
            if prev_detector_state is _UNDERUSING:
                recovered_from_overuse = True
            prev_detector_state = _NORMAL
        self._last_seen_packet_us = at_us

        if _detect_over_report(
            self._inter_arrival.state,
            np.asarray(send_time_us, dtype=np.int64),
            np.asarray(arrival_time_us, dtype=np.int64),
            np.asarray(size_bytes, dtype=np.int64),
            at_us,
            int(prev_detector_state),
            *self._delay_detector.state_arrays(),
        ):
            recovered_from_overuse = True

        rate_control = self._rate_control
        rate_control.set_in_application_limited_region(in_alr)
        rate_control.set_network_state_estimate(network_estimate)
        return self._maybe_update_estimate(
            acked_bitrate_bps, probe_bitrate_bps, recovered_from_overuse, at_us
        )

    @staticmethod
    def _receive_order(send_time_us: Sequence[int], arrival_time_us: Sequence[int]) -> list[int]:
        """Indices of received packets sorted by (arrival, send time), stable in sequence order.

        Reports nearly always arrive sorted already; checking that avoids building sort keys.
        """
        order = [i for i, arrival in enumerate(arrival_time_us) if arrival != NOT_RECEIVED_US]
        prev_arrival_us = -math.inf
        prev_send_us = -math.inf
        for i in order:
            arrival_us = arrival_time_us[i]
            send_us = send_time_us[i]
            if arrival_us < prev_arrival_us or (
                arrival_us == prev_arrival_us and send_us < prev_send_us
            ):
                order.sort(key=lambda j: (arrival_time_us[j], send_time_us[j]))
                break
            prev_arrival_us = arrival_us
            prev_send_us = send_us
        return order

    def _maybe_update_estimate(
        self,
        acked_bitrate_bps: int | None,
        probe_bitrate_bps: int | None,
        recovered_from_overuse: bool,
        at_us: int,
    ) -> DelayBasedBweResult:
        result = DelayBasedBweResult()
        rate_control = self._rate_control
        state = self._delay_detector.state()
        if state is _OVERUSING:
            if acked_bitrate_bps is not None:
                if rate_control.time_to_reduce_further(at_us, acked_bitrate_bps):
                    result.target_bitrate_bps = rate_control.update(state, acked_bitrate_bps, at_us)
                    result.updated = rate_control.valid_estimate()
            elif rate_control.valid_estimate() and rate_control.initial_time_to_reduce_further(
                at_us
            ):
                # Overusing before any acknowledged rate: halve (on every report, see above).
                rate_control.set_estimate(rate_control.latest_estimate() // 2, at_us)
                result.updated = True
                result.probe = False
                result.target_bitrate_bps = rate_control.latest_estimate()
        elif probe_bitrate_bps is not None:
            result.probe = True
            result.updated = True
            rate_control.set_estimate(probe_bitrate_bps, at_us)
            result.target_bitrate_bps = rate_control.latest_estimate()
        else:
            result.target_bitrate_bps = rate_control.update(state, acked_bitrate_bps, at_us)
            result.updated = rate_control.valid_estimate()
            result.recovered_from_overuse = recovered_from_overuse

        if (
            result.updated and self._prev_bitrate_bps != result.target_bitrate_bps
        ) or state is not self._prev_state:
            self._prev_bitrate_bps = (
                result.target_bitrate_bps if result.updated else self._prev_bitrate_bps
            )
            self._prev_state = state
        result.delay_detector_state = state
        return result
