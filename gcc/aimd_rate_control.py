"""AimdRateControl: the delay-based target rate, raised while the path is calm, cut on overuse.

Adapted from libwebrtc ``modules/remote_bitrate_estimator/aimd_rate_control.cc`` (upstream,
mid-2024, i.e. with the unconditional ``0.85 * throughput - 5 kbps`` back-off of 2023-09/2024-04).

The detector's signal drives a three-state machine (Hold, Increase, Decrease):

* Normal -> Increase (from Hold). Far from a known capacity the rate grows multiplicatively
  (8 % per second); once :class:`LinkCapacityEstimator` has a capacity it grows additively,
  by about one packet per response time (``2 * (rtt + 100 ms)``), at least 4 kbps per second.
  Either way it stays below ``1.5 * throughput + 10 kbps``, so it cannot run away from what the
  receiver actually gets.
* Overuse -> Decrease: the rate becomes ``0.85 * throughput - 5 kbps`` (never an increase), the
  throughput is recorded as a capacity sample, and the state returns to Hold until the queue
  drains.
* Underuse -> Hold: the queue is draining; raising the rate now would refill it.

Before any estimate exists (no start rate, no probe), the first throughput seen for more than 5 s
becomes the estimate; an overuse acts at once.

Rates are integer bps, times integer microseconds; rounding follows libwebrtc's unit types
(:mod:`gcc.units`), so the unit-test values come out exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from gcc.bandwidth_usage import BandwidthUsage
from gcc.link_capacity_estimator import LinkCapacityEstimator
from gcc.units import (
    S_PER_US,
    llround,
    rate_bps,
    seconds_to_us,
    size_at_rate_bytes,
    transfer_time_us,
    truncate_rate_bps,
)

#: ``kCongestionControllerMinBitrate``.
MIN_BITRATE_BPS = 5_000
#: Initial ceiling, and the initial (not yet valid) estimate.
MAX_CONFIGURED_BITRATE_BPS = 30_000_000
DEFAULT_RTT_US = 200_000
DEFAULT_BACKOFF_FACTOR = 0.85
#: The back-off subtracts this below ``beta * throughput`` (when the product exceeds it).
BACKOFF_SUBTRACT_BPS = 5_000
#: Without a start rate, the throughput becomes the estimate after this long.
INITIALIZATION_TIME_US = 5_000_000
#: Increase limit: ``1.5 * throughput + 10 kbps``.
INCREASE_LIMIT_FACTOR = 1.5
INCREASE_LIMIT_OFFSET_BPS = 10_000
#: Multiplicative increase per second, and its floor per update.
MULTIPLICATIVE_INCREASE_PER_S = 1.08
MIN_MULTIPLICATIVE_INCREASE_BPS = 1_000
#: Near-max (additive) increase model: 30 fps frames in packets of at most 1200 bytes, one
#: packet per response time ``2 * (rtt + 100 ms)``; at least 4 kbps per second.
FRAME_INTERVAL_US = 1_000_000 // 30
PACKET_SIZE_BYTES = 1_200
ESTIMATOR_DELAY_US = 100_000
MIN_INCREASE_RATE_BPS_PER_S = 4_000.0
#: Expected time between overuses, used by the loss-based side and probing.
MIN_PERIOD_US = 2_000_000
DEFAULT_PERIOD_US = 3_000_000
MAX_PERIOD_US = 50_000_000
#: Further cuts while still overusing wait at least an RTT, clamped to this range.
MIN_REDUCTION_INTERVAL_US = 10_000
MAX_REDUCTION_INTERVAL_US = 200_000
#: RTCP feedback budget: an 80-byte packet using 5 % of the rate, every 200..1000 ms.
RTCP_SIZE_BYTES = 80
RTCP_RATE_SHARE = 0.05
MIN_FEEDBACK_INTERVAL_US = 200_000
MAX_FEEDBACK_INTERVAL_US = 1_000_000


class RateControlState(Enum):
    HOLD = 0
    INCREASE = 1
    DECREASE = 2


# Members as module names for the per-report path (an enum member is a class attribute lookup).
_HOLD = RateControlState.HOLD
_INCREASE = RateControlState.INCREASE
_DECREASE = RateControlState.DECREASE
_NORMAL = BandwidthUsage.NORMAL
_UNDERUSING = BandwidthUsage.UNDERUSING
_OVERUSING = BandwidthUsage.OVERUSING


@dataclass(frozen=True, slots=True)
class AimdRateControlConfig:
    """Field-trial tunables (defaults = libwebrtc's with no field trials set)."""

    #: ``WebRTC-BweBackOffFactor/Enabled-<beta>/``: the multiplicative decrease, in (0, 1).
    backoff_factor: float = DEFAULT_BACKOFF_FACTOR
    #: ``WebRTC-DontIncreaseDelayBasedBweInAlr/Enabled/``: on the send side, never increase the
    #: estimate while application limited (only a probe or SetEstimate can raise it then).
    no_bitrate_increase_in_alr: bool = False
    #: ``WebRTC-Bwe-EstimateBoundedIncrease/Disabled/``: ignore a network estimate's upper bound.
    disable_estimate_bounded_increase: bool = False
    #: ``WebRTC-Bwe-EstimateBoundedIncrease/c_upper:false/`` sets this False: the upper bound is
    #: then the network estimate alone, even below the current rate.
    use_current_estimate_as_min_upper_bound: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.backoff_factor < 1.0:
            raise ValueError(f"backoff_factor must be in (0, 1), got {self.backoff_factor}")


@dataclass(frozen=True, slots=True)
class NetworkStateEstimate:
    """The link-capacity bounds of libwebrtc's ``NetworkStateEstimate`` that AIMD reads.

    Infinite values mean unknown (libwebrtc's defaults).
    """

    link_capacity_lower_bps: float = -math.inf
    link_capacity_upper_bps: float = math.inf


class AimdRateControl:
    """Additive-increase / multiplicative-decrease control of the delay-based estimate."""

    __slots__ = (
        "_beta",
        "_bitrate_is_initialized",
        "_config",
        "_current_bitrate_bps",
        "_in_alr",
        "_last_decrease_bps",
        "_latest_estimated_throughput_bps",
        "_link_capacity",
        "_min_configured_bitrate_bps",
        "_network_estimate",
        "_rate_control_state",
        "_rtt_us",
        "_send_side",
        "_time_first_throughput_estimate_us",
        "_time_last_bitrate_change_us",
        "_time_last_bitrate_decrease_us",
    )

    def __init__(
        self, config: AimdRateControlConfig | None = None, send_side: bool = False
    ) -> None:
        self._config = config or AimdRateControlConfig()
        self._beta = self._config.backoff_factor
        self._send_side = send_side
        self._min_configured_bitrate_bps = MIN_BITRATE_BPS
        self._current_bitrate_bps = MAX_CONFIGURED_BITRATE_BPS
        self._latest_estimated_throughput_bps = self._current_bitrate_bps
        self._link_capacity = LinkCapacityEstimator()
        self._rate_control_state = RateControlState.HOLD
        # None stands for libwebrtc's Timestamp::MinusInfinity().
        self._time_last_bitrate_change_us: int | None = None
        self._time_last_bitrate_decrease_us: int | None = None
        self._time_first_throughput_estimate_us: int | None = None
        self._bitrate_is_initialized = False
        self._in_alr = False
        self._rtt_us = DEFAULT_RTT_US
        self._last_decrease_bps: int | None = None
        self._network_estimate: NetworkStateEstimate | None = None

    # -- configuration -------------------------------------------------------------------------

    def set_start_bitrate(self, start_bitrate_bps: int) -> None:
        """A known starting point: the estimate becomes valid at this rate."""
        self._current_bitrate_bps = start_bitrate_bps
        self._latest_estimated_throughput_bps = start_bitrate_bps
        self._bitrate_is_initialized = True

    def set_min_bitrate(self, min_bitrate_bps: int) -> None:
        self._min_configured_bitrate_bps = min_bitrate_bps
        self._current_bitrate_bps = max(min_bitrate_bps, self._current_bitrate_bps)

    def set_rtt(self, rtt_us: int) -> None:
        self._rtt_us = rtt_us

    def set_in_application_limited_region(self, in_alr: bool) -> None:
        self._in_alr = in_alr

    def set_network_state_estimate(self, estimate: NetworkStateEstimate | None) -> None:
        self._network_estimate = estimate

    # -- queries -------------------------------------------------------------------------------

    def valid_estimate(self) -> bool:
        """True once a start rate, a probe, a throughput or an overuse has set the estimate."""
        return self._bitrate_is_initialized

    def raise_estimate_to(self, bitrate_bps: int) -> None:
        """Raise the current estimate to ``bitrate_bps`` if it is below (never lowers it)."""
        if self._current_bitrate_bps < bitrate_bps:
            self._current_bitrate_bps = bitrate_bps

    @property
    def rate_control_state(self) -> RateControlState:
        """Hold, increase or decrease: the state machine the detector's verdicts drive."""
        return self._rate_control_state

    def link_capacity_estimate_bps(self) -> int | None:
        """The capacity estimate from the throughput at past overuses; None while unknown
        (then increases are multiplicative, else additive)."""
        link = self._link_capacity
        return link.estimate_bps() if link.has_estimate() else None

    def latest_estimate(self) -> int:
        return self._current_bitrate_bps

    def get_feedback_interval_us(self) -> int:
        """How often RTCP could be sent with 5 % of the rate, clamped to [200, 1000] ms."""
        rtcp_bitrate_bps = llround(self._current_bitrate_bps * RTCP_RATE_SHARE)
        interval_us = transfer_time_us(RTCP_SIZE_BYTES, rtcp_bitrate_bps)
        return min(max(interval_us, MIN_FEEDBACK_INTERVAL_US), MAX_FEEDBACK_INTERVAL_US)

    def time_to_reduce_further(self, at_us: int, estimated_throughput_bps: int) -> bool:
        """Whether a continuing overuse may cut again: an RTT since the last change, or the
        throughput has fallen below half the estimate."""
        reduction_interval_us = min(
            max(self._rtt_us, MIN_REDUCTION_INTERVAL_US), MAX_REDUCTION_INTERVAL_US
        )
        last_change_us = self._time_last_bitrate_change_us
        if last_change_us is None or at_us - last_change_us >= reduction_interval_us:
            return True
        if self._bitrate_is_initialized:
            threshold_bps = llround(0.5 * self._current_bitrate_bps)
            return estimated_throughput_bps < threshold_bps
        return False

    def initial_time_to_reduce_further(self, at_us: int) -> bool:
        """As :meth:`time_to_reduce_further`, before any throughput has been measured."""
        return self._bitrate_is_initialized and self.time_to_reduce_further(
            at_us, self._current_bitrate_bps // 2 - 1
        )

    def get_near_max_increase_rate_bps_per_second(self) -> float:
        """Additive increase rate: one average packet per response time ``2 * (rtt + 100 ms)``."""
        frame_size_bytes = size_at_rate_bytes(self._current_bitrate_bps, FRAME_INTERVAL_US)
        packets_per_frame = math.ceil(frame_size_bytes / PACKET_SIZE_BYTES)
        avg_packet_size_bytes = llround(frame_size_bytes / packets_per_frame)
        response_time_us = (self._rtt_us + ESTIMATOR_DELAY_US) * 2
        increase_rate = float(rate_bps(avg_packet_size_bytes, response_time_us))
        return max(MIN_INCREASE_RATE_BPS_PER_S, increase_rate)

    def get_expected_bandwidth_period_us(self) -> int:
        """Expected time between overuses: how long the additive increase takes to win back
        the last decrease, in [2, 50] s; 3 s before the first decrease."""
        increase_rate = self.get_near_max_increase_rate_bps_per_second()
        if self._last_decrease_bps is None:
            return DEFAULT_PERIOD_US
        period_us = seconds_to_us(self._last_decrease_bps / increase_rate)
        return min(max(period_us, MIN_PERIOD_US), MAX_PERIOD_US)

    # -- updates -------------------------------------------------------------------------------

    def update(
        self, bw_state: BandwidthUsage, estimated_throughput_bps: int | None, at_us: int
    ) -> int:
        """Apply one detector verdict with the acknowledged rate (None when unknown)."""
        if not self._bitrate_is_initialized:
            if self._time_first_throughput_estimate_us is None:
                if estimated_throughput_bps is not None:
                    self._time_first_throughput_estimate_us = at_us
            elif (
                at_us - self._time_first_throughput_estimate_us > INITIALIZATION_TIME_US
                and estimated_throughput_bps is not None
            ):
                self._current_bitrate_bps = estimated_throughput_bps
                self._bitrate_is_initialized = True
        self._change_bitrate(bw_state, estimated_throughput_bps, at_us)
        return self._current_bitrate_bps

    def set_estimate(self, bitrate_bps: int, at_us: int) -> None:
        """Impose an estimate (a probe result, or the halving before any throughput)."""
        self._bitrate_is_initialized = True
        prev_bitrate_bps = self._current_bitrate_bps
        self._current_bitrate_bps = self._clamp_bitrate(bitrate_bps)
        self._time_last_bitrate_change_us = at_us
        if self._current_bitrate_bps < prev_bitrate_bps:
            self._time_last_bitrate_decrease_us = at_us

    def _change_bitrate(
        self, bw_state: BandwidthUsage, input_throughput_bps: int | None, at_us: int
    ) -> None:
        if input_throughput_bps is None:
            estimated_throughput_bps = self._latest_estimated_throughput_bps
        else:
            estimated_throughput_bps = input_throughput_bps
            self._latest_estimated_throughput_bps = input_throughput_bps

        # An overuse always acts, even before the first estimate: acting gives one.
        if not self._bitrate_is_initialized and bw_state != _OVERUSING:
            return

        self._change_state(bw_state, at_us)

        new_bitrate_bps: int | None = None
        current_bps = self._current_bitrate_bps
        link = self._link_capacity
        state = self._rate_control_state
        if state is _INCREASE:
            if estimated_throughput_bps > link.upper_bound_bps():
                link.reset()
            # Cap by the throughput so the estimate cannot run away from what gets through;
            # a little extra headroom at low rates for uneven encoder output.
            increase_limit_bps = (
                llround(INCREASE_LIMIT_FACTOR * estimated_throughput_bps)
                + INCREASE_LIMIT_OFFSET_BPS
            )
            if self._send_side and self._in_alr and self._config.no_bitrate_increase_in_alr:
                # Without feedback on a higher rate, do not claim it.
                increase_limit_bps = current_bps
            if current_bps < increase_limit_bps:
                if link.has_estimate():
                    # Close to a known capacity: additive increase.
                    increased_bps = current_bps + self._additive_rate_increase_bps(at_us)
                else:
                    # Capacity unknown: ramp up faster to find it.
                    increased_bps = current_bps + self._multiplicative_rate_increase_bps(
                        at_us, current_bps
                    )
                new_bitrate_bps = min(increased_bps, increase_limit_bps)
            self._time_last_bitrate_change_us = at_us
        elif state is _DECREASE:
            # Slightly below the measured throughput, to drain the self-induced queue.
            decreased_bps = llround(estimated_throughput_bps * self._beta)
            if decreased_bps > BACKOFF_SUBTRACT_BPS:
                decreased_bps -= BACKOFF_SUBTRACT_BPS
            if decreased_bps > current_bps and link.has_estimate():
                decreased_bps = llround(self._beta * link.estimate_bps())
            # Never increase on overuse.
            if decreased_bps < current_bps:
                new_bitrate_bps = decreased_bps
            if self._bitrate_is_initialized and estimated_throughput_bps < current_bps:
                self._last_decrease_bps = (
                    0 if new_bitrate_bps is None else current_bps - new_bitrate_bps
                )
            if estimated_throughput_bps < link.lower_bound_bps():
                # Far below the known capacity: start the capacity estimate afresh.
                link.reset()
            self._bitrate_is_initialized = True
            link.on_overuse_detected(estimated_throughput_bps)
            # Hold until the queue has drained.
            self._rate_control_state = _HOLD
            self._time_last_bitrate_change_us = at_us
            self._time_last_bitrate_decrease_us = at_us

        self._current_bitrate_bps = self._clamp_bitrate(
            current_bps if new_bitrate_bps is None else new_bitrate_bps
        )

    def _clamp_bitrate(self, new_bitrate_bps: int) -> int:
        estimate = self._network_estimate
        if estimate is not None:
            config = self._config
            upper_bps = estimate.link_capacity_upper_bps
            if not config.disable_estimate_bounded_increase and math.isfinite(upper_bps):
                if config.use_current_estimate_as_min_upper_bound:
                    upper_bps = max(upper_bps, self._current_bitrate_bps)
                new_bitrate_bps = min(upper_bps, new_bitrate_bps)
            lower_bps = estimate.link_capacity_lower_bps
            if math.isfinite(lower_bps) and new_bitrate_bps < self._current_bitrate_bps:
                new_bitrate_bps = min(
                    self._current_bitrate_bps,
                    max(new_bitrate_bps, llround(lower_bps * self._beta)),
                )
        return int(max(new_bitrate_bps, self._min_configured_bitrate_bps))

    def _multiplicative_rate_increase_bps(self, at_us: int, current_bitrate_bps: int) -> int:
        alpha = MULTIPLICATIVE_INCREASE_PER_S
        last_us = self._time_last_bitrate_change_us
        if last_us is not None:
            alpha = alpha ** min((at_us - last_us) * S_PER_US, 1.0)
        return max(llround(current_bitrate_bps * (alpha - 1.0)), MIN_MULTIPLICATIVE_INCREASE_BPS)

    def _additive_rate_increase_bps(self, at_us: int) -> int:
        # Only reached in Increase, where the last change time is always set.
        time_period_s = (at_us - self._time_last_bitrate_change_us) * S_PER_US
        return truncate_rate_bps(self.get_near_max_increase_rate_bps_per_second() * time_period_s)

    def _change_state(self, bw_state: BandwidthUsage, at_us: int) -> None:
        if bw_state == _NORMAL:
            if self._rate_control_state is _HOLD:
                self._time_last_bitrate_change_us = at_us
                self._rate_control_state = _INCREASE
        elif bw_state == _OVERUSING:
            self._rate_control_state = _DECREASE
        elif bw_state == _UNDERUSING:
            self._rate_control_state = _HOLD
