"""The ``loki`` command: ``emulate``, ``bench``, ``train``, ``ab`` and ``live`` subcommands.

Bad input (an unknown controller, a malformed trace, an impossible value) ends the command with
one clear message on stderr and exit status 2, before anything is written.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from loki.argtypes import nonneg_int as _nonneg_int
from loki.argtypes import number as _number
from loki.argtypes import positive_float as _positive_float
from loki.argtypes import positive_int as _positive_int
from loki.argtypes import probability as _probability

if TYPE_CHECKING:
    from traces.trace import Trace

DEFAULT_DURATION_CAP_S = 600.0


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


_feedback_interval = _number(int, lambda v: 10 <= v <= 1000, "an interval in ms within [10, 1000]")


def _path_change(text: str) -> tuple[int, int, int]:
    """``AT_S:FOR_S:EXTRA_MS`` -> ``(start_ms, end_ms, extra_ms)`` (a handover, a re-route)."""
    parts = text.split(":")
    try:
        at_s, for_s, extra_ms = float(parts[0]), float(parts[1]), int(parts[2])
        if len(parts) != 3:
            raise ValueError
    except (ValueError, IndexError):
        raise argparse.ArgumentTypeError(
            f"expected AT_S:FOR_S:EXTRA_MS (for example 20:10:960), got {text!r}"
        ) from None
    if not (at_s >= 0 and for_s > 0 and extra_ms >= 0) or at_s + for_s == float("inf"):
        raise argparse.ArgumentTypeError(
            f"a path change needs AT_S >= 0, FOR_S > 0 and EXTRA_MS >= 0, got {text!r}"
        )
    start_ms = round(at_s * 1000)
    return (start_ms, start_ms + max(1, round(for_s * 1000)), extra_ms)


def _check_output_paths(*paths: Path | None) -> None:
    """Refuse unusable output paths before any work is done, so nothing is lost or half-written."""
    for p in paths:
        if p is None:
            continue
        if Path(p).is_dir():
            raise CliError(f"output path {p} is a folder; give a file name")
        parent = Path(p).parent
        if parent.exists() and not parent.is_dir():
            raise CliError(f"output path {p}: {parent} is not a folder")


def _add_link_args(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--trace", type=Path, help="a trace file (mahimahi, cooked CSV, OpenNetLab JSON)"
    )
    src.add_argument("--builtin", help="a built-in synthetic link (see --list-builtins)")
    p.add_argument("--delay-ms", type=_nonneg_int, default=20, help="one-way delay each way")
    q = p.add_mutually_exclusive_group()
    q.add_argument("--queue-packets", type=_positive_int, help="drop-tail queue in packets")
    q.add_argument("--queue-bytes", type=_positive_int, help="drop-tail queue in bytes")
    p.add_argument("--loss", type=_probability, default=0.0, help="random uplink loss")
    p.add_argument("--duration-s", type=_positive_float, help="default: one trace period, <= 600 s")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--poisson-delivery",
        action="store_true",
        help="re-time the trace's deliveries as a Poisson process within each 200 ms, drawn "
        "from --seed: a packet-level link's jitter on a trace cooked from a throughput series",
    )


def _load_link_trace(args: argparse.Namespace):
    from traces.builtin import DEFAULT_BUILTIN, get_builtin
    from traces.load import load_trace
    from traces.trace import TraceError

    try:
        if args.trace is not None:
            trace = load_trace(args.trace)
        else:
            trace = get_builtin(args.builtin or DEFAULT_BUILTIN)
    except (TraceError, ValueError, OSError) as e:
        raise CliError(str(e)) from e
    if getattr(args, "poisson_delivery", False):
        from traces.poisson_delivery import poisson_delivery

        trace = poisson_delivery(trace, args.seed)
    return trace


def cmd_emulate(args: argparse.Namespace) -> int:
    from loki.controllers import make_controller
    from loki.emu.session import Session, SessionConfig

    if args.list_builtins:
        from traces.builtin import builtin_names

        print("\n".join(builtin_names()))
        return 0
    _check_output_paths(args.timeline, args.plot, args.packet_log)
    if args.source is None and (args.packet_log or args.host_timing != "none"):
        raise CliError("--packet-log and --host-timing go with --source cbr:KBPS")
    trace = _load_link_trace(args)
    duration_s = args.duration_s or min(trace.period_ms / 1000.0, DEFAULT_DURATION_CAP_S)
    link = _link_config(args, trace)
    if args.source is not None:
        return _emulate_cbr(args, link, duration_s)
    names = _controller_names(args.controller, trace, args.timeline)
    results = {}
    for name in names:
        cfg = SessionConfig(
            duration_s=duration_s,
            seed=args.seed,
            feedback_interval_ms=args.feedback_interval_ms,
        )
        session = Session(make_controller(name, trace=trace), link, cfg)
        results[name] = _run_with_progress(session, duration_s, name, quiet=args.json)
    rows = []
    for name, res in results.items():
        row = {"controller": name, "trace": trace.name, **res.qoe.to_dict()}
        rows.append(row)
        if args.timeline:
            _write_timeline(_timeline_path(args.timeline, name), res.timeline)
    if args.plot:
        from loki.plots import plot_sessions

        plot_sessions({n: r.timeline for n, r in results.items()}, args.plot, title=trace.name)
    if args.json:
        print(json.dumps(rows[0] if len(rows) == 1 else rows, indent=None))
    else:
        _print_table(rows)
    return 0


def _run_with_progress(session, duration_s: float, name: str, quiet: bool):
    from tqdm import tqdm

    show = duration_s >= 120 and sys.stderr.isatty() and not quiet
    if not show:
        return session.run()
    with tqdm(total=round(duration_s), unit="s emulated", desc=name, leave=False) as bar:
        last = [0.0]

        def tick(t_s: float) -> None:
            bar.update(round(t_s - last[0]))
            last[0] = round(t_s)

        return session.run(progress=tick)


def _link_config(args: argparse.Namespace, trace: Trace):  # type: ignore[no-untyped-def]
    """The link the command line describes (``loki emulate``'s and ``loki live``'s options)."""
    from loki.emu.session import LinkConfig

    return LinkConfig(
        trace=trace,
        delay_ms=args.delay_ms,
        queue_packets=args.queue_packets,
        queue_bytes=args.queue_bytes,
        loss=args.loss,
        path_delay_steps_ms=tuple(getattr(args, "path_change", None) or ()),
    )


def _controller_names(text: str, trace: Trace, timeline: Path | None) -> list[str]:
    """The comma-separated names, each refused here if unknown, before anything runs."""
    from loki.controllers import make_controller

    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise CliError("--controller needs at least one name")
    for n in names:
        try:
            make_controller(n, trace=trace)
        except ValueError as e:
            raise CliError(str(e)) from e
    if len(names) > 1 and timeline and "{controller}" not in str(timeline):
        raise CliError("with several controllers, --timeline needs '{controller}' in its path")
    return names


def _timeline_path(pattern: Path, controller: str) -> Path:
    # A model path names a controller too: its slashes must not make folders.
    label = controller.replace("/", "_").replace("\\", "_").lstrip("_")
    return Path(str(pattern).replace("{controller}", label))


def _write_timeline(path: Path, timeline: dict) -> None:
    keys = list(timeline)
    n = len(timeline[keys[0]])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(keys)
            for i in range(n):
                w.writerow([f"{float(timeline[k][i]):.6g}" for k in keys])
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _print_table(rows: list[dict]) -> None:
    cols = [
        ("controller", "controller", "{}"),
        ("bitrate_kbps", "kbps", "{:.0f}"),
        ("utilization", "util", "{:.2f}"),
        ("stall_rate", "stall", "{:.3f}"),
        ("freezes_per_min", "frz/min", "{:.2f}"),
        ("frame_delay_p50_ms", "fd p50", "{:.0f}"),
        ("frame_delay_p95_ms", "fd p95", "{:.0f}"),
        ("loss_rate", "loss", "{:.3f}"),
        ("score_mmsys21", "score", "{:.1f}"),
    ]
    print(f"trace {rows[0]['trace']}, {rows[0]['duration_s']:.0f} s")
    cells = [[fmt.format(r[k]) for k, _, fmt in cols] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (_, h, _) in enumerate(cols)]
    print("  ".join(h.rjust(w) for (_, h, _), w in zip(cols, widths, strict=True)))
    for c in cells:
        print("  ".join(v.rjust(w) for v, w in zip(c, widths, strict=True)))


def _emulate_cbr(args: argparse.Namespace, link, duration_s: float) -> int:
    """The raw constant-bit-rate source: validates the link against mahimahi's figures."""
    import numpy as np

    from loki.emu.cbr import IP_UDP_HEADER_BYTES, run_cbr
    from loki.emu.session import make_uplink, with_path_delay_steps

    spec = args.source
    parts = spec.split(":")
    try:
        if parts[0] != "cbr" or len(parts) not in (2, 3):
            raise ValueError
        kbps = float(parts[1])
        packet_bytes = int(parts[2]) if len(parts) == 3 else 1500
        if not 0 < kbps < float("inf") or not IP_UDP_HEADER_BYTES < packet_bytes <= 1500:
            raise ValueError
    except ValueError:
        raise CliError(
            f"--source expects cbr:KBPS[:PACKET_BYTES] with KBPS > 0 and {IP_UDP_HEADER_BYTES} < "
            f"PACKET_BYTES <= 1500 (IP size), got {spec!r}"
        ) from None
    host = None
    if args.host_timing == "mahimahi" and link.path_delay_steps_ms:
        raise CliError(
            "--host-timing mahimahi replays mahimahi's shells, which have no path change"
        )
    if args.host_timing == "mahimahi":
        from loki.emu.host_timing import MahimahiHostTiming

        host = MahimahiHostTiming(seed=args.seed)
    log = run_cbr(
        with_path_delay_steps(make_uplink(link, seed=args.seed), link.path_delay_steps_ms),
        rate_bps=round(kbps * 1000),
        duration_ms=round(duration_s * 1000),
        payload_bytes=packet_bytes - IP_UDP_HEADER_BYTES,
        host=host,
    )
    if args.packet_log:
        args.packet_log.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.packet_log.with_name(args.packet_log.name + ".tmp")
        try:
            log.write_csv(tmp)
            tmp.replace(args.packet_log)
        finally:
            tmp.unlink(missing_ok=True)
    owd = log.one_way_delay_ms()
    summary = {
        "source": spec,
        "host_timing": args.host_timing,
        "trace": link.trace.name,
        "duration_s": duration_s,
        "packets": int(log.send_us.size),
        "goodput_mbps": log.goodput_bps() / 1e6,
        "loss_rate": log.loss_fraction(),
        "delay_min_ms": float(owd.min()) if owd.size else None,
        "delay_p50_ms": float(np.percentile(owd, 50)) if owd.size else None,
        "delay_p95_ms": float(np.percentile(owd, 95)) if owd.size else None,
        "delay_max_ms": float(owd.max()) if owd.size else None,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        for k, v in summary.items():
            print(f"{k:>14}: {v:.4f}" if isinstance(v, float) else f"{k:>14}: {v}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="loki", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("emulate", help="emulate a streaming session over a trace-driven link")
    _add_link_args(e)
    e.add_argument("--controller", default="gcc", help="one name or several, comma-separated")
    e.add_argument("--feedback-interval-ms", type=_feedback_interval, default=100)
    e.add_argument("--json", action="store_true", help="print one JSON object (or a list)")
    e.add_argument("--timeline", type=Path, help="write per-second series as CSV")
    e.add_argument("--plot", type=Path, help="draw send rate vs capacity and delay (PNG)")
    e.add_argument("--source", help="cbr:KBPS[:PACKET_BYTES]: a raw constant-bit-rate source")
    e.add_argument("--packet-log", type=Path, help="with --source: per-packet log CSV")
    e.add_argument(
        "--host-timing",
        choices=("none", "mahimahi"),
        default="none",
        help="with --source: 'mahimahi' replays mahimahi's event loops for receive times to "
        "the us (to compare with delays measured on real mahimahi); default whole ms",
    )
    e.add_argument(
        "--path-change",
        type=_path_change,
        action="append",
        metavar="AT_S:FOR_S:EXTRA_MS",
        help="the media path's one-way delay is EXTRA_MS longer from AT_S for FOR_S seconds "
        "(a handover; packets stay in order); repeatable",
    )
    e.add_argument("--list-builtins", action="store_true", help="list built-in links and exit")
    e.set_defaults(func=cmd_emulate)
    # The other subcommands live with their code; their parsers import nothing heavy.
    from loki.ab import add_ab_parser
    from loki.bench import add_bench_parser
    from loki.train.cli import add_train_parser

    add_bench_parser(sub)
    add_train_parser(sub)
    add_ab_parser(sub)
    try:
        from rtc.cli import add_live_parser
    except ImportError:  # rtc/ needs the [rtc] extra (aiortc, av)
        pass
    else:
        add_live_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CliError as e:
        print(f"loki: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # Run as ``python -m loki.cli``, this file is ``__main__``; the subcommands that live with
    # their code raise ``loki.cli.CliError``, so the one ``main`` that catches it is that module's.
    from loki.cli import main as _main

    sys.exit(_main())
