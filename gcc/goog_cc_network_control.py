"""GoogCcNetworkController: send-side GCC behind the project's one controller interface.

Adapted from libwebrtc ``modules/congestion_controller/goog_cc/goog_cc_network_control.cc``
(upstream mid-2024) with the project's target configuration (``shared/docs/gcc-reference.md``):
LossBasedBweV2 off (the classic 2 %/10 % rule in :class:`SendSideBandwidthEstimation`),
:class:`RobustThroughputEstimator` as the acknowledged-rate estimator (the Bayesian one with
``use_robust_throughput_estimator=False``), trendline delay filter, AIMD with link-capacity
estimator, initial exponential probing.

Per feedback report, as libwebrtc orders it:

1. feedback-based RTT figures: the propagation RTT for the RTT back-off; in
   ``feedback_only`` mode also the mean of the last 32 max-RTTs for the delay-based side, the
   min RTT for the loss-based side, and the loss fraction from feedback once per second;
2. acknowledged rate from the received packets (sorted by receive time);
3. probe results from packets of probe clusters; a probe below the acknowledged rate is
   raised to 0.85 x acknowledged (``limit_probes_lower_than_throughput_estimate``);
4. :class:`DelayBasedBwe`; its result caps the loss-based estimate;
5. the target (``SendSideBandwidthEstimation.target_rate``) goes to the probe controller,
   which may ask for further probes.

Left out, as the project's target configuration leaves them off or has no use for them: the
ALR detector (the sender model never runs application-limited for long, so ALR probing and
the large-drop recovery probe, which need ALR, never fire), the congestion-window pushback,
the network-state estimator, LossBasedBweV2, REMB.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from operator import le

import numpy as np
from numba import njit

from gcc.acknowledged_bitrate_estimator_interface import create_acknowledged_bitrate_estimator
from gcc.aimd_rate_control import RateControlState
from gcc.bandwidth_usage import BandwidthUsage
from gcc.delay_based_bwe import DelayBasedBwe
from gcc.probe_bitrate_estimator import ProbeBitrateEstimator
from gcc.probe_controller import BandwidthLimitedCause, ProbeController
from gcc.send_side_bandwidth_estimation import SendSideBandwidthEstimation
from loki.api import (
    NO_PROBE,
    NOT_RECEIVED_US,
    Controller,
    ControllerConfig,
    ProbeCluster,
    TransportFeedback,
)

#: ``kLossUpdateInterval``: feedback-derived loss goes to the loss-based side at this pace.
LOSS_UPDATE_INTERVAL_US = 1_000_000
#: ``kMaxFeedbackRttWindow``.
MAX_FEEDBACK_RTT_WINDOW = 32
#: ``kProbeDropThroughputFraction``.
PROBE_DROP_THROUGHPUT_FRACTION = 0.85
_DELAY_BASED_LIMITED = BandwidthLimitedCause.DELAY_BASED_LIMITED


def _non_decreasing(values: list[int]) -> bool:
    return all(map(le, values, islice(values, 1, None)))


@dataclass(frozen=True)
class GoogCcConfig:
    """Switches of the facade (libwebrtc field trials named in comments)."""

    #: RTT and loss from transport feedback only (``GoogCcConfig::feedback_only``); otherwise
    #: from RTCP (``on_rtt`` / ``on_loss_report``), as in a PeerConnection.
    feedback_only: bool = False
    #: ``WebRTC-Bwe-RobustThroughputEstimatorSettings/enabled``.
    use_robust_throughput_estimator: bool = True
    #: ``WebRTC-Bwe-ProbingBehavior`` ``limit_probe_target_rate_to_loss_bwe``'s sibling.
    limit_probes_lower_than_throughput_estimate: bool = True


class GoogCcNetworkController(Controller):
    """Send-side GCC as one object: feed it reports, read ``target_bps``."""

    name = "gcc"

    def __init__(
        self, config: ControllerConfig | None = None, gcc_config: GoogCcConfig | None = None
    ) -> None:
        super().__init__(config)
        self.gcc_config = gcc_config or GoogCcConfig()
        c = self.config
        self._bwe = SendSideBandwidthEstimation()
        self._delay_based_bwe = DelayBasedBwe()
        self._acked = create_acknowledged_bitrate_estimator(
            self.gcc_config.use_robust_throughput_estimator
        )
        self._probe_estimator = ProbeBitrateEstimator()
        self._probe_controller = ProbeController()
        self._clusters: dict[int, ProbeCluster] = {}
        self._pending_probes: list[ProbeCluster] = []
        self._feedback_max_rtts_ms: deque[int] = deque(maxlen=MAX_FEEDBACK_RTT_WINDOW)
        self._lost_since_loss_update = 0
        self._expected_since_loss_update = 0
        self._next_loss_update_us = 0
        self._initialized = False
        # ResetConstraints at t = 0.
        self._bwe.set_bitrates(c.start_bps, c.min_bps, c.max_bps, 0)
        self._delay_based_bwe.set_start_bitrate(c.start_bps)
        self._delay_based_bwe.set_min_bitrate(c.min_bps)
        self._add_probes(self._probe_controller.set_bitrates(c.min_bps, c.start_bps, c.max_bps, 0))
        self._add_probes(self._probe_controller.on_network_availability(True, 0))
        self._last_target_bps = 0
        # clamp() is a pure function of the rate (and the config): its last config, input and
        # output, kept so that the every-20-ms re-derivation below costs a comparison.
        self._clamp_config: ControllerConfig | None = None
        self._clamp_in_bps: float | None = None
        self._clamp_out_bps = 0
        self._target_bps = self._clamped(self._bwe.target_rate())

    # -- outputs ------------------------------------------------------------------------------
    @property
    def target_bps(self) -> int:
        return self._target_bps

    def assume_target(self, rate_bps: int) -> None:
        """Continue as if GCC itself had chosen ``rate_bps``: its loss-based target becomes
        ``rate_bps`` and the delay-based (AIMD) estimate and limit are raised to it if below.

        Not in libwebrtc. DAgger with GCC as a stateful teacher needs it: the label for a
        state the learner reached must be *GCC's decision from that state*, not the target
        of a GCC that drifted along its own trajectory (loki/train/clone.py). On GCC's own
        trajectory (target = loss-based target <= AIMD estimate) it changes nothing.
        """
        self._bwe.assume_target(rate_bps)
        self._delay_based_bwe.raise_estimate_to(rate_bps)
        self._target_bps = self._clamped(self._bwe.target_rate())

    # -- sensors (read-only views of what GCC measured, for learned controllers) ---------------
    @property
    def delay_usage(self) -> BandwidthUsage:
        """The delay detector's verdict on the last report."""
        return self._delay_based_bwe.last_state()

    @property
    def delay_trend_ratio(self) -> float:
        """The detector's modified trend over its adaptive threshold (see DelayBasedBwe)."""
        return self._delay_based_bwe.detector_trend_ratio()

    @property
    def acked_bitrate_bps(self) -> int | None:
        """The acknowledged (received) rate GCC's decreases are based on; None before any."""
        return self._acked.bitrate()

    @property
    def rate_control_state(self) -> RateControlState:
        """The delay-based AIMD's state: hold, increase or decrease."""
        return self._delay_based_bwe.rate_control_state()

    @property
    def link_capacity_bps(self) -> int | None:
        """The delay-based AIMD's link capacity estimate (throughput at past overuses);
        None while unknown."""
        return self._delay_based_bwe.link_capacity_estimate_bps()

    def pop_probe_clusters(self) -> list[ProbeCluster]:
        out, self._pending_probes = self._pending_probes, []
        return out

    def _add_probes(self, clusters: list[ProbeCluster]) -> None:
        for c in clusters:
            self._clusters[c.id] = c
            self._pending_probes.append(c)

    def _maybe_trigger_on_network_changed(self, at_us: int) -> None:
        target = self._bwe.target_rate()
        if target != self._last_target_bps:
            self._last_target_bps = target
            self._add_probes(
                self._probe_controller.set_estimated_bitrate(target, _DELAY_BASED_LIMITED, at_us)
            )
        # Always re-derived from the estimator (not only on a change): imitation learning puts
        # the estimators in another state between reports (loki/train/clone.py).
        self._target_bps = self._clamped(target)

    def _clamped(self, rate_bps: float) -> int:
        """``self.config.clamp(rate_bps)``, remembered for the last rate."""
        config = self.config
        if rate_bps == self._clamp_in_bps and config is self._clamp_config:
            return self._clamp_out_bps
        clamped = config.clamp(rate_bps)
        self._clamp_config = config
        self._clamp_in_bps = rate_bps
        self._clamp_out_bps = clamped
        return clamped

    # -- inputs -------------------------------------------------------------------------------
    def on_process_interval(self, at_us: int) -> None:
        if not self._initialized:
            self._bwe.set_send_bitrate(self.config.start_bps, at_us)
            self._initialized = True
        self._bwe.update_estimate(at_us)
        clusters = self._probe_controller.process(at_us)
        if clusters:
            self._add_probes(clusters)
        self._maybe_trigger_on_network_changed(at_us)

    def on_rtt(self, rtt_us: int, at_us: int) -> None:
        if self.gcc_config.feedback_only or rtt_us <= 0:
            return
        self._delay_based_bwe.on_rtt_update(rtt_us)
        self._bwe.update_rtt(rtt_us, at_us)

    def on_loss_report(self, packets_lost: int, packets_expected: int, at_us: int) -> None:
        if self.gcc_config.feedback_only or packets_expected <= 0:
            return
        self._bwe.update_packets_lost(packets_lost, packets_expected, at_us)
        self._maybe_trigger_on_network_changed(at_us)

    def on_feedback(self, report: TransportFeedback) -> int:
        n = len(report)
        if n == 0:
            return self._target_bps
        at_us = report.feedback_time_us
        report_arrays = (report.send_time_us, report.arrival_time_us, report.size_bytes)
        # What the steps below branch on, in one compiled pass (see _summarise_report).
        (
            lost,
            probe_packets,
            arrival_in_order,
            send_in_order,
            max_recv_us,
            min_send_us,
            min_recv_minus_send_us,
        ) = _summarise_report(report.send_time_us, report.arrival_time_us, report.probe_cluster_id)
        if lost < n:
            self._feedback_rtts(at_us, max_recv_us, min_send_us, min_recv_minus_send_us)
        if self.gcc_config.feedback_only:
            self._expected_since_loss_update += n
            self._lost_since_loss_update += lost
            if at_us > self._next_loss_update_us:
                self._next_loss_update_us = at_us + LOSS_UPDATE_INTERVAL_US
                self._bwe.update_packets_lost(
                    self._lost_since_loss_update, self._expected_since_loss_update, at_us
                )
                self._expected_since_loss_update = 0
                self._lost_since_loss_update = 0

        # The received packets sorted by receive time (stable on transport order), as
        # SortedByReceiveTime(). A report nearly always has no loss and arrives in that order:
        # then the estimators take its own arrays (their work is compiled), and the per-packet
        # Python below needs no lists.
        lists: tuple[list[int], list[int], list[int]] | None = None
        if lost == 0 and arrival_in_order:
            by_arrival: Sequence[int] = range(n)
            acked_arrays = report_arrays
            acked_send_in_order = send_in_order
        else:
            lists = send, arrival, size = _as_lists(report)
            if lost:
                received: Sequence[int] = [i for i in range(n) if arrival[i] != NOT_RECEIVED_US]
            else:
                received = range(n)
            by_arrival = received if arrival_in_order else sorted(received, key=arrival.__getitem__)
            acked_send = [send[i] for i in by_arrival]
            acked_arrays = (
                np.array(acked_send, dtype=np.int64),
                np.array([arrival[i] for i in by_arrival], dtype=np.int64),
                np.array([size[i] for i in by_arrival], dtype=np.int64),
            )
            # In transport order (the received ones) the kernel checked the send times.
            acked_send_in_order = send_in_order if arrival_in_order else _non_decreasing(acked_send)
        self._acked.incoming_packet_feedback_vector(*acked_arrays)
        acked_bps = self._acked.bitrate()
        self._bwe.set_acknowledged_rate(acked_bps, at_us)

        if probe_packets:
            lists = lists or _as_lists(report)
            send, arrival, size = lists
            probe_ids = report.probe_cluster_id.tolist()
            for i in by_arrival:
                pid = probe_ids[i]
                if pid != NO_PROBE:
                    cluster = self._clusters.get(pid)
                    if cluster is not None:
                        self._probe_estimator.handle_probe_and_estimate_bitrate(
                            pid,
                            send[i],
                            arrival[i],
                            size[i],
                            cluster.min_probes,
                            cluster.min_bytes,
                        )
        probe_bps = self._probe_estimator.fetch_and_reset_last_estimated_bitrate()
        if (
            self.gcc_config.limit_probes_lower_than_throughput_estimate
            and probe_bps is not None
            and acked_bps is not None
            and probe_bps < self._delay_based_bwe.last_estimate()
            and probe_bps < acked_bps
        ):
            probe_bps = max(probe_bps, round(acked_bps * PROBE_DROP_THROUGHPUT_FRACTION))

        if acked_send_in_order:
            # Sorted by (arrival, send time) too: the delay-based side's order is the same.
            result = self._delay_based_bwe.incoming_packets_in_receive_order(
                *acked_arrays, acked_bps, probe_bps, at_us
            )
        else:
            send, arrival, size = lists or _as_lists(report)
            result = self._delay_based_bwe.incoming_packet_feedback_vector(
                send, arrival, size, acked_bps, probe_bps, at_us
            )
        if result.updated:
            if result.probe:
                self._bwe.set_send_bitrate(result.target_bitrate_bps, at_us)
            self._bwe.update_delay_based_estimate(at_us, result.target_bitrate_bps)
            self._maybe_trigger_on_network_changed(at_us)
        if result.recovered_from_overuse:
            self._add_probes(self._probe_controller.request_probe(at_us))
        return self._target_bps

    def _feedback_rtts(
        self, at_us: int, max_recv_us: int, min_send_us: int, min_recv_minus_send_us: int
    ) -> None:
        """RTT figures of the received packets, from their newest arrival, oldest send and
        least ``arrival - send``.

        Per packet, rtt = at - send and propagation = rtt - (newest arrival - arrival); their
        max and min are integer expressions of those three figures.
        """
        max_rtt_us = max(-1, at_us - min_send_us)
        min_prop_us = at_us - max_recv_us + min_recv_minus_send_us
        self._feedback_max_rtts_ms.append(max_rtt_us // 1000)
        self._bwe.update_propagation_rtt(at_us, min_prop_us)
        if self.gcc_config.feedback_only:
            mean_ms = sum(self._feedback_max_rtts_ms) // len(self._feedback_max_rtts_ms)
            self._delay_based_bwe.on_rtt_update(mean_ms * 1000)
            # pending time is measured against the newest arrival; the min is the NACK RTT.
            self._bwe.update_rtt(min_prop_us, at_us)


def _as_lists(report: TransportFeedback) -> tuple[list[int], list[int], list[int]]:
    """Send times, arrival times and sizes as lists, for per-packet Python."""
    return report.send_time_us.tolist(), report.arrival_time_us.tolist(), report.size_bytes.tolist()


@njit(cache=True)
def _summarise_report(
    send_time_us: np.ndarray, arrival_time_us: np.ndarray, probe_cluster_id: np.ndarray
) -> tuple[int, int, bool, bool, int, int, int]:
    """A report in one pass: packets lost, probe packets, whether the received packets'
    arrival and send times are non-decreasing in transport order, and over the received
    packets the newest arrival, the oldest send and the least ``arrival - send`` (0, 0, 0 when
    none was received)."""
    lost = 0
    probes = 0
    arrival_in_order = True
    send_in_order = True
    max_recv_us = min_send_us = min_recv_minus_send_us = 0
    prev_recv_us = prev_send_us = 0
    received = 0
    for i in range(send_time_us.shape[0]):
        if probe_cluster_id[i] != NO_PROBE:
            probes += 1
        recv_us = arrival_time_us[i]
        if recv_us == NOT_RECEIVED_US:
            lost += 1
            continue
        send_us = send_time_us[i]
        if received == 0:
            max_recv_us = recv_us
            min_send_us = send_us
            min_recv_minus_send_us = recv_us - send_us
        else:
            if recv_us < prev_recv_us:
                arrival_in_order = False
            if send_us < prev_send_us:
                send_in_order = False
            if recv_us > max_recv_us:
                max_recv_us = recv_us
            if send_us < min_send_us:
                min_send_us = send_us
            if recv_us - send_us < min_recv_minus_send_us:
                min_recv_minus_send_us = recv_us - send_us
        prev_recv_us = recv_us
        prev_send_us = send_us
        received += 1
    return (
        lost,
        probes,
        arrival_in_order,
        send_in_order,
        max_recv_us,
        min_send_us,
        min_recv_minus_send_us,
    )


def _warm_up() -> None:
    """Load the compiled parts (numba's cache) now rather than at the first feedback report: the
    first compiled call in a process takes about 0.15 s, a stall a live sender must not have."""
    controller = GoogCcNetworkController()
    for k in range(2):
        seqs = list(range(30 * k, 30 * k + 30))
        send = [s * 8_000 for s in seqs]
        report = TransportFeedback.from_lists(
            30 * 8_000 * (k + 1) + 50_000, seqs, send, [t + 20_000 for t in send], [1_000] * 30
        )
        controller.on_feedback(report)
        controller.on_process_interval(report.feedback_time_us)


_warm_up()
