"""The sender's join of transport-cc feedback with its own send history.

libwebrtc's ``TransportFeedbackAdapter`` (modules/congestion_controller/rtp/
transport_feedback_adapter.cc) keeps every sent packet by transport-wide sequence number
(send time, size, probe cluster) and, when feedback arrives, turns the receiver's statuses into
``TransportPacketsFeedback`` for the controller. This is the same step for :mod:`loki.api`:
the output is a :class:`loki.api.TransportFeedback`, in transport sequence order.

Rules (libwebrtc's, where it has one):

* 16-bit sequence numbers in a report are placed on the sender's unwrapped counter as the most
  recent sent packet with those low bits: a receiver cannot report a packet not yet sent.
* A packet not in the history (never sent, or older than the history window) is skipped and
  counted in :attr:`TransportFeedbackAdapter.unknown_packets`.
* A packet already reported received is skipped when reported again (overlapping reports).
  A packet reported lost is passed on as lost only the first time; if a later report says it
  arrived after all, it is passed on then as received (a late arrival).
* Arrival times are on the receiver's clock: the 24-bit reference time is unwrapped across
  reports, so the times stay continuous over its 12.4-day wrap.
"""

from __future__ import annotations

from array import array

from loki.api import NO_PROBE, NOT_RECEIVED_US, TransportFeedback
from rtc.transport_feedback import (
    REFERENCE_TICK_US,
    SEQ_MOD,
    TransportCcFeedback,
    reference_time_unwrapper,
)

#: Slots in the send history: packets older than this many sequence numbers are forgotten.
#: At 2,000 packets/s (about 20 Mbps) that is 32 s, more than libwebrtc's 60 s window needs
#: for any rate this project streams at, and far more than a feedback round trip.
HISTORY_SLOTS = 1 << 16

_NOT_REPORTED = 0
_REPORTED_LOST = 1
_REPORTED_RECEIVED = 2


class SendHistory:
    """Sent packets by unwrapped transport-wide sequence number, in a fixed ring."""

    __slots__ = (
        "_cum",
        "_probe",
        "_send_us",
        "_seq",
        "_size",
        "_state",
        "last_seq",
        "newest_reported_seq",
        "sent_bytes",
    )

    def __init__(self) -> None:
        self._seq = array("q", [-1]) * HISTORY_SLOTS
        self._send_us = array("q", [0]) * HISTORY_SLOTS
        self._size = array("l", [0]) * HISTORY_SLOTS
        self._probe = array("l", [NO_PROBE]) * HISTORY_SLOTS
        #: Bytes sent up to and including each slot's packet.
        self._cum = array("q", [0]) * HISTORY_SLOTS
        self._state = bytearray(HISTORY_SLOTS)
        #: The newest sequence number added, or -1.
        self.last_seq = -1
        #: The newest sequence number a feedback report covered (received or lost), or -1.
        self.newest_reported_seq = -1
        self.sent_bytes = 0

    def outstanding_bytes(self) -> int:
        """Bytes sent after the newest packet a feedback report covered (libwebrtc's
        outstanding data; a packet whose report was lost stops counting once a later one is
        reported)."""
        seq = self.newest_reported_seq
        if seq < 0:
            return self.sent_bytes
        i = seq % HISTORY_SLOTS
        if self._seq[i] != seq:
            return 0  # reported so long ago that the ring moved on: nothing known in flight
        return self.sent_bytes - self._cum[i]

    def add(self, seq: int, send_time_us: int, size_bytes: int, probe_cluster_id: int) -> None:
        """Record one sent packet; ``seq`` is the unwrapped transport-wide sequence number."""
        if seq <= self.last_seq:
            raise ValueError(f"SendHistory.add: seq {seq} after {self.last_seq}")
        i = seq % HISTORY_SLOTS
        self._seq[i] = seq
        self._send_us[i] = send_time_us
        self._size[i] = size_bytes
        self._probe[i] = probe_cluster_id
        self._state[i] = _NOT_REPORTED
        self.sent_bytes += size_bytes
        self._cum[i] = self.sent_bytes
        self.last_seq = seq

    def get(self, seq: int) -> tuple[int, int, int] | None:
        """(send_time_us, size_bytes, probe_cluster_id) of a packet still in the history."""
        i = seq % HISTORY_SLOTS
        if seq < 0 or self._seq[i] != seq:
            return None
        return self._send_us[i], self._size[i], self._probe[i]

    def unwrap(self, seq16: int) -> int:
        """The newest sent sequence number whose low 16 bits are ``seq16`` (-1 if none)."""
        last = self.last_seq
        if last < 0:
            return -1
        return last - ((last - seq16) % SEQ_MOD)


class TransportFeedbackAdapter:
    """Turns parsed transport-cc packets into :class:`loki.api.TransportFeedback` reports."""

    def __init__(self, history: SendHistory) -> None:
        self.history = history
        self._ref_unwrapper = reference_time_unwrapper()
        self.unknown_packets = 0
        self.duplicate_packets = 0
        self.reports = 0

    def on_feedback(
        self, feedback: TransportCcFeedback, feedback_time_us: int
    ) -> TransportFeedback | None:
        """Join one parsed packet with the history; None when it says nothing new."""
        history = self.history
        ref_us = self._ref_unwrapper.unwrap(feedback.reference_time) * REFERENCE_TICK_US
        shift_us = ref_us - feedback.reference_time_us
        seqs: list[int] = []
        sends: list[int] = []
        arrivals: list[int] = []
        sizes: list[int] = []
        probes: list[int] = []
        state = history._state
        base = history.unwrap(feedback.base_seq)
        for k, arrival in enumerate(feedback.arrival_us):
            seq = base + k
            entry = history.get(seq)
            if entry is None:
                self.unknown_packets += 1
                continue
            slot = seq % HISTORY_SLOTS
            previous = state[slot]
            if arrival is None:
                if previous != _NOT_REPORTED:
                    self.duplicate_packets += 1
                    continue
                state[slot] = _REPORTED_LOST
                arrivals.append(NOT_RECEIVED_US)
            else:
                if previous == _REPORTED_RECEIVED:
                    self.duplicate_packets += 1
                    continue
                state[slot] = _REPORTED_RECEIVED
                arrivals.append(arrival + shift_us)
            seqs.append(seq)
            sends.append(entry[0])
            sizes.append(entry[1])
            probes.append(entry[2])
        if not seqs:
            return None
        history.newest_reported_seq = max(history.newest_reported_seq, seqs[-1])
        self.reports += 1
        return TransportFeedback.from_lists(feedback_time_us, seqs, sends, arrivals, sizes, probes)
