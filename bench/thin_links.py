"""Links thinner than a sender's minimum target: does the controller let the queue drain?

    .venv/bin/python bench/thin_links.py [--controllers gcc,loki] [--seeds 3] [--json out.json]

Why: the shipped loki asks for at least 200 kbps while the path shows no standing queue
(:mod:`loki.learned.min_target`, session 12). Held whatever the queue, that minimum filled the
queue of a 150 kbps link: a quarter of the session frozen and 13 s of p95 frame delay, where
the network alone froze 1 % of it. No trace family here stays that thin for long, so the
evaluation and the benchmark do not show it; these three links do. Each session is 60 s with a
30 ms one-way delay:

* ``thin-120k-unbounded``: a constant 120 kbps with an unbounded queue;
* ``thin-150k-300pkt``: a constant 150 kbps with a 300-packet drop-tail queue (19 s of it);
* ``step-2M-100k-2M``: 2 Mbps for 15 s, 100 kbps for 30 s, 2 Mbps again; unbounded queue.

Figures per controller and link, means over ``--seeds`` sessions (the encoder's frame sizes
differ by seed): stall rate, bitrate and p95 frame delay (the QoE rules of :mod:`loki.qoe`).
A minimum that does not give way shows as seconds of frame delay and a stall rate far above
the same network's without it (``loki train risk --level-only --min-target-kbps 0`` makes
that model).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loki.controllers import make_controller
from loki.emu.session import LinkConfig, Session, SessionConfig
from traces.generators import constant, steps
from traces.trace import Trace

DURATION_S = 60.0
DELAY_MS = 30


@dataclass(frozen=True)
class ThinLink:
    name: str
    trace: Trace
    queue_packets: int | None


def links() -> list[ThinLink]:
    ms = int(DURATION_S * 1000)
    return [
        ThinLink("thin-120k-unbounded", constant(120_000, ms), None),
        ThinLink("thin-150k-300pkt", constant(150_000, ms), 300),
        ThinLink("step-2M-100k-2M", steps([(15_000, 2e6), (30_000, 100_000), (15_000, 2e6)]), None),
    ]


@dataclass(frozen=True)
class ThinResult:
    controller: str
    link: str
    sessions: int
    stall_rate: float
    bitrate_kbps: float
    frame_delay_p95_ms: float


def run(controller: str, link: ThinLink, seeds: int) -> ThinResult:
    """``controller`` on ``link`` for ``seeds`` sessions; the means of their figures."""
    rows = []
    for seed in range(seeds):
        cfg = LinkConfig(trace=link.trace, delay_ms=DELAY_MS, queue_packets=link.queue_packets)
        ctl = make_controller(controller, trace=link.trace)
        q = Session(ctl, cfg, SessionConfig(duration_s=DURATION_S, seed=seed)).run().qoe
        rows.append((q.stall_rate, q.bitrate_kbps, q.frame_delay_p95_ms))
    m = np.mean(np.array(rows), axis=0)
    return ThinResult(controller, link.name, seeds, float(m[0]), float(m[1]), float(m[2]))


def markdown(results: list[ThinResult]) -> str:
    out = [
        "| controller | link | sessions | stall | bitrate kbps | p95 frame delay ms |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        out.append(
            f"| {r.controller} | {r.link} | {r.sessions} | {r.stall_rate:.3f} | "
            f"{r.bitrate_kbps:.0f} | {r.frame_delay_p95_ms:.0f} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--controllers", default="gcc,loki", help="comma-separated")
    p.add_argument(
        "--links",
        help="comma-separated link names (default: all three): "
        + ", ".join(x.name for x in links()),
    )
    p.add_argument("--seeds", type=int, default=3, help="sessions per controller and link")
    p.add_argument("--json", type=Path, help="write the figures as JSON")
    args = p.parse_args(argv)
    if args.seeds <= 0:
        p.error("--seeds must be > 0")
    known = {x.name: x for x in links()}
    chosen = list(known.values())
    if args.links:
        unknown = [n for n in args.links.split(",") if n not in known]
        if unknown:
            p.error(f"unknown link(s) {', '.join(unknown)}; known: {', '.join(known)}")
        chosen = [known[n] for n in args.links.split(",")]
    controllers = args.controllers.split(",")
    try:
        for c in controllers:
            make_controller(c, trace=chosen[0].trace)
    except ValueError as e:
        p.error(str(e))
    results = [run(c, link, args.seeds) for link in chosen for c in controllers]
    print(markdown(results))
    if args.json:
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps([asdict(r) for r in results], indent=1))
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
