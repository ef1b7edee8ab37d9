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
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from operator import sub

from gcc.units import BIT_US_PER_BYTE_S

#: A packet arriving this much earlier than the newest one means the receiver clock jumped.
MAX_REORDERING_US = 1_000_000
#: Floor on both durations, so a burst of simultaneous packets gives no division by zero.
MIN_DURATION_US = 1_000


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
    """Windowed min(send rate, receive rate) over acknowledged packets (libwebrtc port)."""

    __slots__ = (
        "_bitrate_bps",
        "_latest_discarded_send_us",
        "_recv_us",
        "_send_us",
        "_settings",
        "_size_bytes",
        "_stale",
        "_total_bytes",
    )

    def __init__(self, settings: RobustThroughputEstimatorSettings | None = None) -> None:
        self._settings = settings or RobustThroughputEstimatorSettings()
        # Parallel deques (send time, arrival time, size) ordered by arrival time.
        self._send_us: deque[int] = deque()
        self._recv_us: deque[int] = deque()
        self._size_bytes: deque[int] = deque()
        self._total_bytes = 0  # sum(self._size_bytes), kept up to date.
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
        send = self._send_us
        recv = self._recv_us
        size = self._size_bytes
        for s_us, r_us, n_bytes in zip(send_time_us, arrival_time_us, size_bytes, strict=True):
            if recv and r_us < recv[-1]:
                self._insert_reordered(s_us, r_us, n_bytes)
                continue
            send.append(s_us)
            recv.append(r_us)
            size.append(n_bytes)
            self._total_bytes += n_bytes
        self._drop_packets_outside_window()
        self._stale = True

    def _insert_reordered(self, s_us: int, r_us: int, n_bytes: int) -> None:
        """Insert a packet that arrived before the newest one (feedback reports reordered)."""
        send = self._send_us
        recv = self._recv_us
        size = self._size_bytes
        i = len(recv)
        while i > 0 and r_us < recv[i - 1]:
            i -= 1
        send.insert(i, s_us)
        recv.insert(i, r_us)
        size.insert(i, n_bytes)
        self._total_bytes += n_bytes
        if recv[-1] - r_us > MAX_REORDERING_US:
            # Severe reordering or a receiver clock jump: start over (libwebrtc does the same).
            send.clear()
            recv.clear()
            size.clear()
            self._total_bytes = 0
            self._latest_discarded_send_us = -math.inf

    def _drop_packets_outside_window(self) -> None:
        s = self._settings
        send = self._send_us
        recv = self._recv_us
        size = self._size_bytes
        latest = self._latest_discarded_send_us
        total_bytes = self._total_bytes
        while recv:
            n = len(recv)
            duration_us = recv[-1] - recv[0]
            if not (
                n > s.max_window_packets
                or duration_us > s.max_window_duration_us
                or (n > s.window_packets and duration_us > s.min_window_duration_us)
            ):
                break
            dropped_send_us = send.popleft()
            if dropped_send_us > latest:
                latest = dropped_send_us
            recv.popleft()
            total_bytes -= size.popleft()
        self._latest_discarded_send_us = latest
        self._total_bytes = total_bytes

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
        n = len(recv)
        if n == 0 or n < required:
            return None

        # Gaps between consecutive arrivals (all >= 0: the window is sorted). libwebrtc scans
        # for the largest and second largest (a tie counts twice); max/remove/max does the same
        # at C speed.
        gaps_us = list(map(sub, islice(recv, 1, None), recv))
        largest_gap_us = max(gaps_us, default=0)
        if gaps_us:
            gaps_us.remove(largest_gap_us)
        second_gap_us = max(gaps_us, default=0)

        size = self._size_bytes
        total_bytes = self._total_bytes
        # The window is sorted by arrival, so the first received packet is at the front.
        recv_duration_us = recv[-1] - recv[0] - largest_gap_us + second_gap_us
        if recv_duration_us < MIN_DURATION_US:
            recv_duration_us = MIN_DURATION_US
        recv_rate_bps = (total_bytes - size[0]) * BIT_US_PER_BYTE_S // recv_duration_us

        send = self._send_us
        first_send_us = min(send)
        if first_send_us >= self._latest_discarded_send_us:
            # Common case: no reordered packet to leave out.
            last_send_us = max(send)
            last_send_size_bytes = size[send.index(last_send_us)]
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
        for s_us, n_bytes in zip(self._send_us, self._size_bytes, strict=True):
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
