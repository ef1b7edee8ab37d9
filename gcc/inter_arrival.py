"""InterArrival: send-time grouping over wrapping RTP / abs-send-time timestamps.

Adapted from libwebrtc ``modules/remote_bitrate_estimator/inter_arrival.cc`` (upstream,
mid-2024). This is the older sibling of :mod:`gcc.inter_arrival_delta`: the same grouping rule,
but send times are unsigned 32-bit timestamps that wrap (RTP ticks at 90 kHz, or the 24-bit
abs-send-time shifted up by 8 bits so that it wraps at 32 bits), and arrival times are integer
milliseconds. The send-side estimator in this package uses :class:`InterArrivalDelta`; this class
exists because libwebrtc's inter-arrival unit tests (wrap-around, bursts, arrival-clock jumps)
are written against it, and they pin the grouping rule both classes share.

A timestamp is "in order" when it is less than half the 32-bit range ahead of the current
group's first timestamp (``IsNewerTimestamp``'s rule); a later packet of the same group may carry
a smaller timestamp than its predecessor, as long as it is not older than the group's first.
"""

from __future__ import annotations

#: A jump in arrival time this much larger than the local clock's advance means a clock reset.
ARRIVAL_TIME_OFFSET_THRESHOLD_MS = 3_000
#: Consecutive negative arrival deltas tolerated before starting over.
REORDERED_RESET_THRESHOLD = 3
BURST_DELTA_THRESHOLD_MS = 5
MAX_BURST_DURATION_MS = 100

_UINT32_MASK = 0xFFFFFFFF
_HALF_RANGE = 0x80000000


def _as_int32(value: int) -> int:
    """C++'s ``int`` conversion of an ``int64_t`` (wraps modulo 2**32)."""
    value &= _UINT32_MASK
    return value - (1 << 32) if value >= _HALF_RANGE else value


def is_newer_timestamp(timestamp: int, prev_timestamp: int) -> bool:
    """libwebrtc ``IsNewerTimestamp``: ``timestamp`` is ahead of ``prev_timestamp`` modulo 2**32.

    Two timestamps exactly half the range apart are ordered by their raw values, so that exactly
    one of them is the newer.
    """
    diff = (timestamp - prev_timestamp) & _UINT32_MASK
    if diff == _HALF_RANGE:
        return timestamp > prev_timestamp
    return timestamp != prev_timestamp and diff < _HALF_RANGE


class _TimestampGroup:
    """One send burst; ``complete_time_ms == -1`` means no packet yet."""

    __slots__ = (
        "complete_time_ms",
        "first_arrival_ms",
        "first_timestamp",
        "last_system_time_ms",
        "size_bytes",
        "timestamp",
    )

    def __init__(self) -> None:
        self.size_bytes = 0
        self.first_timestamp = 0
        self.timestamp = 0
        self.first_arrival_ms = -1
        self.complete_time_ms = -1
        self.last_system_time_ms = -1


