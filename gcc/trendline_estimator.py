"""TrendlineEstimator: detects a growing queue from the slope of the one-way delay.

Adapted from libwebrtc ``modules/congestion_controller/goog_cc/trendline_estimator.cc``
(upstream, mid-2024), without the optional ``NetworkStatePredictor`` (off in libwebrtc).

Per pair of send groups it accumulates the delay variation ``recv_delta - send_delta`` (the
change in one-way delay), smooths it with an EMA (0.9), and fits a least-squares line to the
last ``window_size`` (arrival time, smoothed delay) points. The slope estimates
``(send_rate - capacity) / capacity``: positive while a queue builds, negative while it drains.

Detection compares ``modified_trend = min(n, 60) * slope * 4`` with an adaptive threshold:
above it for more than 10 ms of send time and on at least two consecutive groups, with a slope
no smaller than the previous one, is *overusing*; below minus the threshold is *underusing*.
The threshold follows ``|modified_trend|`` (fast down with k_down 0.039, slowly up with
k_up 0.0087, per ms), stays in [6, 600], and ignores spikes more than 15 above it, so that the
detector neither starves against a competing TCP flow nor reacts to a single latency spike.

Times are milliseconds as in libwebrtc: deltas are doubles, arrival times integer ms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from gcc.bandwidth_usage import BandwidthUsage
from gcc.units import f32

#: EMA coefficient of the accumulated delay (``kDefaultTrendlineSmoothingCoeff``).
SMOOTHING_COEF = 0.9
#: Gain applied to the slope before comparing with the threshold.
THRESHOLD_GAIN = 4.0
#: Threshold adaptation rates per ms when ``|modified_trend|`` is above / below the threshold.
K_UP = 0.0087
K_DOWN = 0.039
#: Send time spent above the threshold before overuse is declared.
OVERUSING_TIME_THRESHOLD_MS = 10.0
INITIAL_THRESHOLD = 12.5
#: Values of ``|modified_trend|`` this far above the threshold do not adapt it.
MAX_ADAPT_OFFSET_MS = 15.0
#: The slope's weight grows with the number of deltas seen, up to this many.
MIN_NUM_DELTAS = 60
DELTA_COUNTER_MAX = 1000
#: Largest time step of one threshold update.
MAX_THRESHOLD_TIME_DELTA_MS = 100
#: Threshold bounds (libwebrtc clamps with the float literals 6.f and 600.f).
THRESHOLD_MIN = f32(6.0)
THRESHOLD_MAX = f32(600.0)

_NORMAL_CODE = int(BandwidthUsage.NORMAL)
_UNDERUSING_CODE = int(BandwidthUsage.UNDERUSING)
_OVERUSING_CODE = int(BandwidthUsage.OVERUSING)
#: Verdict codes (the enum's values) back to the enum.
_USAGE = tuple(BandwidthUsage)


@dataclass(frozen=True, slots=True)
class TrendlineEstimatorSettings:
    """Tunables of field trial ``WebRTC-Bwe-TrendlineEstimatorSettings`` (defaults = libwebrtc's).

    Invalid combinations fall back the way libwebrtc's parser does (window to 20, cap off).
    """

    #: ``window_size``: points in the regression window, 10..200.
    window_size: int = 20
    #: ``sort``: keep the window sorted by arrival time.
    enable_sort: bool = False
    #: ``cap``: cap a positive slope by the slope between the minimum raw delays of the first
    #: ``beginning_packets`` and the last ``end_packets`` points, plus ``cap_uncertainty``.
    enable_cap: bool = False
    beginning_packets: int = 7
    end_packets: int = 7
    cap_uncertainty: float = 0.0

    def validated(self) -> TrendlineEstimatorSettings:
        """The settings libwebrtc would actually use for these values."""
        window = self.window_size if 10 <= self.window_size <= 200 else 20
        cap, begin, end, uncertainty = (
            self.enable_cap,
            self.beginning_packets,
            self.end_packets,
            self.cap_uncertainty,
        )
        if cap:
            if not (1 <= begin <= window and 1 <= end <= window) or begin + end > window:
                cap, begin, end, uncertainty = False, 0, 0, 0.0
            if not 0.0 <= uncertainty <= 0.025:
                uncertainty = 0.0
        return TrendlineEstimatorSettings(window, self.enable_sort, cap, begin, end, uncertainty)


# -- the estimator's state, as arrays a compiled update works on -----------------------------
# DelayBasedBwe runs one compiled pass per feedback report (InterArrivalDelta's grouping and
# this estimator's update for every completed pair); the object below holds the state between
# passes. Float fields:
_ACCUMULATED_DELAY_MS = 0
_SMOOTHED_DELAY_MS = 1
_THRESHOLD = 2
_PREV_MODIFIED_TREND = 3
_PREV_TREND = 4
_TIME_OVER_USING_MS = 5
_N_FLOATS = 6
# Integer fields (HYPOTHESIS, the verdict's code, is read by DelayBasedBwe's compiled pass):
_NUM_OF_DELTAS = 0
_FIRST_ARRIVAL_TIME_MS = 1
_LAST_UPDATE_MS = 2
_OVERUSE_COUNTER = 3
HYPOTHESIS = 4
_WINDOW_LEN = 5
_N_INTS = 6
# Settings, as integers (the cap uncertainty is passed as a float):
_WINDOW_SIZE = 0
_ENABLE_SORT = 1
_ENABLE_CAP = 2
_BEGINNING_PACKETS = 3
_END_PACKETS = 4
_N_SETTINGS = 5


@njit(cache=True)
def linear_fit_slope(xs: np.ndarray, ys: np.ndarray, n: int) -> tuple[bool, float]:
    """Least-squares slope of the first ``n`` points; (False, 0) when all x are equal.

    libwebrtc's two-pass double computation, in its order: the x values are whole milliseconds,
    so their integer sum is the exact value of the double sum, and every other sum is taken
    element by element from the oldest point (no pairwise or compensated summation).
    """
    x_sum = 0
    for k in range(n):
        x_sum += xs[k]
    x_avg = x_sum / n
    sum_y = 0.0
    for k in range(n):
        sum_y += ys[k]
    y_avg = sum_y / n
    numerator = 0.0
    denominator = 0.0
    for k in range(n):
        dx = xs[k] - x_avg
        numerator += dx * (ys[k] - y_avg)
        denominator += dx * dx
    if denominator == 0:
        return False, 0.0
    return True, numerator / denominator


@njit(cache=True)
def _slope_cap(
    xs: np.ndarray, raws: np.ndarray, n: int, beginning: int, end: int, uncertainty: float
) -> tuple[bool, float]:
    """libwebrtc's ``ComputeSlopeCap``: the slope between the minimum raw delays of the first
    ``beginning`` and the last ``end`` points, plus ``uncertainty``; (False, 0) if undefined."""
    early = 0
    for k in range(1, beginning):
        if raws[k] < raws[early]:
            early = k
    late = n - end
    for k in range(late + 1, n):
        if raws[k] < raws[late]:
            late = k
    if xs[late] - xs[early] < 1:
        return False, 0.0
    return True, (raws[late] - raws[early]) / (xs[late] - xs[early]) + uncertainty


@njit(cache=True)
def _update_threshold(fs: np.ndarray, ints: np.ndarray, modified_trend: float, now_ms: int) -> None:
    if ints[_LAST_UPDATE_MS] == -1:
        ints[_LAST_UPDATE_MS] = now_ms
    abs_trend = abs(modified_trend)
    threshold = fs[_THRESHOLD]
    if abs_trend > threshold + MAX_ADAPT_OFFSET_MS:
        # A latency spike (e.g. a sudden capacity drop) must not drag the threshold up.
        ints[_LAST_UPDATE_MS] = now_ms
        return
    k = K_DOWN if abs_trend < threshold else K_UP
    time_delta_ms = now_ms - ints[_LAST_UPDATE_MS]
    if time_delta_ms > MAX_THRESHOLD_TIME_DELTA_MS:
        time_delta_ms = MAX_THRESHOLD_TIME_DELTA_MS
    threshold = threshold + k * (abs_trend - threshold) * time_delta_ms
    if threshold < THRESHOLD_MIN:
        threshold = THRESHOLD_MIN
    elif threshold > THRESHOLD_MAX:
        threshold = THRESHOLD_MAX
    fs[_THRESHOLD] = threshold
    ints[_LAST_UPDATE_MS] = now_ms


@njit(cache=True)
def _detect(
    fs: np.ndarray, ints: np.ndarray, trend: float, ts_delta_ms: float, now_ms: int
) -> None:
    if ints[_NUM_OF_DELTAS] < 2:
        ints[HYPOTHESIS] = _NORMAL_CODE
        return
    num_of_deltas = ints[_NUM_OF_DELTAS]
    if num_of_deltas > MIN_NUM_DELTAS:
        num_of_deltas = MIN_NUM_DELTAS
    modified_trend = num_of_deltas * trend * THRESHOLD_GAIN
    fs[_PREV_MODIFIED_TREND] = modified_trend
    threshold = fs[_THRESHOLD]
    if modified_trend > threshold:
        if fs[_TIME_OVER_USING_MS] == -1:
            # Assume the overuse began halfway through the last send interval.
            fs[_TIME_OVER_USING_MS] = ts_delta_ms / 2
        else:
            fs[_TIME_OVER_USING_MS] += ts_delta_ms
        ints[_OVERUSE_COUNTER] += 1
        if (
            fs[_TIME_OVER_USING_MS] > OVERUSING_TIME_THRESHOLD_MS
            and ints[_OVERUSE_COUNTER] > 1
            and trend >= fs[_PREV_TREND]
        ):
            fs[_TIME_OVER_USING_MS] = 0.0
            ints[_OVERUSE_COUNTER] = 0
            ints[HYPOTHESIS] = _OVERUSING_CODE
    elif modified_trend < -threshold:
        fs[_TIME_OVER_USING_MS] = -1.0
        ints[_OVERUSE_COUNTER] = 0
        ints[HYPOTHESIS] = _UNDERUSING_CODE
    else:
        fs[_TIME_OVER_USING_MS] = -1.0
        ints[_OVERUSE_COUNTER] = 0
        ints[HYPOTHESIS] = _NORMAL_CODE
    fs[_PREV_TREND] = trend
    _update_threshold(fs, ints, modified_trend, now_ms)


@njit(cache=True)
def update_trendline_state(
    fs: np.ndarray,
    ints: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    raws: np.ndarray,
    settings: np.ndarray,
    cap_uncertainty: float,
    recv_delta_ms: float,
    send_delta_ms: float,
    arrival_time_ms: int,
) -> None:
    """libwebrtc's ``UpdateTrendline`` on the state arrays of a :class:`TrendlineEstimator`."""
    delta_ms = recv_delta_ms - send_delta_ms
    num_of_deltas = ints[_NUM_OF_DELTAS] + 1
    ints[_NUM_OF_DELTAS] = num_of_deltas if num_of_deltas < DELTA_COUNTER_MAX else DELTA_COUNTER_MAX
    if ints[_FIRST_ARRIVAL_TIME_MS] == -1:
        ints[_FIRST_ARRIVAL_TIME_MS] = arrival_time_ms

    fs[_ACCUMULATED_DELAY_MS] += delta_ms
    fs[_SMOOTHED_DELAY_MS] = (
        SMOOTHING_COEF * fs[_SMOOTHED_DELAY_MS] + (1 - SMOOTHING_COEF) * fs[_ACCUMULATED_DELAY_MS]
    )

    # The regression window: the oldest point first, one spare slot for the newest.
    n = ints[_WINDOW_LEN]
    # Whole ms since the first delta (libwebrtc stores them as exact doubles).
    xs[n] = arrival_time_ms - ints[_FIRST_ARRIVAL_TIME_MS]
    ys[n] = fs[_SMOOTHED_DELAY_MS]
    raws[n] = fs[_ACCUMULATED_DELAY_MS]
    n += 1
    if settings[_ENABLE_SORT]:
        k = n - 1
        while k > 0 and xs[k] < xs[k - 1]:
            xs[k], xs[k - 1] = xs[k - 1], xs[k]
            ys[k], ys[k - 1] = ys[k - 1], ys[k]
            raws[k], raws[k - 1] = raws[k - 1], raws[k]
            k -= 1
    window_size = settings[_WINDOW_SIZE]
    if n > window_size:
        for k in range(1, n):
            xs[k - 1] = xs[k]
            ys[k - 1] = ys[k]
            raws[k - 1] = raws[k]
        n -= 1
    ints[_WINDOW_LEN] = n

    trend = fs[_PREV_TREND]
    if n == window_size:
        # Slope ~ (send_rate - capacity) / capacity: > 0 while queues fill.
        ok, slope = linear_fit_slope(xs, ys, n)
        if ok:
            trend = slope
        if settings[_ENABLE_CAP]:
            capped, cap = _slope_cap(
                xs, raws, n, settings[_BEGINNING_PACKETS], settings[_END_PACKETS], cap_uncertainty
            )
            # The cap only filters overuse; it never adds underuse.
            if trend >= 0 and capped and trend > cap:
                trend = cap
    _detect(fs, ints, trend, send_delta_ms, arrival_time_ms)


class TrendlineEstimator:
    """Delay-slope overuse detector (libwebrtc's ``DelayIncreaseDetectorInterface``).

    The state lives in small arrays so that :func:`update_trendline_state` (compiled) can
    update it, alone or inside DelayBasedBwe's per-report pass.
    """

    __slots__ = (
        "_cap_uncertainty",
        "_fs",
        "_ints",
        "_raws",
        "_settings",
        "_settings_ints",
        "_xs",
        "_ys",
    )

    def __init__(self, settings: TrendlineEstimatorSettings | None = None) -> None:
        self._settings = settings = (settings or TrendlineEstimatorSettings()).validated()
        self._settings_ints = np.array(
            [
                settings.window_size,
                settings.enable_sort,
                settings.enable_cap,
                settings.beginning_packets,
                settings.end_packets,
            ],
            dtype=np.int64,
        )
        self._cap_uncertainty = float(settings.cap_uncertainty)
        self._fs = np.zeros(_N_FLOATS)
        self._fs[_THRESHOLD] = INITIAL_THRESHOLD
        self._fs[_PREV_MODIFIED_TREND] = math.nan
        self._fs[_TIME_OVER_USING_MS] = -1.0
        self._ints = np.zeros(_N_INTS, dtype=np.int64)
        self._ints[_FIRST_ARRIVAL_TIME_MS] = -1
        self._ints[_LAST_UPDATE_MS] = -1
        self._ints[HYPOTHESIS] = _NORMAL_CODE
        # The regression window (libwebrtc's deque of PacketTiming), plus a spare slot.
        self._xs = np.zeros(settings.window_size + 1, dtype=np.int64)
        self._ys = np.zeros(settings.window_size + 1)
        self._raws = np.zeros(settings.window_size + 1)

    def update(
        self,
        recv_delta_ms: float,
        send_delta_ms: float,
        send_time_ms: int,
        arrival_time_ms: int,
        packet_size_bytes: int,
        calculated_deltas: bool,
    ) -> None:
        """Feed one packet's group deltas; only packets that completed a group pair count.

        ``send_time_ms`` and ``packet_size_bytes`` are unused without a network-state predictor
        and kept for libwebrtc's signature.
        """
        if calculated_deltas:
            self.update_trendline(recv_delta_ms, send_delta_ms, arrival_time_ms)

    def update_trendline(
        self, recv_delta_ms: float, send_delta_ms: float, arrival_time_ms: int
    ) -> None:
        """One new pair of group deltas: update the slope and the detector state."""
        update_trendline_state(
            *self.state_arrays(), float(recv_delta_ms), float(send_delta_ms), int(arrival_time_ms)
        )

    def state_arrays(
        self,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
        """The arguments :func:`update_trendline_state` takes before the deltas."""
        return (
            self._fs,
            self._ints,
            self._xs,
            self._ys,
            self._raws,
            self._settings_ints,
            self._cap_uncertainty,
        )

    def state(self) -> BandwidthUsage:
        """The current verdict."""
        return _USAGE[self._ints[HYPOTHESIS]]

    @property
    def threshold(self) -> float:
        """The adaptive detection threshold (for logs and tests)."""
        return float(self._fs[_THRESHOLD])

    @property
    def trend(self) -> float:
        """The last slope used by the detector."""
        return float(self._fs[_PREV_TREND])

    @property
    def modified_trend(self) -> float:
        """The last ``min(n, 60) * slope * gain`` compared with the threshold (NaN before)."""
        return float(self._fs[_PREV_MODIFIED_TREND])

    @property
    def accumulated_delay_ms(self) -> float:
        """Sum of all delay variations so far: the queueing delay relative to the start."""
        return float(self._fs[_ACCUMULATED_DELAY_MS])
