"""RobustThroughputEstimator: libwebrtc's default acknowledged-rate estimator since 2023-08.

Adapted from ``modules/congestion_controller/goog_cc/robust_throughput_estimator.cc`` (upstream,
mid-2024). It keeps a window of received packets ordered by arrival time and reports
``min(send rate, receive rate)`` over it. Three choices make it robust where the older Bayesian
estimator was not:

* the largest receive gap is replaced by the second largest, so a delay spike (nothing for a
  while, then a burst) does not make the estimate drop; the send-rate cap guards against the
  overestimate that could cause;
* the receive size leaves out the first received packet and the send size the last sent one,
  because N packets span only N-1 inter-packet intervals at either end;
* packets sent before one already dropped from the window were reordered and are left out of
  the send rate, so a very old send time cannot drag it down.

Window: the smallest set holding at least ``window_packets`` (20) packets and at least
``min_window_duration_us`` (1 s) of arrivals, never more than ``max_window_packets`` (500) or
``max_window_duration_us`` (5 s); no estimate below ``required_packets`` (10). See
:mod:`gcc.acknowledged_bitrate_estimator_interface` for the input format.

Deviation: libwebrtc skips packets with an infinite send or receive time; here the caller passes
received packets only, and ``size_bytes`` already includes any prior unacknowledged data
(``unacked_weight`` 1.0, libwebrtc's default).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

from gcc.units import BIT_US_PER_BYTE_S

#: A packet arriving this much earlier than the newest one means the receiver clock jumped.
MAX_REORDERING_US = 1_000_000
#: Floor on both durations, so a burst of simultaneous packets gives no division by zero.
MIN_DURATION_US = 1_000
#: Row of a "missing" top gap: never inside the part of the table that is dropped.
_NO_GAP_POS = 1 << 62
#: The dropped prefix of the window's table is cut off once longer than this (and the window).
_COMPACT_AFTER = 4096


@dataclass(frozen=True, slots=True)
class RobustThroughputEstimatorSettings:
    """libwebrtc ``RobustThroughputEstimatorSettings`` defaults.

    Out-of-range values fall back to the defaults, as the field-trial parser does
    (``WebRTC-Bwe-RobustThroughputEstimatorSettings``; ``window_duration`` there is
    ``min_window_duration_us`` here).
    """

    window_packets: int = 20
    max_window_packets: int = 500
    min_window_duration_us: int = 1_000_000
    max_window_duration_us: int = 5_000_000
    required_packets: int = 10

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if not 10 <= self.window_packets <= 1000:
            set_(self, "window_packets", 20)
        if not 10 <= self.max_window_packets <= 1000:
            set_(self, "max_window_packets", 500)
        set_(self, "max_window_packets", max(self.max_window_packets, self.window_packets))
        if not 10 <= self.required_packets <= 1000:
            set_(self, "required_packets", 10)
        set_(self, "required_packets", min(self.required_packets, self.window_packets))
        if not 100_000 <= self.min_window_duration_us <= 3_000_000:
            set_(self, "min_window_duration_us", 750_000)
        if not 1_000_000 <= self.max_window_duration_us <= 15_000_000:
            set_(self, "max_window_duration_us", 5_000_000)
        set_(
            self,
            "min_window_duration_us",
            min(self.min_window_duration_us, self.max_window_duration_us),
        )


# The estimator's state: one int64 array of scalars, and a (4, capacity) table of the packets
# (send us, arrival us, size, gap to the previous arrival) ordered by arrival, the window being
# rows [START, END). Dropping a packet moves START; the dead prefix is cut off now and then.
_START = 0
_END = 1
_TOTAL_BYTES = 2  # bytes in the window
# The largest and second largest gap inside the window (a tie counts twice), with their rows;
# 0 at _NO_GAP_POS when the window has fewer gaps.
_GAP1_US = 3
_GAP1_POS = 4
_GAP2_US = 5
_GAP2_POS = 6
#: Row of the last packet sent before its predecessor (-1: none): send times in the window are
#: in order when it is <= START.
_SEND_DESCENT = 7
_LATEST_DISCARDED_SEND_US = 8  # _NO_SEND_US: none
_WINDOW_PACKETS = 9
_MAX_WINDOW_PACKETS = 10
_MIN_WINDOW_DURATION_US = 11
_MAX_WINDOW_DURATION_US = 12
_REQUIRED_PACKETS = 13
_N_STATE = 14
_SEND = 0
_RECV = 1
_SIZE = 2
_GAP = 3
#: libwebrtc's minus-infinity "latest discarded send time" (below every real time).
_NO_SEND_US = -(1 << 62)
#: :func:`_compute_bitrate` when there is no estimate.
_NO_ESTIMATE = -1
_INITIAL_ROWS = 1024


@njit(cache=True)
def _incoming(
    st: np.ndarray, tab: np.ndarray, send_us: np.ndarray, recv_us: np.ndarray, size: np.ndarray
) -> None:
    """Add one report's received packets (the caller made room for them) and drop what falls
    out of the window."""
    for k in range(send_us.shape[0]):
        end = st[_END]
        if end > st[_START] and recv_us[k] < tab[_RECV, end - 1]:
            _insert_reordered(st, tab, send_us[k], recv_us[k], size[k])
        else:
            _append(st, tab, send_us[k], recv_us[k], size[k])
    _drop_packets_outside_window(st, tab)


@njit(cache=True)
def _append(st: np.ndarray, tab: np.ndarray, s_us: int, r_us: int, n_bytes: int) -> None:
    """A packet that arrived no earlier than the newest one."""
    end = st[_END]
    in_window = end > st[_START]
    gap_us = r_us - tab[_RECV, end - 1] if in_window else 0
    if in_window and s_us < tab[_SEND, end - 1]:
        st[_SEND_DESCENT] = end
    tab[_SEND, end] = s_us
    tab[_RECV, end] = r_us
    tab[_SIZE, end] = n_bytes
    tab[_GAP, end] = gap_us
    st[_END] = end + 1
    st[_TOTAL_BYTES] += n_bytes
    if in_window:
        # The gap enters the window (the first packet's gap is not in it).
        if gap_us >= st[_GAP1_US]:
            st[_GAP2_US] = st[_GAP1_US]
            st[_GAP2_POS] = st[_GAP1_POS]
            st[_GAP1_US] = gap_us
            st[_GAP1_POS] = end
        elif gap_us >= st[_GAP2_US]:
            st[_GAP2_US] = gap_us
            st[_GAP2_POS] = end


@njit(cache=True)
def _insert_reordered(st: np.ndarray, tab: np.ndarray, s_us: int, r_us: int, n_bytes: int) -> None:
    """Insert a packet that arrived before the newest one (feedback reports reordered)."""
    start = st[_START]
    end = st[_END]
    i = end
    while i > start and r_us < tab[_RECV, i - 1]:
        i -= 1
    for j in range(end, i, -1):
        tab[:, j] = tab[:, j - 1]
    tab[_SEND, i] = s_us
    tab[_RECV, i] = r_us
    tab[_SIZE, i] = n_bytes
    st[_END] = end + 1
    st[_TOTAL_BYTES] += n_bytes
    if tab[_RECV, end] - r_us > MAX_REORDERING_US:
        # Severe reordering or a receiver clock jump: start over (libwebrtc does the same).
        st[_START] = 0
        st[_END] = 0
        st[_TOTAL_BYTES] = 0
        st[_LATEST_DISCARDED_SEND_US] = _NO_SEND_US
    _rebuild(st, tab)


@njit(cache=True)
def _rebuild(st: np.ndarray, tab: np.ndarray) -> None:
    """Cut off the dead prefix and recompute the window's gaps, their top two and the
    send-order mark from scratch (after an insertion inside the window, or to compact)."""
    start = st[_START]
    n = st[_END] - start
    if start:
        for j in range(n):
            tab[:, j] = tab[:, start + j]
        st[_START] = 0
        st[_END] = n
    st[_SEND_DESCENT] = -1
    for j in range(n):
        tab[_GAP, j] = tab[_RECV, j] - tab[_RECV, j - 1] if j else 0
        if j and tab[_SEND, j] < tab[_SEND, j - 1]:
            st[_SEND_DESCENT] = j
    _find_top_gaps(st, tab)


@njit(cache=True)
def _find_top_gaps(st: np.ndarray, tab: np.ndarray) -> None:
    """The two largest gaps in the window, from scratch (latest rows on ties)."""
    g1, p1, g2, p2 = 0, _NO_GAP_POS, 0, _NO_GAP_POS
    for j in range(st[_START] + 1, st[_END]):
        gap_us = tab[_GAP, j]
        if gap_us >= g1:
            g2, p2 = g1, p1
            g1, p1 = gap_us, j
        elif gap_us >= g2:
            g2, p2 = gap_us, j
    st[_GAP1_US], st[_GAP1_POS], st[_GAP2_US], st[_GAP2_POS] = g1, p1, g2, p2


@njit(cache=True)
def _drop_packets_outside_window(st: np.ndarray, tab: np.ndarray) -> None:
    """Move the window's start past every packet libwebrtc's drop loop would pop.

    That loop pops the oldest packet while the window has more than ``max_window_packets``,
    or spans more than ``max_window_duration_us``, or has more than ``window_packets`` and
    spans more than ``min_window_duration_us``. Each condition only gets weaker as packets go,
    so the first packet that stays is the first row past all three thresholds, found by
    bisection on the sorted arrival times.
    """
    start = st[_START]
    end = st[_END]
    if end == start:
        return
    recv = tab[_RECV, start:end]
    last_us = recv[-1]
    new_start = max(
        start,
        end - st[_MAX_WINDOW_PACKETS],
        start + np.searchsorted(recv, last_us - st[_MAX_WINDOW_DURATION_US]),
        min(
            end - st[_WINDOW_PACKETS],
            start + np.searchsorted(recv, last_us - st[_MIN_WINDOW_DURATION_US]),
        ),
    )
    if new_start == start:
        return
    for j in range(start, new_start):
        if tab[_SEND, j] > st[_LATEST_DISCARDED_SEND_US]:
            st[_LATEST_DISCARDED_SEND_US] = tab[_SEND, j]
        st[_TOTAL_BYTES] -= tab[_SIZE, j]
    st[_START] = new_start
    if new_start > _COMPACT_AFTER and new_start * 2 > end:
        _rebuild(st, tab)
    elif st[_GAP1_POS] <= new_start or st[_GAP2_POS] <= new_start:
        # A gap of the top two left the window (the gap at new_start is before its first
        # packet now).
        _find_top_gaps(st, tab)


@njit(cache=True)
def _compute_bitrate(st: np.ndarray, tab: np.ndarray) -> int:
    """Acknowledged rate in bps, or :data:`_NO_ESTIMATE`."""
    required = st[_REQUIRED_PACKETS]
    start = st[_START]
    end = st[_END]
    if end == start or end - start < required:
        return _NO_ESTIMATE

    # libwebrtc replaces the largest gap between consecutive arrivals by the second largest
    # (a tie counts twice); both are kept up to date.
    total_bytes = st[_TOTAL_BYTES]
    # The window is sorted by arrival, so the first received packet is at the front.
    recv_duration_us = tab[_RECV, end - 1] - tab[_RECV, start] - st[_GAP1_US] + st[_GAP2_US]
    if recv_duration_us < MIN_DURATION_US:
        recv_duration_us = MIN_DURATION_US
    recv_rate_bps = (total_bytes - tab[_SIZE, start]) * BIT_US_PER_BYTE_S // recv_duration_us

    in_order = st[_SEND_DESCENT] <= start
    if in_order:
        first_send_us = tab[_SEND, start]
        last_send_us = tab[_SEND, end - 1]
    else:
        first_send_us = tab[_SEND, start:end].min()
        last_send_us = tab[_SEND, start:end].max()
    latest_discarded_us = st[_LATEST_DISCARDED_SEND_US]
    if first_send_us >= latest_discarded_us:
        # Common case: no reordered packet to leave out. The first packet sent last counts as
        # the last sent (found by bisection when send times are in order).
        if in_order:
            last = start + np.searchsorted(tab[_SEND, start:end], last_send_us)
        else:
            last = start + np.argmax(tab[_SEND, start:end])
        last_send_size_bytes = tab[_SIZE, last]
        send_size_bytes = total_bytes
    else:
        # Leave out packets sent before one already dropped from the window (reordered).
        first_send_us = -_NO_SEND_US
        last_send_us = _NO_SEND_US
        last_send_size_bytes = 0
        send_size_bytes = 0
        sent_count = 0
        for j in range(start, end):
            s_us = tab[_SEND, j]
            if s_us < latest_discarded_us:
                continue
            if s_us > last_send_us:
                last_send_us = s_us
                last_send_size_bytes = tab[_SIZE, j]
            if s_us < first_send_us:
                first_send_us = s_us
            send_size_bytes += tab[_SIZE, j]
            sent_count += 1
        if sent_count < required:
            return recv_rate_bps  # Too few send times for a reliable send rate.
    send_duration_us = last_send_us - first_send_us
    if send_duration_us < MIN_DURATION_US:
        send_duration_us = MIN_DURATION_US
    send_rate_bps = (send_size_bytes - last_send_size_bytes) * BIT_US_PER_BYTE_S // send_duration_us
    return min(send_rate_bps, recv_rate_bps)


class RobustThroughputEstimator:
    """Windowed min(send rate, receive rate) over acknowledged packets (libwebrtc port).

    The window is a table a report costs O(its packets) to update, not O(window): the packets
    to drop are found by bisection (arrival times are sorted), the two largest receive gaps are
    kept up to date as packets come and go, and the send-time extremes are read off the ends
    while send times are in order too (the common case). The work is compiled (numba).
    """

    __slots__ = ("_bitrate_bps", "_settings", "_stale", "_state", "_table")

    def __init__(self, settings: RobustThroughputEstimatorSettings | None = None) -> None:
        self._settings = s = settings or RobustThroughputEstimatorSettings()
        st = np.zeros(_N_STATE, dtype=np.int64)
        st[_GAP1_POS] = st[_GAP2_POS] = _NO_GAP_POS
        st[_SEND_DESCENT] = -1
        st[_LATEST_DISCARDED_SEND_US] = _NO_SEND_US
        st[_WINDOW_PACKETS] = s.window_packets
        st[_MAX_WINDOW_PACKETS] = s.max_window_packets
        st[_MIN_WINDOW_DURATION_US] = s.min_window_duration_us
        st[_MAX_WINDOW_DURATION_US] = s.max_window_duration_us
        st[_REQUIRED_PACKETS] = s.required_packets
        self._state = st
        self._table = np.zeros((4, _INITIAL_ROWS), dtype=np.int64)
        self._bitrate_bps: int | None = None
        self._stale = False

    def incoming_packet_feedback_vector(
        self,
        send_time_us: Sequence[int],
        arrival_time_us: Sequence[int],
        size_bytes: Sequence[int],
    ) -> None:
        """Add one report's received packets, sorted by arrival (see the interface module)."""
        send = np.asarray(send_time_us, dtype=np.int64)
        recv = np.asarray(arrival_time_us, dtype=np.int64)
        size = np.asarray(size_bytes, dtype=np.int64)
        if send.shape != recv.shape or send.shape != size.shape:
            raise ValueError("RobustThroughputEstimator: per-packet sequences differ in length")
        st = self._state
        needed = int(st[_END]) + send.shape[0]
        if needed > self._table.shape[1]:
            _rebuild(st, self._table)  # cut off the dead prefix first
            needed = int(st[_END]) + send.shape[0]
            if needed > self._table.shape[1]:
                grown = np.zeros((4, max(needed, 2 * self._table.shape[1])), dtype=np.int64)
                grown[:, : st[_END]] = self._table[:, : st[_END]]
                self._table = grown
        _incoming(st, self._table, send, recv, size)
        self._stale = True

    def bitrate(self) -> int | None:
        """Acknowledged rate in bps, or None with fewer than ``required_packets`` in the window."""
        if self._stale:
            rate = int(_compute_bitrate(self._state, self._table))
            self._bitrate_bps = None if rate == _NO_ESTIMATE else rate
            self._stale = False
        return self._bitrate_bps

    def peek_rate(self) -> int | None:
        """Same as :meth:`bitrate` (libwebrtc's ``PeekRate`` for this estimator)."""
        return self.bitrate()

    def set_alr(self, in_alr: bool) -> None:
        """No effect: this estimator does not treat application-limited periods differently."""

    def set_alr_ended_time(self, alr_ended_time_us: int) -> None:
        """No effect: this estimator does not treat application-limited periods differently."""
