"""Decision latency of the learned controllers (``python -m loki.train.latency``).

Runs a controller through an emulated session and times every ``on_feedback`` call, split in
two: the parallel GCC's own processing of the report, and the learned decision (feature row,
observation, guard, normalisation, network, rate update). The learned part is what the budget
(p50 <= 50 us, p99 <= 200 us for ``loki``) is about; GCC's part is what GCC costs anyway.
Benchmarks may read the clock; controllers never do.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from loki.controllers import make_controller
from loki.emu.session import LinkConfig, Session, SessionConfig
from traces.builtin import DEFAULT_BUILTIN, get_builtin


class _Timed:
    """Wraps a method of an object and records how long each call takes."""

    def __init__(self, obj, attr: str) -> None:
        self.inner = getattr(obj, attr)
        self.ns: list[int] = []
        setattr(obj, attr, self)

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter_ns()
        out = self.inner(*args, **kwargs)
        self.ns.append(time.perf_counter_ns() - t0)
        return out


def measure(name: str, duration_s: float = 120.0, seed: int = 0) -> dict:
    ctl = make_controller(name)
    whole = _Timed(ctl, "on_feedback")
    # The GCC beside the network; a model with a stall-risk layer wraps the learned controller.
    inner = getattr(ctl, "learned", ctl)
    gcc = _Timed(inner.gcc, "on_feedback") if hasattr(inner, "gcc") else None
    trace = get_builtin(DEFAULT_BUILTIN)
    Session(
        ctl,
        LinkConfig(trace=trace, delay_ms=20, queue_packets=200),
        SessionConfig(duration_s=duration_s, seed=seed),
    ).run()
    total_us = np.array(whole.ns) / 1000.0
    gcc_us = np.array(gcc.ns) / 1000.0 if gcc is not None else np.zeros_like(total_us)
    learned_us = total_us - gcc_us

    def pct(a):
        return {
            "p50_us": float(np.percentile(a, 50)),
            "p99_us": float(np.percentile(a, 99)),
            "max_us": float(a.max()),
        }

    return {
        "controller": name,
        "decisions": int(total_us.size),
        "learned": pct(learned_us),
        "parallel_gcc": pct(gcc_us),
        "whole_on_feedback": pct(total_us),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--controllers", default="gcc-clone,rl,hybrid,loki")
    p.add_argument("--duration-s", type=float, default=120.0)
    args = p.parse_args(argv)
    for name in args.controllers.split(","):
        print(json.dumps(measure(name.strip(), args.duration_s)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
