"""Same trace, same controller: ``loki emulate`` against a live session, side by side.

    python bench/rtc_sim_vs_live.py --duration-s 60 TRACE [TRACE ...] [--receiver aiortc]

For each trace, runs the emulator (``loki.emu.session.Session``, default link options) and a
live session (``rtc.session.run_live``, same link options) and prints one JSON line with both
QoE reports, keyframes per minute on both sides, and the two bars of issue 6: live bitrate
within 15 % of the emulator's, stall rate within 0.02 absolute; then a table of all traces.
Both receivers use :mod:`loki.receive`'s policies (with ``--receiver aiortc``), so a
difference is the link, the encoder or the machine, not the receiver's rules. Live sessions run
in real time: the total takes the sum of durations; run them on an idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loki.controllers import make_controller
from loki.emu.session import LinkConfig, Session, SessionConfig
from rtc.session import LiveConfig, run_live
from traces.load import load_trace

BITRATE_BAR = 0.15
STALL_BAR = 0.02
KEYS = (
    "bitrate_kbps",
    "stall_rate",
    "freezes",
    "frame_delay_p50_ms",
    "frame_delay_p95_ms",
    "utilization",
    "loss_rate",
    "score_mmsys21",
)


def table(rows: list[dict]) -> str:
    """The rows as a markdown table: the figures the bars are about."""
    lines = [
        "| trace | emu kbps | live kbps | bitrate diff | emu stall | live stall | stall diff "
        "| keyframes/min emu | keyframes/min live | bars |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        e, lv = r["emulated"], r["live"]
        rel = r["bitrate_rel_diff"]
        bars = (
            ("ok" if r["bitrate_bar_met"] else "MISS")
            + "/"
            + ("ok" if r["stall_bar_met"] else "MISS")
        )
        lines.append(
            f"| {r['trace']} | {e['bitrate_kbps']:.0f} | {lv['bitrate_kbps']:.0f} | "
            f"{'n/a' if rel is None else f'{100 * rel:+.1f} %'} | {e['stall_rate']:.3f} | "
            f"{lv['stall_rate']:.3f} | {r['stall_diff']:+.3f} | "
            f"{r['emulated_keyframes_per_min']:.1f} | "
            f"{r['live_sender']['keyframes_per_min']:.1f} | {bars} |"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("traces", nargs="+", type=Path)
    p.add_argument("--controller", default="gcc")
    p.add_argument("--duration-s", type=float, default=60.0)
    p.add_argument("--receiver", default="aiortc", choices=("aiortc", "chromium"))
    p.add_argument("--size", default="640x360")
    p.add_argument("--loss", type=float, default=0.0, help="random loss on the media path")
    args = p.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    rows = []
    for path in args.traces:
        trace = load_trace(path)
        session = Session(
            make_controller(args.controller, trace=trace),
            LinkConfig(trace=trace, loss=args.loss),
            SessionConfig(duration_s=args.duration_s),
        )
        emu = session.run()
        end_us = round(args.duration_s * 1e6)
        emu_keys = sum(
            1
            for key, c in zip(session.frame_is_key, session.frame_capture_us, strict=True)
            if key and c <= end_us
        )
        live = asyncio.run(
            run_live(
                LiveConfig(
                    source=("trace", str(path)),
                    controller=args.controller,
                    duration_s=args.duration_s,
                    receiver=args.receiver,
                    width=w,
                    height=h,
                    loss=args.loss,
                )
            )
        )
        e, lv = emu.qoe.to_dict(), live.qoe.to_dict()
        rel = lv["bitrate_kbps"] / e["bitrate_kbps"] - 1.0 if e["bitrate_kbps"] else None
        stall_diff = lv["stall_rate"] - e["stall_rate"]
        row = {
            "trace": trace.name,
            "controller": args.controller,
            "duration_s": args.duration_s,
            "loss": args.loss,
            "capacity_kbps": round(e["capacity_kbps"]),
            "emulated": {k: round(e[k], 4) for k in KEYS},
            "live": {k: round(lv[k], 4) for k in KEYS},
            "bitrate_rel_diff": None if rel is None else round(rel, 4),
            "stall_diff": round(stall_diff, 4),
            "bitrate_bar_met": rel is not None and abs(rel) <= BITRATE_BAR,
            "stall_bar_met": abs(stall_diff) <= STALL_BAR,
            "emulated_keyframes_per_min": round(emu_keys / (args.duration_s / 60.0), 2),
            "live_sender": {
                k: live.stats[k]
                for k in (
                    "keyframes_per_min",
                    "encoded_kbps",
                    "mean_encoder_target_kbps",
                    "sent_kbps",
                    "controller_cpu_pct_of_core",
                    "frames_skipped_by_source",
                    "frames_dropped_by_encoder",
                    "probes_sent",
                )
            },
            "live_receiver": live.stats.get("receiver", {}),
            "relay": live.stats.get("relay", {}),
            "load_avg_1min": round(os.getloadavg()[0], 2),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
