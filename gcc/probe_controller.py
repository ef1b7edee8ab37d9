"""ProbeController: decides when GoogCC asks the pacer for probe bursts, and at what rate.

Adapted from ``modules/congestion_controller/goog_cc/probe_controller.cc`` (upstream, mid-2024).
Probing answers "is there more capacity?" faster than the 8 %/s loss-based or the additive
delay-based increase can:

* **Initial (exponential) probing**: once the network is up and a start rate is known, probe at
  3x and 6x the start rate and wait for a result. Each estimate above 0.7x the last probe's rate
  triggers a further probe at 2x that estimate; waiting ends after 1 s without one.
* **Max-rate increase**: when probing is over and the configured max rises above both the old max
  and the estimate, probe at the new max.
* **Allocation probes** (in ALR only): when the encoder's total allocation rises above the
  estimate, probe at 1x and 2x the allocation.
* **Periodic ALR probing** (if enabled): every 5 s in ALR, probe at 2x the estimate.
* **Large-drop recovery** (``request_probe``): after a drop to below 0.66x the previous estimate,
  in ALR or within 3 s of leaving it, and within 5 s of the drop, probe once at 0.85x the old
  rate (at most every 5 s).
* **Repeated initial probing** (if enabled): probe at 3x the estimate every second for the first
  5 s, until the encoder reports an allocation.

Every probe is capped at the max rate (5 Mbps when none is set) and at 2x the max allocation;
a capped probe ends further probing. No probe is sent while the estimate is limited by delay
increase, high RTT or loss; when loss-based BWE is increasing, probes are capped at 1.5x the
estimate. Clusters last 15 ms with at least 5 probes (100 ms and 20 ms spacing during repeated
initial probing).

Left out: probing driven by a ``NetworkStateEstimate`` (off by default, and GoogCC has no network
state estimator by default), and the ``WebRTC-BweRapidRecoveryExperiment`` trial. libwebrtc's
``ProbeClusterConfig.min_probe_delta`` has no field in :class:`loki.api.ProbeCluster`; the value
for the latest clusters is :attr:`ProbeController.last_min_probe_delta_us`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum, IntEnum

from gcc.units import scale_rate
from loki.api import ProbeCluster

#: Waiting for a probe result ends this long after the last probe was initiated.
MAX_WAITING_TIME_FOR_PROBING_RESULT_US = 1_000_000
#: Probe cap when the application sets no max rate.
DEFAULT_MAX_PROBING_BITRATE_BPS = 5_000_000
#: A new estimate below this fraction of the previous one is a "large drop".
BITRATE_DROP_THRESHOLD = 0.66
#: A large drop is only probed after if the recovery request comes within this time.
BITRATE_DROP_TIMEOUT_US = 5_000_000
#: Drop-recovery probe rate, as a fraction of the estimate before the drop.
PROBE_FRACTION_AFTER_DROP = 0.85
#: Drop-recovery probing is allowed this long after ALR ended.
ALR_ENDED_TIMEOUT_US = 3_000_000
#: Least time between two drop-recovery probes.
MIN_TIME_BETWEEN_ALR_PROBES_US = 5_000_000
#: Expected uncertainty of a probe result, as a fraction of its target rate.
PROBE_UNCERTAINTY = 0.05


class BandwidthLimitedCause(IntEnum):
    """Why the current estimate is what it is (libwebrtc ``BandwidthLimitedCause``).

    GoogCC derives it per update: delay over/under-use -> ``DELAY_BASED_LIMITED_DELAY_INCREASED``;
    else RTT above the back-off limit -> ``RTT_BASED_BACK_OFF_HIGH_RTT``; else from the
    loss-based state (always ``DELAY_BASED_LIMITED`` with LossBasedBweV2 off).
    """

    LOSS_LIMITED_BWE_INCREASING = 0
    LOSS_LIMITED_BWE = 1
    DELAY_BASED_LIMITED = 2
    DELAY_BASED_LIMITED_DELAY_INCREASED = 3
    RTT_BASED_BACK_OFF_HIGH_RTT = 4


class _State(Enum):
    INIT = 0  # No probing triggered yet.
    WAITING_FOR_PROBING_RESULT = 1  # Waiting for results to continue exponential probing.
    PROBING_COMPLETE = 2


# The states as module names: an enum member is a class attribute lookup, and :meth:`process`
# runs every process interval.
_WAITING_FOR_PROBING_RESULT = _State.WAITING_FOR_PROBING_RESULT
_PROBING_COMPLETE = _State.PROBING_COMPLETE


@dataclass(frozen=True, slots=True)
class ProbeControllerConfig:
    """libwebrtc ``ProbeControllerConfig`` defaults (``WebRTC-Bwe-ProbingConfiguration`` keys).

    ``second_exponential_probe_scale`` None or <= 0 sends a single initial probe;
    ``first_allocation_probe_scale`` None disables allocation probes;
    ``allocation_probe_limit_by_current_scale`` None leaves them uncapped by the estimate.
    """

    first_exponential_probe_scale: float = 3.0  # p1
    second_exponential_probe_scale: float | None = 6.0  # p2
    further_exponential_probe_scale: float = 2.0  # step_size
    further_probe_threshold: float = 0.7
    abort_further_probe_if_max_lower_than_current: bool = False  # abort_further
    repeated_initial_probing_time_period_us: int = 5_000_000  # initial_probing
    initial_probe_duration_us: int = 100_000
    initial_min_probe_delta_us: int = 20_000
    alr_probing_interval_us: int = 5_000_000  # alr_interval
    alr_probe_scale: float = 2.0  # alr_scale
    probe_on_max_allocated_bitrate_change: bool = True  # probe_max_allocation
    first_allocation_probe_scale: float | None = 1.0  # alloc_p1
    second_allocation_probe_scale: float | None = 2.0  # alloc_p2
    allocation_probe_limit_by_current_scale: float | None = None  # alloc_current_bwe_limit
    min_probe_packets_sent: int = 5
    min_probe_duration_us: int = 15_000
    min_probe_delta_us: int = 2_000
    loss_limited_probe_scale: float = 1.5  # loss_limited_scale
    skip_if_estimate_larger_than_fraction_of_max: float = 0.0
    skip_probe_max_allocated_scale: float = 1.0  # skip_max_allocated_scale


class ProbeController:
    """Probe scheduling state machine (libwebrtc port); returns ``loki.api.ProbeCluster``s.

    Rates are integer bps, times integer microseconds; an unset max rate is None (or inf).
    """

    __slots__ = (
        "_alr_end_time_us",
        "_alr_start_time_us",
        "_bandwidth_limited_cause",
        "_bitrate_before_last_large_drop_bps",
        "_config",
        "_enable_periodic_alr_probing",
        "_estimated_bitrate_bps",
        "_last_allowed_repeated_initial_probe_us",
        "_last_bwe_drop_probing_time_us",
        "_max_bitrate_bps",
        "_max_total_allocated_bitrate_bps",
        "_min_bitrate_to_probe_further_bps",
        "_network_available",
        "_next_probe_cluster_id",
        "_repeated_initial_probing_enabled",
        "_start_bitrate_bps",
        "_state",
        "_time_last_probing_initiated_us",
        "_time_of_last_large_drop_us",
        "last_min_probe_delta_us",
    )

    def __init__(self, config: ProbeControllerConfig | None = None) -> None:
        self._config = config or ProbeControllerConfig()
        self._network_available = False
        self._enable_periodic_alr_probing = False
        self._repeated_initial_probing_enabled = False
        self._last_allowed_repeated_initial_probe_us: float = -math.inf
        self._max_total_allocated_bitrate_bps = 0
        self._alr_start_time_us: int | None = None
        self._next_probe_cluster_id = 1
        #: Minimum spacing of probe bursts for the clusters returned last (see module doc).
        self.last_min_probe_delta_us = self._config.min_probe_delta_us
        self.reset(0)

    def reset(self, at_us: int) -> None:
        """Back to the initial state, keeping ALR-probing, availability and allocation settings."""
        self._bandwidth_limited_cause = BandwidthLimitedCause.DELAY_BASED_LIMITED
        self._state = _State.INIT
        self._min_bitrate_to_probe_further_bps: float = math.inf
        self._time_last_probing_initiated_us = 0
        self._estimated_bitrate_bps = 0
        self._start_bitrate_bps = 0
        self._max_bitrate_bps = DEFAULT_MAX_PROBING_BITRATE_BPS
        self._last_bwe_drop_probing_time_us = at_us
        self._alr_end_time_us: int | None = None
        self._time_of_last_large_drop_us = at_us
        self._bitrate_before_last_large_drop_bps = 0

    def set_bitrates(
        self, min_bps: int, start_bps: int, max_bps: float | None, at_us: int
    ) -> list[ProbeCluster]:
        """New rate constraints; may start initial probing or probe a raised max."""
        if start_bps > 0:
            self._start_bitrate_bps = start_bps
            self._estimated_bitrate_bps = start_bps
        elif self._start_bitrate_bps == 0:
            self._start_bitrate_bps = min_bps

        old_max_bps = self._max_bitrate_bps
        self._max_bitrate_bps = (
            int(max_bps)
            if max_bps is not None and math.isfinite(max_bps)
            else DEFAULT_MAX_PROBING_BITRATE_BPS
        )
        state = self._state
        if state is _State.INIT:
            if self._network_available:
                return self._initiate_exponential_probing(at_us)
        elif state is _State.PROBING_COMPLETE:
            est = self._estimated_bitrate_bps
            if est != 0 and old_max_bps < self._max_bitrate_bps and est < self._max_bitrate_bps:
                return self._initiate_probing(at_us, [self._max_bitrate_bps], False)
        return []

    def on_max_total_allocated_bitrate(
        self, max_total_allocated_bps: int, at_us: int
    ) -> list[ProbeCluster]:
        """The encoder's total allocation changed; in ALR, probe if it exceeds the estimate."""
        c = self._config
        in_alr = self._alr_start_time_us is not None
        est = self._estimated_bitrate_bps
        if (
            c.probe_on_max_allocated_bitrate_change
            and self._state is _State.PROBING_COMPLETE
            and max_total_allocated_bps != self._max_total_allocated_bitrate_bps
            and est < self._max_bitrate_bps
            and est < max_total_allocated_bps
            and in_alr
        ):
            self._max_total_allocated_bitrate_bps = max_total_allocated_bps
            if c.first_allocation_probe_scale is None:
                return []
            first_bps = scale_rate(max_total_allocated_bps, c.first_allocation_probe_scale)
            limit_bps: float = (
                math.inf
                if c.allocation_probe_limit_by_current_scale is None
                else scale_rate(est, c.allocation_probe_limit_by_current_scale)
            )
            limited_by_current_bwe = limit_bps < first_bps
            if limited_by_current_bwe:
                first_bps = int(limit_bps)
            probes = [first_bps]
            if not limited_by_current_bwe and c.second_allocation_probe_scale is not None:
                second_bps = scale_rate(max_total_allocated_bps, c.second_allocation_probe_scale)
                limited_by_current_bwe = limit_bps < second_bps
                if limited_by_current_bwe:
                    second_bps = int(limit_bps)
                if second_bps > first_bps:
                    probes.append(second_bps)
            return self._initiate_probing(at_us, probes, limited_by_current_bwe)
        if max_total_allocated_bps != 0:
            self._last_allowed_repeated_initial_probe_us = at_us
        self._max_total_allocated_bitrate_bps = max_total_allocated_bps
        return []

    def on_network_availability(self, network_available: bool, at_us: int) -> list[ProbeCluster]:
        """Transport writable or not; initial probing waits for the network."""
        self._network_available = network_available
        if not network_available and self._state is _State.WAITING_FOR_PROBING_RESULT:
            self._state = _State.PROBING_COMPLETE
            self._min_bitrate_to_probe_further_bps = math.inf
        if network_available and self._state is _State.INIT and self._start_bitrate_bps != 0:
            return self._initiate_exponential_probing(at_us)
        return []

    def set_estimated_bitrate(
        self, bitrate_bps: int, bandwidth_limited_cause: BandwidthLimitedCause, at_us: int
    ) -> list[ProbeCluster]:
        """A new target estimate; during exponential probing, may probe further."""
        self._bandwidth_limited_cause = bandwidth_limited_cause
        if bitrate_bps < scale_rate(self._estimated_bitrate_bps, BITRATE_DROP_THRESHOLD):
            self._time_of_last_large_drop_us = at_us
            self._bitrate_before_last_large_drop_bps = self._estimated_bitrate_bps
        self._estimated_bitrate_bps = bitrate_bps
        if self._state is _WAITING_FOR_PROBING_RESULT:
            c = self._config
            allocated = self._max_total_allocated_bitrate_bps
            if c.abort_further_probe_if_max_lower_than_current and (
                bitrate_bps > self._max_bitrate_bps
                or (allocated != 0 and bitrate_bps > 2 * allocated)
            ):
                self._min_bitrate_to_probe_further_bps = math.inf  # Needed rate reached.
            if bitrate_bps > self._min_bitrate_to_probe_further_bps:
                return self._initiate_probing(
                    at_us, [scale_rate(bitrate_bps, c.further_exponential_probe_scale)], True
                )
        return []

    def enable_periodic_alr_probing(self, enable: bool) -> None:
        """Probe every ``alr_probing_interval_us`` while in ALR."""
        self._enable_periodic_alr_probing = enable

    def enable_repeated_initial_probing(self, enable: bool) -> None:
        """Re-probe every second for the first 5 s until an allocation is reported."""
        self._repeated_initial_probing_enabled = enable

    def set_alr_start_time(self, alr_start_time_us: int | None) -> None:
        """When the sender entered ALR, or None when it is not in ALR."""
        self._alr_start_time_us = alr_start_time_us

    def set_alr_ended_time(self, alr_end_time_us: int) -> None:
        """When the sender last left ALR."""
        self._alr_end_time_us = alr_end_time_us

    def request_probe(self, at_us: int) -> list[ProbeCluster]:
        """After recovering from a large drop: probe at 0.85x the pre-drop rate if plausible."""
        in_alr = self._alr_start_time_us is not None
        alr_end_us = self._alr_end_time_us
        alr_ended_recently = alr_end_us is not None and at_us - alr_end_us < ALR_ENDED_TIMEOUT_US
        if (in_alr or alr_ended_recently) and self._state is _State.PROBING_COMPLETE:
            suggested_bps = scale_rate(
                self._bitrate_before_last_large_drop_bps, PROBE_FRACTION_AFTER_DROP
            )
            min_expected_bps = scale_rate(suggested_bps, 1 - PROBE_UNCERTAINTY)
            if (
                min_expected_bps > self._estimated_bitrate_bps
                and at_us - self._time_of_last_large_drop_us < BITRATE_DROP_TIMEOUT_US
                and at_us - self._last_bwe_drop_probing_time_us > MIN_TIME_BETWEEN_ALR_PROBES_US
            ):
                self._last_bwe_drop_probing_time_us = at_us
                return self._initiate_probing(at_us, [suggested_bps], False)
        return []

    def process(self, at_us: int) -> list[ProbeCluster]:
        """Periodic tick: time out waiting for results; send repeated-initial and ALR probes."""
        state = self._state
        if (
            state is _WAITING_FOR_PROBING_RESULT
            and at_us - self._time_last_probing_initiated_us
            > MAX_WAITING_TIME_FOR_PROBING_RESULT_US
        ):
            self._state = state = _PROBING_COMPLETE  # Timed out waiting for a result.
            self._min_bitrate_to_probe_further_bps = math.inf
        est = self._estimated_bitrate_bps
        if est == 0 or state is not _PROBING_COMPLETE:
            return []
        # Each kind of probe only when enabled (tested first: this runs every interval).
        repeated = self._repeated_initial_probing_enabled
        if repeated and self._time_for_next_repeated_initial_probe(at_us):
            scale = self._config.first_exponential_probe_scale
            return self._initiate_probing(at_us, [scale_rate(est, scale)], True)
        if self._enable_periodic_alr_probing and self._time_for_alr_probe(at_us):
            scale = self._config.alr_probe_scale
            return self._initiate_probing(at_us, [scale_rate(est, scale)], True)
        return []

    def _time_for_alr_probe(self, at_us: int) -> bool:
        alr_start_us = self._alr_start_time_us
        if self._enable_periodic_alr_probing and alr_start_us is not None:
            next_probe_us = (
                max(alr_start_us, self._time_last_probing_initiated_us)
                + self._config.alr_probing_interval_us
            )
            return at_us >= next_probe_us
        return False

    def _time_for_next_repeated_initial_probe(self, at_us: int) -> bool:
        return (
            self._repeated_initial_probing_enabled
            and self._state is not _WAITING_FOR_PROBING_RESULT
            and self._last_allowed_repeated_initial_probe_us > at_us
            and at_us
            >= self._time_last_probing_initiated_us + MAX_WAITING_TIME_FOR_PROBING_RESULT_US
        )

    def _initiate_exponential_probing(self, at_us: int) -> list[ProbeCluster]:
        c = self._config
        start = self._start_bitrate_bps
        probes = [scale_rate(start, c.first_exponential_probe_scale)]
        second = c.second_exponential_probe_scale
        if second is not None and second > 0:
            probes.append(scale_rate(start, second))
        if self._repeated_initial_probing_enabled and self._max_total_allocated_bitrate_bps == 0:
            self._last_allowed_repeated_initial_probe_us = (
                at_us + c.repeated_initial_probing_time_period_us
            )
        return self._initiate_probing(at_us, probes, True)

    def _initiate_probing(
        self, at_us: int, bitrates_to_probe_bps: list[int], probe_further: bool
    ) -> list[ProbeCluster]:
        c = self._config
        max_bitrate = self._max_bitrate_bps
        allocated = self._max_total_allocated_bitrate_bps
        if c.skip_if_estimate_larger_than_fraction_of_max > 0:
            max_probe_rate = (
                max_bitrate
                if allocated == 0
                else min(scale_rate(allocated, c.skip_probe_max_allocated_scale), max_bitrate)
            )
            if self._estimated_bitrate_bps > scale_rate(
                max_probe_rate, c.skip_if_estimate_larger_than_fraction_of_max
            ):
                self._state = _State.PROBING_COMPLETE
                self._min_bitrate_to_probe_further_bps = math.inf
                return []

        max_probe_bps = max_bitrate
        if allocated > 0:
            # Up to 2x the allocation: headroom for bursty streams and for probes that arrive
            # slightly below their target.
            max_probe_bps = min(max_probe_bps, allocated * 2)

        cause = self._bandwidth_limited_cause
        if cause in (
            BandwidthLimitedCause.RTT_BASED_BACK_OFF_HIGH_RTT,
            BandwidthLimitedCause.DELAY_BASED_LIMITED_DELAY_INCREASED,
            BandwidthLimitedCause.LOSS_LIMITED_BWE,
        ):
            return []
        if cause is BandwidthLimitedCause.LOSS_LIMITED_BWE_INCREASING:
            max_probe_bps = min(
                max_probe_bps, scale_rate(self._estimated_bitrate_bps, c.loss_limited_probe_scale)
            )

        if at_us < self._last_allowed_repeated_initial_probe_us:
            duration_us = c.initial_probe_duration_us
            self.last_min_probe_delta_us = c.initial_min_probe_delta_us
        else:
            duration_us = c.min_probe_duration_us
            self.last_min_probe_delta_us = c.min_probe_delta_us
        clusters = []
        for bitrate_bps in bitrates_to_probe_bps:
            if bitrate_bps >= max_probe_bps:
                bitrate_bps = max_probe_bps
                probe_further = False
            clusters.append(
                ProbeCluster(
                    id=self._next_probe_cluster_id,
                    at_us=at_us,
                    target_bps=bitrate_bps,
                    duration_us=duration_us,
                    min_probes=c.min_probe_packets_sent,
                )
            )
            self._next_probe_cluster_id += 1
        self._time_last_probing_initiated_us = at_us
        if probe_further:
            self._state = _State.WAITING_FOR_PROBING_RESULT
            # Results above a fraction of the probe's own rate are not to be expected.
            self._min_bitrate_to_probe_further_bps = scale_rate(
                clusters[-1].target_bps, c.further_probe_threshold
            )
        else:
            self._state = _State.PROBING_COMPLETE
            self._min_bitrate_to_probe_further_bps = math.inf
        return clusters
