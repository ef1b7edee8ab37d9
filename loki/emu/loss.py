"""mm-loss: independent random loss with a seed, so that an emulated session can be replayed.

mahimahi's ``IIDLoss`` (src/frontend/loss_queue.cc/.hh) drops each packet with a
``std::bernoulli_distribution(loss_rate)``, seeded from ``std::random_device`` and therefore
never the same twice. Here the draws come from numpy's PCG64 with a caller-given seed, turned
into lost/kept flags a block at a time; :meth:`Loss.send`, :meth:`Loss.send_batch` and the
emulator's compiled send path (:func:`loss_send`) read the same stream of flags, so mixing them
does not change which packets are lost.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from loki.emu.compiled import entry_point

#: What :meth:`Loss.send` returns for a lost packet (the same sentinel as the link's drop).
LOST = -1
#: Draws fetched from the generator at a time.
DRAW_BLOCK = 4096


# A loss stage's state: the position in the current block of draws and the packets lost.
POS = 0
_LOST = 1
#: :func:`loss_send`'s answer when the block of draws is used up: refill it and call again.
NEED_DRAWS = -5


@njit(cache=True)
def loss_send(st: np.ndarray, lost_flags: np.ndarray, arrival_ms: int) -> int:
    """``arrival_ms`` if the packet survives, :data:`LOST` if not, :data:`NEED_DRAWS` if the
    block of draws is used up (nothing changed)."""
    pos = st[POS]
    if pos >= lost_flags.shape[0]:
        return NEED_DRAWS
    st[POS] = pos + 1
    if lost_flags[pos]:
        st[_LOST] += 1
        return LOST
    return arrival_ms


@njit(cache=True)
def _loss_send_batch(
    st: np.ndarray, lost_flags: np.ndarray, arrival_ms: np.ndarray, out: np.ndarray, start: int
) -> int:
    for k in range(start, arrival_ms.shape[0]):
        t_ms = loss_send(st, lost_flags, arrival_ms[k])
        if t_ms == NEED_DRAWS:
            return k
        out[k] = t_ms
    return arrival_ms.shape[0]


class Loss:
    """Drops each packet independently with probability ``loss_rate``; the rest pass unchanged."""

    __slots__ = ("_rng", "_send", "loss_rate", "lost_flags", "state")

    def __init__(self, loss_rate: float, seed: int) -> None:
        if not 0.0 <= loss_rate <= 1.0:
            raise ValueError(f"Loss: loss_rate must be in [0, 1], got {loss_rate}")
        self.loss_rate = float(loss_rate)
        self._rng = np.random.default_rng(seed)
        #: The current block of draws (True: lost) and the state (see :func:`loss_send`).
        self.lost_flags = np.zeros(0, dtype=np.bool_)
        self.state = np.zeros(2, dtype=np.int64)
        self._send = None  # the compiled send, resolved at the next send (loki.emu.compiled)

    def send(self, arrival_ms: int, size_bytes: int) -> int:
        """``arrival_ms`` if the packet survives, :data:`LOST` if not."""
        if self._send is None:
            self._send = entry_point(loss_send, (self.state, self.lost_flags, arrival_ms))
        t_ms = self._send(self.state, self.lost_flags, arrival_ms)
        if t_ms == NEED_DRAWS:
            self.refill()
            t_ms = self._send(self.state, self.lost_flags, arrival_ms)
        return int(t_ms)

    def send_batch(self, arrival_ms: np.ndarray, size_bytes: np.ndarray) -> np.ndarray:
        """:meth:`send` for an array of packets, consuming the same flags in the same order."""
        arrivals = np.ascontiguousarray(arrival_ms, dtype=np.int64)
        out = np.empty(arrivals.shape[0], dtype=np.int64)
        done = 0
        while True:
            done = _loss_send_batch(self.state, self.lost_flags, arrivals, out, done)
            if done == arrivals.shape[0]:
                return out
            self.refill()

    def refill(self) -> None:
        """Draw the next block (after :data:`NEED_DRAWS`)."""
        # std::bernoulli_distribution(p) is true with probability p: u < p, u uniform in [0, 1).
        self.lost_flags = self._rng.random(DRAW_BLOCK) < self.loss_rate
        self.state[POS] = 0

    @property
    def lost_packets(self) -> int:
        return int(self.state[_LOST])


def _warm_up() -> None:
    """Load the compiled code now (from numba's cache) rather than at the first packet: the first
    compiled call in a process takes about 0.15 s, a stall a live sender or relay must not
    have mid-session."""
    Loss(0.5, 0).send(0, 100)


_warm_up()
