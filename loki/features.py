"""What a learned controller sees: a fixed-size observation built from feedback reports.

One module, shared by the Gym environment (training), the emulator and the live sender
(inference), so a model sees identical features wherever it runs. Its per-packet pass over a
report is compiled with numba, as GCC's estimators are (a learned controller runs GCC beside
it, so numba is there anyway); everything else is numpy.

Per report the builder computes :data:`FEATURE_NAMES` (rates in Mbps on a log scale, delays in
units of 100 ms, fractions as they are); the observation is the last :data:`HISTORY` of those
rows, oldest first, flattened — GCC is stateful (its trendline spans about 20 packet groups and
its AIMD state remembers the last decrease), so a network that imitates it needs a history of
its inputs and of its own previous rate, which is the ``prev_target`` column.

The last five columns are GCC's own sensors (:func:`gcc_sensors`): its delay detector's verdict
and trend-to-threshold ratio, its acknowledged bitrate, its AIMD state (hold / increase /
decrease) and AIMD's link capacity estimate. They depend only on the reports (not on GCC's
rate), and they are the state a 1 s window of raw delays cannot rebuild: the trendline spans
about 20 packet groups and its threshold adapts over seconds, and whether GCC increases
multiplicatively (capacity unknown) or additively (near a known capacity) depends on the
throughput at overuses long past. With only the raw features a closed-loop clone stalled 23 %
more than GCC (see loki/LEARNING.md).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from gcc.goog_cc_network_control import GoogCcNetworkController
from loki.api import NOT_RECEIVED_US, TransportFeedback

HISTORY = 10
FEATURE_NAMES = (
    "recv_rate",  # log2(1 + Mbps received in the report interval)
    "send_rate",  # log2(1 + Mbps sent, for the packets in the report)
    "prev_target",  # log2(1 + Mbps), the controller's rate before this report
    "queue_delay",  # mean one-way delay above the session's minimum, 100 ms units
    "queue_delay_max",  # max of the same within the report
    "delay_gradient",  # least-squares slope of one-way delay over send time (ms per ms)
    "loss",  # fraction of the report's packets not received
    "rtt",  # latest RTT, 100 ms units
    "interval",  # time since the previous report, 100 ms units
    "recv_over_target",  # received rate / previous target, clipped to [0, 4]
    # GCC's sensors, from the GCC every learned controller runs beside it (zeros without one):
    "delay_usage",  # the delay detector's verdict: -1 underusing, 0 normal, +1 overusing
    "delay_trend",  # the detector's modified trend over its adaptive threshold, in [-8, 8]
    "acked_rate",  # log2(1 + Mbps) of GCC's acknowledged-bitrate estimate (0 before one)
    "rate_state",  # GCC's AIMD state after the report: -1 decrease, 0 hold, +1 increase
    "link_capacity",  # log2(1 + Mbps) of AIMD's link capacity estimate (0 while unknown)
)
N_FEATURES = len(FEATURE_NAMES)
OBS_SIZE = HISTORY * N_FEATURES
#: Values beyond these bounds are clipped; a learned controller treats clipping as leaving the
#: training range (see loki.learned), so the bounds are also the guard's limits.
FEATURE_LOW = np.zeros(N_FEATURES, dtype=np.float32)
FEATURE_LOW[FEATURE_NAMES.index("delay_gradient")] = -4.0
FEATURE_LOW[FEATURE_NAMES.index("delay_usage")] = -1.0
FEATURE_LOW[FEATURE_NAMES.index("delay_trend")] = -8.0
FEATURE_LOW[FEATURE_NAMES.index("rate_state")] = -1.0
FEATURE_HIGH = np.array(
    [7.0, 7.0, 7.0, 30.0, 30.0, 4.0, 1.0, 30.0, 30.0, 4.0, 1.0, 8.0, 7.0, 1.0, 7.0],
    dtype=np.float32,
)
#: Sensor values when no GCC runs beside the features (the emulator's generic Gym env).
NO_SENSORS = (0.0, 0.0, 0.0, 0.0, 0.0)


_LOW = tuple(float(v) for v in FEATURE_LOW)
_HIGH = tuple(float(v) for v in FEATURE_HIGH)


def _log_mbps(bps: float) -> float:
    return math.log2(1.0 + max(bps, 0.0) / 1e6)


_USAGE_SIGN = {0: 0.0, 1: -1.0, 2: 1.0}  # BandwidthUsage NORMAL, UNDERUSING, OVERUSING
_STATE_SIGN = {0: 0.0, 1: 1.0, 2: -1.0}  # RateControlState HOLD, INCREASE, DECREASE


def gcc_sensors(gcc: GoogCcNetworkController) -> tuple[float, float, float, float, float]:
    """The sensor columns from a GCC that has seen the same reports."""
    acked = gcc.acked_bitrate_bps
    link = gcc.link_capacity_bps
    return (
        _USAGE_SIGN[int(gcc.delay_usage)],
        gcc.delay_trend_ratio,
        0.0 if acked is None else _log_mbps(acked),
        _STATE_SIGN[gcc.rate_control_state.value],
        0.0 if link is None else _log_mbps(link),
    )


@njit(cache=True)
def _report_stats(
    send: np.ndarray, arrival: np.ndarray, sizes: np.ndarray
) -> tuple[int, float, float, float, float, float, float]:
    """One pass over a report's packets: (received, bytes, received bytes, one-way delay min /
    sum / max over received packets, least-squares slope of that delay over send time).

    Sums of integer microseconds and bytes are exact in float64, so they equal numpy's in any
    order; the slope's two sums (centred send times) may differ from a BLAS dot product in the
    last bits, below the float32 the features are stored in.
    """
    n = send.shape[0]
    received = 0
    total_bytes = 0.0
    recv_bytes = 0.0
    owd_min = np.inf
    owd_max = -np.inf
    owd_sum = 0.0
    send_sum = 0.0
    for i in range(n):
        total_bytes += sizes[i]
        if arrival[i] != NOT_RECEIVED_US:
            received += 1
            recv_bytes += sizes[i]
            owd = float(arrival[i] - send[i])
            owd_sum += owd
            owd_min = min(owd_min, owd)
            owd_max = max(owd_max, owd)
            send_sum += float(send[i])
    slope = 0.0
    if received >= 3:
        send_mean = send_sum / received
        num = 0.0
        den = 0.0
        for i in range(n):
            if arrival[i] != NOT_RECEIVED_US:
                xc = float(send[i]) - send_mean
                den += xc * xc
                num += xc * float(arrival[i] - send[i])
        if den > 0:
            slope = num / den
    return received, total_bytes, recv_bytes, owd_min, owd_sum, owd_max, slope


class FeatureBuilder:
    """Turns the stream of reports into observations; one per session.

    It runs once per report inside every learned controller's decision (budget: tens of
    microseconds), so it works on the report's arrays with few numpy calls and keeps the
    flattened history in one array that shifts by a row per report.
    """

    __slots__ = ("_base_delay_us", "_obs", "_prev_fb_us", "_rtt_us")

    def __init__(self) -> None:
        self._obs = np.zeros(OBS_SIZE, dtype=np.float32)
        self._base_delay_us: float | None = None
        self._prev_fb_us: int | None = None
        self._rtt_us = 0

    def on_rtt(self, rtt_us: int) -> None:
        self._rtt_us = rtt_us

    def row(
        self,
        report: TransportFeedback,
        prev_target_bps: int,
        sensors: tuple[float, ...] = NO_SENSORS,
    ) -> np.ndarray:
        """Feature row of one report (also appended to the history); ``sensors``: gcc_sensors."""
        fb = report.feedback_time_us
        interval_us = 100_000 if self._prev_fb_us is None else max(fb - self._prev_fb_us, 1_000)
        self._prev_fb_us = fb
        send = report.send_time_us
        n = int(send.shape[0])
        k, total_bytes, recv_bytes, owd_min, owd_sum, owd_max, slope = _report_stats(
            send, report.arrival_time_us, report.size_bytes
        )
        recv_bps = recv_bytes * 8e6 / interval_us
        span_us = float(send[-1] - send[0]) if n > 1 else 0.0
        send_bps = total_bytes * 8e6 / max(span_us, float(interval_us) / 2)
        qd = qd_max = grad = 0.0
        if k:
            if self._base_delay_us is None or owd_min < self._base_delay_us:
                self._base_delay_us = owd_min
            qd = (owd_sum / k - self._base_delay_us) / 100_000.0
            qd_max = (owd_max - self._base_delay_us) / 100_000.0
            grad = slope
        loss = 1.0 - k / n if n else 0.0
        values = (
            _log_mbps(recv_bps),
            _log_mbps(send_bps),
            _log_mbps(prev_target_bps),
            qd,
            qd_max,
            grad,
            loss,
            self._rtt_us / 100_000.0,
            interval_us / 100_000.0,
            recv_bps / max(prev_target_bps, 1.0),
            *sensors,
        )
        # Clipped in Python (NaN passes through, as np.clip would let it).
        row = np.array(
            [
                v if lo_ <= v <= hi_ or v != v else (lo_ if v < lo_ else hi_)
                for v, lo_, hi_ in zip(values, _LOW, _HIGH, strict=True)
            ],
            dtype=np.float32,
        )
        obs = self._obs
        obs[:-N_FEATURES] = obs[N_FEATURES:]
        obs[-N_FEATURES:] = row
        return row

    def observation(self) -> np.ndarray:
        """The flattened history, oldest row first (a copy)."""
        return self._obs.copy()
