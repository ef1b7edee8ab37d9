"""RTT and loss from RTCP sender and receiver reports, as the controller's hooks want them.

* RTT (RFC 3550 section 6.4.1, libwebrtc ``RTCPReceiver::HandleReportBlock``): a report block
  echoes the middle 32 bits of the NTP time of our last SR (LSR) and the delay since it (DLSR,
  1/65536 s). RTT = arrival - send time of that SR - DLSR. The send time is the session clock
  when the SR left, recorded from the outgoing packet itself.
* Loss (libwebrtc ``TransportLossReport``): deltas of the cumulative packets lost and of the
  extended highest sequence number between consecutive report blocks for our media SSRC. Only
  the low 16 bits of the highest sequence number are trusted (aiortc reports it without the
  cycle count), unwrapped.
"""

from __future__ import annotations

from collections import OrderedDict

from rtc.transport_feedback import sequence_unwrapper

#: SR send times kept for matching LSR echoes.
MAX_PENDING_SRS = 16
DLSR_UNITS_PER_S = 65536


def ntp_middle_32(ntp_timestamp: int) -> int:
    """The 32 bits of a 64-bit NTP timestamp that LSR echoes."""
    return (ntp_timestamp >> 16) & 0xFFFFFFFF


class RttFromReports:
    """Matches report blocks with the SRs they echo."""

    def __init__(self) -> None:
        self._sent: OrderedDict[int, int] = OrderedDict()

    def on_sr_sent(self, ntp_timestamp: int, sent_us: int) -> None:
        self._sent[ntp_middle_32(ntp_timestamp)] = sent_us
        while len(self._sent) > MAX_PENDING_SRS:
            self._sent.popitem(last=False)

    def on_report_block(self, lsr: int, dlsr: int, arrival_us: int) -> int | None:
        """RTT in us, or None when the block echoes no SR of ours."""
        if lsr == 0:
            return None
        sent = self._sent.get(lsr)
        if sent is None:
            return None
        rtt_us = arrival_us - sent - dlsr * 1_000_000 // DLSR_UNITS_PER_S
        return max(rtt_us, 0)


class LossFromReports:
    """Loss deltas between consecutive receiver reports for one SSRC."""

    def __init__(self) -> None:
        self._unwrapper = sequence_unwrapper()
        self._last: tuple[int, int] | None = None

    def on_report_block(self, packets_lost: int, highest_sequence: int) -> tuple[int, int] | None:
        """(packets lost, packets expected) since the previous block; None for the first."""
        highest = self._unwrapper.unwrap(highest_sequence & 0xFFFF)
        last = self._last
        self._last = (packets_lost, highest)
        if last is None:
            return None
        expected = highest - last[1]
        if expected <= 0:
            return None
        lost = min(max(packets_lost - last[0], 0), expected)
        return lost, expected
