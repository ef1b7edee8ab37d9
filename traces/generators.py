"""Seeded synthetic links: the project's own traces, for tests and as embedded defaults.

Each generator builds a piecewise-constant rate and converts it with the same exact rule as the
real traces (:mod:`traces.rate_steps`), so a synthetic link and a real one differ only in their
rate, never in how the rate becomes delivery opportunities. Randomness comes only from
``numpy.random.default_rng(seed)``: the same arguments and seed give the identical trace.

``meta`` of every generated trace: ``format`` (``"synthetic"``), ``generator`` (the function
name), ``params`` (its arguments), ``step_lengths_ms`` and ``step_rates_bps`` (the rate it was
built from; its time-weighted mean is the trace's nominal mean rate) and
``appended_final_opportunity``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from traces.rate_steps import trace_from_rate_steps
from traces.trace import Trace, TraceError

#: Default granularity at which random rates change within a state or walk.
DEFAULT_STEP_MS = 100


def _trace(
    name: str, generator: str, params: dict, lengths_ms: np.ndarray, rates_bps: np.ndarray
) -> Trace:
    lengths = np.asarray(lengths_ms, dtype=np.int64)
    rates = np.asarray(rates_bps, dtype=np.float64)
    meta = {
        "format": "synthetic",
        "generator": generator,
        "params": params,
        "step_lengths_ms": lengths,
        "step_rates_bps": rates,
    }
    return trace_from_rate_steps(name, lengths, rates, meta=meta)


def nominal_mean_bps(trace: Trace) -> float:
    """Time-weighted mean of the rate a synthetic trace was built from."""
    lengths = trace.meta["step_lengths_ms"]
    return float(np.dot(lengths, trace.meta["step_rates_bps"]) / lengths.sum())


def _check_duration(duration_ms: int) -> None:
    if int(duration_ms) != duration_ms or duration_ms <= 0:
        raise TraceError(f"duration must be a positive whole number of ms (got {duration_ms})")


def constant(rate_bps: float, duration_ms: int, name: str | None = None) -> Trace:
    """A fixed-rate link; 12e6 bit/s for 1000 ms is mahimahi's ``seq 1 1000``."""
    _check_duration(duration_ms)
    params = {"rate_bps": rate_bps, "duration_ms": duration_ms}
    return _trace(
        name or f"constant-{rate_bps / 1e6:g}mbps",
        "constant",
        params,
        np.array([duration_ms]),
        np.array([rate_bps]),
    )


def steps(schedule: Sequence[tuple[int, float]], name: str | None = None) -> Trace:
    """Consecutive ``(duration_ms, rate_bps)`` steps: step-downs, step-ups, ramps."""
    if not schedule:
        raise TraceError("steps() needs at least one (duration_ms, rate_bps) step")
    lengths = np.array([d for d, _ in schedule], dtype=np.int64)
    if np.any(lengths <= 0):
        raise TraceError("every step needs a positive duration")
    rates = np.array([r for _, r in schedule], dtype=np.float64)
    params = {"schedule": [(int(d), float(r)) for d, r in schedule]}
    return _trace(name or "steps", "steps", params, lengths, rates)


