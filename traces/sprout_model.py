"""Packet-level cellular links drawn from Sprout's published link model (a proxy family).

Why: every training family is cooked from a throughput series, and the held-out family was
recorded packet by packet; the development set cannot tell whether a model copes with a
packet-level cellular link without looking at the held-out family (loki/LEARNING.md, session
10). This module draws such links from a model that someone else fixed before us, so nothing
is fitted here and nothing comes from the held-out traces' figures.

The model is Sprout's (Winstein, Sivaraman and Balakrishnan, NSDI'13), as its released
receiver sets it (keithw/sprout, ``src/sprout/receiver.hh``): a cellular link delivers
MTU-sized packets as a Poisson process whose rate lambda (packets per second, between 0 and
2000) moves as Brownian motion of 300 packets/s per sqrt(s), evaluated every 20 ms; lambda
at its lowest level is an outage, which the link leaves at 5 per second. The rates between
its 64 levels are continuous here (Sprout discretises them for its filter); entering the
lowest level (below 2000 / 64 packets/s) is the outage, and leaving it restarts the walk just
above that level. The walk starts from its stationary law (uniform over the range; it is
reflected at the top).

Caveat, said where the family is used: Sprout's authors chose those constants for the US
cellular networks they recorded, the recordings mahimahi ships; the held-out family is those
recordings. The proxy takes three published numbers from that work, not any statistic or
result of our held-out runs.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

from traces.mahimahi import write_mahimahi
from traces.trace import Trace

#: keithw/sprout src/sprout/receiver.hh: MAX_ARRIVAL_RATE (packets/s).
MAX_RATE_PPS = 2000.0
#: BROWNIAN_MOTION_RATE (packets/s per sqrt(s)).
VOLATILITY_PPS = 300.0
#: OUTAGE_ESCAPE_RATE (per s).
OUTAGE_ESCAPE_PER_S = 5.0
#: TICK_LENGTH (ms): the rate is re-drawn every tick.
TICK_MS = 20
#: NUM_BINS: the lowest of 64 rate levels is the outage.
RATE_LEVELS = 64
#: Family folder name the CLI writes by default.
FAMILY = "sprout_model"


def rate_path_pps(
    duration_ms: int,
    rng: np.random.Generator,
    *,
    max_rate_pps: float = MAX_RATE_PPS,
    volatility_pps: float = VOLATILITY_PPS,
    escape_per_s: float = OUTAGE_ESCAPE_PER_S,
    tick_ms: int = TICK_MS,
) -> np.ndarray:
    """The link's rate in each ``tick_ms`` tick (0 in an outage), in packets per second."""
    if duration_ms < tick_ms:
        raise ValueError(f"duration_ms must be at least one tick ({tick_ms} ms), not {duration_ms}")
    n = -(-duration_ms // tick_ms)
    dt_s = tick_ms / 1000.0
    step_sd = volatility_pps * math.sqrt(dt_s)
    p_escape = 1.0 - math.exp(-escape_per_s * dt_s)
    floor = max_rate_pps / RATE_LEVELS
    noise = rng.normal(0.0, step_sd, size=n)
    escapes = rng.random(n) < p_escape
    rates = np.empty(n)
    rate = float(rng.uniform(0.0, max_rate_pps))
    # A sequential loop: the walk's state depends on the outage, so it does not vectorise;
    # 15 000 ticks for a 300 s link take a few ms.
    for k in range(n):
        if rate == 0.0:
            if escapes[k]:
                # Leaving an outage lands on a level above it (the escape is the event).
                rate = floor + abs(float(noise[k]))
        else:
            rate += float(noise[k])
            if rate > max_rate_pps:
                rate = 2.0 * max_rate_pps - rate
        if rate < floor:
            rate = 0.0
        rates[k] = rate
    return rates


def sprout_link(duration_ms: int, seed: int, name: str | None = None) -> Trace:
    """One link of ``duration_ms``: Poisson deliveries at the drawn rate, millisecond by ms.

    The last opportunity sits at ``duration_ms`` (mahimahi's loop period), as a recorded
    trace's last line does.
    """
    rng = np.random.default_rng(seed)
    rates = rate_path_pps(duration_ms, rng)
    per_ms = np.repeat(rates / 1000.0, TICK_MS)[:duration_ms]
    counts = rng.poisson(per_ms)
    ms = np.repeat(np.arange(1, duration_ms + 1, dtype=np.int64), counts)
    ops = np.append(ms[ms < duration_ms], duration_ms)
    meta = {
        "source": "sprout_model",
        "format": "generated",
        "family": FAMILY,
        "seed": seed,
        "mean_rate_pps": float(rates.mean()),
        "outage_share": float(np.mean(rates == 0.0)),
    }
    return Trace(name or f"sprout_{seed}", ops, meta)


def write_family(out: Path, count: int, seconds: int, seed: int) -> list[Path]:
    """``count`` links of ``seconds`` as .mahi files, plus a SOURCE.json that makes ``out``
    its own family (traces.load.trace_family) and says how it was drawn."""
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    stats = []
    for i in tqdm(range(count), desc="sprout links", unit="link"):
        link_seed = seed * 100_000 + i
        trace = sprout_link(seconds * 1000, link_seed, name=f"sprout_{seed}_{i:03d}")
        paths.append(write_mahimahi(trace, out / f"{trace.name}.mahi"))
        stats.append(
            {
                "name": trace.name,
                "seed": link_seed,
                "mean_mbps": round(trace.mean_capacity_bps / 1e6, 3),
                "outage_share": round(trace.meta["outage_share"], 4),
            }
        )
    source = {
        "origin": "generated by traces/sprout_model.py (Sprout's link model, NSDI'13; "
        "constants of keithw/sprout src/sprout/receiver.hh)",
        "command": f"python -m traces.sprout_model --out {out} --count {count} "
        f"--seconds {seconds} --seed {seed}",
        "constants": {
            "max_rate_pps": MAX_RATE_PPS,
            "volatility_pps_per_sqrt_s": VOLATILITY_PPS,
            "outage_escape_per_s": OUTAGE_ESCAPE_PER_S,
            "tick_ms": TICK_MS,
            "rate_levels": RATE_LEVELS,
        },
        "traces": stats,
    }
    (out / "SOURCE.json").write_text(json.dumps(source, indent=1) + "\n")
    return paths


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m traces.sprout_model",
        description="Write a family of packet-level cellular links drawn from Sprout's model.",
    )
    p.add_argument("--out", type=Path, required=True, help="folder for the .mahi files")
    p.add_argument("--count", type=int, default=12, help="number of links (default 12)")
    p.add_argument("--seconds", type=int, default=300, help="length of each link (default 300)")
    p.add_argument("--seed", type=int, default=0, help="family seed (default 0)")
    args = p.parse_args(argv)
    if args.count < 1:
        p.error(f"--count must be >= 1, not {args.count}")
    if args.seconds < 1:
        p.error(f"--seconds must be >= 1, not {args.seconds}")
    if args.seed < 0:
        p.error(f"--seed must be >= 0, not {args.seed}")
    paths = write_family(args.out, args.count, args.seconds, args.seed)
    print(f"wrote {len(paths)} links to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
