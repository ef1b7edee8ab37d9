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

from collections.abc import Sequence

import numpy as np
from numba import njit

#: A jump in arrival time this much larger than the local clock's advance means a clock reset.
ARRIVAL_TIME_OFFSET_THRESHOLD_US = 3_000_000
#: Consecutive negative arrival deltas tolerated before starting over.
REORDERED_RESET_THRESHOLD = 3
#: A packet arriving within this of the previous one, earlier than its send spacing predicts,
#: is part of the same arrival burst (``kBurstDeltaThreshold``).
BURST_DELTA_THRESHOLD_US = 5_000
#: A burst never spans more than this from its first arrival (``kMaxBurstDuration``).
MAX_BURST_DURATION_US = 100_000


# The grouping state, as one int64 array a compiled pass over a report works on: the current
# and the previous group (libwebrtc's ``SendTimeGroup``; "empty" is a group with no packet yet,
# libwebrtc's minus-infinity complete time), and the reordering counter.
_C_SIZE = 0
_C_FIRST_SEND = 1
_C_SEND = 2
_C_FIRST_ARRIVAL = 3
_C_COMPLETE = 4
_C_SYSTEM = 5
_C_EMPTY = 6
_P_SIZE = 7
_P_FIRST_SEND = 8
_P_SEND = 9
_P_FIRST_ARRIVAL = 10
_P_COMPLETE = 11
_P_SYSTEM = 12
_P_EMPTY = 13
_REORDERED = 14
_GROUP_LENGTH_US = 15
_N_STATE = 16
#: Columns of a delta row: send delta us, arrival delta us, size delta bytes, arrival us.
DELTA_COLUMNS = 4


@njit(cache=True)
def _reset_state(st: np.ndarray) -> None:
    st[_REORDERED] = 0
    st[_C_SIZE] = 0
    st[_C_EMPTY] = 1
    st[_P_SIZE] = 0
    st[_P_EMPTY] = 1


@njit(cache=True)
def compute_deltas_state(
    st: np.ndarray,
    send_time_us: np.ndarray,
    arrival_time_us: np.ndarray,
    system_time_us: int,
    packet_size_bytes: np.ndarray,
) -> np.ndarray:
    """libwebrtc's ``ComputeDeltas`` for each packet of a report, in receive order.

    Returns one row per completed pair of groups (see :data:`DELTA_COLUMNS`), the arrival
    being that of the packet that revealed the pair.
    """
    out = np.empty((send_time_us.shape[0], DELTA_COLUMNS), dtype=np.int64)
    n_out = 0
    group_length_us = st[_GROUP_LENGTH_US]
    for j in range(send_time_us.shape[0]):
        send_us = send_time_us[j]
        arrival_us = arrival_time_us[j]
        if st[_C_EMPTY]:
            # First packet ever (or after a reset): nothing to compare with yet.
            st[_C_SEND] = send_us
            st[_C_FIRST_SEND] = send_us
            st[_C_FIRST_ARRIVAL] = arrival_us
        elif st[_C_FIRST_SEND] > send_us:
            # Reordered: sent before the current group started.
            continue
        else:
            # NewTimestampGroup: sent more than the group length after the group's first
            # packet, and not part of the current arrival burst (BelongsToBurst).
            new_group = False
            if send_us - st[_C_FIRST_SEND] > group_length_us:
                send_delta_us = send_us - st[_C_SEND]
                if send_delta_us != 0:
                    arrival_delta_us = arrival_us - st[_C_COMPLETE]
                    new_group = not (
                        arrival_delta_us - send_delta_us < 0
                        and arrival_delta_us <= BURST_DELTA_THRESHOLD_US
                        and arrival_us - st[_C_FIRST_ARRIVAL] < MAX_BURST_DURATION_US
                    )
            if new_group:
                if not st[_P_EMPTY]:
                    send_delta_us = st[_C_SEND] - st[_P_SEND]
                    arrival_delta_us = st[_C_COMPLETE] - st[_P_COMPLETE]
                    system_delta_us = st[_C_SYSTEM] - st[_P_SYSTEM]
                    if arrival_delta_us - system_delta_us >= ARRIVAL_TIME_OFFSET_THRESHOLD_US:
                        # The remote arrival clock jumped: start over.
                        _reset_state(st)
                        continue
                    if arrival_delta_us < 0:
                        # The group was reordered after its arrival time was stamped.
                        st[_REORDERED] += 1
                        if st[_REORDERED] >= REORDERED_RESET_THRESHOLD:
                            _reset_state(st)
                        continue
                    st[_REORDERED] = 0
                    out[n_out, 0] = send_delta_us
                    out[n_out, 1] = arrival_delta_us
                    out[n_out, 2] = st[_C_SIZE] - st[_P_SIZE]
                    out[n_out, 3] = arrival_us
                    n_out += 1
                # The current group becomes the previous one; this packet starts a new one.
                for k in range(_C_EMPTY + 1):
                    st[_P_SIZE + k] = st[_C_SIZE + k]
                st[_C_FIRST_SEND] = send_us
                st[_C_SEND] = send_us
                st[_C_FIRST_ARRIVAL] = arrival_us
                st[_C_SIZE] = 0
            elif send_us > st[_C_SEND]:
                st[_C_SEND] = send_us
        st[_C_SIZE] += packet_size_bytes[j]
        st[_C_COMPLETE] = arrival_us
        st[_C_SYSTEM] = system_time_us
        st[_C_EMPTY] = 0
    return out[:n_out]


