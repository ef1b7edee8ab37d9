"""ProbeBitrateEstimator: the rate a probe cluster got through, from its packets' feedback.

Adapted from ``modules/congestion_controller/goog_cc/probe_bitrate_estimator.cc`` (upstream,
mid-2024). Packets of one probe cluster are aggregated; once at least 80 % of the cluster's
packets and bytes have feedback, the estimate is ``min(send rate, receive rate)``:

* the send rate leaves out the last sent packet and the receive rate the first received one
  (N packets span N-1 intervals);
* both intervals must lie in (0, 1 s];
* a receive rate more than twice the send rate is a measurement artefact (bunched arrivals), so
  there is no result;
* a receive rate below 90 % of the send rate means the probe found the bottleneck, and the
  result is then 95 % of the receive rate, so as not to overuse it at once.

Clusters whose last arrival is over 1 s older than the newest feedback are forgotten.
"""

from __future__ import annotations

import math

from gcc.units import BIT_US_PER_BYTE_S, F32_0_9, F32_0_95, llround

#: Fractions of the cluster's requested probes and bytes that must have feedback.
MIN_RECEIVED_PROBES_RATIO = 0.80
MIN_RECEIVED_BYTES_RATIO = 0.80
#: Largest credible receive-rate / send-rate ratio.
MAX_VALID_RATIO = 2.0
#: Below this receive/send ratio the probe saturated the link (libwebrtc's 0.9f).
MIN_RATIO_FOR_UNSATURATED_LINK = F32_0_9
#: Fraction of a saturated link's measured rate to use (libwebrtc's 0.95f).
TARGET_UTILIZATION_FRACTION = F32_0_95
MAX_CLUSTER_HISTORY_US = 1_000_000
MAX_PROBE_INTERVAL_US = 1_000_000


class _AggregatedCluster:
    __slots__ = (
        "first_receive_us",
        "first_send_us",
        "last_receive_us",
        "last_send_us",
        "num_probes",
        "size_first_receive_bytes",
        "size_last_send_bytes",
        "size_total_bytes",
    )

    def __init__(self) -> None:
        self.num_probes = 0
        self.first_send_us: float = math.inf
        self.last_send_us: float = -math.inf
        self.first_receive_us: float = math.inf
        self.last_receive_us: float = -math.inf
        self.size_last_send_bytes = 0
        self.size_first_receive_bytes = 0
        self.size_total_bytes = 0


class ProbeBitrateEstimator:
    """Per-cluster aggregation of probe packets into a probe result (libwebrtc port)."""

    __slots__ = ("_clusters", "_estimated_bitrate_bps", "_min_last_receive_us")

    def __init__(self) -> None:
        self._clusters: dict[int, _AggregatedCluster] = {}
        self._estimated_bitrate_bps: int | None = None
        # A lower bound on the clusters' last arrival times (they only grow), so that the scan
        # for old clusters runs only when one may have expired.
        self._min_last_receive_us: float = math.inf

    def handle_probe_and_estimate_bitrate(
        self,
        probe_cluster_id: int,
        send_time_us: int,
        arrival_time_us: int,
        size_bytes: int,
        cluster_min_probes: int,
        cluster_min_bytes: int,
    ) -> int | None:
        """Add one received probe packet; return the cluster's rate in bps once it has one.

        ``cluster_min_probes`` and ``cluster_min_bytes`` are the cluster's request to the pacer
        (``loki.api.ProbeCluster.min_probes`` and ``.min_bytes``). Call in arrival order.
        """
        self._erase_old_clusters(arrival_time_us)
        cluster = self._clusters.get(probe_cluster_id)
        if cluster is None:
            cluster = self._clusters[probe_cluster_id] = _AggregatedCluster()
            if arrival_time_us < self._min_last_receive_us:
                self._min_last_receive_us = arrival_time_us

        if send_time_us < cluster.first_send_us:
            cluster.first_send_us = send_time_us
        if send_time_us > cluster.last_send_us:
            cluster.last_send_us = send_time_us
            cluster.size_last_send_bytes = size_bytes
        if arrival_time_us < cluster.first_receive_us:
            cluster.first_receive_us = arrival_time_us
            cluster.size_first_receive_bytes = size_bytes
        if arrival_time_us > cluster.last_receive_us:
            cluster.last_receive_us = arrival_time_us
        cluster.size_total_bytes += size_bytes
        cluster.num_probes += 1

        # int * double truncated (probes); DataSize * double rounded half away (bytes).
        min_probes = int(cluster_min_probes * MIN_RECEIVED_PROBES_RATIO)
        min_size_bytes = llround(cluster_min_bytes * MIN_RECEIVED_BYTES_RATIO)
        if cluster.num_probes < min_probes or cluster.size_total_bytes < min_size_bytes:
            return None

        send_interval_us = cluster.last_send_us - cluster.first_send_us
        receive_interval_us = cluster.last_receive_us - cluster.first_receive_us
        if (
            send_interval_us <= 0
            or send_interval_us > MAX_PROBE_INTERVAL_US
            or receive_interval_us <= 0
            or receive_interval_us > MAX_PROBE_INTERVAL_US
        ):
            return None

        send_size_bytes = cluster.size_total_bytes - cluster.size_last_send_bytes
        send_rate_bps = send_size_bytes * BIT_US_PER_BYTE_S // send_interval_us
        receive_size_bytes = cluster.size_total_bytes - cluster.size_first_receive_bytes
        receive_rate_bps = receive_size_bytes * BIT_US_PER_BYTE_S // receive_interval_us

        # The ratio is a double division in libwebrtc; x/0 is +inf there and 0/0 is NaN.
        if send_rate_bps == 0:
            if receive_rate_bps > 0:
                return None
        elif receive_rate_bps / send_rate_bps > MAX_VALID_RATIO:
            return None  # Receive/send ratio above 2: not a credible measurement.

        result_bps = min(send_rate_bps, receive_rate_bps)
        if receive_rate_bps < llround(MIN_RATIO_FOR_UNSATURATED_LINK * send_rate_bps):
            result_bps = llround(TARGET_UTILIZATION_FRACTION * receive_rate_bps)
        self._estimated_bitrate_bps = result_bps
        return result_bps

    def fetch_and_reset_last_estimated_bitrate(self) -> int | None:
        """The latest probe result in bps since the previous call, if any."""
        result = self._estimated_bitrate_bps
        self._estimated_bitrate_bps = None
        return result

    def _erase_old_clusters(self, now_us: int) -> None:
        oldest_kept_us = now_us - MAX_CLUSTER_HISTORY_US
        if self._min_last_receive_us >= oldest_kept_us:
            return
        clusters = self._clusters
        for cid in [cid for cid, c in clusters.items() if c.last_receive_us < oldest_kept_us]:
            del clusters[cid]
        self._min_last_receive_us = min(
            (c.last_receive_us for c in clusters.values()), default=math.inf
        )
