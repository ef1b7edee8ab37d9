"""``loki live``: one real session over a trace-driven link, with ``loki emulate``'s QoE.

``loki.cli`` calls :func:`add_live_parser` to add the subcommand. The link options are
``loki emulate``'s own (same parser helper), so the same command line describes the same
network in both.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from pathlib import Path

DEFAULT_LIVE_DURATION_S = 30.0
DEFAULT_SIZE = "640x360"


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    if w <= 0 or h <= 0 or w % 2 or h % 2:
        raise argparse.ArgumentTypeError(f"expected even positive WIDTHxHEIGHT, got {text!r}")
    return w, h


def add_live_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``live`` to the ``loki`` command's subparsers."""
    from loki import cli as loki_cli

    p = subparsers.add_parser(
        "live", help="stream a real session (aiortc sender, trace-driven relay, receiver)"
    )
    loki_cli._add_link_args(p)
    p.add_argument(
        "--controller",
        default="gcc",
        help="one name or several, comma-separated (one real-time session each, in turn)",
    )
    p.add_argument("--receiver", choices=("aiortc", "chromium"), default="aiortc")
    p.add_argument("--size", type=_size, default=_size(DEFAULT_SIZE), help="video WIDTHxHEIGHT")
    p.add_argument("--fps", type=loki_cli._positive_float, default=30.0)
    p.add_argument(
        "--keyframe-interval-s",
        type=float,
        default=0.0,
        help="periodic keyframes (0: only when the receiver asks)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object (or a list)")
    p.add_argument("--quiet", action="store_true", help="no progress view on stderr")
    p.add_argument(
        "--timeline",
        type=Path,
        help="write per-second series as CSV, loki emulate's columns ('{controller}' in the "
        "path with several)",
    )
    p.add_argument("--plot", type=Path, help="draw send rate vs capacity and delay (PNG)")
    p.add_argument(
        "--emulated",
        action="store_true",
        help="also run each controller in the emulator on the same link: rows and plot lines "
        "'NAME (emulated)' beside the live ones (its time line: loki emulate --timeline)",
    )
    p.set_defaults(func=cmd_live)
    return p


def _progress_printer(stream):  # type: ignore[no-untyped-def]
    header = f"{'t s':>6} {'target':>8} {'sent':>8} {'capacity':>8} {'delay':>7} {'fps':>5}"
    printed = [False]

    def show(row) -> None:  # type: ignore[no-untyped-def]
        if not printed[0]:
            print(header + "   (kbps, ms)", file=stream, flush=True)
            printed[0] = True
        print(
            f"{row.t_s:6.1f} {row.target_kbps:8.0f} {row.sent_kbps:8.0f} "
            f"{row.capacity_kbps:8.0f} {row.delay_ms:7.1f} {row.fps:5.1f}",
            file=stream,
            flush=True,
        )

    return show


def cmd_live(args: argparse.Namespace) -> int:
    from loki import cli as loki_cli
    from rtc.session import LiveConfig, run_live

    loki_cli._check_output_paths(args.timeline, args.plot)
    trace = loki_cli._load_link_trace(args)
    names = loki_cli._controller_names(args.controller, trace, args.timeline)
    if args.receiver == "chromium":
        from rtc.chromium_receiver import ChromiumUnavailableError, check_available

        try:
            check_available()
        except ChromiumUnavailableError as e:
            raise loki_cli.CliError(str(e)) from e
    if args.trace is not None:
        source = ("trace", str(args.trace))
    else:
        from traces.builtin import DEFAULT_BUILTIN

        source = ("builtin", args.builtin or DEFAULT_BUILTIN)
    width, height = args.size
    config = LiveConfig(
        source=source,
        controller=names[0],
        duration_s=args.duration_s or DEFAULT_LIVE_DURATION_S,
        receiver=args.receiver,
        width=width,
        height=height,
        fps=args.fps,
        delay_ms=args.delay_ms,
        queue_packets=args.queue_packets,
        queue_bytes=args.queue_bytes,
        loss=args.loss,
        seed=args.seed,
        poisson_delivery=args.poisson_delivery,
        keyframe_interval_s=args.keyframe_interval_s,
    )
    progress = None if args.quiet else _progress_printer(sys.stderr)
    results = {}
    for name in names:
        if progress is not None and len(names) > 1:
            print(f"-- {name}", file=sys.stderr, flush=True)
        results[name] = asyncio.run(
            run_live(dataclasses.replace(config, controller=name), progress)
        )
    twins = _emulated_twins(args, trace, names, config.duration_s) if args.emulated else {}
    rows, objs, timelines = [], [], {}
    for name, result in results.items():
        row = {"controller": name, "trace": trace.name, **result.qoe.to_dict()}
        rows.append(row)
        objs.append({**row, "live": result.stats})
        timelines[name] = result.timeline
        if args.timeline:
            loki_cli._write_timeline(loki_cli._timeline_path(args.timeline, name), result.timeline)
        if name in twins:
            label = f"{name} (emulated)"
            twin = {"controller": label, "trace": trace.name, **twins[name].qoe.to_dict()}
            rows.append(twin)
            objs.append({**twin, "controller": name, "emulated": True})
            timelines[label] = twins[name].timeline
    if args.plot:
        from loki.plots import plot_sessions

        title = f"{trace.name}, live ({args.receiver} receiver)"
        plot_sessions(timelines, args.plot, title=title)
    if args.json:
        print(json.dumps(objs[0] if len(objs) == 1 else objs))
        return 0
    loki_cli._print_table(rows)
    for name, result in results.items():
        _print_sender(name if len(names) > 1 else "", result.stats)
    return 0


def _emulated_twins(args: argparse.Namespace, trace, names: list[str], duration_s: float) -> dict:  # type: ignore[no-untyped-def]
    """Each controller's session in the emulator, on the link the live run had (the same trace,
    re-timed the same way with --poisson-delivery, and the same options and seed)."""
    from loki import cli as loki_cli
    from loki.controllers import make_controller
    from loki.emu.session import Session, SessionConfig

    link = loki_cli._link_config(args, trace)
    config = SessionConfig(duration_s=duration_s, seed=args.seed)
    return {n: Session(make_controller(n, trace=trace), link, config).run() for n in names}


def _print_sender(name: str, s: dict) -> None:
    who = f"{name} " if name else ""
    print(
        f"{who}sender: {s['keyframes']} keyframes ({s['keyframes_per_min']:.1f}/min), encoded "
        f"{s['encoded_kbps']:.0f} kbps for a mean target of {s['mean_encoder_target_kbps']:.0f}"
        f" kbps, controller {s['controller_cpu_pct_of_core']:.2f} % of a core"
    )
    extra = s.get("chromium")
    if extra:
        print(
            f"{who}chromium: {extra.get('framesDecoded', 0)} frames decoded, "
            f"{extra.get('freezeCount', 0)} freezes ({extra.get('totalFreezesDuration', 0):.2f}"
            f" s), {extra.get('pliCount', 0)} PLIs, {extra.get('nackCount', 0)} NACKs"
        )
