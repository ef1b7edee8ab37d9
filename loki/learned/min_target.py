"""The lowest target a learned controller asks for, held only while the path shows no queue.

Why (loki/LEARNING.md, session 12): the encoder cannot follow a target below its floor (libvpx
VP8 at 640x360: 374 kbps at its largest quantizer, measured); asked for a few tens of kbps it
drops frames, and after a keyframe made at its floor it can send nothing for seconds. Nothing
sent means no feedback, so nothing raises the target again: on the development set a quarter
of GCC's freeze time was such a *starved* spell on a link that could carry megabits. A fixed
minimum ends those spells, but on a link that carries less than the minimum it fills the
queue without end (150 kbps and a 300-packet queue: 13 s of p95 frame delay and a quarter of
the session frozen, against 1.5 s and 1 % without it). So the minimum holds only while the
latest report shows a mean queueing delay below ``queue_limit_ms`` (or no report has come for
:data:`STALE_US`: a silent path is the starved one); a path with a standing queue gets the
config's own minimum and the network cuts as it learned to.

The gate is state updated by events (reports and ticks), so every stage that reads the target
(the network's controller, the stall-risk layer above it) sees the same minimum at the same
time.
"""

from __future__ import annotations

#: No report for this long: the gate opens (the path is silent, not queued).
STALE_US = 1_000_000


class MinTarget:
    """``floor_bps`` while the path shows no standing queue, ``base_bps`` otherwise."""

    __slots__ = ("_last_report_us", "_queued", "base_bps", "floor_bps", "queue_limit_100ms")

    def __init__(self, floor_bps: int, base_bps: int, queue_limit_ms: float) -> None:
        if not base_bps < floor_bps:
            raise ValueError(f"a minimum target needs floor {floor_bps} > base {base_bps} bps")
        if not queue_limit_ms > 0:
            raise ValueError(f"the minimum's queue limit must be > 0 ms, got {queue_limit_ms}")
        self.floor_bps = int(floor_bps)
        self.base_bps = int(base_bps)
        # The features' queueing delay is in 100 ms units.
        self.queue_limit_100ms = queue_limit_ms / 100.0
        self._last_report_us: int | None = None
        self._queued = False

    def on_report(self, at_us: int, queue_delay_100ms: float) -> None:
        """A report's mean queueing delay above the session's minimum (100 ms units)."""
        self._last_report_us = at_us
        # A NaN delay (nothing received) is no evidence of a queue.
        self._queued = queue_delay_100ms >= self.queue_limit_100ms

    def bps(self, at_us: int) -> int:
        """The minimum in force at ``at_us``."""
        last = self._last_report_us
        if self._queued and last is not None and at_us - last <= STALE_US:
            return self.base_bps
        return self.floor_bps
