"""The sender's pacer: spreads packets at a multiple of the target rate, retransmissions first.

Adapted from libwebrtc's ``PacingController`` in spirit (``modules/pacing/``): the pacing rate
is 2.5x the target (``kDefaultPaceMultiplier``), retransmissions jump ahead of new media
(``RtpPacketMediaType`` priority), the rate is raised when the queue would take longer than
2 s to drain (``kMaxExpectedQueueLength``), and probe clusters are sent as padding at their own
rate. Instead of a 5 ms process loop the pacer computes each packet's send time exactly, so the
emulator needs one event per packet at most and never ticks.

A queued packet is a tuple ``(ip_size_bytes, rtp_seq, frame_id, probe_cluster_id)``;
``rtp_seq`` is -1 for padding.
"""

from __future__ import annotations

from collections import deque

from loki.api import NO_PROBE, ProbeCluster

PACE_MULTIPLIER = 2.5
MAX_EXPECTED_QUEUE_US = 2_000_000
#: A pacer may catch up at most this much "debt" at once (libwebrtc's 5 ms burst budget).
MAX_BURST_US = 5_000
PROBE_PACKET_IP_BYTES = 1_258

Queued = tuple[int, int, int, int]


class Pacer:
    """Decides when each queued packet leaves the sender."""

    __slots__ = (
        "_media",
        "_next_send_us",
        "_probe_bytes_left",
        "_probe_id",
        "_probe_next_us",
        "_probe_packets_left",
        "_probe_rate_bps",
        "_probes",
        "_queue_bytes",
        "_rtx",
        "pacing_rate_bps",
    )

    def __init__(self, pacing_rate_bps: float) -> None:
        self._media: deque[Queued] = deque()
        self._rtx: deque[Queued] = deque()
        self._queue_bytes = 0
        self._next_send_us = 0.0
        self.pacing_rate_bps = float(pacing_rate_bps)
        self._probes: deque[ProbeCluster] = deque()
        self._probe_id = NO_PROBE
        self._probe_packets_left = 0
        self._probe_bytes_left = 0
        self._probe_rate_bps = 0.0
        self._probe_next_us = 0.0

    def set_target(self, target_bps: int) -> None:
        self.pacing_rate_bps = PACE_MULTIPLIER * target_bps

    @property
    def queue_bytes(self) -> int:
        return self._queue_bytes

    @property
    def queue_packets(self) -> int:
        return len(self._media) + len(self._rtx)

    def enqueue(self, packet: Queued, now_us: int) -> None:
        if not self._media and not self._rtx and self._next_send_us < now_us - MAX_BURST_US:
            self._next_send_us = now_us - MAX_BURST_US
        self._media.append(packet)
        self._queue_bytes += packet[0]

    def enqueue_retransmission(self, packet: Queued, now_us: int) -> None:
        if not self._media and not self._rtx and self._next_send_us < now_us - MAX_BURST_US:
            self._next_send_us = now_us - MAX_BURST_US
        self._rtx.append(packet)
        self._queue_bytes += packet[0]

    def add_probe_cluster(self, cluster: ProbeCluster) -> None:
        self._probes.append(cluster)

    def next_send_us(self, now_us: int) -> float | None:
        """When the pacer next wants to send, or None when it has nothing to send."""
        t = None
        if self._media or self._rtx:
            t = max(self._next_send_us, now_us)
        if self._probe_packets_left > 0 or self._probe_bytes_left > 0 or self._probes:
            tp = max(self._probe_next_us, now_us)
            if self._probe_packets_left <= 0 and self._probe_bytes_left <= 0:
                tp = max(self._probes[0].at_us, now_us)
            t = tp if t is None else min(t, tp)
        return t

    def pop_due(self, now_us: int) -> Queued | None:
        """Take the next packet if it may leave at ``now_us``; probes first, then rtx, media."""
        if (self._probe_packets_left > 0 or self._probe_bytes_left > 0) or (
            self._probes and self._probes[0].at_us <= now_us
        ):
            if self._probe_packets_left <= 0 and self._probe_bytes_left <= 0:
                c = self._probes.popleft()
                self._probe_id = c.id
                self._probe_packets_left = c.min_probes
                self._probe_bytes_left = c.min_bytes
                self._probe_rate_bps = float(c.target_bps)
                self._probe_next_us = float(now_us)
            if self._probe_next_us <= now_us:
                self._probe_packets_left -= 1
                self._probe_bytes_left -= PROBE_PACKET_IP_BYTES
                self._probe_next_us += PROBE_PACKET_IP_BYTES * 8e6 / self._probe_rate_bps
                return (PROBE_PACKET_IP_BYTES, -1, -1, self._probe_id)
        if self._next_send_us > now_us:
            return None
        if self._rtx:
            pkt = self._rtx.popleft()
        elif self._media:
            pkt = self._media.popleft()
        else:
            return None
        size = pkt[0]
        self._queue_bytes -= size
        rate = self.pacing_rate_bps
        # Drain a long queue within MAX_EXPECTED_QUEUE_US, as libwebrtc does.
        drain_rate = self._queue_bytes * 8e6 / MAX_EXPECTED_QUEUE_US
        if drain_rate > rate:
            rate = drain_rate
        self._next_send_us += size * 8e6 / rate
        return pkt