class InterArrivalDelta:
    """Send-time grouping and inter-group deltas, in integer microseconds.

    ``compute_deltas`` returns True when a pair of groups completed; the deltas are then in
    ``send_time_delta_us``, ``arrival_time_delta_us`` and ``packet_size_delta_bytes`` (libwebrtc's
    out-parameters). When it returns False those attributes keep their previous values (libwebrtc
    may scribble on its out-parameters before some False returns; no caller reads them then).
    """

    __slots__ = (
        "arrival_time_delta_us",
        "packet_size_delta_bytes",
        "send_time_delta_us",
        "state",
    )

    def __init__(self, send_time_group_length_us: int) -> None:
        #: The grouping state (see :func:`compute_deltas_state`).
        self.state = np.zeros(_N_STATE, dtype=np.int64)
        self.state[_GROUP_LENGTH_US] = send_time_group_length_us
        self.state[_C_EMPTY] = 1
        self.state[_P_EMPTY] = 1
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
        return bool(
            self.compute_deltas_batch(
                (send_time_us,), (arrival_time_us,), system_time_us, (packet_size_bytes,)
            )
        )

    def compute_deltas_batch(
        self,
        send_time_us: Sequence[int],
        arrival_time_us: Sequence[int],
        system_time_us: int,
        packet_size_bytes: Sequence[int],
    ) -> list[tuple[int, int, int, int]]:
        """:meth:`compute_deltas` for each packet of one feedback report, in receive order.

        Returns one ``(send delta us, arrival delta us, size delta bytes, arrival us)`` per
        completed pair of groups, the arrival being that of the packet that revealed it; the
        attributes hold the last pair, as after the equivalent ``compute_deltas`` calls.
        """
        rows = compute_deltas_state(
            self.state,
            np.asarray(send_time_us, dtype=np.int64),
            np.asarray(arrival_time_us, dtype=np.int64),
            int(system_time_us),
            np.asarray(packet_size_bytes, dtype=np.int64),
        ).tolist()
        if rows:
            self.send_time_delta_us, self.arrival_time_delta_us, self.packet_size_delta_bytes = (
                rows[-1][:3]
            )
        return [tuple(r) for r in rows]

    def reset(self) -> None:
        """Forget all groups, as after a stream timeout."""
        _reset_state(self.state)
