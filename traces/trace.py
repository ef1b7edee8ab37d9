"""The in-memory form of a mahimahi trace: delivery-opportunity times in whole milliseconds.

Every reader (mahimahi text, cooked throughput series, OpenNetLab JSON) and every generator
produces a :class:`Trace`; the emulator's link and the live relay consume only this.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: One delivery opportunity carries a 1500-byte IP packet plus mahimahi's 4-byte TUN header.
BYTES_PER_OPPORTUNITY = 1504


class TraceError(ValueError):
    """A trace that cannot be used; the message names the file and line where known."""


@dataclass(frozen=True)
class Trace:
    """Delivery opportunities (ms, non-decreasing) that loop with period ``period_ms``.

    ``period_ms`` is the last timestamp, as in mahimahi. Extra per-trace facts from richer
    formats (OpenNetLab loss and RTT) ride along in ``meta``.
    """

    name: str
    opportunities_ms: np.ndarray
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        ops = np.ascontiguousarray(self.opportunities_ms, dtype=np.int64)
        if ops.ndim != 1 or ops.size == 0:
            raise TraceError(f"{self.name}: a trace needs at least one delivery opportunity")
        if ops[0] < 0:
            raise TraceError(f"{self.name}: negative timestamp {int(ops[0])}")
        if ops.size > 1 and np.any(np.diff(ops) < 0):
            i = int(np.argmax(np.diff(ops) < 0)) + 1
            raise TraceError(f"{self.name}: timestamps decrease at entry {i + 1}")
        if ops[-1] <= 0:
            raise TraceError(f"{self.name}: last timestamp must be > 0 (it is the loop period)")
        ops.setflags(write=False)
        object.__setattr__(self, "opportunities_ms", ops)

    @property
    def period_ms(self) -> int:
        return int(self.opportunities_ms[-1])

    @property
    def mean_capacity_bps(self) -> float:
        """Mean capacity over one period, in bits per second of 1504-byte opportunities."""
        return self.opportunities_ms.size * BYTES_PER_OPPORTUNITY * 8 * 1000.0 / self.period_ms

    def capacity_bps(self, start_ms: int, end_ms: int) -> float:
        """Capacity offered in (start_ms, end_ms], following the loop."""
        if end_ms <= start_ms:
            return 0.0
        return (
            self.opportunities_between(start_ms, end_ms)
            * BYTES_PER_OPPORTUNITY
            * 8000.0
            / (end_ms - start_ms)
        )

    def opportunities_between(self, start_ms: int, end_ms: int) -> int:
        """Number of opportunities with start_ms < t <= end_ms on the looped time line.

        mahimahi's loop places opportunity k of loop j at ``j*period + ops[k]``; this counts
        them with the same convention the link uses.
        """
        return self._count_upto(end_ms) - self._count_upto(start_ms)

    def _count_upto(self, t_ms: int) -> int:
        """Opportunities at times <= t_ms on the looped time line (t >= 0)."""
        if t_ms < 0:
            return 0
        loops, rem = divmod(int(t_ms), self.period_ms)
        return loops * self.opportunities_ms.size + int(
            np.searchsorted(self.opportunities_ms, rem, side="right")
        )

    def capacity_series_bps(self, duration_ms: int, bin_ms: int = 1000) -> np.ndarray:
        """Capacity per ``bin_ms`` bin over ``duration_ms`` (for plots and utilisation)."""
        edges = np.arange(0, duration_ms + bin_ms, bin_ms)
        counts = np.array([self._count_upto(int(e)) for e in edges])
        return np.diff(counts) * BYTES_PER_OPPORTUNITY * 8000.0 / bin_ms
