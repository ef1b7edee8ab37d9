"""mm-link: a trace-driven link with an infinite or drop-tail queue, one function call per packet.

mahimahi's ``LinkQueue`` (src/frontend/link_queue.cc) wakes on every delivery opportunity and
walks its queue. Service is FIFO and an arriving packet never changes what happens to the packets
ahead of it, so the time a packet leaves the link is already fixed when it arrives: this module
computes it at enqueue time from a small state (the next unused opportunity, the opportunity the
last packet finished in and the bytes it left over, and for drop-tail the service-start times of
the packets still waiting). No per-millisecond ticking, no per-opportunity events; the cost per
packet is a few dozen bytecodes whatever the trace rate.

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
from array import array
from collections import deque
from dataclasses import dataclass

import numpy as np

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


def _lookup_tables(trace: Trace) -> tuple[list[int], array]:
    """The trace as a list, and ``first_after[r]``: the index of the first opportunity later than
    ms ``r`` of a loop (``0 <= r < period``; always ``< n`` since ``ops[-1] == period``).

    A list because indexing one from Python is several times cheaper than a numpy array; the
    table (4 bytes per ms of trace) turns an idle link's catch-up into one lookup instead of a
    200 ns bisection. Building both costs tens of ms on a long trace, so they are kept while the
    trace lives and shared by every link on it (they are only read).
    """
    key = id(trace)
    cached = _TABLES.get(key)
    if cached is not None and cached[0]() is trace:
        return cached[1], cached[2]
    ops_ms = trace.opportunities_ms
    first_after = np.searchsorted(ops_ms, np.arange(trace.period_ms), side="right")
    tables = (ops_ms.tolist(), array("i", first_after.astype(np.intc).tobytes()))
    try:
        _TABLES[key] = (weakref.ref(trace), *tables)
    except TypeError:  # a trace type without weak references: build per link instead
        return tables
    weakref.finalize(trace, _TABLES.pop, key, None)
    return tables


_TABLES: dict[int, tuple[weakref.ref, list[int], array]] = {}


class Link:
    """One direction of ``mm-link TRACE`` whose time origin (ms 0) is the trace's ms 0.

    Call :meth:`send` (or :meth:`send_batch`) with non-decreasing arrival times; each call returns
    the whole millisecond at which the packet leaves the link, or :data:`DROPPED`.
    """

    __slots__ = (
        "_base_ms",
        "_bytes_waiting",
        "_first_after",
        "_last_arrival_ms",
        "_limit_bytes",
        "_limit_packets",
        "_n_ops",
        "_next_ms",
        "_ops_ms",
        "_period_ms",
        "_pos",
        "_tail_left_bytes",
        "_tail_ms",
        "_waiting_charge_bytes",
        "_waiting_start_ms",
        "dropped_packets",
        "queue",
        "trace",
    )

    def __init__(self, trace: Trace, queue: DropTail | None = None) -> None:
        self.trace = trace
        self.queue = queue
        self._ops_ms, self._first_after = _lookup_tables(trace)
        self._n_ops = len(self._ops_ms)
        self._period_ms = trace.period_ms
        # Next unused opportunity: index _pos of the loop that starts at _base_ms.
        self._pos = 0
        self._base_ms = 0
        self._next_ms = self._ops_ms[0]
        # The opportunity the last accepted packet finished in, and the bytes it left unused.
        self._tail_ms = -1
        self._tail_left_bytes = 0
        self._last_arrival_ms = 0
        self.dropped_packets = 0
        self._limit_packets = queue.limit_packets if queue is not None else 0
        self._limit_bytes = queue.limit_bytes if queue is not None else 0
        # Drop-tail only: service-start ms and charged bytes of the accepted packets that may
        # still be waiting, in FIFO order (start times are non-decreasing).
        self._waiting_start_ms: deque[int] | None = deque() if queue is not None else None
        self._waiting_charge_bytes: deque[int] | None = deque() if self._limit_bytes else None
        self._bytes_waiting = 0

    def send(self, arrival_ms: int, size_bytes: int) -> int:
        """Enqueue an IP packet at ``arrival_ms``; return the ms it leaves the link, or -1.

        ``size_bytes`` is the IP size (payload + RTP + 28 bytes of UDP/IP); the link charges it
        plus the 4-byte TUN header, as mahimahi does.
        """
        if arrival_ms < self._last_arrival_ms:
            raise ValueError(
                f"Link.send: arrival {arrival_ms} ms before previous {self._last_arrival_ms} ms"
            )
        self._last_arrival_ms = arrival_ms
        charge = size_bytes + TUN_HEADER_BYTES
        waiting = self._waiting_start_ms
        if waiting is not None:
            # Drop-tail's test against packet_queue_ as it stands after rationalize(arrival_ms):
            # a packet whose first byte went out at or before arrival_ms has left it.
            charges = self._waiting_charge_bytes
            while waiting and waiting[0] <= arrival_ms:
                waiting.popleft()
                if charges is not None:
                    self._bytes_waiting -= charges.popleft()
            if (self._limit_packets and len(waiting) >= self._limit_packets) or (
                self._limit_bytes and self._bytes_waiting + charge > self._limit_bytes
            ):
                self.dropped_packets += 1
                return DROPPED

        tail_ms = self._tail_ms
        if tail_ms > arrival_ms and self._tail_left_bytes:
            # The previous packet finishes in an opportunity still in the future, so this one is
            # queued by then and takes the bytes that opportunity has left.
            start_ms = tail_ms
            left = self._tail_left_bytes
            if charge <= left:
                self._tail_left_bytes = left - charge
                if waiting is not None:
                    self._note_waiting(start_ms, charge)
                return tail_ms
            need = charge - left
        else:
            if self._next_ms <= arrival_ms:
                # Idle link: every opportunity at or before arrival_ms met an empty queue.
                base_ms = self._base_ms
                rel_ms = arrival_ms - base_ms
                if rel_ms >= self._period_ms:
                    loops, rel_ms = divmod(rel_ms, self._period_ms)
                    base_ms += loops * self._period_ms
                    self._base_ms = base_ms
                pos = self._first_after[rel_ms]
                self._pos = pos
                self._next_ms = base_ms + self._ops_ms[pos]
            start_ms = self._next_ms
            need = charge

        # Spend whole opportunities from the next unused one on the remaining `need` bytes.
        ops = self._ops_ms
        pos = self._pos
        if need <= BYTES_PER_OPPORTUNITY:
            exit_ms = self._next_ms
            self._tail_left_bytes = BYTES_PER_OPPORTUNITY - need
        else:
            n_opps = -(-need // BYTES_PER_OPPORTUNITY)
            pos += n_opps - 1
            if pos >= self._n_ops:
                loops, pos = divmod(pos, self._n_ops)
                self._base_ms += loops * self._period_ms
            exit_ms = self._base_ms + ops[pos]
            self._tail_left_bytes = n_opps * BYTES_PER_OPPORTUNITY - need
        pos += 1
        if pos == self._n_ops:
            pos = 0
            self._base_ms += self._period_ms
        self._pos = pos
        self._next_ms = self._base_ms + ops[pos]
        self._tail_ms = exit_ms
        if waiting is not None:
            waiting.append(start_ms)
            if self._waiting_charge_bytes is not None:
                self._waiting_charge_bytes.append(charge)
                self._bytes_waiting += charge
        return exit_ms

    def _note_waiting(self, start_ms: int, charge_bytes: int) -> None:
        """Drop-tail: remember an accepted packet until its first byte goes out at start_ms."""
        self._waiting_start_ms.append(start_ms)
        if self._waiting_charge_bytes is not None:
            self._waiting_charge_bytes.append(charge_bytes)
            self._bytes_waiting += charge_bytes

    def send_batch(self, arrival_ms: np.ndarray, size_bytes: np.ndarray) -> np.ndarray:
        """:meth:`send` for each packet in order; exit ms (int64), -1 where dropped."""
        send = self.send
        return np.fromiter(
            map(send, np.asarray(arrival_ms).tolist(), np.asarray(size_bytes).tolist()),
            dtype=np.int64,
            count=len(arrival_ms),
        )

    @property
    def busy_until_ms(self) -> int:
        """The ms the last accepted packet leaves: the backlog's end (for observers and tests)."""
        return self._tail_ms
