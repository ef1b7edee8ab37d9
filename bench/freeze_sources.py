"""Where each controller's freeze time sits: in the trace's outages, just after them, or
elsewhere; and, outside outages, while the sender starves itself or where the link carries
little.

    .venv/bin/python bench/freeze_sources.py --traces DIR... [--sample 3] \
        [--controllers gcc,loki] [--workers 2] [--json out.json] [--plot out.png]

Why: issue 4's stall bars are relative cuts of the mean stall rate, and a sending rate can
only cut freeze time that a sending rate causes. No rate ends an outage; where the link
carries less than the encoder can go down to, every rate freezes; where the target sits far
below what both the link and the encoder can do, the freeze is the sender's own making. This
splits each session's freeze time (the judging rule's freezes, :mod:`loki.qoe`) accordingly,
per controller, on the evaluation's sessions (:func:`loki.train.evaluate.specs_for`: 60 s
windows, the three link settings). loki/LEARNING.md, session 12, has the figures that led to
the minimum target the shipped loki carries.

The categories, per millisecond of session time (the link's time shifted by the one-way delay,
which is when its effect reaches the receiver):

* **in outage**: inside a gap of more than :data:`OUTAGE_GAP_MS` between the trace's delivery
  opportunities;
* **after outage**: within :data:`AFTER_OUTAGE_MS` of an outage's end (the queue drains, lost
  packets are repaired or a keyframe is asked for);
* **rest**: every other frozen millisecond. These three add up to the freeze time.

Outside outages, two overlapping views of the same freeze time:

* **starved**: the target is below the encoder's floor (:func:`encoder_floor_bps`, libvpx VP8's
  output at its largest quantizer) while the link carries at least :data:`ROOM_FACTOR` times
  the floor over the second (:data:`CAPACITY_BIN_MS`);
* **low capacity**: the link carries less than that over the second.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loki.api import ControllerConfig
from loki.emu.encoder import EncoderCalibration
from loki.qoe import session_freezes
from loki.train.data import EpisodeSpec
from loki.train.evaluate import specs_for
from loki.train.parallel import Executor
from loki.train.rollout import check_controller, play
from traces.trace import Trace

#: A longer gap between delivery opportunities is an outage (one 1504-byte opportunity per
#: 200 ms is 60 kbps: no video gets through).
OUTAGE_GAP_MS = 200
#: Freeze time this long after an outage's end counts as its aftermath.
AFTER_OUTAGE_MS = 2_000
#: The link has room for video when it carries at least this many times the encoder's floor.
ROOM_FACTOR = 2.0
CAPACITY_BIN_MS = 1_000
#: Sessions handed to the workers between progress updates.
CHUNK = 16
CATEGORIES = ("in_outage", "after_outage", "rest", "starved", "low_capacity")


def encoder_floor_bps() -> float:
    """The lowest rate the emulator's encoder produces at 30 fps (its calibration's floor)."""
    return EncoderCalibration.load().floor_bps


@dataclass(frozen=True)
class FreezeSources:
    """One session's freeze time in milliseconds, split as the module docstring says."""

    freeze_ms: int
    in_outage_ms: int
    after_outage_ms: int
    rest_ms: int
    starved_ms: int
    low_capacity_ms: int


def outage_masks(trace: Trace, delay_ms: int, duration_ms: int) -> tuple[np.ndarray, np.ndarray]:
    """(in outage, after an outage) per millisecond of the session, as seen by the receiver."""
    period = trace.period_ms
    loops = duration_ms // period + 2
    ops = np.concatenate([trace.opportunities_ms + k * period for k in range(loops)])
    # A gap that starts before the session matters from 0 on; the one running past its end too.
    ops = np.concatenate([[0], ops[ops <= duration_ms + OUTAGE_GAP_MS], [duration_ms + period]])
    gaps = np.diff(ops)
    inside = np.zeros(duration_ms, dtype=bool)
    after = np.zeros(duration_ms, dtype=bool)
    for i in np.nonzero(gaps > OUTAGE_GAP_MS)[0]:
        a = min(max(int(ops[i]) + delay_ms, 0), duration_ms)
        b = min(max(int(ops[i + 1]) + delay_ms, 0), duration_ms)
        inside[a:b] = True
        after[b : min(b + AFTER_OUTAGE_MS, duration_ms)] = True
    return inside, after & ~inside


