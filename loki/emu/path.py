"""One direction of the emulated network: link stages composed in the order packets cross them.

The media direction reproduces ``mm-delay D mm-link UP DOWN [queue options] mm-loss uplink P --
sender``. Each mahimahi shell runs its command in a new network namespace and carries that
namespace's outgoing packets through its *uplink* queue (``PacketShell::start_uplink`` reads the
inner ``ingress`` TUN and writes ``egress``, src/packet/packetshell.cc). So a packet the sender
emits crosses the innermost shell first: **loss -> link -> delay**. That order matters:

* loss before the link: a lost packet never reaches the link, so it uses no capacity and takes
  no queue slot;
* the link before the delay: the link sees the packet at the sender's send time, so the trace is
  read at the time the packet is sent, not ``D`` ms later (on a varying trace the two differ).

The feedback direction (receiver -> sender) crosses the same shells outside-in: mm-delay's
downlink ``D``, then optional loss. It deliberately has **no rate limit**: the project emulates
the uplink of a push stream, and transport-wide feedback and RTCP are a few kbps, far below any
trace's capacity. What that leaves out is real mm-link's downlink wait: every feedback packet
would spend >= 1 ms in the link and wait for the next downlink opportunity (long in a cellular
trace's outages). A caller who wants it builds ``Path([Delay(D), Link(down_trace), ...])``.
Delay and i.i.d. loss commute, so the feedback order only fixes which draws the seed gives to
which packet.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from loki.emu.delay import Delay
from loki.emu.link import DROPPED, DropTail, Link
from loki.emu.loss import Loss
from traces.trace import Trace


class Stage(Protocol):
    """A packet stage: exit ms for an entry ms, or -1 for a packet that does not come out.

    Calls come in non-decreasing entry time; every stage keeps its output in entry order, so a
    chain of stages stays in time order.
    """

    def send(self, arrival_ms: int, size_bytes: int) -> int: ...

    def send_batch(self, arrival_ms: np.ndarray, size_bytes: np.ndarray) -> np.ndarray: ...


class Path:
    """Stages crossed in order; a packet lost at one stage goes no further.

    :attr:`send` is built once per path, for the emulator's hot path: trailing :class:`Delay`
    stages fold into one constant added at the end, and chains of up to two other stages are
    unrolled instead of looped over.
    """

    __slots__ = ("send", "stages")

    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = tuple(stages)
        body = list(self.stages)
        tail_delay_ms = 0
        while body and isinstance(body[-1], Delay):
            tail_delay_ms += body.pop().delay_ms
        #: ``send(arrival_ms, size_bytes) -> exit ms or -1`` for an IP packet, in time order.
        self.send: Callable[[int, int], int] = _chain([s.send for s in body], tail_delay_ms)

    def send_batch(self, arrival_ms: np.ndarray, size_bytes: np.ndarray) -> np.ndarray:
        """:attr:`send` for arrays of packets in time order; each stage sees only survivors."""
        out = np.array(arrival_ms, dtype=np.int64)
        sizes = np.asarray(size_bytes, dtype=np.int64)
        alive = np.arange(out.size)
        for stage in self.stages:
            t_ms = stage.send_batch(out[alive], sizes[alive])
            out[alive] = t_ms
            alive = alive[t_ms >= 0]
        return out

    def stage(self, kind: type) -> Stage | None:
        """The first stage of the given class (e.g. the :class:`Link`, to read its counters)."""
        return next((s for s in self.stages if isinstance(s, kind)), None)


def _chain(sends: list[Callable[[int, int], int]], tail_delay_ms: int) -> Callable[[int, int], int]:
    """One function that calls ``sends`` in order, stops at a loss, then adds the delay."""
    if not sends:

        def send(arrival_ms: int, size_bytes: int) -> int:
            return arrival_ms + tail_delay_ms

    elif len(sends) == 1:
        (first,) = sends

        def send(arrival_ms: int, size_bytes: int) -> int:
            t_ms = first(arrival_ms, size_bytes)
            return DROPPED if t_ms < 0 else t_ms + tail_delay_ms

    elif len(sends) == 2:
        first, second = sends

        def send(arrival_ms: int, size_bytes: int) -> int:
            t_ms = first(arrival_ms, size_bytes)
            if t_ms < 0:
                return DROPPED
            t_ms = second(t_ms, size_bytes)
            return DROPPED if t_ms < 0 else t_ms + tail_delay_ms

    else:

        def send(arrival_ms: int, size_bytes: int) -> int:
            t_ms = arrival_ms
            for stage_send in sends:
                t_ms = stage_send(t_ms, size_bytes)
                if t_ms < 0:
                    return DROPPED
            return t_ms + tail_delay_ms

    return send


def uplink_path(
    trace: Trace,
    delay_ms: int,
    loss_rate: float = 0.0,
    queue: DropTail | None = None,
    seed: int = 0,
) -> Path:
    """The media direction of ``mm-delay D mm-link TRACE .. [queue] [mm-loss uplink P]``."""
    stages: list[Stage] = []
    if loss_rate > 0.0:
        stages.append(Loss(loss_rate, seed))
    stages.append(Link(trace, queue))
    stages.append(Delay(delay_ms))
    return Path(stages)


def feedback_path(delay_ms: int, loss_rate: float = 0.0, seed: int = 1) -> Path:
    """The reverse direction: mm-delay's ``D`` then optional i.i.d. loss; no rate limit."""
    stages: list[Stage] = [Delay(delay_ms)]
    if loss_rate > 0.0:
        stages.append(Loss(loss_rate, seed))
    return Path(stages)
