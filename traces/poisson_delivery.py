"""Packet-level delivery jitter for traces converted from throughput series.

Why: a trace cooked from a throughput series (Pensieve-style ``time_s mbps``, the OpenNetLab
patterns) spreads each sample's bytes evenly over its milliseconds, so its deliveries are a
metronome within every second. Links recorded packet by packet are not: Winstein et al. (Sprout,
NSDI'13), who recorded the cellular traces mahimahi ships, model a cellular link's deliveries as
a Poisson process whose rate drifts slowly. A controller trained on metronome links alone never
sees the short-term delivery noise that a real cellular link's one-way delays carry.

:func:`poisson_delivery` keeps every window's number of delivery opportunities (so the rate a
controller could reach, second by second, is unchanged) and draws their milliseconds
uniformly inside the window: given the count, that is a Poisson process at the window's rate.
Nothing is fitted to any trace set. The window is the shortest sample period among the shared
cooked sources (OpenNetLab's patterns change every 200 ms; the others every second, so they
are constant over it too): a longer window would erase real rate changes. (A first version used
1 s windows: on the OpenNetLab traces it smoothed away their 200 ms capacity steps, and GCC
sent five times more on them; loki/LEARNING.md, session 10.)
"""

from __future__ import annotations

import numpy as np

from traces.trace import Trace

#: The shortest sample period of the shared cooked sources (OpenNetLab: 200 ms).
WINDOW_MS = 200


def poisson_delivery(trace: Trace, seed: int, window_ms: int = WINDOW_MS) -> Trace:
    """``trace`` with each window's opportunities at uniformly drawn milliseconds.

    The period (the last timestamp, where mahimahi loops) is kept: the last opportunity stays
    where it was. Opportunity times stay >= 1 ms into each window, as mahimahi's traces
    start at 1 ms.
    """
    if window_ms < 1:
        raise ValueError(f"poisson_delivery: window_ms must be >= 1, not {window_ms}")
    ops = trace.opportunities_ms
    period = trace.period_ms
    if ops.size < 2:
        return trace
    rng = np.random.default_rng(seed)
    body = ops[:-1]
    # Window k covers milliseconds (k * w, (k + 1) * w]: 1..200, 201..400, ...
    window = (np.maximum(body, 1) - 1) // window_ms
    lo = window * window_ms + 1
    hi = np.minimum((window + 1) * window_ms, period)
    drawn = lo + np.floor(rng.random(body.size) * (hi - lo + 1)).astype(np.int64)
    # Sorting within windows keeps the windows in order: they do not overlap.
    drawn = np.sort(drawn)
    out = np.append(drawn, period)
    return Trace(f"{trace.name}~poisson{seed}", out, dict(trace.meta))
