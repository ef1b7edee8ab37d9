"""InterArrivalDelta: groups packets by send time and yields the delay deltas between groups.

Adapted from libwebrtc ``modules/congestion_controller/goog_cc/inter_arrival_delta.cc``
(upstream, mid-2024), the send-side variant that works on ``Timestamp``s (here integer
microseconds) instead of wrapping RTP or abs-send-time ticks.

Why groups: a video frame leaves the pacer as a burst, and the delay signal is the change in
one-way delay from one burst to the next, not from packet to packet. A packet starts a new group
when it was sent more than ``send_time_group_length_us`` after the group's first packet, unless it
belongs to the current *arrival* burst (arrived within 5 ms of the previous packet, earlier than
its send spacing predicts, and within 100 ms of the group's first arrival): packets queued behind
each other on the path are one sample, not several.

Deltas between groups i and i+1 are only known once group i+2 starts (group i+1 is then
complete). They are measured between the last packet of each group: its largest send time and
its last arrival time.

Resets: an arrival-clock jump of 3 s or more relative to the local clock, or 3 consecutive
groups whose arrival delta is negative (reordering between the socket and the estimator).
"""

from __future__ import annotations

#: A jump in arrival time this much larger than the local clock's advance means a clock reset.
ARRIVAL_TIME_OFFSET_THRESHOLD_US = 3_000_000
#: Consecutive negative arrival deltas tolerated before starting over.
REORDERED_RESET_THRESHOLD = 3
#: A packet arriving within this of the previous one, earlier than its send spacing predicts,
#: is part of the same arrival burst (``kBurstDeltaThreshold``).
BURST_DELTA_THRESHOLD_US = 5_000
#: A burst never spans more than this from its first arrival (``kMaxBurstDuration``).
MAX_BURST_DURATION_US = 100_000


class _SendTimeGroup:
    """One send burst; ``complete_time_us is None`` means no packet yet (libwebrtc's -inf)."""

    __slots__ = (
        "complete_time_us",
        "first_arrival_us",
        "first_send_time_us",
        "last_system_time_us",
        "send_time_us",
        "size_bytes",
    )

    def __init__(self) -> None:
        self.size_bytes = 0
        self.first_send_time_us: int | None = None
        self.send_time_us: int | None = None
        self.first_arrival_us: int | None = None
        self.complete_time_us: int | None = None
        self.last_system_time_us: int | None = None


class InterArrivalDelta:
    """Send-time grouping and inter-group deltas, in integer microseconds.

    ``compute_deltas`` returns True when a pair of groups completed; the deltas are then in
    ``send_time_delta_us``, ``arrival_time_delta_us`` and ``packet_size_delta_bytes`` (libwebrtc's
    out-parameters). When it returns False those attributes keep their previous values (libwebrtc
    may scribble on its out-parameters before some False returns; no caller reads them then).
    """

    __slots__ = (
        "_current",
        "_num_consecutive_reordered_packets",
        "_prev",
        "_send_time_group_length_us",
        "arrival_time_delta_us",
        "packet_size_delta_bytes",
        "send_time_delta_us",
    )

    def __init__(self, send_time_group_length_us: int) -> None:
        self._send_time_group_length_us = send_time_group_length_us
        self._current = _SendTimeGroup()
        self._prev = _SendTimeGroup()
        self._num_consecutive_reordered_packets = 0
        self.send_time_delta_us = 0
        self.arrival_time_delta_us = 0
        self.packet_size_delta_bytes = 0

    def compute_deltas(
        self, send_time_us: int, arrival_time_us: int, system_time_us: int, packet_size_bytes: int
    ) -> bool:
        """Add one packet (in receive order); True when a new pair of group deltas is ready.

        ``system_time_us`` is the local clock when the packet's feedback was processed; it
        detects jumps of the remote arrival clock.
        """
        cur = self._current
        calculated_deltas = False
        if cur.complete_time_us is None:
            # First packet ever (or after a reset): nothing to compare with yet.
            cur.send_time_us = send_time_us
            cur.first_send_time_us = send_time_us
            cur.first_arrival_us = arrival_time_us
        elif cur.first_send_time_us > send_time_us:
            # Reordered: sent before the current group started.
            return False
        elif self._new_timestamp_group(cur, arrival_time_us, send_time_us):
            prev = self._prev
            if prev.complete_time_us is not None:
                send_delta_us = cur.send_time_us - prev.send_time_us
                arrival_delta_us = cur.complete_time_us - prev.complete_time_us
                system_delta_us = cur.last_system_time_us - prev.last_system_time_us
                if arrival_delta_us - system_delta_us >= ARRIVAL_TIME_OFFSET_THRESHOLD_US:
                    # The remote arrival clock jumped: start over.
                    self.reset()
                    return False
                if arrival_delta_us < 0:
                    # The group was reordered after its arrival time was stamped.
                    self._num_consecutive_reordered_packets += 1
                    if self._num_consecutive_reordered_packets >= REORDERED_RESET_THRESHOLD:
                        self.reset()
                    return False
                self._num_consecutive_reordered_packets = 0
                self.send_time_delta_us = send_delta_us
                self.arrival_time_delta_us = arrival_delta_us
                self.packet_size_delta_bytes = cur.size_bytes - prev.size_bytes
                calculated_deltas = True
            # The current group becomes the previous one; reuse the old object for the new group.
            self._prev = cur
            prev.first_send_time_us = send_time_us
            prev.send_time_us = send_time_us
            prev.first_arrival_us = arrival_time_us
            prev.size_bytes = 0
            self._current = cur = prev
        elif send_time_us > cur.send_time_us:
            cur.send_time_us = send_time_us
        cur.size_bytes += packet_size_bytes
        cur.complete_time_us = arrival_time_us
        cur.last_system_time_us = system_time_us
        return calculated_deltas

    def _new_timestamp_group(
        self, cur: _SendTimeGroup, arrival_time_us: int, send_time_us: int
    ) -> bool:
        """Whether an in-order packet opens a new group: sent more than the group length after
        the group's first packet, and not part of the current arrival burst."""
        if send_time_us - cur.first_send_time_us <= self._send_time_group_length_us:
            return False
        # BelongsToBurst (evaluated second here: it has no side effects and is rarely needed).
        send_delta_us = send_time_us - cur.send_time_us
        if send_delta_us == 0:
            return False
        arrival_delta_us = arrival_time_us - cur.complete_time_us
        return not (
            arrival_delta_us - send_delta_us < 0
            and arrival_delta_us <= BURST_DELTA_THRESHOLD_US
            and arrival_time_us - cur.first_arrival_us < MAX_BURST_DURATION_US
        )

    def reset(self) -> None:
        """Forget all groups, as after a stream timeout."""
        self._num_consecutive_reordered_packets = 0
        self._current = _SendTimeGroup()
        self._prev = _SendTimeGroup()
