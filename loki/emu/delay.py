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


def check_path_delay_steps(steps: tuple[tuple[int, int, int], ...]) -> None:
    """Refuse a window that is not ``0 <= start_ms < end_ms`` with ``extra_ms >= 0``."""
    for start, end, extra in steps:
        if not 0 <= start < end or extra < 0:
            raise ValueError(
                "path delay step needs 0 <= start_ms < end_ms and extra_ms >= 0, got "
                f"{(start, end, extra)}"
            )


class PathDelaySteps:
    """Extra one-way delay over windows of time: a path change (a handover, a re-route).

    ``steps``: ``(start_ms, end_ms, extra_ms)`` windows; a packet entering during one gets
    ``extra_ms`` more. Packets stay in FIFO order: when the delay comes back down, later
    packets wait behind the last delayed one instead of overtaking it (the receive side needs
    arrivals in time order, and a real path change drains what is in flight on the old path
    first). Placed after the link, so the step does not change what the link serves.
    """

    __slots__ = ("_last_exit_ms", "steps")

    def __init__(self, steps: tuple[tuple[int, int, int], ...]) -> None:
        check_path_delay_steps(steps)
        self.steps = tuple(steps)
        self._last_exit_ms = 0

    def extra_ms(self, arrival_ms: int) -> int:
        for start, end, extra in self.steps:
            if start <= arrival_ms < end:
                return extra
        return 0

    def send(self, arrival_ms: int, size_bytes: int) -> int:
        exit_ms = max(self._last_exit_ms, arrival_ms + self.extra_ms(arrival_ms))
        self._last_exit_ms = exit_ms
        return exit_ms

    def send_batch(self, arrival_ms: np.ndarray, size_bytes: np.ndarray) -> np.ndarray:
        return np.array([self.send(int(t), 0) for t in arrival_ms], dtype=np.int64)
