"""When mahimahi's processes actually hand a packet on: a model of their event loops (opt-in).

The emulator releases a packet exactly at the millisecond mahimahi's rules say it is due.
Real mahimahi measures 0.9 to 1.3 ms more at the median (docs/mahimahi-link.md), and not from
its link rules: ``mm-link`` and ``mm-delay`` are separate processes, each an event loop that
sleeps in ``poll()`` with a timeout in whole ms computed from a floored ms clock
(``timestamp()`` is ``CLOCK_REALTIME`` in ms, truncated), and acts on whatever is due when it
wakes. So a packet due at ms ``m`` leaves at the first wake-up whose floored clock reads ``m`` or
later: a timer set at an earlier wake-up ``y`` fires at ``m + frac(y)`` (plus timer slack), or a
packet arrival wakes the loop sooner. mahimahi's sources: ``packetshell.cc`` (``Ferry::loop``:
read on the TUN, write when ``pending_output``, ``poll(wait_time())``), ``link_queue.cc``
(``wait_time`` is the next delivery opportunity, so mm-link wakes at every opportunity),
``delay_queue.cc`` (release at ``timestamp() + delay`` at read time).

This module replays those two loops on the emulator's per-packet result (with the kernel's
own IPv6 packets on the new interface, :data:`KERNEL_IPV6_CHATTER`), with two host figures:
the kernel's default timer slack (50 us, ``PR_SET_TIMERSLACK``: a ``poll()`` timeout fires up
to that late) and a hand-over latency per hop (application to mm-link, mm-link to
mm-delay, mm-delay to the receiver: a TUN write, a wake-up and a read). The hop latency is the
one fitted figure (40 us reproduces the measured medians best; see tests/test_emu_cbr.py). OS
scheduling hiccups (the measured maxima, 25.0 and 124.5 ms) are not modelled.

Only the raw CBR source uses it (``loki emulate --source cbr:.. --host-timing mahimahi``), to
compare the emulator with figures measured on real mahimahi. Sessions stay in whole ms: the
sub-ms lateness is the same for every controller and changes no decision.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from loki.emu.link import DROPPED
from traces.trace import Trace

US_PER_MS = 1_000
#: Linux's default timer slack for normal threads (prctl PR_SET_TIMERSLACK), in us.
DEFAULT_TIMER_SLACK_US = 50
#: Hand-over latency per hop (TUN write, wake-up, read), fitted to the measured medians.
DEFAULT_HOP_US = 40
#: What the Linux kernel sends on its own through a new mahimahi shell's interface, as (time
#: after the source's first packet in us, IP bytes): IPv6 multicast-listener reports (76 B)
#: and a router solicitation (48 B) as the interface comes up. Read from mm-link's own log
#: (``--uplink-log``) of a run of bench/real_mahimahi.py on this machine. They matter because
#: service is byte-granular: a few hundred stray bytes in a full queue shift every later
#: full-size packet across an opportunity boundary, so one packet is always part-sent and the
#: queue holds one more (the log's in-link delay went from 100 to 101 ms there, and the
#: drop-tail row's median from 120.1 to 120.8-121.1 ms). Their times vary from run to run, and
#: a full drop-tail queue may drop them all: real runs are then 120.05 ms, as without them
#: (one of four in bench/results/real-mahimahi/rows.json; the doc's 120.9 is a shifted run).
KERNEL_IPV6_CHATTER = ((688_000, 76), (688_000, 48), (700_000, 76), (756_000, 76), (1_292_000, 76))


@dataclass(frozen=True)
class MahimahiHostTiming:
    """Host figures of the replayed event loops; ``seed`` draws the timer slack."""

    hop_us: int = DEFAULT_HOP_US
    timer_slack_us: int = DEFAULT_TIMER_SLACK_US
    seed: int = 0
    #: The kernel's own packets through the shell: :data:`KERNEL_IPV6_CHATTER` (() for none).
    chatter: tuple[tuple[int, int], ...] = KERNEL_IPV6_CHATTER

    def __post_init__(self) -> None:
        if self.hop_us < 0 or self.timer_slack_us < 0:
            raise ValueError("MahimahiHostTiming: hop_us and timer_slack_us must be >= 0")
        if any(t < 0 or not 0 < b <= 1500 for t, b in self.chatter):
            raise ValueError("MahimahiHostTiming: chatter needs times >= 0 and 1-1500 bytes")

    def release_us(
        self,
        enter_us: np.ndarray,
        link_exit_ms: np.ndarray,
        trace: Trace,
        delay_ms: int,
    ) -> np.ndarray:
        """Receive time (us) of each packet, :data:`DROPPED` where it was lost.

        ``enter_us``: when mm-link reads each packet (send time + one hop), in send order;
        ``link_exit_ms``: the delivery opportunity that completes it (the emulator's link
        result, :data:`DROPPED` if lost), non-decreasing over delivered packets (FIFO).
        """
        rng = np.random.default_rng(self.seed)
        next_op = _next_opportunity(trace)
        link_out = _mm_link_loop(enter_us, link_exit_ms, next_op, self, rng)
        return _mm_delay_loop(link_out, delay_ms, self, rng)


def _next_opportunity(trace: Trace) -> Callable[[int], int]:
    """``f(now_ms)``: the first delivery opportunity after ``now_ms`` on the looped trace."""
    ops = trace.opportunities_ms
    period = trace.period_ms  # == ops[-1] > rem below, so an opportunity after rem always exists

    def f(now_ms: int) -> int:
        loops, rem = divmod(now_ms, period)
        return loops * period + int(ops[np.searchsorted(ops, rem, side="right")])

    return f


def _mm_link_loop(
    enter_us: np.ndarray,
    exit_ms: np.ndarray,
    next_op: Callable[[int], int],
    host: MahimahiHostTiming,
    rng: np.random.Generator,
) -> np.ndarray:
    """mm-link's loop: wakes on each packet read and at each delivery opportunity (its
    ``wait_time``); a packet whose opportunity has come leaves at the next wake-up."""
    n = enter_us.size
    out = np.full(n, float(DROPPED))
    delivered = np.flatnonzero(exit_ms != DROPPED).tolist()
    enter = enter_us.astype(np.float64).tolist()
    due = exit_ms.tolist()
    slack = host.timer_slack_us
    i = p = 0
    timer = float(next_op(0) * US_PER_MS)
    while p < len(delivered):
        if i < n and enter[i] <= timer:
            y = enter[i]
            i += 1
        else:
            y = timer
        now_ms = int(y // US_PER_MS)
        while p < len(delivered):
            k = delivered[p]
            if due[k] > now_ms or enter[k] > y:
                break
            out[k] = y + host.hop_us
            p += 1
        timer = y + (next_op(now_ms) - now_ms) * US_PER_MS + rng.uniform(0.0, slack)
    return out


def _mm_delay_loop(
    arrive_us: np.ndarray, delay_ms: int, host: MahimahiHostTiming, rng: np.random.Generator
) -> np.ndarray:
    """mm-delay's loop: stamps each packet due at its floored read ms + delay, wakes on each
    read and on a timer for the head's due ms; releases everything due when it wakes."""
    out = np.full(arrive_us.size, float(DROPPED))
    order = [int(k) for k in np.argsort(arrive_us, kind="stable") if arrive_us[k] != DROPPED]
    arrive = arrive_us.tolist()
    queue: list[tuple[int, int, int]] = []  # (due ms, arrival order, packet): FIFO by due ms
    slack = host.timer_slack_us
    j = 0
    timer = float("inf")
    while j < len(order) or queue:
        if j < len(order) and arrive[order[j]] <= timer:
            y = arrive[order[j]]
            heapq.heappush(queue, (int(y // US_PER_MS) + delay_ms, j, order[j]))
            j += 1
        else:
            y = timer
        now_ms = int(y // US_PER_MS)
        while queue and queue[0][0] <= now_ms:
            out[heapq.heappop(queue)[2]] = y + host.hop_us
        timer = (
            y + (queue[0][0] - now_ms) * US_PER_MS + rng.uniform(0.0, slack)
            if queue
            else float("inf")
        )
    return out
