"""How coarse may a decision interval be? (``python -m loki.train.interval_study``)

Measures the cost of deciding less often than every feedback report, with the teacher's own
decisions so that only the interval changes: GCC's target is applied at every k-th report
(k = 1, 2, 4, 8; held in between), against GCC applying its target the moment it changes
(every report and every 25 ms tick). Run on validation links of the training families.
"""

from __future__ import annotations

import argparse

import numpy as np

from loki.emu.session import Session, SessionConfig
from loki.learned.controller import RatioController
from loki.train.data import LinkRanges, draw_spec, training_trace_paths
from loki.train.parallel import Executor
from loki.train.rollout import run_session


class HeldGcc(RatioController):
    """GCC's own target, taken at every k-th report only."""

    def __init__(self, every_reports: int) -> None:
        super().__init__(None)
        self.every_reports = every_reports

    def on_feedback(self, report):
        super().on_feedback(report)
        if self.awaiting_action:
            self.apply_action(None)  # fall back = take GCC's target now
        return self.target_bps


def _held(job) -> dict:
    spec, k = job
    ctl = HeldGcc(k)
    res = Session(ctl, spec.link(), SessionConfig(duration_s=spec.duration_s, seed=spec.seed)).run()
    return {
        "bitrate_kbps": res.qoe.bitrate_kbps,
        "stall_rate": res.qoe.stall_rate,
        "frame_delay_p95_ms": res.qoe.frame_delay_p95_ms,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=48)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=11)
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    specs = [
        draw_spec(training_trace_paths(), rng, 60.0, LinkRanges()) for _ in range(args.episodes)
    ]
    with Executor(args.workers) as ex:
        base = ex.map(run_session, [(s, "gcc") for s in specs])
        print(_line("gcc (every report and tick)", base))
        for k in (1, 2, 4, 8):
            print(_line(f"gcc held, every {k} report(s)", ex.map(_held, [(s, k) for s in specs])))
    return 0


def _line(name: str, rows: list[dict]) -> str:
    def m(k):
        return float(np.mean([r[k] for r in rows]))

    stall = np.array([r["stall_rate"] for r in rows])
    return (
        f"{name:>32}: {m('bitrate_kbps'):6.0f} kbps, stall mean {stall.mean():.4f} "
        f"p95 {np.percentile(stall, 95):.4f}, frame delay p95 {m('frame_delay_p95_ms'):.0f} ms"
    )


if __name__ == "__main__":
    raise SystemExit(main())