def target_per_ms(
    decisions: Sequence[tuple[float, int]], duration_ms: int, start_bps: int
) -> np.ndarray:
    """The target in force at each millisecond: the start rate until the first decision."""
    out = np.full(duration_ms, float(start_bps))
    if len(decisions):
        d = np.asarray(decisions, dtype=np.float64)
        at_ms = np.ceil(d[:, 0] * 1000.0).astype(np.int64)
        k = np.searchsorted(at_ms, np.arange(duration_ms), side="right") - 1
        has = k >= 0
        out[has] = d[k[has], 1]
    return out


def freeze_sources(
    freezes: Sequence[tuple[float, float]],
    trace: Trace,
    decisions: Sequence[tuple[float, int]],
    *,
    delay_ms: int,
    duration_ms: int,
    floor_bps: float,
    start_bps: int = ControllerConfig().start_bps,
) -> FreezeSources:
    """Split ``freezes`` ((start_ms, duration_ms) pairs, :func:`loki.qoe.session_freezes`) of
    a session on ``trace`` whose controller decided ``decisions`` ((time_s, target_bps))."""
    frozen = np.zeros(duration_ms, dtype=bool)
    for start, length in freezes:
        frozen[max(int(start), 0) : min(int(start + length), duration_ms)] = True
    inside, after = outage_masks(trace, delay_ms, duration_ms)
    bins = trace.capacity_series_bps(duration_ms, CAPACITY_BIN_MS)
    capacity = np.repeat(bins, CAPACITY_BIN_MS)[:duration_ms]
    if capacity.size < duration_ms:
        capacity = np.concatenate([capacity, np.full(duration_ms - capacity.size, bins[-1])])
    room = capacity >= ROOM_FACTOR * floor_bps
    target = target_per_ms(decisions, duration_ms, start_bps)
    starved = (target < floor_bps) & room & ~inside
    low = ~room & ~inside
    n_in = int((frozen & inside).sum())
    n_after = int((frozen & after).sum())
    total = int(frozen.sum())
    return FreezeSources(
        freeze_ms=total,
        in_outage_ms=n_in,
        after_outage_ms=n_after,
        rest_ms=total - n_in - n_after,
        starved_ms=int((frozen & starved).sum()),
        low_capacity_ms=int((frozen & low).sum()),
    )


def run_one(job: tuple[EpisodeSpec, str]) -> dict:
    """One session of one controller: its QoE and its freeze sources (a worker's job)."""
    spec, controller = job
    session, res, ctl = play(spec, controller)
    duration_ms = int(spec.duration_s * 1000)
    freezes = session_freezes(list(session.receiver.render_ms), 0.0, duration_ms)
    src = freeze_sources(
        freezes,
        session.link.trace,
        res.decisions,
        delay_ms=spec.delay_ms,
        duration_ms=duration_ms,
        floor_bps=encoder_floor_bps(),
        start_bps=ctl.config.start_bps,
    )
    return {
        "controller": controller,
        "trace": spec.trace_path,
        "bitrate_kbps": res.qoe.bitrate_kbps,
        "stall_rate": res.qoe.stall_rate,
        **asdict(src),
    }


