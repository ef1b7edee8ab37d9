"""How fast the project runs: emulator, controller decisions, training steps, benchmark scaling.

    .venv/bin/python bench/speed.py [--json] [--repeats 3]

* Emulator speed: emulated seconds per wall second on one core, GCC on a constant 3 Mbps link
  (it settles at about 2.5 Mbps), for 60 s and 600 s sessions (a long session must not slow
  down as its history grows). The emulator's and GCC's per-packet work is compiled (numba,
  cached on disk): the first session in a process loads that code, which is timed apart
  (``warmup_s``; after a fresh checkout it compiles it once, tens of seconds).
* Decision latency: p50 and p99 microseconds of ``on_feedback`` for every controller the
  registry can build, replaying the reports (and RTT, loss and tick calls, in their order) that
  a GCC session on the built-in cellular link produced. Learned controllers run on numpy.
* Training throughput: ``StreamingEnv`` steps per second with random actions.
* Parallel scaling: wall time of the same small QoE benchmark on 1 and on 2 workers. Each
  worker process pays about half a second to start (numba's import and loading the compiled
  code), so the sessions are long enough (10 min) for the work to dominate.

Each figure is the median over ``--repeats`` runs; the core count is printed with them because
the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loki.api import Controller, TransportFeedback
from loki.controllers import controller_names, make_controller
from loki.emu.session import LinkConfig, Session, SessionConfig
from traces import generators
from traces.builtin import get_builtin

LINK_RATE_BPS = 3_000_000
EMULATOR_SESSIONS_S = (60.0, 600.0)
LATENCY_TRACE = "cellular"
LATENCY_SESSION_S = 60.0
LATENCY_FIXED = "fixed:2500"
ENV_STEPS = 1500
ENV_EPISODE_S = 60.0
SCALING_TRACES = 6
SCALING_CONTROLLERS = ("gcc", "oracle")
SCALING_SESSION_S = 600.0
SCALING_WORKERS = (1, 2)


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def emulator_speed(duration_s: float, repeats: int) -> dict:
    """Emulated seconds per wall second of one GCC session (construction included).

    A one-second session first loads the compiled code (a once-per-process cost, reported as
    ``warmup_s``), so the repeats measure the emulator rather than the loader.
    """
    trace = generators.constant(LINK_RATE_BPS, round(duration_s * 1000), name="const-3mbps")
    start = time.perf_counter()
    Session(make_controller("gcc"), LinkConfig(trace=trace), SessionConfig(1.0)).run()
    warmup_s = time.perf_counter() - start
    ratios, kbps = [], []
    for r in range(repeats):
        start = time.perf_counter()
        session = Session(
            make_controller("gcc"), LinkConfig(trace=trace), SessionConfig(duration_s, seed=r)
        )
        result = session.run()
        wall_s = time.perf_counter() - start
        ratios.append(duration_s / wall_s)
        kbps.append(result.qoe.bitrate_kbps)
    return {
        "session_s": duration_s,
        "emulated_s_per_wall_s": median(ratios),
        "min_ratio": min(ratios),
        "bitrate_kbps": median(kbps),
        "repeats": repeats,
        "warmup_s": warmup_s,
    }


class RecordingController(Controller):
    """Passes every call to GCC and records it, so other controllers can replay the session."""

    name = "recording"

    def __init__(self) -> None:
        super().__init__()
        self.inner = make_controller("gcc")
        self.calls: list[tuple[str, tuple]] = []

    @property
    def target_bps(self) -> int:
        return self.inner.target_bps

    def on_feedback(self, report: TransportFeedback) -> int:
        self.calls.append(("on_feedback", (report,)))
        return self.inner.on_feedback(report)

    def on_rtt(self, rtt_us: int, at_us: int) -> None:
        self.calls.append(("on_rtt", (rtt_us, at_us)))
        self.inner.on_rtt(rtt_us, at_us)

    def on_loss_report(self, packets_lost: int, packets_expected: int, at_us: int) -> None:
        self.calls.append(("on_loss_report", (packets_lost, packets_expected, at_us)))
        self.inner.on_loss_report(packets_lost, packets_expected, at_us)

    def on_process_interval(self, at_us: int) -> None:
        self.calls.append(("on_process_interval", (at_us,)))
        self.inner.on_process_interval(at_us)

    def pop_probe_clusters(self):
        return self.inner.pop_probe_clusters()


def record_calls(session_s: float) -> tuple[list[tuple[str, tuple]], object]:
    trace = get_builtin(LATENCY_TRACE)
    rec = RecordingController()
    Session(rec, LinkConfig(trace=trace), SessionConfig(session_s)).run()
    return rec.calls, trace


def replay_latency_us(ctl: Controller, calls: list[tuple[str, tuple]]) -> np.ndarray:
    """Microseconds of each ``on_feedback`` call; the other calls run untimed, in order."""
    out = []
    clock = time.perf_counter_ns
    for method, args in calls:
        fn = getattr(ctl, method)
        if method == "on_feedback":
            start = clock()
            fn(*args)
            out.append(clock() - start)
        else:
            fn(*args)
        ctl.pop_probe_clusters()
    return np.asarray(out, dtype=np.float64) / 1000.0


def decision_latency(repeats: int, session_s: float = LATENCY_SESSION_S) -> dict:
    calls, trace = record_calls(session_s)
    n_reports = sum(1 for m, _ in calls if m == "on_feedback")
    names = [n for n in controller_names() if n != "fixed:KBPS"] + [LATENCY_FIXED]
    out: dict = {}
    for name in names:
        try:
            make_controller(name, trace=trace)
        except Exception as e:  # a learned controller without its model, say
            out[name] = {"skipped": f"{type(e).__name__}: {e}"}
            continue
        p50s, p99s = [], []
        for _ in range(repeats):
            lat = replay_latency_us(make_controller(name, trace=trace), calls)
            p50s.append(float(np.percentile(lat, 50)))
            p99s.append(float(np.percentile(lat, 99)))
        out[name] = {"p50_us": median(p50s), "p99_us": median(p99s), "reports": n_reports}
    return out


def training_throughput(steps: int, repeats: int) -> dict:
    from loki.emu.gym_env import StreamingEnv

    rates = []
    for r in range(repeats):
        env = StreamingEnv([get_builtin(LATENCY_TRACE)], episode_s=ENV_EPISODE_S, seed=r)
        env.action_space.seed(r)
        env.reset(seed=r)
        start = time.perf_counter()
        for _ in range(steps):
            _, _, done, truncated, _ = env.step(env.action_space.sample())
            if done or truncated:
                env.reset()
        rates.append(steps / (time.perf_counter() - start))
    return {"steps_per_s": median(rates), "steps": steps, "episode_s": ENV_EPISODE_S}


def _scaling_traces(folder: Path, n: int, session_s: float) -> None:
    from traces.mahimahi import write_mahimahi

    for i in range(n):
        trace = generators.markov_modulated(round(session_s * 1000), seed=100 + i)
        write_mahimahi(trace, folder / f"cell{i}.mahi")


def bench_wall_s(traces_dir: Path, out_dir: Path, workers: int, session_s: float) -> float:
    from bench.lib import runner

    opts = runner.BenchOptions(
        traces=[traces_dir],
        controllers=list(SCALING_CONTROLLERS),
        out=out_dir,
        duration_s=session_s,
        workers=workers,
        resamples=100,
        plots=False,
        progress=False,
    )
    start = time.perf_counter()
    runner.run(opts, echo=lambda _msg: None)
    return time.perf_counter() - start


def parallel_scaling(repeats: int, n_traces: int, session_s: float) -> dict:
    times: dict[int, list[float]] = {w: [] for w in SCALING_WORKERS}
    with tempfile.TemporaryDirectory(prefix="loki-speed-") as tmp:
        traces_dir = Path(tmp) / "traces"
        traces_dir.mkdir()
        _scaling_traces(traces_dir, n_traces, session_s)
        for r in range(repeats):
            for w in SCALING_WORKERS:
                times[w].append(bench_wall_s(traces_dir, Path(tmp) / f"out{r}-{w}", w, session_s))
    walls = {w: median(t) for w, t in times.items()}
    lo, hi = SCALING_WORKERS
    return {
        "sessions": n_traces * len(SCALING_CONTROLLERS),
        "session_s": session_s,
        "wall_s": {str(w): s for w, s in walls.items()},
        "speedup": walls[lo] / walls[hi],
        "efficiency": walls[lo] / walls[hi] / (hi / lo),
    }


def _timed(label: str, fn: Callable[[], dict], log: bool) -> dict:
    if log:
        print(f"speed: {label} ...", file=sys.stderr, flush=True)
    return fn()


def measure(repeats: int, *, log: bool = True, quick: bool = False) -> dict:
    """All figures; ``quick`` shrinks every run (for tests), so its numbers are not benchmarks."""
    emu_lengths = (10.0,) if quick else EMULATOR_SESSIONS_S
    steps = 100 if quick else ENV_STEPS
    n_traces, scale_s = (2, 10.0) if quick else (SCALING_TRACES, SCALING_SESSION_S)
    return {
        "machine": {
            "cpu_count": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else None,
            "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "repeats": repeats,
        },
        "emulator": [
            _timed(f"emulator {d:g} s", lambda d=d: emulator_speed(d, repeats), log)
            for d in emu_lengths
        ],
        "decision_latency": _timed(
            "decision latency",
            lambda: decision_latency(repeats, 10.0 if quick else LATENCY_SESSION_S),
            log,
        ),
        "training": _timed("training steps", lambda: training_throughput(steps, repeats), log),
        "parallel_scaling": _timed(
            "parallel scaling", lambda: parallel_scaling(repeats, n_traces, scale_s), log
        ),
    }


def print_text(res: dict) -> None:
    m = res["machine"]
    print(
        f"machine: {m['cpu_count']} cores ({m['usable_cpus']} usable), "
        f"load {m['load_avg_1min']:.2f}, Python {m['python']} {m['machine']}; "
        f"medians of {m['repeats']} runs"
    )
    print("\nemulator (GCC on a constant 3 Mbps link, one core)")
    for e in res["emulator"]:
        print(
            f"  {e['session_s']:>5.0f} s session: {e['emulated_s_per_wall_s']:7.1f} x real time "
            f"(worst run {e['min_ratio']:.1f} x), GCC at {e['bitrate_kbps']:.0f} kbps; "
            f"warm-up {e['warmup_s']:.2f} s"
        )
    print("\ndecision latency (on_feedback, microseconds)")
    for name, d in res["decision_latency"].items():
        if "skipped" in d:
            print(f"  {name:>12}: skipped ({d['skipped']})")
        else:
            print(
                f"  {name:>12}: p50 {d['p50_us']:8.1f}  p99 {d['p99_us']:8.1f}"
                f"  ({d['reports']} reports)"
            )
    t = res["training"]
    print(f"\ntraining: {t['steps_per_s']:.0f} StreamingEnv steps/s (random actions)")
    s = res["parallel_scaling"]
    walls = ", ".join(f"{w} worker(s) {v:.2f} s" for w, v in s["wall_s"].items())
    print(
        f"\nQoE benchmark scaling ({s['sessions']} sessions of {s['session_s']:.0f} s): {walls}; "
        f"speedup {s['speedup']:.2f} x (efficiency {s['efficiency']:.2f})"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--repeats", type=int, default=3, help="runs per figure (median reported)")
    p.add_argument("--quick", action="store_true", help="tiny runs, to check the script works")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    res = measure(args.repeats, log=not args.json, quick=args.quick)
    if args.json:
        print(json.dumps(res))
    else:
        print_text(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
