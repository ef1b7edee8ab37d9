"""The receiver's side of transport-wide congestion control: periodic transport-cc reports.

libwebrtc's ``RemoteEstimatorProxy`` (modules/remote_bitrate_estimator/remote_estimator_proxy.cc)
in its periodic mode: remember each arriving packet's transport-wide sequence number and arrival
time; every feedback interval report every sequence number from the start of the window to the
highest one received, received or not, then move the window past it. A packet that arrives after
its sequence number was reported (reordering, a late retransmission) moves the window back so the
next report says it arrived, as libwebrtc does; the sender's adapter drops what it already knows.

A report is split over several packets when it would not fit one: more statuses than
:data:`MAX_STATUSES_PER_PACKET`, or two received packets more than a large delta (about 8 s)
apart. Time is an argument; the caller (the aiortc patch) runs the timer.
"""

from __future__ import annotations

from rtc.transport_feedback import (
    DELTA_TICK_US,
    LARGE_DELTA_MAX_TICKS,
    REFERENCE_TICK_US,
    REFERENCE_TIME_MOD,
    TransportCcFeedback,
    build_rtcp,
    reference_time_for,
    sequence_unwrapper,
)

#: Keeps one RTCP packet well under a 1200-byte MTU budget (a received packet costs 1-2 bytes
#: of delta plus at most 2 bits of status).
MAX_STATUSES_PER_PACKET = 400
#: Arrivals kept for late re-reporting; older sequence numbers are forgotten.
MAX_REORDER_PACKETS = 1000
#: Largest gap between consecutive received packets of one packet (one tick of rounding spare).
MAX_GAP_US = (LARGE_DELTA_MAX_TICKS - 1) * DELTA_TICK_US
#: The reference time's wrap period: arrival times are written relative to its epoch.
EPOCH_US = REFERENCE_TIME_MOD * REFERENCE_TICK_US


class FeedbackGenerator:
    """Collects arrivals; :meth:`build_packets` returns the RTCP bytes of one report."""

    def __init__(self, sender_ssrc: int) -> None:
        self.sender_ssrc = sender_ssrc
        self.media_ssrc = 0
        self._unwrapper = sequence_unwrapper()
        self._arrivals: dict[int, int] = {}
        self._window_start: int | None = None
        self._max_seq = -1
        self._feedback_count = 0
        self.packets_seen = 0

    def on_packet(self, seq16: int, arrival_us: int, media_ssrc: int = 0) -> None:
        """Note one arriving RTP packet's transport-wide sequence number."""
        seq = self._unwrapper.unwrap(seq16)
        self.packets_seen += 1
        if media_ssrc:
            self.media_ssrc = media_ssrc
        if self._window_start is None:
            self._window_start = seq
        elif seq < self._window_start:
            if self._max_seq - seq > MAX_REORDER_PACKETS:
                return
            self._window_start = seq
        if seq not in self._arrivals:
            self._arrivals[seq] = arrival_us
        if seq > self._max_seq:
            self._max_seq = seq

    def build_packets(self) -> list[bytes]:
        """RTCP transport-cc packets for everything since the last call (may be empty)."""
        start = self._window_start
        if start is None or start > self._max_seq:
            return []
        end = self._max_seq
        arrivals = self._arrivals
        out: list[bytes] = []
        seq = start
        while seq <= end:
            stop = min(end + 1, seq + MAX_STATUSES_PER_PACKET)
            times: list[int | None] = []
            first_us: int | None = None
            last_us = 0
            cut = stop
            for s in range(seq, stop):
                t = arrivals.get(s)
                if t is not None:
                    if first_us is None:
                        first_us = t
                    elif abs(t - last_us) > MAX_GAP_US:
                        cut = s
                        break
                    last_us = t
                times.append(t)
            epoch_us = (first_us // EPOCH_US) * EPOCH_US if first_us is not None else 0
            ref = reference_time_for(first_us - epoch_us if first_us is not None else 0)
            times = [None if t is None else t - epoch_us for t in times]
            out.append(
                build_rtcp(
                    TransportCcFeedback(
                        sender_ssrc=self.sender_ssrc,
                        media_ssrc=self.media_ssrc,
                        base_seq=seq,
                        reference_time=ref,
                        feedback_count=self._feedback_count,
                        arrival_us=tuple(times),
                    )
                )
            )
            self._feedback_count = (self._feedback_count + 1) % 256
            seq = cut
        self._window_start = end + 1
        # Keep recent arrivals for re-reporting late packets; forget older ones.
        horizon = end - MAX_REORDER_PACKETS
        for s in [s for s in arrivals if s < horizon]:
            del arrivals[s]
        return out
