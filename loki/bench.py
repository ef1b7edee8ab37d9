"""``loki bench`` (and ``python bench/qoe.py``): every controller on every trace, compared.

Only the command line lives here, so that building the ``loki`` parser stays cheap; the work is
in the repository's ``bench/lib`` (imported when the command runs). A user error (unknown
controller, empty trace folder, bad value) ends with one message on stderr and exit status 2;
sessions that fail end with status 1 after the finished ones are saved.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from loki.argtypes import nonneg_int as _nonneg_int
from loki.argtypes import positive_float as _positive_float
from loki.argtypes import positive_int as _positive_int
from loki.argtypes import probability as _probability

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONTROLLERS = "gcc,oracle"
#: Exit status after Ctrl-C, as a shell reports a process ended by SIGINT.
INTERRUPTED_STATUS = 130


def _usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _queue(text: str) -> int | None:
    """A drop-tail queue limit in packets, or ``inf`` for mahimahi's unlimited queue."""
    if text.lower() in ("inf", "none", "unlimited"):
        return None
    return _positive_int(text)


def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--traces",
        nargs="+",
        type=Path,
        required=True,
        metavar="DIR",
        help="trace folders (or files); each trace's family is its shared set",
    )
    p.add_argument(
        "--controllers",
        default=DEFAULT_CONTROLLERS,
        help=f"comma-separated registered names (default {DEFAULT_CONTROLLERS})",
    )
    p.add_argument(
        "--delay-ms",
        nargs="+",
        type=_nonneg_int,
        metavar="MS",
        help="one-way delay each way; several values run each (default 20)",
    )
    p.add_argument(
        "--queue",
        nargs="+",
        type=_queue,
        metavar="PACKETS",
        help="drop-tail queue in packets, or 'inf'; several values run each (default inf)",
    )
    p.add_argument(
        "--loss",
        nargs="+",
        type=_probability,
        default=[0.0],
        metavar="P",
        help="random uplink loss; several values run each (default 0)",
    )
    p.add_argument(
        "--sweep",
        action="store_true",
        help="run a grid of base RTTs (20, 80, 200 ms) and queues (30, 300 packets)",
    )
    p.add_argument(
        "--duration-s",
        type=_positive_float,
        help="cap on session length (default: one trace period, at most 600 s)",
    )
    p.add_argument(
        "--max-traces-per-family",
        type=_positive_int,
        metavar="N",
        help="a seeded draw of at most N traces per family",
    )
    p.add_argument("--seed", type=int, default=0, help="session and bootstrap seed")
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=_usable_cpus(),
        help="local processes, one session each (default: every usable core)",
    )
    p.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="run sessions on a Ray cluster ('auto', 'ray://host:10001', or 'local')",
    )
    p.add_argument("--baseline", default="gcc", help="controller the others are paired against")
    p.add_argument("--resamples", type=_positive_int, default=2000, help="bootstrap resamples")
    p.add_argument(
        "--worst", type=_nonneg_int, default=3, help="worst sessions plotted per controller"
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", type=Path, required=True, help="output folder (resumable)")
    p.add_argument(
        "--rerun-stale",
        action="store_true",
        help="run again the finished sessions in --out that other code or models ran (by "
        "default they are kept, with a warning)",
    )


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``loki bench`` on the ``loki`` command's subparsers."""
    p = subparsers.add_parser("bench", help="compare controllers on trace folders (QoE benchmark)")
    add_bench_arguments(p)
    p.set_defaults(func=cmd_bench)
    return p


def build_parser(prog: str = "bench/qoe.py") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    add_bench_arguments(p)
    return p


def _runner():
    """``bench.lib.runner``, from the repository checkout this package sits in."""
    try:
        from bench.lib import runner
    except ImportError:
        if not (REPO_ROOT / "bench" / "lib" / "runner.py").is_file():
            raise ImportError(
                "loki bench needs the project's bench/ folder (run it from a source checkout)"
            ) from None
        sys.path.insert(0, str(REPO_ROOT))
        from bench.lib import runner
    return runner


def options_from_args(args: argparse.Namespace, runner):
    names = [n.strip() for n in args.controllers.split(",") if n.strip()]
    return runner.BenchOptions(
        traces=list(args.traces),
        controllers=names,
        out=args.out,
        delays_ms=args.delay_ms,
        queues_packets=args.queue,
        losses=args.loss,
        duration_s=args.duration_s,
        sweep=args.sweep,
        max_traces_per_family=args.max_traces_per_family,
        seed=args.seed,
        workers=args.workers,
        ray_address=args.ray_address,
        baseline=args.baseline,
        resamples=args.resamples,
        worst=args.worst,
        plots=not args.no_plots,
        progress=not args.quiet,
        rerun_stale=args.rerun_stale,
    )


def cmd_bench(args: argparse.Namespace) -> int:
    prog = "loki" if getattr(args, "command", None) == "bench" else "bench"
    try:
        runner = _runner()
    except ImportError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    try:
        runner.run(options_from_args(args, runner))
    except runner.BenchError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        print(
            f"{prog}: interrupted; finished sessions are kept in {args.out}; "
            "run the same command again to resume",
            file=sys.stderr,
        )
        return INTERRUPTED_STATUS
    return 0


def main(argv: list[str] | None = None) -> int:
    return cmd_bench(build_parser().parse_args(argv))
