"""Named built-in links, so the emulator and the CLI run without any trace file.

All are about a minute long and synthetic (:mod:`traces.generators`), with fixed seeds: a name
always means the same trace. The default is the cellular-like link, the case live push
streaming from a phone meets most and the one where rate control matters.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from traces import generators
from traces.sprout_model import sprout_link
from traces.trace import Trace

BUILTIN_DURATION_MS = 60_000

_BUILDERS: dict[str, Callable[[], Trace]] = {
    "const-2.5mbps": lambda: generators.constant(2.5e6, BUILTIN_DURATION_MS, name="const-2.5mbps"),
    "const-12mbps": lambda: generators.constant(12e6, BUILTIN_DURATION_MS, name="const-12mbps"),
    # A drop to under half the rate and a partial recovery: the classic delay-based-CC probe.
    "step-down": lambda: generators.steps(
        [(20_000, 4e6), (20_000, 1.5e6), (20_000, 3e6)], name="step-down"
    ),
    # 2 s blackout every 15 s (tunnels, handovers): tests recovery after loss of all capacity.
    "outages": lambda: generators.periodic_outages(
        3e6, 15_000, 2_000, BUILTIN_DURATION_MS, name="outages"
    ),
    "cellular": lambda: generators.markov_modulated(BUILTIN_DURATION_MS, seed=7, name="cellular"),
    "walk": lambda: generators.random_walk(
        BUILTIN_DURATION_MS,
        start_bps=2.5e6,
        min_bps=0.5e6,
        max_bps=6e6,
        volatility=0.05,
        seed=3,
        name="walk",
    ),
    # Packet-level deliveries from Sprout's cellular link model (Poisson at a drifting rate,
    # with outages); every other built-in spreads its deliveries evenly.
    "sprout": lambda: sprout_link(BUILTIN_DURATION_MS, seed=0, name="sprout"),
}

#: Name of the link used when none is given.
DEFAULT_BUILTIN = "cellular"


def builtin_names() -> list[str]:
    """Names accepted by :func:`get_builtin`, in a stable order."""
    return list(_BUILDERS)


@cache
def get_builtin(name: str) -> Trace:
    """The built-in trace called ``name`` (built once; traces are immutable)."""
    builder = _BUILDERS.get(name)
    if builder is None:
        raise ValueError(f"unknown built-in link {name!r}; known: {', '.join(_BUILDERS)}")
    return builder()
