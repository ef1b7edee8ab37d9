"""What a learned controller sees: a fixed-size observation built from feedback reports.

One module, numpy only, shared by the Gym environment (training), the emulator and the live
sender (inference), so a model sees identical features wherever it runs.

Per report the builder computes :data:`FEATURE_NAMES` (rates in Mbps on a log scale, delays in
units of 100 ms, fractions as they are); the observation is the last :data:`HISTORY` of those
rows, oldest first, flattened — GCC is stateful (its trendline spans about 20 packet groups and
its AIMD state remembers the last decrease), so a network that imitates it needs a history of
its inputs and of its own previous rate, which is the ``prev_target`` column.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from loki.api import TransportFeedback

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
)
N_FEATURES = len(FEATURE_NAMES)
OBS_SIZE = HISTORY * N_FEATURES
#: Values beyond these bounds are clipped; a learned controller treats clipping as leaving the
#: training range (see loki.learned), so the bounds are also the guard's limits.
FEATURE_LOW = np.zeros(N_FEATURES, dtype=np.float32)
FEATURE_LOW[FEATURE_NAMES.index("delay_gradient")] = -4.0
FEATURE_HIGH = np.array([7.0, 7.0, 7.0, 30.0, 30.0, 4.0, 1.0, 30.0, 30.0, 4.0], dtype=np.float32)


def _log_mbps(bps: float) -> float:
    return float(np.log2(1.0 + max(bps, 0.0) / 1e6))


class FeatureBuilder:
    """Turns the stream of reports into observations; one per session."""

    __slots__ = ("_base_delay_us", "_prev_fb_us", "_rows", "_rtt_us")

    def __init__(self) -> None:
        self._rows: deque[np.ndarray] = deque(
            [np.zeros(N_FEATURES, dtype=np.float32)] * HISTORY, maxlen=HISTORY
        )
        self._base_delay_us: float | None = None
        self._prev_fb_us: int | None = None
        self._rtt_us = 0

    def on_rtt(self, rtt_us: int) -> None:
        self._rtt_us = rtt_us

    def row(self, report: TransportFeedback, prev_target_bps: int) -> np.ndarray:
        """Feature row of one report (also appended to the history)."""
        fb = report.feedback_time_us
        interval_us = 100_000 if self._prev_fb_us is None else max(fb - self._prev_fb_us, 1_000)
        self._prev_fb_us = fb
        got = report.received
        n = len(report)
        sizes = report.size_bytes
        recv_bytes = float(sizes[got].sum())
        recv_bps = recv_bytes * 8e6 / interval_us
        send = report.send_time_us
        span_us = float(send[-1] - send[0]) if n > 1 else 0.0
        send_bps = float(sizes.sum()) * 8e6 / max(span_us, float(interval_us) / 2)
        qd = qd_max = grad = 0.0
        if got.any():
            owd = (report.arrival_time_us[got] - send[got]).astype(np.float64)
            lo = float(owd.min())
            if self._base_delay_us is None or lo < self._base_delay_us:
                self._base_delay_us = lo
            qd = (float(owd.mean()) - self._base_delay_us) / 100_000.0
            qd_max = (float(owd.max()) - self._base_delay_us) / 100_000.0
            if owd.size >= 3:
                x = send[got].astype(np.float64)
                x -= x.mean()
                denom = float((x * x).sum())
                if denom > 0:
                    grad = float((x * (owd - owd.mean())).sum()) / denom
        loss = 1.0 - float(got.sum()) / n if n else 0.0
        row = np.array(
            [
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
            ],
            dtype=np.float32,
        )
        np.clip(row, FEATURE_LOW, FEATURE_HIGH, out=row)
        self._rows.append(row)
        return row

    def observation(self) -> np.ndarray:
        """The flattened history, oldest row first."""
        return np.concatenate(self._rows)
