"""mm-delay: a fixed one-way delay in whole milliseconds.

mahimahi's ``DelayQueue::read_packet`` (src/frontend/delay_queue.cc) stamps each packet with
``timestamp() + delay_ms`` and ``write_packets`` releases it once the ms clock reaches that
stamp. With whole-ms arrival times that is exactly ``arrival_ms + delay_ms``; the queue is FIFO
and has no rate limit, so packets never wait on each other. ``mm-delay D`` puts one such stage in
each direction.
"""

from __future__ import annotations

import numpy as np


class Delay:
    """Adds ``delay_ms`` to every packet; drops nothing."""

    __slots__ = ("delay_ms",)

    def __init__(self, delay_ms: int) -> None:
        if int(delay_ms) != delay_ms or delay_ms < 0:
            raise ValueError(f"Delay: delay_ms must be a whole number >= 0, got {delay_ms}")
        self.delay_ms = int(delay_ms)

    def send(self, arrival_ms: int, size_bytes: int) -> int:
        """Exit ms of a packet that enters at ``arrival_ms`` (its size does not matter)."""
        return arrival_ms + self.delay_ms

    def send_batch(self, arrival_ms: np.ndarray, size_bytes: np.ndarray) -> np.ndarray:
        """:meth:`send` for an array of packets."""
        return np.asarray(arrival_ms, dtype=np.int64) + self.delay_ms
