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

from collections import deque
from dataclasses import dataclass

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

_NORMAL = BandwidthUsage.NORMAL
_UNDERUSING = BandwidthUsage.UNDERUSING
_OVERUSING = BandwidthUsage.OVERUSING


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


def linear_fit_slope(xs: deque[int], ys: deque[float]) -> float | None:
    """Least-squares slope of the points, or None when all x are equal.

    Bit-identical to libwebrtc's two-pass double computation: the x values are whole
    milliseconds, so their integer sum is the exact value of the double sum; the y values are
    summed in order with plain float additions (``sum()`` on floats uses compensated summation
    from Python 3.12 and would differ in the last bits).
    """
    n = len(xs)
    x_avg = sum(xs) / n
    sum_y = 0.0
    for y in ys:
        sum_y += y
    y_avg = sum_y / n
    numerator = 0.0
    denominator = 0.0
    for x, y in zip(xs, ys, strict=True):
        dx = x - x_avg
        numerator += dx * (y - y_avg)
        denominator += dx * dx
    if denominator == 0:
        return None
    return numerator / denominator


class TrendlineEstimator:
    """Delay-slope overuse detector (libwebrtc's ``DelayIncreaseDetectorInterface``)."""

    __slots__ = (
        "_accumulated_delay_ms",
        "_arrival_ms",
        "_first_arrival_time_ms",
        "_hypothesis",
        "_last_update_ms",
        "_num_of_deltas",
        "_overuse_counter",
        "_prev_modified_trend",
        "_prev_trend",
        "_raw_delay_ms",
        "_settings",
        "_smoothed_delay_ms",
        "_smoothed_ms",
        "_threshold",
        "_time_over_using_ms",
    )

    def __init__(self, settings: TrendlineEstimatorSettings | None = None) -> None:
        self._settings = (settings or TrendlineEstimatorSettings()).validated()
        self._num_of_deltas = 0
        self._first_arrival_time_ms = -1
        self._accumulated_delay_ms = 0.0
        self._smoothed_delay_ms = 0.0
        # The regression window as parallel deques (libwebrtc's deque of PacketTiming).
        self._arrival_ms: deque[int] = deque()
        self._smoothed_ms: deque[float] = deque()
        self._raw_delay_ms: deque[float] = deque()
        self._threshold = INITIAL_THRESHOLD
        self._prev_modified_trend = float("nan")
        self._last_update_ms = -1
        self._prev_trend = 0.0
        self._time_over_using_ms = -1.0
        self._overuse_counter = 0
        self._hypothesis = _NORMAL

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
        delta_ms = recv_delta_ms - send_delta_ms
        num_of_deltas = self._num_of_deltas + 1
        self._num_of_deltas = (
            num_of_deltas if num_of_deltas < DELTA_COUNTER_MAX else DELTA_COUNTER_MAX
        )
        if self._first_arrival_time_ms == -1:
            self._first_arrival_time_ms = arrival_time_ms

        self._accumulated_delay_ms += delta_ms
        self._smoothed_delay_ms = (
            SMOOTHING_COEF * self._smoothed_delay_ms
            + (1 - SMOOTHING_COEF) * self._accumulated_delay_ms
        )

        settings = self._settings
        xs = self._arrival_ms
        ys = self._smoothed_ms
        raws = self._raw_delay_ms
        # Whole ms since the first delta (libwebrtc stores them as exact doubles).
        xs.append(arrival_time_ms - self._first_arrival_time_ms)
        ys.append(self._smoothed_delay_ms)
        raws.append(self._accumulated_delay_ms)
        if settings.enable_sort:
            i = len(xs) - 1
            while i > 0 and xs[i] < xs[i - 1]:
                for column in (xs, ys, raws):
                    column[i], column[i - 1] = column[i - 1], column[i]
                i -= 1
        window_size = settings.window_size
        if len(xs) > window_size:
            xs.popleft()
            ys.popleft()
            raws.popleft()

        trend = self._prev_trend
        if len(xs) == window_size:
            # Slope ~ (send_rate - capacity) / capacity: > 0 while queues fill.
            slope = linear_fit_slope(xs, ys)
            if slope is not None:
                trend = slope
            if settings.enable_cap:
                cap = self._slope_cap()
                # The cap only filters overuse; it never adds underuse.
                if trend >= 0 and cap is not None and trend > cap:
                    trend = cap
        self._detect(trend, send_delta_ms, arrival_time_ms)

    def _slope_cap(self) -> float | None:
        settings = self._settings
        xs = self._arrival_ms
        raws = self._raw_delay_ms
        early = 0
        for i in range(1, settings.beginning_packets):
            if raws[i] < raws[early]:
                early = i
        late = len(xs) - settings.end_packets
        for i in range(late + 1, len(xs)):
            if raws[i] < raws[late]:
                late = i
        if xs[late] - xs[early] < 1:
            return None
        return (raws[late] - raws[early]) / (xs[late] - xs[early]) + settings.cap_uncertainty

    def _detect(self, trend: float, ts_delta_ms: float, now_ms: int) -> None:
        if self._num_of_deltas < 2:
            self._hypothesis = _NORMAL
            return
        num_of_deltas = self._num_of_deltas
        if num_of_deltas > MIN_NUM_DELTAS:
            num_of_deltas = MIN_NUM_DELTAS
        modified_trend = num_of_deltas * trend * THRESHOLD_GAIN
        self._prev_modified_trend = modified_trend
        if modified_trend > self._threshold:
            if self._time_over_using_ms == -1:
                # Assume the overuse began halfway through the last send interval.
                self._time_over_using_ms = ts_delta_ms / 2
            else:
                self._time_over_using_ms += ts_delta_ms
            self._overuse_counter += 1
            if (
                self._time_over_using_ms > OVERUSING_TIME_THRESHOLD_MS
                and self._overuse_counter > 1
                and trend >= self._prev_trend
            ):
                self._time_over_using_ms = 0.0
                self._overuse_counter = 0
                self._hypothesis = _OVERUSING
        elif modified_trend < -self._threshold:
            self._time_over_using_ms = -1.0
            self._overuse_counter = 0
            self._hypothesis = _UNDERUSING
        else:
            self._time_over_using_ms = -1.0
            self._overuse_counter = 0
            self._hypothesis = _NORMAL
        self._prev_trend = trend
        self._update_threshold(modified_trend, now_ms)

    def _update_threshold(self, modified_trend: float, now_ms: int) -> None:
        if self._last_update_ms == -1:
            self._last_update_ms = now_ms
        abs_trend = abs(modified_trend)
        if abs_trend > self._threshold + MAX_ADAPT_OFFSET_MS:
            # A latency spike (e.g. a sudden capacity drop) must not drag the threshold up.
            self._last_update_ms = now_ms
            return
        k = K_DOWN if abs_trend < self._threshold else K_UP
        time_delta_ms = now_ms - self._last_update_ms
        if time_delta_ms > MAX_THRESHOLD_TIME_DELTA_MS:
            time_delta_ms = MAX_THRESHOLD_TIME_DELTA_MS
        threshold = self._threshold + k * (abs_trend - self._threshold) * time_delta_ms
        if threshold < THRESHOLD_MIN:
            threshold = THRESHOLD_MIN
        elif threshold > THRESHOLD_MAX:
            threshold = THRESHOLD_MAX
        self._threshold = threshold
        self._last_update_ms = now_ms

    def state(self) -> BandwidthUsage:
        """The current verdict."""
        return self._hypothesis

    @property
    def threshold(self) -> float:
        """The adaptive detection threshold (for logs and tests)."""
        return self._threshold

    @property
    def trend(self) -> float:
        """The last slope used by the detector."""
        return self._prev_trend

    @property
    def modified_trend(self) -> float:
        """The last ``min(n, 60) * slope * gain`` compared with the threshold (NaN before)."""
        return self._prev_modified_trend

    @property
    def accumulated_delay_ms(self) -> float:
        """Sum of all delay variations so far: the queueing delay relative to the start."""
        return self._accumulated_delay_ms
