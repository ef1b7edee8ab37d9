"""Which RTP packets to NACK, and when to give up: libwebrtc's ``NackRequester``, simplified.

A gap in sequence numbers is NACKed at once; each missing packet is NACKed again once per RTT
(100 ms until an RTT is known) up to :data:`MAX_NACK_RETRIES` times. A packet that exhausts its
retries, or a NACK list longer than :data:`MAX_NACK_PACKETS`, means recovery has failed and the
caller should ask for a keyframe. A decoded keyframe clears older entries (``ClearUpTo``).
Sequence numbers are unwrapped (monotonic) integers.
"""

from __future__ import annotations

import numpy as np
from numba import njit

MAX_NACK_RETRIES = 10
DEFAULT_RTT_US = 100_000
MAX_NACK_PACKETS = 1_000

# State, in one int64 array so that compiled code (the emulator's receiver) and the class below
# share one implementation; the missing packets are a (3, capacity) array whose first COUNT
# columns are (seq, last NACK us, retries), in ascending seq order. Packets only go missing
# above the highest seq seen, so that is also the order a dict would keep them in.
HIGHEST = 0
COUNT = 1
RTT_US = 2
N_STATE = 3
_SEQ = 0
_LAST_NACK_US = 1
_RETRIES = 2
_INITIAL_CAPACITY = 16


def new_nack_state() -> tuple[np.ndarray, np.ndarray]:
    """State and missing-packet table of a requester that has seen nothing."""
    st = np.zeros(N_STATE, dtype=np.int64)
    st[HIGHEST] = -1
    st[RTT_US] = DEFAULT_RTT_US
    return st, np.zeros((3, _INITIAL_CAPACITY), dtype=np.int64)


@njit(cache=True)
def nack_room(missing: np.ndarray, count: int, needed: int) -> np.ndarray:
    """``missing`` if it has room for ``needed`` entries, else a larger copy of it."""
    cap = missing.shape[1]
    if needed <= cap:
        return missing
    while cap < needed:
        cap *= 2
    grown = np.zeros((3, cap), dtype=np.int64)
    grown[:, :count] = missing[:, :count]
    return grown


@njit(cache=True)
def nack_on_packet(st: np.ndarray, missing: np.ndarray, seq: int, now_us: int) -> bool:
    """Record an arriving packet; the seqs it newly reveals missing are ``[old highest + 1,
    seq)`` (the caller reads the highest first and makes room: :func:`nack_room`).

    Returns False for a duplicate (or a packet recovery had already given up on).
    """
    hi = st[HIGHEST]
    if seq > hi:
        count = st[COUNT]
        for s in range(hi + 1, seq):
            missing[_SEQ, count] = s
            missing[_LAST_NACK_US, count] = now_us
            missing[_RETRIES, count] = 0
            count += 1
        st[COUNT] = count
        st[HIGHEST] = seq
        return True
    count = st[COUNT]
    k = np.searchsorted(missing[_SEQ, :count], seq)
    if k == count or missing[_SEQ, k] != seq:
        return False
    for j in range(k + 1, count):
        missing[:, j - 1] = missing[:, j]
    st[COUNT] = count - 1
    return True


@njit(cache=True)
def nack_retries_due(
    st: np.ndarray, missing: np.ndarray, now_us: int, due: np.ndarray, due_start: int
) -> tuple[int, bool]:
    """NACKs due again now, written to ``due`` from ``due_start`` (room for every missing
    packet needed), and whether recovery gave up on some packet."""
    count = st[COUNT]
    gave_up = count > MAX_NACK_PACKETS
    if gave_up:
        count = 0
    wait = st[RTT_US]
    n_due = 0
    kept = 0
    for j in range(count):
        if now_us - missing[_LAST_NACK_US, j] >= wait:
            if missing[_RETRIES, j] >= MAX_NACK_RETRIES:
                gave_up = True
                continue
            missing[_LAST_NACK_US, j] = now_us
            missing[_RETRIES, j] += 1
            due[due_start + n_due] = missing[_SEQ, j]
            n_due += 1
        if kept != j:
            missing[:, kept] = missing[:, j]
        kept += 1
    st[COUNT] = kept
    return n_due, gave_up


@njit(cache=True)
def nack_clear_up_to(st: np.ndarray, missing: np.ndarray, seq: int) -> None:
    """Forget missing packets older than ``seq`` (a keyframe starting at ``seq`` decoded)."""
    count = st[COUNT]
    k = np.searchsorted(missing[_SEQ, :count], seq)
    if k:
        for j in range(k, count):
            missing[:, j - k] = missing[:, j]
        st[COUNT] = count - k


class NackRequester:
    __slots__ = ("missing", "state")

    def __init__(self) -> None:
        self.state, self.missing = new_nack_state()

    def reserve(self, needed: int) -> None:
        """Room in the missing-packet table for ``needed`` entries."""
        self.missing = nack_room(self.missing, self.state[COUNT], needed)

    @property
    def rtt_us(self) -> int:
        return int(self.state[RTT_US])

    @rtt_us.setter
    def rtt_us(self, value: int) -> None:
        self.state[RTT_US] = value

    def on_packet(self, seq: int, now_us: int, nacks: list[int]) -> bool:
        """Record an arriving packet; append newly missing seqs to ``nacks``.

        Returns False for a duplicate (or a packet recovery had already given up on).
        """
        st = self.state
        hi = int(st[HIGHEST])
        if seq > hi + 1:
            self.reserve(int(st[COUNT]) + seq - hi - 1)
        if not nack_on_packet(st, self.missing, seq, now_us):
            return False
        if seq > hi + 1:
            nacks.extend(range(hi + 1, seq))
        return True

    def retries_due(self, now_us: int) -> tuple[list[int], bool]:
        """NACKs due again now, and whether recovery gave up on some packet."""
        due = np.empty(self.state[COUNT], dtype=np.int64)
        n_due, gave_up = nack_retries_due(self.state, self.missing, now_us, due, 0)
        return due[:n_due].tolist(), bool(gave_up)

    def clear_up_to(self, seq: int) -> None:
        """Forget missing packets older than ``seq`` (a keyframe starting at ``seq`` decoded)."""
        nack_clear_up_to(self.state, self.missing, seq)

    @property
    def highest_seq(self) -> int:
        return int(self.state[HIGHEST])

    def __len__(self) -> int:
        return int(self.state[COUNT])


def _warm_up() -> None:
    """Load the compiled code now (from numba's cache) rather than at the first packet: the first
    compiled call in a process takes about 0.15 s, a stall a live sender or relay must not
    have mid-session."""
    nack = NackRequester()
    nack.on_packet(0, 0, [])
    nack.on_packet(3, 0, [])
    nack.on_packet(1, 0, [])
    nack.retries_due(10**9)
    nack.clear_up_to(3)


_warm_up()
