"""Same trace, same controller: ``loki emulate`` against a live session, side by side.

    python bench/rtc_sim_vs_live.py --duration-s 60 TRACE [TRACE ...] [--receiver aiortc]

For each trace, runs the emulator (``loki.emu.session.Session``, default link options) and a
live session (``rtc.session.run_live``, same link options) and prints one JSON line with both
QoE reports and the two bars of issue 6: live bitrate within 15 % of the emulator's, stall rate
within 0.02 absolute. Live sessions run in real time: the total takes the sum of durations.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("traces", nargs="+", type=Path)
    p.add_argument("--controller", default="gcc")
    p.add_argument("--duration-s", type=float, default=60.0)
    p.add_argument("--receiver", default="aiortc", choices=("aiortc", "chromium"))
    p.add_argument("--size", default="640x360")
    args = p.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    for path in args.traces:
        trace = load_trace(path)
        emu = Session(
            make_controller(args.controller, trace=trace),
            LinkConfig(trace=trace),
            SessionConfig(duration_s=args.duration_s),
        ).run()
        live = asyncio.run(
            run_live(
                LiveConfig(
                    source=("trace", str(path)),
                    controller=args.controller,
                    duration_s=args.duration_s,
                    receiver=args.receiver,
                    width=w,
                    height=h,
                )
            )
        )
        e, lv = emu.qoe.to_dict(), live.qoe.to_dict()
        rel = abs(lv["bitrate_kbps"] / e["bitrate_kbps"] - 1.0) if e["bitrate_kbps"] else None
        row = {
            "trace": trace.name,
            "controller": args.controller,
            "duration_s": args.duration_s,
            "capacity_kbps": round(e["capacity_kbps"]),
            "emulated": {k: round(e[k], 4) for k in KEYS},
            "live": {k: round(lv[k], 4) for k in KEYS},
            "bitrate_rel_diff": None if rel is None else round(rel, 4),
            "stall_abs_diff": round(abs(lv["stall_rate"] - e["stall_rate"]), 4),
            "bitrate_bar_met": rel is not None and rel <= BITRATE_BAR,
            "stall_bar_met": abs(lv["stall_rate"] - e["stall_rate"]) <= STALL_BAR,
            "live_sender": {
                k: live.stats[k]
                for k in (
                    "keyframes_per_min",
                    "encoded_kbps",
                    "mean_encoder_target_kbps",
                    "sent_kbps",
                    "controller_cpu_pct_of_core",
                    "frames_skipped_by_source",
                )
            },
            "relay": live.stats.get("relay", {}),
        }
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
