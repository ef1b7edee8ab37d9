"""mm-loss: independent random loss with a seed, so that an emulated session can be replayed.

mahimahi's ``IIDLoss`` (src/frontend/loss_queue.cc/.hh) drops each packet with a
``std::bernoulli_distribution(loss_rate)``, seeded from ``std::random_device`` and therefore
never the same twice. Here the draws come from numpy's PCG64 with a caller-given seed, turned
into lost/kept flags a block at a time so that a packet costs one ``next()``;
:meth:`Loss.send` and :meth:`Loss.send_batch` read the same stream of flags, so mixing them does
not change which packets are lost.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice

import numpy as np

#: What :meth:`Loss.send` returns for a lost packet (the same sentinel as the link's drop).
LOST = -1
#: Draws fetched from the generator at a time.
DRAW_BLOCK = 4096


class Loss:
    """Drops each packet independently with probability ``loss_rate``; the rest pass unchanged."""

    __slots__ = ("_flags", "_rng", "loss_rate", "lost_packets")

    def __init__(self, loss_rate: float, seed: int) -> None:
        if not 0.0 <= loss_rate <= 1.0:
            raise ValueError(f"Loss: loss_rate must be in [0, 1], got {loss_rate}")
        self.loss_rate = float(loss_rate)
        self._rng = np.random.default_rng(seed)
        self._flags: Iterator[bool] = iter(())
        self.lost_packets = 0

    def send(self, arrival_ms: int, size_bytes: int) -> int:
        """``arrival_ms`` if the packet survives, :data:`LOST` if not."""
        lost = next(self._flags, None)
        if lost is None:
            self._refill()
            lost = next(self._flags)
        if lost:
            self.lost_packets += 1
            return LOST
        return arrival_ms

    def send_batch(self, arrival_ms: np.ndarray, size_bytes: np.ndarray) -> np.ndarray:
        """:meth:`send` for an array of packets, consuming the same flags in the same order."""
        out = np.array(arrival_ms, dtype=np.int64)
        flags = list(islice(self._flags, out.size))
        while len(flags) < out.size:
            self._refill()
            flags.extend(islice(self._flags, out.size - len(flags)))
        lost = np.array(flags, dtype=bool)
        out[lost] = LOST
        self.lost_packets += int(np.count_nonzero(lost))
        return out

    def _refill(self) -> None:
        # std::bernoulli_distribution(p) is true with probability p: u < p, u uniform in [0, 1).
        self._flags = iter((self._rng.random(DRAW_BLOCK) < self.loss_rate).tolist())
