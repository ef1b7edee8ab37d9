"""The sender's pacer: spreads packets at a multiple of the target rate, retransmissions first.

Adapted from libwebrtc's ``PacingController`` in spirit (``modules/pacing/``): the pacing rate
is 2.5x the target (``kDefaultPaceMultiplier``), retransmissions jump ahead of new media
(``RtpPacketMediaType`` priority), the rate is raised when the queue would take longer than
2 s to drain (``kMaxExpectedQueueLength``), and probe clusters are sent as padding at their own
rate. Instead of a 5 ms process loop the pacer computes each packet's send time exactly, so the
emulator needs one event per packet at most and never ticks.

A queued packet is a tuple ``(ip_size_bytes, rtp_seq, frame_id, probe_cluster_id)`` of ints;
``rtp_seq`` is -1 for padding.

The state lives in arrays (scalars, two FIFO rings of packets, a ring of probe clusters) and the
decisions are compiled functions on them (:func:`pacer_pop_due`, :func:`pacer_next_send_us`,
:func:`pacer_enqueue`): the emulator's compiled event loop calls those directly, and
:class:`Pacer` (used by the live sender) wraps the same functions, so both pace alike.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from loki.api import NO_PROBE, ProbeCluster

PACE_MULTIPLIER = 2.5
MAX_EXPECTED_QUEUE_US = 2_000_000
#: A pacer may catch up at most this much "debt" at once (libwebrtc's 5 ms burst budget).
MAX_BURST_US = 5_000
PROBE_PACKET_IP_BYTES = 1_258

Queued = tuple[int, int, int, int]

# Integer state.
QUEUE_BYTES = 0
PROBE_ID = 1
PROBE_PACKETS_LEFT = 2
PROBE_BYTES_LEFT = 3
MEDIA_HEAD = 4
MEDIA_COUNT = 5
RTX_HEAD = 6
RTX_COUNT = 7
PROBES_HEAD = 8
PROBES_COUNT = 9
N_INTS = 10
# Float state.
NEXT_SEND_US = 0
PACING_RATE_BPS = 1
PROBE_RATE_BPS = 2
PROBE_NEXT_US = 3
N_FLOATS = 4
#: Columns of a queued packet (a ``Queued`` tuple) in a ring.
PACKET_COLUMNS = 4
#: Columns of a probe cluster in its ring: id, at_us, target_bps, min_probes, min_bytes.
PROBE_COLUMNS = 5
#: :func:`pacer_next_send_us` when the pacer has nothing to send.
NOTHING_TO_SEND = -1.0
_INITIAL_RING = 64


@njit(cache=True)
def pacer_next_send_us(pi: np.ndarray, pf: np.ndarray, probes: np.ndarray, now_us: int) -> float:
    """When the pacer next wants to send, or :data:`NOTHING_TO_SEND`."""
    t = NOTHING_TO_SEND
    if pi[MEDIA_COUNT] or pi[RTX_COUNT]:
        t = max(pf[NEXT_SEND_US], float(now_us))
    probing = pi[PROBE_PACKETS_LEFT] > 0 or pi[PROBE_BYTES_LEFT] > 0
    if probing or pi[PROBES_COUNT]:
        if probing:
            tp = max(pf[PROBE_NEXT_US], float(now_us))
        else:
            tp = max(float(probes[pi[PROBES_HEAD], 1]), float(now_us))
        if t == NOTHING_TO_SEND or tp < t:
            t = tp
    return t


@njit(cache=True)
def pacer_pop_due(
    pi: np.ndarray,
    pf: np.ndarray,
    media: np.ndarray,
    rtx: np.ndarray,
    probes: np.ndarray,
    now_us: int,
) -> tuple[int, int, int, int]:
    """Take the next packet if it may leave at ``now_us``; probes first, then rtx, media.

    Returns the packet's columns, or a size of -1 when nothing may leave.
    """
    if (pi[PROBE_PACKETS_LEFT] > 0 or pi[PROBE_BYTES_LEFT] > 0) or (
        pi[PROBES_COUNT] and probes[pi[PROBES_HEAD], 1] <= now_us
    ):
        if pi[PROBE_PACKETS_LEFT] <= 0 and pi[PROBE_BYTES_LEFT] <= 0:
            head = pi[PROBES_HEAD]
            pi[PROBE_ID] = probes[head, 0]
            pi[PROBE_PACKETS_LEFT] = probes[head, 3]
            pi[PROBE_BYTES_LEFT] = probes[head, 4]
            pf[PROBE_RATE_BPS] = float(probes[head, 2])
            pf[PROBE_NEXT_US] = float(now_us)
            head += 1
            pi[PROBES_HEAD] = 0 if head == probes.shape[0] else head
            pi[PROBES_COUNT] -= 1
        if pf[PROBE_NEXT_US] <= now_us:
            pi[PROBE_PACKETS_LEFT] -= 1
            pi[PROBE_BYTES_LEFT] -= PROBE_PACKET_IP_BYTES
            pf[PROBE_NEXT_US] += PROBE_PACKET_IP_BYTES * 8e6 / pf[PROBE_RATE_BPS]
            return PROBE_PACKET_IP_BYTES, -1, -1, pi[PROBE_ID]
    if pf[NEXT_SEND_US] > now_us:
        return -1, -1, -1, NO_PROBE
    if pi[RTX_COUNT]:
        ring = rtx
        head_at = RTX_HEAD
    elif pi[MEDIA_COUNT]:
        ring = media
        head_at = MEDIA_HEAD
    else:
        return -1, -1, -1, NO_PROBE
    head = pi[head_at]
    size = ring[head, 0]
    pkt = (size, ring[head, 1], ring[head, 2], ring[head, 3])
    head += 1
    pi[head_at] = 0 if head == ring.shape[0] else head
    pi[head_at + 1] -= 1
    pi[QUEUE_BYTES] -= size
    rate = pf[PACING_RATE_BPS]
    # Drain a long queue within MAX_EXPECTED_QUEUE_US, as libwebrtc does.
    drain_rate = pi[QUEUE_BYTES] * 8e6 / MAX_EXPECTED_QUEUE_US
    if drain_rate > rate:
        rate = drain_rate
    pf[NEXT_SEND_US] += size * 8e6 / rate
    return pkt


@njit(cache=True)
def pacer_enqueue(
    pi: np.ndarray,
    pf: np.ndarray,
    ring: np.ndarray,
    head_at: int,
    size_bytes: int,
    rtp_seq: int,
    frame_id: int,
    probe_id: int,
    now_us: int,
) -> bool:
    """Queue a packet in ``ring`` (media or rtx; ``head_at`` its head's index in ``pi``).

    False, with nothing changed, when the ring is full: grow it and call again.
    """
    count = pi[head_at + 1]
    cap = ring.shape[0]
    if count == cap:
        return False
    if not pi[MEDIA_COUNT] and not pi[RTX_COUNT] and pf[NEXT_SEND_US] < now_us - MAX_BURST_US:
        pf[NEXT_SEND_US] = now_us - MAX_BURST_US
    slot = pi[head_at] + count
    if slot >= cap:
        slot -= cap
    ring[slot, 0] = size_bytes
    ring[slot, 1] = rtp_seq
    ring[slot, 2] = frame_id
    ring[slot, 3] = probe_id
    pi[head_at + 1] = count + 1
    pi[QUEUE_BYTES] += size_bytes
    return True


@njit(cache=True)
def pacer_add_probe_cluster(
    pi: np.ndarray,
    probes: np.ndarray,
    cluster_id: int,
    at_us: int,
    target_bps: int,
    min_probes: int,
    min_bytes: int,
) -> bool:
    """Queue a probe cluster; False, with nothing changed, when the ring is full."""
    count = pi[PROBES_COUNT]
    cap = probes.shape[0]
    if count == cap:
        return False
    slot = pi[PROBES_HEAD] + count
    if slot >= cap:
        slot -= cap
    probes[slot, 0] = cluster_id
    probes[slot, 1] = at_us
    probes[slot, 2] = target_bps
    probes[slot, 3] = min_probes
    probes[slot, 4] = min_bytes
    pi[PROBES_COUNT] = count + 1
    return True


def grown_ring(ring: np.ndarray, head: int, count: int) -> np.ndarray:
    """A ring of twice the capacity holding the same entries in order, from row 0."""
    cap = ring.shape[0]
    order = (head + np.arange(count)) % cap if cap else np.zeros(0, dtype=np.int64)
    new = np.zeros((max(2 * cap, _INITIAL_RING), ring.shape[1]), dtype=np.int64)
    new[:count] = ring[order]
    return new


def new_pacer_state(pacing_rate_bps: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer and float state of an empty pacer."""
    pi = np.zeros(N_INTS, dtype=np.int64)
    pi[PROBE_ID] = NO_PROBE
    pf = np.zeros(N_FLOATS)
    pf[PACING_RATE_BPS] = float(pacing_rate_bps)
    return pi, pf


class Pacer:
    """Decides when each queued packet leaves the sender."""

    __slots__ = ("floats", "generation", "ints", "media", "probes", "rtx")

    def __init__(self, pacing_rate_bps: float) -> None:
        self.ints, self.floats = new_pacer_state(pacing_rate_bps)
        #: Counts ring replacements (a ring grows by being replaced), for callers that keep
        #: references to the arrays.
        self.generation = 0
        self.media = np.zeros((_INITIAL_RING, PACKET_COLUMNS), dtype=np.int64)
        self.rtx = np.zeros((_INITIAL_RING, PACKET_COLUMNS), dtype=np.int64)
        self.probes = np.zeros((_INITIAL_RING, PROBE_COLUMNS), dtype=np.int64)

    @property
    def pacing_rate_bps(self) -> float:
        return float(self.floats[PACING_RATE_BPS])

    def set_target(self, target_bps: int) -> None:
        self.floats[PACING_RATE_BPS] = PACE_MULTIPLIER * target_bps

    @property
    def queue_bytes(self) -> int:
        return int(self.ints[QUEUE_BYTES])

    @property
    def queue_packets(self) -> int:
        return int(self.ints[MEDIA_COUNT] + self.ints[RTX_COUNT])

    def enqueue(self, packet: Queued, now_us: int) -> None:
        self._enqueue("media", MEDIA_HEAD, packet, now_us)

    def enqueue_many(self, packets: list[Queued], total_bytes: int, now_us: int) -> None:
        """:meth:`enqueue` for a frame's packets at once; ``total_bytes`` is their sum."""
        for packet in packets:
            self._enqueue("media", MEDIA_HEAD, packet, now_us)

    def reserve_media(self, n: int) -> None:
        """Room in the media ring for ``n`` more packets (before compiled code queues them)."""
        while self.ints[MEDIA_COUNT] + n > self.media.shape[0]:
            self._grow("media", MEDIA_HEAD)

    def enqueue_retransmission(self, packet: Queued, now_us: int) -> None:
        self._enqueue("rtx", RTX_HEAD, packet, now_us)

    def _enqueue(self, name: str, head_at: int, packet: Queued, now_us: int) -> None:
        size, rtp_seq, frame_id, probe_id = packet
        while not pacer_enqueue(
            self.ints,
            self.floats,
            getattr(self, name),
            head_at,
            size,
            rtp_seq,
            frame_id,
            probe_id,
            now_us,
        ):
            self._grow(name, head_at)

    def _grow(self, name: str, head_at: int) -> None:
        """Replace a ring by one twice as large (``head_at``: its head's index in ``ints``)."""
        setattr(
            self, name, grown_ring(getattr(self, name), self.ints[head_at], self.ints[head_at + 1])
        )
        self.ints[head_at] = 0
        self.generation += 1

    def add_probe_cluster(self, cluster: ProbeCluster) -> None:
        while not pacer_add_probe_cluster(
            self.ints,
            self.probes,
            cluster.id,
            cluster.at_us,
            cluster.target_bps,
            cluster.min_probes,
            cluster.min_bytes,
        ):
            self._grow("probes", PROBES_HEAD)

    def next_send_us(self, now_us: int) -> float | None:
        """When the pacer next wants to send, or None when it has nothing to send."""
        t = pacer_next_send_us(self.ints, self.floats, self.probes, now_us)
        return None if t == NOTHING_TO_SEND else t

    def pop_due(self, now_us: int) -> Queued | None:
        """Take the next packet if it may leave at ``now_us``; probes first, then rtx, media."""
        pkt = pacer_pop_due(self.ints, self.floats, self.media, self.rtx, self.probes, now_us)
        return None if pkt[0] < 0 else pkt


def _warm_up() -> None:
    """Load the compiled code now (from numba's cache) rather than at the first packet: the first
    compiled call in a process takes about 0.15 s, a stall a live sender or relay must not
    have mid-session."""
    pacer = Pacer(1_000_000)
    pacer.add_probe_cluster(ProbeCluster(0, 0, 1_000_000))
    pacer.enqueue((1_000, 0, 0, NO_PROBE), 0)
    pacer.enqueue_retransmission((1_000, 0, 0, NO_PROBE), 0)
    for now_us in range(0, 100_000, 10_000):
        pacer.pop_due(now_us)
        pacer.next_send_us(now_us)


_warm_up()
