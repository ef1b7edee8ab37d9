"""SendSideBandwidthEstimation: GoogCC's loss-based rate, capped by the delay-based estimate.

Adapted from ``modules/congestion_controller/goog_cc/send_side_bandwidth_estimation.cc``
(upstream, mid-2024) with LossBasedBweV2 switched off, i.e. the classic loss rule:

* loss reports accumulate until they cover 20 packets, giving ``fraction_loss`` in 1/256
  (GoogCC feeds transport-feedback loss here at most once per second, ``kLossUpdateInterval``;
  that throttling is the caller's);
* loss <= 2 %: target = 1.08 x (lowest target of the last second) + 1 kbps. Using the minimum
  of the last second lets the rate step up as soon as a good report arrives without compounding
  8 % per report;
* 2 % < loss <= 10 %: hold;
* loss > 10 %: target x (1 - loss/2), at most once per report and once per 300 ms + RTT;
* the rule only applies while the last loss report is under 6 s old;
* start phase (first 2 s after the first report, no loss yet): trust the receiver / delay-based
  estimate outright, so initial probing results take effect at once;
* RTT back-off: if the propagation RTT exceeds 3 s, cut to 0.8x (floor 5 kbps) at most once per
  second, whatever the loss;
* every update is capped by the delay-based estimate and the configured max, floored at the
  configured min; the receiver (REMB) limit caps only :meth:`target_rate`.

``LinkCapacityTracker`` (a slow EMA of the acknowledged rate, for ``GetEstimatedLinkCapacity``)
is included. Left out: LossBasedBweV2 and the v1 ``LossBasedBandwidthEstimation`` (both off
here by design), the ``WebRTC-BweLossExperiment`` thresholds, UMA histograms, and
``WebRTC-Bwe-ReceiverLimitCapsOnly/Disabled/``. Rates are integer bps, times integer
microseconds; "no limit" is ``math.inf``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from gcc.units import F32_0_02, F32_0_1, scale_rate

#: The history window for the "lowest target of the last second" increase base.
BWE_INCREASE_INTERVAL_US = 1_000_000
#: Least time between loss-triggered decreases (plus one RTT).
BWE_DECREASE_INTERVAL_US = 300_000
#: Time after the first loss report during which the receiver/delay estimate is trusted.
START_PHASE_US = 2_000_000
#: Loss reports are held back until they cover this many packets.
LIMIT_NUM_PACKETS = 20
#: ``kCongestionControllerMinBitrate``.
CONGESTION_CONTROLLER_MIN_BITRATE_BPS = 5_000
DEFAULT_MAX_BITRATE_BPS = 1_000_000_000
#: Expected RTCP receiver-report spacing; loss older than 1.2x this is stale.
MAX_RTCP_FEEDBACK_INTERVAL_US = 5_000_000
#: ``1.2 * kMaxRtcpFeedbackInterval`` (TimeDelta * double, rounded).
LOSS_REPORT_TIMEOUT_US = scale_rate(MAX_RTCP_FEEDBACK_INTERVAL_US, 1.2)
#: Loss thresholds, as the float32 constants libwebrtc compares against.
LOW_LOSS_THRESHOLD = F32_0_02
HIGH_LOSS_THRESHOLD = F32_0_1
#: Loss-based increase: 8 % over the last second's minimum, plus 1 kbps so low rates move.
LOSS_INCREASE_FACTOR = 1.08
LOSS_INCREASE_OFFSET_BPS = 1_000
#: Period after which a loss-based RTC event is logged even without a change.
RTC_EVENT_LOG_PERIOD_US = 5_000_000
#: Time constant of the link-capacity EMA (``WebRTC-Bwe-LinkCapacity/rate``).
LINK_CAPACITY_TRACKING_RATE_US = 10_000_000


@dataclass(frozen=True, slots=True)
class RttBasedBackoffConfig:
    """``WebRTC-Bwe-MaxRttLimit`` defaults; ``disabled`` makes the limit infinite."""

    disabled: bool = False
    limit_us: int = 3_000_000
    drop_fraction: float = 0.8
    drop_interval_us: int = 1_000_000
    bandwidth_floor_bps: int = 5_000


class LinkCapacityTracker:
    """Slow EMA of the acknowledged rate, pulled down at once by delay-based drops and back-offs."""

    __slots__ = (
        "_capacity_estimate_bps",
        "_last_delay_based_estimate_bps",
        "_last_link_capacity_update_us",
        "_tracking_rate_us",
    )

    def __init__(self, tracking_rate_us: int = LINK_CAPACITY_TRACKING_RATE_US) -> None:
        self._tracking_rate_us = tracking_rate_us
        self._capacity_estimate_bps = 0.0
        self._last_link_capacity_update_us: float = -math.inf
        self._last_delay_based_estimate_bps: float = math.inf

    def update_delay_based_estimate(self, at_us: int, delay_based_bps: float) -> None:
        if delay_based_bps < self._last_delay_based_estimate_bps:
            self._capacity_estimate_bps = min(self._capacity_estimate_bps, delay_based_bps)
            self._last_link_capacity_update_us = at_us
        self._last_delay_based_estimate_bps = delay_based_bps

    def on_starting_rate(self, start_bps: int) -> None:
        if math.isinf(self._last_link_capacity_update_us):
            self._capacity_estimate_bps = float(start_bps)

    def on_rate_update(self, acknowledged_bps: int | None, target_bps: int, at_us: int) -> None:
        if acknowledged_bps is None:
            return
        # min() and max() of two scalars, written out: this runs every process interval.
        acknowledged_target_bps = target_bps if target_bps < acknowledged_bps else acknowledged_bps
        if acknowledged_target_bps > self._capacity_estimate_bps:
            delta_us = at_us - self._last_link_capacity_update_us
            if delta_us < 0:
                delta_us = 0  # time never runs back
            alpha = math.exp(-(delta_us / self._tracking_rate_us)) if math.isfinite(delta_us) else 0
            self._capacity_estimate_bps = (
                alpha * self._capacity_estimate_bps + (1 - alpha) * acknowledged_target_bps
            )
        self._last_link_capacity_update_us = at_us

    def on_rtt_backoff(self, backoff_bps: int, at_us: int) -> None:
        self._capacity_estimate_bps = min(self._capacity_estimate_bps, backoff_bps)
        self._last_link_capacity_update_us = at_us

    def estimate(self) -> int:
        """``DataRate::BitsPerSec(double)``: truncated."""
        return int(self._capacity_estimate_bps)


class RttBasedBackoff:
    """Tracks the propagation RTT; above the limit the sender backs off regardless of loss."""

    __slots__ = (
        "bandwidth_floor_bps",
        "drop_fraction",
        "drop_interval_us",
        "last_packet_sent_us",
        "last_propagation_rtt_update_us",
        "last_propagation_rtt_us",
        "rtt_limit_us",
    )

    def __init__(self, config: RttBasedBackoffConfig | None = None) -> None:
        c = config or RttBasedBackoffConfig()
        self.rtt_limit_us: float = math.inf if c.disabled else c.limit_us
        self.drop_fraction = c.drop_fraction
        self.drop_interval_us = c.drop_interval_us
        self.bandwidth_floor_bps = c.bandwidth_floor_bps
        # +inf until the first RTT: no back-off unless packet feedback is on.
        self.last_propagation_rtt_update_us: float = math.inf
        self.last_propagation_rtt_us = 0
        self.last_packet_sent_us: float = -math.inf

    def update_propagation_rtt(self, at_us: int, propagation_rtt_us: int) -> None:
        self.last_propagation_rtt_update_us = at_us
        self.last_propagation_rtt_us = propagation_rtt_us

    def corrected_rtt_us(self) -> float:
        """The last RTT, plus the time packets were sent since without a new RTT sample.

        Only time spent sending counts, so an idle sender does not look like a timeout.
        """
        timeout_correction_us = max(
            self.last_packet_sent_us - self.last_propagation_rtt_update_us, 0
        )
        return timeout_correction_us + self.last_propagation_rtt_us

    def is_rtt_above_limit(self) -> bool:
        # corrected_rtt_us(), inlined: this runs every process interval.
        timeout_correction_us = self.last_packet_sent_us - self.last_propagation_rtt_update_us
        if timeout_correction_us < 0:
            timeout_correction_us = 0
        return timeout_correction_us + self.last_propagation_rtt_us > self.rtt_limit_us


class SendSideBandwidthEstimation:
    """Loss-based target rate with the classic 2 %/10 % rule (libwebrtc port, LossBasedBweV2 off).

    ``event_log``, if given, receives ``(at_us, target_bps, fraction_loss_q8,
    expected_packets)`` tuples as libwebrtc logs ``RtcEventBweUpdateLossBased``.
    """

    __slots__ = (
        "_acknowledged_rate_bps",
        "_delay_based_limit_bps",
        "_event_log",
        "_expected_packets_since_last_loss_update",
        "_first_report_time_us",
        "_has_decreased_since_last_fraction_loss",
        "_history_bps",
        "_history_time_us",
        "_last_fraction_loss",
        "_last_logged_fraction_loss",
        "_last_logged_target_bps",
        "_last_loss_feedback_us",
        "_last_loss_packet_report_us",
        "_last_round_trip_time_us",
        "_last_rtc_event_log_us",
        "_link_capacity",
        "_lost_packets_since_last_loss_update",
        "_max_bitrate_configured_bps",
        "_min_bitrate_configured_bps",
        "_receiver_limit_bps",
        "_rtt_backoff",
        "_time_last_decrease_us",
        "current_target_bps",
    )

    def __init__(
        self,
        rtt_backoff_config: RttBasedBackoffConfig | None = None,
        event_log: list[tuple[int, int, int, int]] | None = None,
    ) -> None:
        self._rtt_backoff = RttBasedBackoff(rtt_backoff_config)
        self._link_capacity = LinkCapacityTracker()
        self._event_log = event_log
        self._acknowledged_rate_bps: int | None = None
        # Sliding-window minimum of the target over the last second (parallel deques).
        self._history_time_us: deque[int] = deque()
        self._history_bps: deque[int] = deque()
        self._last_logged_target_bps = 0
        self.on_route_change()

    def on_route_change(self) -> None:
        """Forget everything learned about the path (new network route)."""
        self._lost_packets_since_last_loss_update = 0
        self._expected_packets_since_last_loss_update = 0
        #: The loss-based target before the receiver limit and min floor of ``target_rate``.
        self.current_target_bps = 0
        self._min_bitrate_configured_bps = CONGESTION_CONTROLLER_MIN_BITRATE_BPS
        self._max_bitrate_configured_bps = DEFAULT_MAX_BITRATE_BPS
        self._has_decreased_since_last_fraction_loss = False
        self._last_loss_feedback_us: float = -math.inf
        self._last_loss_packet_report_us: float = -math.inf
        self._last_fraction_loss = 0
        self._last_logged_fraction_loss = 0
        self._last_round_trip_time_us = 0
        self._receiver_limit_bps: float = math.inf
        self._delay_based_limit_bps: float = math.inf
        self._time_last_decrease_us: float = -math.inf
        self._first_report_time_us: float = -math.inf
        self._last_rtc_event_log_us: float = -math.inf

    # --- configuration -------------------------------------------------------------------

    def set_bitrates(
        self, send_bps: int | None, min_bps: int, max_bps: float | None, at_us: int
    ) -> None:
        self.set_min_max_bitrate(min_bps, max_bps)
        if send_bps is not None:
            self._link_capacity.on_starting_rate(send_bps)
            self.set_send_bitrate(send_bps, at_us)

    def set_send_bitrate(self, bitrate_bps: int, at_us: int) -> None:
        """Force the target (e.g. the start rate); clears the delay-based cap and the history."""
        if bitrate_bps <= 0:
            raise ValueError(f"send bitrate must be positive, got {bitrate_bps}")
        self._delay_based_limit_bps = math.inf
        self._update_target_bitrate(bitrate_bps, at_us)
        self._history_time_us.clear()
        self._history_bps.clear()

    def set_min_max_bitrate(self, min_bps: int, max_bps: float | None) -> None:
        self._min_bitrate_configured_bps = max(min_bps, CONGESTION_CONTROLLER_MIN_BITRATE_BPS)
        if max_bps is not None and 0 < max_bps < math.inf:
            self._max_bitrate_configured_bps = max(self._min_bitrate_configured_bps, int(max_bps))
        else:
            self._max_bitrate_configured_bps = DEFAULT_MAX_BITRATE_BPS

    def get_min_bitrate(self) -> int:
        return self._min_bitrate_configured_bps

    # --- outputs -------------------------------------------------------------------------

    def assume_target(self, bitrate_bps: int) -> None:
        """Continue from ``bitrate_bps`` as the current target, with the delay-based limit
        raised to it if below (not part of libwebrtc: imitation learning, see GoogCc)."""
        self.current_target_bps = bitrate_bps
        if self._delay_based_limit_bps < bitrate_bps:
            self._delay_based_limit_bps = bitrate_bps

    def target_rate(self) -> int:
        """The loss-based target, capped by the receiver limit, floored at the configured min."""
        target = self.current_target_bps
        if self._receiver_limit_bps < target:
            target = int(self._receiver_limit_bps)
        min_bps = self._min_bitrate_configured_bps
        return target if target > min_bps else min_bps

    def fraction_loss(self) -> int:
        """Loss of the latest complete loss report, in 1/256 units."""
        return self._last_fraction_loss

    def round_trip_time_us(self) -> int:
        return self._last_round_trip_time_us

    def is_rtt_above_limit(self) -> bool:
        return self._rtt_backoff.is_rtt_above_limit()

    def get_estimated_link_capacity(self) -> int:
        return self._link_capacity.estimate()

    @property
    def rtt_backoff(self) -> RttBasedBackoff:
        return self._rtt_backoff

    # --- inputs --------------------------------------------------------------------------

    def update_receiver_estimate(self, at_us: int, bandwidth_bps: float) -> None:
        """REMB / receiver limit; 0 or inf means none."""
        self._receiver_limit_bps = math.inf if bandwidth_bps == 0 else bandwidth_bps
        self._apply_target_limits(at_us)

    def update_delay_based_estimate(self, at_us: int, bitrate_bps: float) -> None:
        """The delay-based estimate caps the loss-based one; 0 or inf means no cap."""
        self._link_capacity.update_delay_based_estimate(at_us, bitrate_bps)
        self._delay_based_limit_bps = math.inf if bitrate_bps == 0 else bitrate_bps
        self._apply_target_limits(at_us)

    def set_acknowledged_rate(self, acknowledged_bps: int | None, at_us: int) -> None:
        self._acknowledged_rate_bps = acknowledged_bps

    def update_packets_lost(self, packets_lost: int, number_of_packets: int, at_us: int) -> None:
        """Loss since the previous report; a fraction is formed once 20 packets are covered."""
        self._last_loss_feedback_us = at_us
        if math.isinf(self._first_report_time_us):
            self._first_report_time_us = at_us
        if number_of_packets <= 0:
            return
        expected = self._expected_packets_since_last_loss_update + number_of_packets
        if expected < LIMIT_NUM_PACKETS:
            self._expected_packets_since_last_loss_update = expected
            self._lost_packets_since_last_loss_update += packets_lost
            return
        self._has_decreased_since_last_fraction_loss = False
        lost_q8 = max(self._lost_packets_since_last_loss_update + packets_lost, 0) << 8
        self._last_fraction_loss = min(lost_q8 // expected, 255)
        self._lost_packets_since_last_loss_update = 0
        self._expected_packets_since_last_loss_update = 0
        self._last_loss_packet_report_us = at_us
        self.update_estimate(at_us)

    def update_rtt(self, rtt_us: int, at_us: int) -> None:
        if rtt_us > 0:
            self._last_round_trip_time_us = rtt_us

    def update_propagation_rtt(self, at_us: int, propagation_rtt_us: int) -> None:
        self._rtt_backoff.update_propagation_rtt(at_us, propagation_rtt_us)

    def on_sent_packet(self, send_time_us: int) -> None:
        """A feedback-requesting packet was sent (feeds the RTT back-off's timeout)."""
        self._rtt_backoff.last_packet_sent_us = send_time_us

    # --- the estimate --------------------------------------------------------------------

    def update_estimate(self, at_us: int) -> None:
        """Re-evaluate the loss-based target (GoogCC calls this every process interval)."""
        backoff = self._rtt_backoff
        current = self.current_target_bps
        if backoff.is_rtt_above_limit():
            if (
                at_us - self._time_last_decrease_us >= backoff.drop_interval_us
                and current > backoff.bandwidth_floor_bps
            ):
                self._time_last_decrease_us = at_us
                new_bps = max(
                    scale_rate(current, backoff.drop_fraction), backoff.bandwidth_floor_bps
                )
                self._link_capacity.on_rtt_backoff(new_bps, at_us)
                self._update_target_bitrate(new_bps, at_us)
                return
            self._apply_target_limits(at_us)
            return

        # Trust the REMB / delay-based estimate during the first 2 s if there has been no
        # loss, so that initial probing results apply at once.
        fraction_loss = self._last_fraction_loss
        if fraction_loss == 0 and self._is_in_start_phase(at_us):
            new_bps = current
            if self._receiver_limit_bps < math.inf:
                new_bps = max(int(self._receiver_limit_bps), new_bps)
            if self._delay_based_limit_bps < math.inf:
                new_bps = max(int(self._delay_based_limit_bps), new_bps)
            if new_bps != current:
                self._history_time_us.clear()
                self._history_bps.clear()
                self._history_time_us.append(at_us)
                self._history_bps.append(current)
                self._update_target_bitrate(new_bps, at_us)
                return

        self._update_min_history(at_us)
        last_report_us = self._last_loss_packet_report_us
        if math.isinf(last_report_us):
            self._apply_target_limits(at_us)  # No loss report yet.
            return

        if at_us - last_report_us < LOSS_REPORT_TIMEOUT_US:
            loss = fraction_loss / 256.0
            if loss <= LOW_LOSS_THRESHOLD:
                # BitsPerSec(double) truncates; +1 kbps so that low rates do not get stuck.
                new_bps = int(self._history_bps[0] * LOSS_INCREASE_FACTOR + 0.5)
                self._update_target_bitrate(new_bps + LOSS_INCREASE_OFFSET_BPS, at_us)
                return
            if (
                loss > HIGH_LOSS_THRESHOLD
                and not self._has_decreased_since_last_fraction_loss
                and at_us - self._time_last_decrease_us
                >= BWE_DECREASE_INTERVAL_US + self._last_round_trip_time_us
            ):
                self._time_last_decrease_us = at_us
                # rate * (1 - loss/2), loss = q8/256.
                new_bps = int(current * float(512 - fraction_loss) / 512.0)
                self._has_decreased_since_last_fraction_loss = True
                self._update_target_bitrate(new_bps, at_us)
                return
        self._apply_target_limits(at_us)

    def _is_in_start_phase(self, at_us: int) -> bool:
        first_us = self._first_report_time_us
        return math.isinf(first_us) or at_us - first_us < START_PHASE_US

    def _update_min_history(self, at_us: int) -> None:
        times = self._history_time_us
        rates = self._history_bps
        # History is in ms in libwebrtc: +1 ms so an increase is not missed by 0.5 ms.
        while times and at_us - times[0] + 1_000 > BWE_INCREASE_INTERVAL_US:
            times.popleft()
            rates.popleft()
        current = self.current_target_bps
        while rates and current <= rates[-1]:
            times.pop()
            rates.pop()
        times.append(at_us)
        rates.append(current)

    def _update_target_bitrate(self, new_bps: int, at_us: int) -> None:
        upper_bps = self._max_bitrate_configured_bps
        if self._delay_based_limit_bps < upper_bps:
            upper_bps = int(self._delay_based_limit_bps)
        if new_bps > upper_bps:
            new_bps = upper_bps
        if new_bps < self._min_bitrate_configured_bps:
            new_bps = self._min_bitrate_configured_bps
        self.current_target_bps = new_bps
        if self._event_log is not None:
            self._maybe_log_loss_based_event(at_us)
        self._link_capacity.on_rate_update(self._acknowledged_rate_bps, new_bps, at_us)

    def _apply_target_limits(self, at_us: int) -> None:
        self._update_target_bitrate(self.current_target_bps, at_us)

    def _maybe_log_loss_based_event(self, at_us: int) -> None:
        if (
            self.current_target_bps != self._last_logged_target_bps
            or self._last_fraction_loss != self._last_logged_fraction_loss
            or at_us - self._last_rtc_event_log_us > RTC_EVENT_LOG_PERIOD_US
        ):
            self._event_log.append(
                (
                    at_us,
                    self.current_target_bps,
                    self._last_fraction_loss,
                    self._expected_packets_since_last_loss_update,
                )
            )
            self._last_logged_fraction_loss = self._last_fraction_loss
            self._last_logged_target_bps = self.current_target_bps
            self._last_rtc_event_log_us = at_us
