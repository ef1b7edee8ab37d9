"""mm-link: a trace-driven link with an infinite or drop-tail queue, one function call per packet.

mahimahi's ``LinkQueue`` (src/frontend/link_queue.cc) wakes on every delivery opportunity and
walks its queue. Service is FIFO and an arriving packet never changes what happens to the packets
ahead of it, so the time a packet leaves the link is already fixed when it arrives: this module
computes it at enqueue time from a small state (the next unused opportunity, the opportunity the
last packet finished in and the bytes it left over, and for drop-tail the service-start times of
the packets still waiting). No per-millisecond ticking, no per-opportunity events; the cost per
packet is a few dozen machine instructions whatever the trace rate: the state is an array and
:func:`link_send` is compiled (numba), shared by :class:`Link` and the emulator's send path.

The rules, each with the place in mahimahi it comes from:

* ``LinkQueue::read_packet`` calls ``rationalize(now)`` before it enqueues, and ``rationalize``
  spends every opportunity with time ``<= now``: a packet arriving at ms ``t`` is served only by
  opportunities at ``> t``, so it spends at least 1 ms in the link.
* ``rationalize`` gives each opportunity ``PACKET_SIZE = 1504`` bytes and moves
  ``min(bytes left in the opportunity, bytes left in the packet)`` at a time: small packets share
  an opportunity, a packet larger than what is left finishes in a later one.
* When the queue is empty the inner loop ``break``s and the opportunity's remaining bytes are
  gone: opportunities are wasted, never banked.
* The trace loops: ``use_a_delivery_opportunity`` adds ``schedule_.back()`` (the last timestamp)
  to the base time on wrap-around.
* Sizes: the TUN device is opened without ``IFF_NO_PI`` (src/util/netdevice.cc), so every packet
  mahimahi reads carries a 4-byte header (``DelayQueue::read_packet`` strips it with
  ``substr(4)``); the link charges that full size. Callers pass the IP size; the link adds
  :data:`TUN_HEADER_BYTES`. A 1500-byte IP packet fills one opportunity exactly.
* Drop-tail (src/packet/drop_tail_packet_queue.hh, dropping_packet_queue.cc): an arriving packet is
  accepted iff ``bytes_waiting + size <= bytes limit`` and ``packets_waiting + 1 <= packet
  limit``, sizes counted with the TUN header. "Waiting" means in ``packet_queue_``: the packet in
  transit (``packet_in_transit_``, already dequeued and partly sent) is *not* counted. A packet
  leaves ``packet_queue_`` at the first opportunity that sends any of its bytes, so here the
  occupancy at ms ``t`` is the number of accepted packets whose service starts after ``t``.

Time origin: ms 0 of the emulation is ms 0 of the trace (mahimahi's ``base_timestamp_`` is the
link's start). The queue is infinite unless a :class:`DropTail` is given, as in mahimahi; its
``drophead``, ``codel`` and ``pie`` queues are not reproduced.

Deliberate difference: mahimahi throws on a packet above 1504 bytes with header (the TUN MTU stops
that from happening); here a larger packet spans as many opportunities as it needs.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
from numba import njit

from loki.emu.compiled import entry_point
from traces.trace import BYTES_PER_OPPORTUNITY, Trace

#: mahimahi reads packets from a TUN device with the 4-byte packet-information header in front.
TUN_HEADER_BYTES = 4
#: What :meth:`Link.send` returns for a packet the queue dropped.
DROPPED = -1


@dataclass(frozen=True, slots=True)
class DropTail:
    """mahimahi's ``--uplink-queue=droptail --uplink-queue-args=packets=N|bytes=N``.

    A limit of 0 means "no limit of that kind", as in mahimahi's ``get_arg`` default; at least one
    must be set. ``limit_bytes`` counts each packet's IP size plus the 4-byte TUN header.
    """

    limit_packets: int = 0
    limit_bytes: int = 0

    def __post_init__(self) -> None:
        if self.limit_packets < 0 or self.limit_bytes < 0:
            raise ValueError("DropTail: limits must be >= 0")
        if self.limit_packets == 0 and self.limit_bytes == 0:
            raise ValueError("DropTail: needs a packet or a byte limit (mahimahi refuses too)")


def _lookup_tables(trace: Trace) -> tuple[np.ndarray, np.ndarray]:
    """The trace's opportunity times, and ``first_after[r]``: the index of the first
    opportunity later than ms ``r`` of a loop (``0 <= r < period``; always ``< n`` since
    ``ops[-1] == period``).

    The table (8 bytes per ms of trace) turns an idle link's catch-up into one lookup instead of
    a bisection. Building it costs tens of ms on a long trace, so it is kept while the trace
    lives and shared by every link on it (it is only read).
    """
    key = id(trace)
    cached = _TABLES.get(key)
    if cached is not None and cached[0]() is trace:
        return cached[1], cached[2]
    ops_ms = np.ascontiguousarray(trace.opportunities_ms, dtype=np.int64)
    first_after = np.searchsorted(ops_ms, np.arange(trace.period_ms), side="right")
    tables = (ops_ms, first_after.astype(np.int64))
    try:
        _TABLES[key] = (weakref.ref(trace), *tables)
    except TypeError:  # a trace type without weak references: build per link instead
        return tables
    weakref.finalize(trace, _TABLES.pop, key, None)
    return tables


_TABLES: dict[int, tuple[weakref.ref, np.ndarray, np.ndarray]] = {}

# A link's state: one int64 array, so that compiled code (the emulator's send path) and the
# Link methods share one implementation, :func:`link_send`.
_POS = 0  # next unused opportunity: index into the loop that starts at _BASE_MS
_BASE_MS = 1
_NEXT_MS = 2  # the time of that opportunity
_TAIL_MS = 3  # the opportunity the last accepted packet finished in
_TAIL_LEFT_BYTES = 4  # and the bytes it left unused
_LAST_ARRIVAL_MS = 5
_DROPPED = 6
_LIMIT_PACKETS = 7
_LIMIT_BYTES = 8
HAS_QUEUE = 9
# Drop-tail only: the accepted packets that may still be waiting, as a ring of service-start
# times and charged bytes (FIFO; start times are non-decreasing).
_WAIT_HEAD = 10
WAIT_COUNT = 11
_BYTES_WAITING = 12
_N_STATE = 13
#: :func:`link_send`'s answer for a packet sent before the previous one.
OUT_OF_ORDER = -2
#: :func:`link_send`'s answer when the drop-tail ring is full: grow it and call again.
NEED_ROOM = -4
_INITIAL_RING = 64


@njit(cache=True)
def link_send(
    st: np.ndarray,
    ops_ms: np.ndarray,
    first_after: np.ndarray,
    wait_start_ms: np.ndarray,
    wait_charge_bytes: np.ndarray,
    arrival_ms: int,
    size_bytes: int,
) -> int:
    """Enqueue an IP packet at ``arrival_ms``; the ms it leaves the link, or :data:`DROPPED`.

    Or :data:`OUT_OF_ORDER` (nothing changed), or :data:`NEED_ROOM` (the drop-tail ring is full;
    calling again after growing it gives the answer: what ran before is idempotent).
    """
    if arrival_ms < st[_LAST_ARRIVAL_MS]:
        return OUT_OF_ORDER
    st[_LAST_ARRIVAL_MS] = arrival_ms
    charge = size_bytes + TUN_HEADER_BYTES
    has_queue = st[HAS_QUEUE] != 0
    if has_queue:
        # Drop-tail's test against packet_queue_ as it stands after rationalize(arrival_ms):
        # a packet whose first byte went out at or before arrival_ms has left it.
        cap = wait_start_ms.shape[0]
        head = st[_WAIT_HEAD]
        count = st[WAIT_COUNT]
        while count and wait_start_ms[head] <= arrival_ms:
            st[_BYTES_WAITING] -= wait_charge_bytes[head]
            head += 1
            if head == cap:
                head = 0
            count -= 1
        st[_WAIT_HEAD] = head
        st[WAIT_COUNT] = count
        limit_packets = st[_LIMIT_PACKETS]
        limit_bytes = st[_LIMIT_BYTES]
        if (limit_packets and count >= limit_packets) or (
            limit_bytes and st[_BYTES_WAITING] + charge > limit_bytes
        ):
            st[_DROPPED] += 1
            return DROPPED
        if count == cap:
            return NEED_ROOM

    n_ops = ops_ms.shape[0]
    period_ms = ops_ms[n_ops - 1]
    tail_ms = st[_TAIL_MS]
    if tail_ms > arrival_ms and st[_TAIL_LEFT_BYTES]:
        # The previous packet finishes in an opportunity still in the future, so this one is
        # queued by then and takes the bytes that opportunity has left.
        start_ms = tail_ms
        left = st[_TAIL_LEFT_BYTES]
        if charge <= left:
            st[_TAIL_LEFT_BYTES] = left - charge
            if has_queue:
                _note_waiting(st, wait_start_ms, wait_charge_bytes, start_ms, charge)
            return tail_ms
        need = charge - left
    else:
        if st[_NEXT_MS] <= arrival_ms:
            # Idle link: every opportunity at or before arrival_ms met an empty queue.
            base_ms = st[_BASE_MS]
            rel_ms = arrival_ms - base_ms
            if rel_ms >= period_ms:
                base_ms += (rel_ms // period_ms) * period_ms
                rel_ms = rel_ms % period_ms
                st[_BASE_MS] = base_ms
            pos = first_after[rel_ms]
            st[_POS] = pos
            st[_NEXT_MS] = base_ms + ops_ms[pos]
        start_ms = st[_NEXT_MS]
        need = charge

    # Spend whole opportunities from the next unused one on the remaining `need` bytes.
    pos = st[_POS]
    if need <= BYTES_PER_OPPORTUNITY:
        exit_ms = st[_NEXT_MS]
        st[_TAIL_LEFT_BYTES] = BYTES_PER_OPPORTUNITY - need
    else:
        n_opps = -(-need // BYTES_PER_OPPORTUNITY)
        pos += n_opps - 1
        if pos >= n_ops:
            st[_BASE_MS] += (pos // n_ops) * period_ms
            pos = pos % n_ops
        exit_ms = st[_BASE_MS] + ops_ms[pos]
        st[_TAIL_LEFT_BYTES] = n_opps * BYTES_PER_OPPORTUNITY - need
    pos += 1
    if pos == n_ops:
        pos = 0
        st[_BASE_MS] += period_ms
    st[_POS] = pos
    st[_NEXT_MS] = st[_BASE_MS] + ops_ms[pos]
    st[_TAIL_MS] = exit_ms
    if has_queue:
        _note_waiting(st, wait_start_ms, wait_charge_bytes, start_ms, charge)
    return exit_ms


@njit(cache=True)
def _note_waiting(
    st: np.ndarray,
    wait_start_ms: np.ndarray,
    wait_charge_bytes: np.ndarray,
    start_ms: int,
    charge_bytes: int,
) -> None:
    """Drop-tail: remember an accepted packet until its first byte goes out at start_ms."""
    cap = wait_start_ms.shape[0]
    slot = st[_WAIT_HEAD] + st[WAIT_COUNT]
    if slot >= cap:
        slot -= cap
    wait_start_ms[slot] = start_ms
    wait_charge_bytes[slot] = charge_bytes
    st[WAIT_COUNT] += 1
    st[_BYTES_WAITING] += charge_bytes


@njit(cache=True)
def _link_send_batch(
    st: np.ndarray,
    ops_ms: np.ndarray,
    first_after: np.ndarray,
    wait_start_ms: np.ndarray,
    wait_charge_bytes: np.ndarray,
    arrival_ms: np.ndarray,
    size_bytes: np.ndarray,
    out: np.ndarray,
    start: int,
) -> int:
    """:func:`link_send` from packet ``start`` on; returns how many were done (stops early on
    :data:`NEED_ROOM` or :data:`OUT_OF_ORDER`, leaving that packet undone)."""
    for k in range(start, arrival_ms.shape[0]):
        exit_ms = link_send(
            st, ops_ms, first_after, wait_start_ms, wait_charge_bytes, arrival_ms[k], size_bytes[k]
        )
        if exit_ms < DROPPED:  # NEED_ROOM or OUT_OF_ORDER
            return k
        out[k] = exit_ms
    return arrival_ms.shape[0]


class Link:
    """One direction of ``mm-link TRACE`` whose time origin (ms 0) is the trace's ms 0.

    Call :meth:`send` (or :meth:`send_batch`) with non-decreasing arrival times; each call returns
    the whole millisecond at which the packet leaves the link, or :data:`DROPPED`.
    """

    __slots__ = (
        "_args",
        "_first_after",
        "_ops_ms",
        "_send",
        "_wait_charge",
        "_wait_start",
        "queue",
        "state",
        "trace",
    )

    def __init__(self, trace: Trace, queue: DropTail | None = None) -> None:
        self.trace = trace
        self.queue = queue
        self._ops_ms, self._first_after = _lookup_tables(trace)
        #: The link's state (see :func:`link_send`).
        self.state = st = np.zeros(_N_STATE, dtype=np.int64)
        # Next unused opportunity: index 0 of the loop that starts at 0.
        st[_NEXT_MS] = self._ops_ms[0]
        st[_TAIL_MS] = -1
        if queue is not None:
            st[HAS_QUEUE] = 1
            st[_LIMIT_PACKETS] = queue.limit_packets
            st[_LIMIT_BYTES] = queue.limit_bytes
        ring = _INITIAL_RING if queue is not None else 0
        self._wait_start = np.zeros(ring, dtype=np.int64)
        self._wait_charge = np.zeros(ring, dtype=np.int64)
        self._arrays_changed()
        # The compiled send for these argument types, resolved at the first send (see
        # loki.emu.compiled); growing the ring keeps the types.
        self._send = None

    def _arrays_changed(self) -> None:
        self._args = self.arrays()

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The arguments :func:`link_send` takes before the packet."""
        return self.state, self._ops_ms, self._first_after, self._wait_start, self._wait_charge

    def grow_ring(self) -> None:
        """Double the drop-tail ring (after :data:`NEED_ROOM`), keeping its FIFO order."""
        st = self.state
        cap = self._wait_start.shape[0]
        order = (st[_WAIT_HEAD] + np.arange(st[WAIT_COUNT])) % cap
        for name in ("_wait_start", "_wait_charge"):
            old = getattr(self, name)
            new = np.zeros(2 * cap, dtype=np.int64)
            new[: order.size] = old[order]
            setattr(self, name, new)
        st[_WAIT_HEAD] = 0
        self._arrays_changed()

    def send(self, arrival_ms: int, size_bytes: int) -> int:
        """Enqueue an IP packet at ``arrival_ms``; return the ms it leaves the link, or -1.

        ``size_bytes`` is the IP size (payload + RTP + 28 bytes of UDP/IP); the link charges it
        plus the 4-byte TUN header, as mahimahi does.
        """
        if self._send is None:
            self._send = entry_point(link_send, (*self._args, arrival_ms, size_bytes))
        while True:
            exit_ms = self._send(*self._args, arrival_ms, size_bytes)
            if exit_ms == NEED_ROOM:
                self.grow_ring()
                continue
            if exit_ms == OUT_OF_ORDER:
                raise ValueError(
                    f"Link.send: arrival {arrival_ms} ms before previous "
                    f"{int(self.state[_LAST_ARRIVAL_MS])} ms"
                )
            return int(exit_ms)

    def send_batch(self, arrival_ms: np.ndarray, size_bytes: np.ndarray) -> np.ndarray:
        """:meth:`send` for each packet in order; exit ms (int64), -1 where dropped."""
        arrivals = np.ascontiguousarray(arrival_ms, dtype=np.int64)
        sizes = np.ascontiguousarray(size_bytes, dtype=np.int64)
        out = np.empty(arrivals.shape[0], dtype=np.int64)
        done = 0
        while done < arrivals.shape[0]:
            done = _link_send_batch(*self.arrays(), arrivals, sizes, out, done)
            if done < arrivals.shape[0]:
                if arrivals[done] < self.state[_LAST_ARRIVAL_MS]:
                    raise ValueError(
                        f"Link.send: arrival {int(arrivals[done])} ms before previous "
                        f"{int(self.state[_LAST_ARRIVAL_MS])} ms"
                    )
                self.grow_ring()
        return out

    @property
    def dropped_packets(self) -> int:
        """Packets the drop-tail queue refused so far."""
        return int(self.state[_DROPPED])

    @property
    def busy_until_ms(self) -> int:
        """The ms the last accepted packet leaves: the backlog's end (for observers and tests)."""
        return int(self.state[_TAIL_MS])


def _warm_up() -> None:
    """Load the compiled code now (from numba's cache) rather than at the first packet: the first
    compiled call in a process takes about 0.15 s, a stall a live sender or relay must not
    have mid-session."""
    link = Link(Trace("warm-up", np.array([1, 2], dtype=np.int64)), DropTail(limit_packets=1))
    link.send(0, 100)


_warm_up()