def summary(rows: list[dict], controllers: list[str]) -> list[dict]:
    """Per controller: sessions, mean bitrate and stall, freeze seconds and each category's
    share of them."""
    out = []
    for c in controllers:
        rs = [r for r in rows if r["controller"] == c]
        total = sum(r["freeze_ms"] for r in rs)
        line = {
            "controller": c,
            "sessions": len(rs),
            "bitrate_kbps": float(np.mean([r["bitrate_kbps"] for r in rs])),
            "stall_mean": float(np.mean([r["stall_rate"] for r in rs])),
            "freeze_s": total / 1000.0,
        }
        for cat in CATEGORIES:
            line[cat] = sum(r[f"{cat}_ms"] for r in rs) / total if total else 0.0
        out.append(line)
    return out


def markdown(lines: list[dict]) -> str:
    head = "| controller | sessions | kbps | mean stall | freeze s | " + " | ".join(
        c.replace("_", " ") for c in CATEGORIES
    )
    rows = [head + " |", "|" + "---|" * (5 + len(CATEGORIES))]
    for s in lines:
        shares = " | ".join(f"{100 * s[c]:.1f} %" for c in CATEGORIES)
        rows.append(
            f"| {s['controller']} | {s['sessions']} | {s['bitrate_kbps']:.0f} | "
            f"{s['stall_mean']:.4f} | {s['freeze_s']:.0f} | {shares} |"
        )
    return "\n".join(rows)


def plot(lines: list[dict], path: Path, title: str = "") -> None:
    """Each controller's freeze seconds as a stacked bar: in outages, after them, the rest
    (the rest hatched where it was starved), so the part a sending rate can change stands out
    from the part it cannot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s["controller"] for s in lines]
    x = np.arange(len(names))
    total = np.array([s["freeze_s"] for s in lines])
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(names), 4.0))
    bottom = np.zeros(len(names))
    for cat, color in (("in_outage", "0.55"), ("after_outage", "0.75"), ("rest", "tab:red")):
        h = total * np.array([s[cat] for s in lines])
        ax.bar(x, h, 0.6, bottom=bottom, color=color, label=cat.replace("_", " "))
        bottom += h
    starved = total * np.array([s["starved"] for s in lines])
    ax.bar(x, starved, 0.6, bottom=bottom - starved, fill=False, hatch="//", label="starved")
    ax.set_xticks(x, names)
    ax.set_ylabel("freeze time (s, all sessions)")
    ax.set_title(title or "where the freeze time sits")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--traces", type=Path, nargs="+", required=True, help="trace family folders")
    p.add_argument(
        "--sample", type=int, default=None, help="traces drawn per family (default: all)"
    )
    p.add_argument("--controllers", default="gcc,loki", help="comma-separated")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--json", type=Path, help="write every session's figures and the summary")
    p.add_argument("--plot", type=Path, help="write a stacked bar chart (PNG) of the summary")
    args = p.parse_args(argv)
    if args.sample is not None and args.sample <= 0:
        p.error("--sample must be > 0")
    if args.workers <= 0:
        p.error("--workers must be > 0")
    controllers = args.controllers.split(",")
    try:
        for c in controllers:
            check_controller(c)
        specs = [s for d in args.traces for s in specs_for(d, args.sample, args.seed)]
    except (ValueError, FileNotFoundError) as e:
        p.error(str(e))
    if not specs:
        p.error("no traces found in " + ", ".join(map(str, args.traces)))
    from tqdm import tqdm

    jobs = [(s, c) for c in controllers for s in specs]
    rows: list[dict] = []
    with Executor(args.workers) as ex, tqdm(total=len(jobs), unit="session") as bar:
        for i in range(0, len(jobs), CHUNK):
            rows += ex.map(run_one, jobs[i : i + CHUNK])
            bar.update(len(jobs[i : i + CHUNK]))
    lines = summary(rows, controllers)
    print(markdown(lines))
    if args.plot:
        plot(lines, args.plot, ", ".join(d.name for d in args.traces))
    if args.json:
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps({"summary": lines, "sessions": rows}, indent=1))
        tmp.replace(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