class InterArrival:
    """Send-time grouping and inter-group deltas over wrapping 32-bit timestamps.

    ``timestamp_group_length_ticks`` is the group length in timestamp ticks and
    ``timestamp_to_ms_coeff`` converts ticks to milliseconds (1/90 for RTP video,
    1000 / 2**26 for shifted abs-send-time). ``compute_deltas`` returns True when a pair of groups
    completed; the deltas are then in ``timestamp_delta`` (ticks), ``arrival_time_delta_ms`` and
    ``packet_size_delta_bytes``, and are left untouched when it returns False.
    """

    __slots__ = (
        "_burst_grouping",
        "_current",
        "_num_consecutive_reordered_packets",
        "_prev",
        "_timestamp_group_length_ticks",
        "_timestamp_to_ms_coeff",
        "arrival_time_delta_ms",
        "packet_size_delta_bytes",
        "timestamp_delta",
    )

    def __init__(
        self,
        timestamp_group_length_ticks: int,
        timestamp_to_ms_coeff: float,
        enable_burst_grouping: bool = True,
    ) -> None:
        self._timestamp_group_length_ticks = timestamp_group_length_ticks
        self._timestamp_to_ms_coeff = timestamp_to_ms_coeff
        self._burst_grouping = enable_burst_grouping
        self._current = _TimestampGroup()
        self._prev = _TimestampGroup()
        self._num_consecutive_reordered_packets = 0
        self.timestamp_delta = 0
        self.arrival_time_delta_ms = 0
        self.packet_size_delta_bytes = 0

    def compute_deltas(
        self, timestamp: int, arrival_time_ms: int, system_time_ms: int, packet_size_bytes: int
    ) -> bool:
        """Add one packet; True when a new pair of group deltas is ready."""
        cur = self._current
        calculated_deltas = False
        if cur.complete_time_ms == -1:
            cur.timestamp = timestamp
            cur.first_timestamp = timestamp
            cur.first_arrival_ms = arrival_time_ms
        elif (timestamp - cur.first_timestamp) & _UINT32_MASK >= _HALF_RANGE:
            # Older than the current group's first packet: reordered, dropped.
            return False
        elif self._new_timestamp_group(arrival_time_ms, timestamp):
            prev = self._prev
            if prev.complete_time_ms >= 0:
                arrival_delta_ms = cur.complete_time_ms - prev.complete_time_ms
                system_delta_ms = cur.last_system_time_ms - prev.last_system_time_ms
                if arrival_delta_ms - system_delta_ms >= ARRIVAL_TIME_OFFSET_THRESHOLD_MS:
                    # The remote arrival clock jumped: start over.
                    self.reset()
                    return False
                if arrival_delta_ms < 0:
                    self._num_consecutive_reordered_packets += 1
                    if self._num_consecutive_reordered_packets >= REORDERED_RESET_THRESHOLD:
                        self.reset()
                    return False
                self._num_consecutive_reordered_packets = 0
                self.timestamp_delta = (cur.timestamp - prev.timestamp) & _UINT32_MASK
                self.arrival_time_delta_ms = arrival_delta_ms
                self.packet_size_delta_bytes = cur.size_bytes - prev.size_bytes
                calculated_deltas = True
            self._prev = cur
            prev.first_timestamp = timestamp
            prev.timestamp = timestamp
            prev.first_arrival_ms = arrival_time_ms
            prev.size_bytes = 0
            self._current = cur = prev
        elif is_newer_timestamp(timestamp, cur.timestamp):
            cur.timestamp = timestamp
        cur.size_bytes += packet_size_bytes
        cur.complete_time_ms = arrival_time_ms
        cur.last_system_time_ms = system_time_ms
        return calculated_deltas

    def _new_timestamp_group(self, arrival_time_ms: int, timestamp: int) -> bool:
        if self._belongs_to_burst(arrival_time_ms, timestamp):
            return False
        diff = (timestamp - self._current.first_timestamp) & _UINT32_MASK
        return diff > self._timestamp_group_length_ticks

    def _belongs_to_burst(self, arrival_time_ms: int, timestamp: int) -> bool:
        if not self._burst_grouping:
            return False
        cur = self._current
        arrival_delta_ms = arrival_time_ms - cur.complete_time_ms
        timestamp_diff = (timestamp - cur.timestamp) & _UINT32_MASK
        # C++ converts the double to int64_t, truncating toward zero.
        ts_delta_ms = int(self._timestamp_to_ms_coeff * timestamp_diff + 0.5)
        if ts_delta_ms == 0:
            return True
        propagation_delta_ms = _as_int32(arrival_delta_ms - ts_delta_ms)
        return (
            propagation_delta_ms < 0
            and arrival_delta_ms <= BURST_DELTA_THRESHOLD_MS
            and arrival_time_ms - cur.first_arrival_ms < MAX_BURST_DURATION_MS
        )

    def reset(self) -> None:
        """Forget all groups."""
        self._num_consecutive_reordered_packets = 0
        self._current = _TimestampGroup()
        self._prev = _TimestampGroup()