def periodic_outages(
    rate_bps: float,
    period_ms: int,
    outage_ms: int,
    duration_ms: int,
    name: str | None = None,
) -> Trace:
    """``rate_bps`` with a full outage in the last ``outage_ms`` of every ``period_ms``.

    The link starts up, so a session's start-up is not judged on an outage. If the duration
    ends inside an outage, mahimahi's loop convention still puts one opportunity at the end.
    """
    _check_duration(duration_ms)
    if not 0 < outage_ms < period_ms:
        raise TraceError(f"need 0 < outage_ms < period_ms (got {outage_ms}, {period_ms})")
    n_periods = -(-duration_ms // period_ms)
    lengths = np.tile([period_ms - outage_ms, outage_ms], n_periods)
    rates = np.tile([rate_bps, 0.0], n_periods)
    excess_ms = int(lengths.sum()) - duration_ms
    lengths, rates = _trim(lengths, rates, excess_ms)
    params = {
        "rate_bps": rate_bps,
        "period_ms": period_ms,
        "outage_ms": outage_ms,
        "duration_ms": duration_ms,
    }
    return _trace(name or "outages", "periodic_outages", params, lengths, rates)


def _trim(lengths: np.ndarray, rates: np.ndarray, excess_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """Shorten the tail of a step list by ``excess_ms``."""
    lengths = lengths.astype(np.int64).copy()
    i = lengths.size - 1
    while excess_ms > 0:
        cut = min(excess_ms, int(lengths[i]))
        lengths[i] -= cut
        excess_ms -= cut
        i -= 1
    keep = lengths > 0
    return lengths[keep], rates[keep]


def random_walk(
    duration_ms: int,
    *,
    start_bps: float,
    min_bps: float,
    max_bps: float,
    volatility: float = 0.1,
    step_ms: int = DEFAULT_STEP_MS,
    seed: int = 0,
    name: str | None = None,
) -> Trace:
    """A bounded multiplicative random walk: every ``step_ms`` the rate is scaled by
    ``exp(volatility * N(0, 1))`` and reflected back into ``[min_bps, max_bps]``.

    Multiplicative, because bandwidth changes are proportional (a 10 % dip hurts a 1 Mbit/s
    link as much as a 10 Mbit/s one); reflected in log space, so the bounds hold exactly.
    """
    _check_duration(duration_ms)
    if not 0 < min_bps <= start_bps <= max_bps:
        raise TraceError("need 0 < min_bps <= start_bps <= max_bps")
    rng = np.random.default_rng(seed)
    n = -(-duration_ms // step_ms)
    lo, hi = np.log(min_bps), np.log(max_bps)
    log_rate = np.empty(n)
    log_rate[0] = np.log(start_bps)
    shocks = volatility * rng.standard_normal(n - 1)
    for i in range(1, n):
        log_rate[i] = _reflect(log_rate[i - 1] + shocks[i - 1], lo, hi)
    lengths, rates = _trim(np.full(n, step_ms), np.exp(log_rate), n * step_ms - duration_ms)
    params = {
        "duration_ms": duration_ms,
        "start_bps": start_bps,
        "min_bps": min_bps,
        "max_bps": max_bps,
        "volatility": volatility,
        "step_ms": step_ms,
        "seed": seed,
    }
    return _trace(name or f"walk-seed{seed}", "random_walk", params, lengths, rates)


def _reflect(x: float, lo: float, hi: float) -> float:
    """Fold ``x`` back into ``[lo, hi]`` as a mirror would (any number of bounces)."""
    if hi == lo:
        return lo
    span = hi - lo
    y = (x - lo) % (2 * span)
    return lo + (y if y <= span else 2 * span - y)


@dataclass(frozen=True)
class LinkState:
    """One state of a Markov-modulated link: its mean rate and how long it tends to last."""

    name: str
    rate_bps: float
    mean_dwell_ms: float


#: LTE-like states for live push streaming: a cell edge, a loaded cell, a fair and a good one.
CELLULAR_STATES = (
    LinkState("edge", 0.6e6, 3_000),
    LinkState("loaded", 1.5e6, 6_000),
    LinkState("fair", 3.0e6, 8_000),
    LinkState("good", 5.0e6, 6_000),
)
#: Moves mostly to a neighbouring state, as signal quality changes gradually.
CELLULAR_TRANSITIONS = (
    (0.0, 0.8, 0.2, 0.0),
    (0.4, 0.0, 0.5, 0.1),
    (0.1, 0.4, 0.0, 0.5),
    (0.0, 0.2, 0.8, 0.0),
)


def markov_modulated(
    duration_ms: int,
    *,
    states: Sequence[LinkState] = CELLULAR_STATES,
    transitions: Sequence[Sequence[float]] = CELLULAR_TRANSITIONS,
    fluctuation: float = 0.25,
    step_ms: int = DEFAULT_STEP_MS,
    initial_state: int | None = None,
    seed: int = 0,
    name: str | None = None,
) -> Trace:
    """A cellular-like link: a semi-Markov chain over ``states`` with fast fading on top.

    Each visit lasts an exponential time with the state's mean dwell (rounded to ``step_ms``,
    at least one step); the next state is drawn from the ``transitions`` row. Within a visit
    the rate is the state's rate times ``exp(fluctuation * N(0,1) - fluctuation**2 / 2)`` per
    ``step_ms`` (mean 1, so the state's rate stays its mean). The first state is drawn from
    the chain's stationary distribution unless ``initial_state`` is given.
    """
    _check_duration(duration_ms)
    p = np.asarray(transitions, dtype=np.float64)
    k = len(states)
    if k == 0 or p.shape != (k, k) or np.any(p < 0) or not np.allclose(p.sum(axis=1), 1.0):
        raise TraceError("transitions must be a square row-stochastic matrix, one row a state")
    rng = np.random.default_rng(seed)
    state = (
        int(rng.choice(k, p=stationary_time_share(states, p, by_time=False)))
        if initial_state is None
        else initial_state
    )
    step_state: list[int] = []
    n_steps = -(-duration_ms // step_ms)
    while len(step_state) < n_steps:
        dwell_steps = max(1, round(rng.exponential(states[state].mean_dwell_ms) / step_ms))
        step_state.extend([state] * dwell_steps)
        state = int(rng.choice(k, p=p[state]))
    idx = np.array(step_state[:n_steps])
    base = np.array([s.rate_bps for s in states])[idx]
    fading = np.exp(fluctuation * rng.standard_normal(n_steps) - fluctuation**2 / 2)
    excess_ms = n_steps * step_ms - duration_ms
    lengths, rates = _trim(np.full(n_steps, step_ms), base * fading, excess_ms)
    params = {
        "duration_ms": duration_ms,
        "states": [(s.name, s.rate_bps, s.mean_dwell_ms) for s in states],
        "transitions": p.tolist(),
        "fluctuation": fluctuation,
        "step_ms": step_ms,
        "initial_state": initial_state,
        "seed": seed,
    }
    return _trace(name or f"cellular-seed{seed}", "markov_modulated", params, lengths, rates)


def stationary_time_share(
    states: Sequence[LinkState], transitions: np.ndarray, *, by_time: bool = True
) -> np.ndarray:
    """Long-run share of visits (``by_time=False``) or of time spent in each state.

    The expected long-run mean rate of :func:`markov_modulated` is
    ``stationary_time_share(...) @ rates``.
    """
    p = np.asarray(transitions, dtype=np.float64)
    eigvals, eigvecs = np.linalg.eig(p.T)
    visits = np.real(eigvecs[:, int(np.argmin(np.abs(eigvals - 1.0)))])
    visits = visits / visits.sum()
    if not by_time:
        return visits
    weighted = visits * np.array([s.mean_dwell_ms for s in states])
    return weighted / weighted.sum()
