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

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from operator import le, sub

from gcc.units import BIT_US_PER_BYTE_S

#: A packet arriving this much earlier than the newest one means the receiver clock jumped.
MAX_REORDERING_US = 1_000_000
#: Floor on both durations, so a burst of simultaneous packets gives no division by zero.
MIN_DURATION_US = 1_000
#: Position of a "missing" top gap: never inside the part of the lists that is dropped.
_NO_GAP_POS = 1 << 62
#: The dropped prefix of the window's lists is cut off once longer than this (and the window).
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


class RobustThroughputEstimator:
    """Windowed min(send rate, receive rate) over acknowledged packets (libwebrtc port).

    The window lives in plain lists from index ``_start`` on (dropping a packet only moves the
    index; the dead prefix is cut off now and then), so that a report costs O(its packets), not
    O(window): the packets to drop are found by bisection (arrival times are sorted), the two
    largest receive gaps are kept up to date as packets come and go, and the send-time extremes
    are read off the ends while send times are in order too (the common case).
    """

    __slots__ = (
        "_bitrate_bps",
        "_gap1_pos",
        "_gap1_us",
        "_gap2_pos",
        "_gap2_us",
        "_gap_us",
        "_latest_discarded_send_us",
        "_recv_us",
        "_send_descent",
        "_send_us",
        "_settings",
        "_size_bytes",
        "_stale",
        "_start",
        "_total_bytes",
    )

    def __init__(self, settings: RobustThroughputEstimatorSettings | None = None) -> None:
        self._settings = settings or RobustThroughputEstimatorSettings()
        # Parallel lists (send time, arrival time, size) ordered by arrival time; the window is
        # [_start:]. _gap_us[i] is recv[i] - recv[i - 1] (0 at i = 0).
        self._send_us: list[int] = []
        self._recv_us: list[int] = []
        self._size_bytes: list[int] = []
        self._gap_us: list[int] = []
        self._start = 0
        self._total_bytes = 0  # bytes in the window, kept up to date.
        # The largest and second largest gap inside the window (a tie counts twice), with
        # their list positions; 0 at _NO_GAP_POS when the window has fewer gaps.
        self._gap1_us = 0
        self._gap1_pos = _NO_GAP_POS
        self._gap2_us = 0
        self._gap2_pos = _NO_GAP_POS
        # Index of the last packet sent before its predecessor in the list (-1: none): send
        # times in the window are in order when it is <= _start.
        self._send_descent = -1
        self._latest_discarded_send_us: float = -math.inf
        self._bitrate_bps: int | None = None
        self._stale = False

    def incoming_packet_feedback_vector(
        self,
        send_time_us: Sequence[int],
        arrival_time_us: Sequence[int],
        size_bytes: Sequence[int],
    ) -> None:
        """Add one report's received packets, sorted by arrival (see the interface module)."""
        recv = self._recv_us
        if not arrival_time_us:
            pass
        elif (not recv or arrival_time_us[0] >= recv[-1]) and all(
            map(le, arrival_time_us, islice(arrival_time_us, 1, None))
        ):
            self._append_in_order(send_time_us, arrival_time_us, size_bytes)
        else:
            for s_us, r_us, n_bytes in zip(send_time_us, arrival_time_us, size_bytes, strict=True):
                if recv and r_us < recv[-1]:
                    self._insert_reordered(s_us, r_us, n_bytes)
                else:
                    self._append_in_order((s_us,), (r_us,), (n_bytes,))
        self._drop_packets_outside_window()
        self._stale = True

    def _append_in_order(
        self, send_time_us: Sequence[int], arrival_time_us: Sequence[int], size_bytes: Sequence[int]
    ) -> None:
        """Append packets that arrived no earlier than the newest one, sorted by arrival."""
        send = self._send_us
        recv = self._recv_us
        first = len(recv)
        if send and send_time_us[0] < send[-1]:
            self._send_descent = first
        if not all(map(le, send_time_us, islice(send_time_us, 1, None))):
            for i in range(len(send_time_us) - 1, 0, -1):
                if send_time_us[i] < send_time_us[i - 1]:
                    self._send_descent = first + i
                    break
        prev_us = recv[-1] if recv else arrival_time_us[0]
        gaps = [arrival_time_us[0] - prev_us]
        gaps.extend(map(sub, islice(arrival_time_us, 1, None), arrival_time_us))
        send.extend(send_time_us)
        recv.extend(arrival_time_us)
        self._size_bytes.extend(size_bytes)
        self._gap_us.extend(gaps)
        self._total_bytes += sum(size_bytes)
        # The gaps entering the window: all but the first packet's if the window was empty.
        g1, p1, g2, p2 = self._gap1_us, self._gap1_pos, self._gap2_us, self._gap2_pos
        skip = 0 if first > self._start else 1
        pos = first + skip
        for gap in islice(gaps, skip, None):
            if gap >= g1:
                g2, p2 = g1, p1
                g1, p1 = gap, pos
            elif gap >= g2:
                g2, p2 = gap, pos
            pos += 1
        self._gap1_us, self._gap1_pos, self._gap2_us, self._gap2_pos = g1, p1, g2, p2

    def _insert_reordered(self, s_us: int, r_us: int, n_bytes: int) -> None:
        """Insert a packet that arrived before the newest one (feedback reports reordered)."""
        send = self._send_us
        recv = self._recv_us
        size = self._size_bytes
        i = len(recv)
        while i > self._start and r_us < recv[i - 1]:
            i -= 1
        send.insert(i, s_us)
        recv.insert(i, r_us)
        size.insert(i, n_bytes)
        self._gap_us.insert(i, 0)
        self._total_bytes += n_bytes
        if recv[-1] - r_us > MAX_REORDERING_US:
            # Severe reordering or a receiver clock jump: start over (libwebrtc does the same).
            send.clear()
            recv.clear()
            size.clear()
            self._gap_us.clear()
            self._start = 0
            self._total_bytes = 0
            self._latest_discarded_send_us = -math.inf
        self._rebuild()

    def _rebuild(self) -> None:
        """Cut off the dead prefix and recompute the window's gaps, their top two and the
        send-order mark from scratch (after an insertion inside the window, or to compact)."""
        start = self._start
        if start:
            del self._send_us[:start]
            del self._recv_us[:start]
            del self._size_bytes[:start]
            self._start = 0
        recv = self._recv_us
        send = self._send_us
        self._gap_us = [0, *map(sub, islice(recv, 1, None), recv)] if recv else []
        self._send_descent = -1
        for i in range(len(send) - 1, 0, -1):
            if send[i] < send[i - 1]:
                self._send_descent = i
                break
        self._find_top_gaps()

    def _find_top_gaps(self) -> None:
        """The two largest gaps in the window, from scratch (latest positions on ties)."""
        base = self._start + 1
        gaps = self._gap_us[base:]
        self._gap1_us, self._gap1_pos = 0, _NO_GAP_POS
        self._gap2_us, self._gap2_pos = 0, _NO_GAP_POS
        if not gaps:
            return
        g1 = max(gaps)
        i1 = len(gaps) - 1 - gaps[::-1].index(g1)
        self._gap1_us, self._gap1_pos = g1, base + i1
        if len(gaps) > 1:
            gaps[i1] = -1
            g2 = max(gaps)
            self._gap2_us = g2
            self._gap2_pos = base + len(gaps) - 1 - gaps[::-1].index(g2)

    def _drop_packets_outside_window(self) -> None:
        """Move the window's start past every packet libwebrtc's drop loop would pop.

        That loop pops the oldest packet while the window has more than ``max_window_packets``,
        or spans more than ``max_window_duration_us``, or has more than ``window_packets`` and
        spans more than ``min_window_duration_us``. Each condition only gets weaker as packets
        go, so the first packet that stays is the first index past all three thresholds, found
        by bisection on the sorted arrival times.
        """
        recv = self._recv_us
        if not recv:
            return
        s = self._settings
        start = self._start
        end = len(recv)
        last_us = recv[-1]
        new_start = max(
            start,
            end - s.max_window_packets,
            bisect_left(recv, last_us - s.max_window_duration_us, start, end),
            min(
                end - s.window_packets,
                bisect_left(recv, last_us - s.min_window_duration_us, start, end),
            ),
        )
        if new_start == start:
            return
        dropped_send_us = max(self._send_us[start:new_start])
        if dropped_send_us > self._latest_discarded_send_us:
            self._latest_discarded_send_us = dropped_send_us
        self._total_bytes -= sum(self._size_bytes[start:new_start])
        self._start = new_start
        if new_start > _COMPACT_AFTER and new_start * 2 > end:
            self._rebuild()
        elif self._gap1_pos <= new_start or self._gap2_pos <= new_start:
            # A gap of the top two left the window (the gap at new_start is before its first
            # packet now).
            self._find_top_gaps()

    def bitrate(self) -> int | None:
        """Acknowledged rate in bps, or None with fewer than ``required_packets`` in the window."""
        if self._stale:
            self._bitrate_bps = self._compute_bitrate()
            self._stale = False
        return self._bitrate_bps

    def peek_rate(self) -> int | None:
        """Same as :meth:`bitrate` (libwebrtc's ``PeekRate`` for this estimator)."""
        return self.bitrate()

    def set_alr(self, in_alr: bool) -> None:
        """No effect: this estimator does not treat application-limited periods differently."""

    def set_alr_ended_time(self, alr_ended_time_us: int) -> None:
        """No effect: this estimator does not treat application-limited periods differently."""

    def _compute_bitrate(self) -> int | None:
        required = self._settings.required_packets
        recv = self._recv_us
        start = self._start
        end = len(recv)
        if end - start == 0 or end - start < required:
            return None

        # libwebrtc replaces the largest gap between consecutive arrivals by the second
        # largest (a tie counts twice); both are kept up to date.
        size = self._size_bytes
        total_bytes = self._total_bytes
        # The window is sorted by arrival, so the first received packet is at the front.
        recv_duration_us = recv[-1] - recv[start] - self._gap1_us + self._gap2_us
        if recv_duration_us < MIN_DURATION_US:
            recv_duration_us = MIN_DURATION_US
        recv_rate_bps = (total_bytes - size[start]) * BIT_US_PER_BYTE_S // recv_duration_us

        send = self._send_us
        if self._send_descent <= start:
            # Send times in order: the extremes are at the ends, the first packet sent last
            # is found by bisection.
            first_send_us = send[start]
            last_send_us = send[-1]
        else:
            first_send_us = min(send[start:])
            last_send_us = max(send[start:])
        if first_send_us >= self._latest_discarded_send_us:
            # Common case: no reordered packet to leave out.
            if self._send_descent <= start:
                last_send_size_bytes = size[bisect_left(send, last_send_us, start, end)]
            else:
                last_send_size_bytes = size[send.index(last_send_us, start)]
            send_size_bytes = total_bytes
        else:
            first_send_us, last_send_us, last_send_size_bytes, send_size_bytes, sent_count = (
                self._send_stats_without_reordered()
            )
            if sent_count < required:
                return recv_rate_bps  # Too few send times for a reliable send rate.
        send_duration_us = last_send_us - first_send_us
        if send_duration_us < MIN_DURATION_US:
            send_duration_us = MIN_DURATION_US
        send_rate_bps = (
            (send_size_bytes - last_send_size_bytes) * BIT_US_PER_BYTE_S // send_duration_us
        )
        return min(send_rate_bps, recv_rate_bps)

    def _send_stats_without_reordered(self) -> tuple[int, int, int, int, int]:
        """Send-side window stats over packets not sent before an already dropped one.

        Returns (first send time, last send time, size of the last sent packet, total size,
        packet count); the first occurrence of the latest send time counts as the last sent.
        """
        latest_discarded_us = self._latest_discarded_send_us
        first_send_us = math.inf
        last_send_us = -math.inf
        last_send_size_bytes = 0
        send_size_bytes = 0
        sent_count = 0
        start = self._start
        for s_us, n_bytes in zip(self._send_us[start:], self._size_bytes[start:], strict=True):
            if s_us < latest_discarded_us:
                continue  # Reordered: sent before a packet already dropped from the window.
            if s_us > last_send_us:
                last_send_us = s_us
                last_send_size_bytes = n_bytes
            if s_us < first_send_us:
                first_send_us = s_us
            send_size_bytes += n_bytes
            sent_count += 1
        return first_send_us, last_send_us, last_send_size_bytes, send_size_bytes, sent_count
