"""Network faults in the emulator: how fast each controller cuts, recovers, and what it stalls.

    .venv/bin/python bench/faults.py [--controllers gcc,rl] [--seeds 3] [--json out.json]

Five faults, each in its own session on a constant link (:data:`BASE_RATE_BPS`, RTT 40 ms, a
:data:`QUEUE_PACKETS`-packet drop-tail queue, the benchmark's "deep" queue of about 1 s), each
starting at :data:`FAULT_AT_S`, after every controller has settled:

* ``outage-5s``: no capacity at all for 5 s (a tunnel, a handover);
* ``feedback-blackout-2s``: for 2 s nothing from the receiver reaches the sender (transport
  feedback, receiver reports, NACKs, keyframe requests); the media path is untouched;
* ``loss-30pct-3s``: 30 % random loss on the media path for 3 s (before the link, as mm-loss);
* ``rtt-40ms-to-1s``: the RTT jumps from 40 ms to 1 s for 10 s (the extra 960 ms is added
  on the media path, after the link, packets kept in order) and comes back;
* ``capacity-drop-10x``: capacity falls to a tenth for 10 s and comes back.

Figures per controller and fault, from the target the encoder and pacer actually followed:

* **cut**: seconds from the fault's start until the target is below what the faulted link can
  deliver (capacity during the fault x (1 - loss)); only for faults that lower it and leave
  something to cut to (the 10x drop and the loss burst);
* **recover**: seconds from the fault's end until the target reaches 80 % of the capacity and
  stays there for :data:`HOLD_S` (0 when it never left; ``None`` when it never comes back
  within the session);
* **stall caused**: freeze time (the QoE freeze rule) from the fault's start to the session's
  end, less the same controller's freeze time over that span with no fault.

A controller *survives* a fault when it raises nothing, every target it gives is finite and
within its configured bounds, and the receiver renders frames again in the last seconds of the
session (no silent stall).

The fault machinery here is a :class:`~loki.emu.session.Session` subclass and two link stages;
the emulator itself is unchanged.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loki.api import Controller, ControllerConfig
from loki.controllers import controller_names, make_controller
from loki.emu.path import Path as StagePath
from loki.emu.session import (
    LinkConfig,
    Session,
    SessionConfig,
)
from loki.learned.models import controller_from_model
from loki.qoe import session_freezes
from traces import generators
from traces.trace import Trace

BASE_RATE_BPS = 3_000_000
#: One-way delay each way: a 40 ms RTT.
BASE_DELAY_MS = 20
#: The QoE benchmark's deep drop-tail queue (about 1 s at 3 Mbps).
QUEUE_PACKETS = 300
FAULT_AT_S = 20.0
#: Session time after the fault's end: long enough for a multiplicative ramp from a tenth.
OBSERVE_AFTER_S = 60.0
RECOVER_SHARE = 0.8
HOLD_S = 3.0
#: The receiver must render frames in this last stretch of the session.
ALIVE_TAIL_S = 5.0
#: The rate ``fixed:KBPS`` runs at in fault runs.
FIXED_KBPS = 2000
#: Extra uplink delay of the RTT jump: 20 + 960 + 20 ms = 1 s.
RTT_JUMP_EXTRA_MS = 960


@dataclass(frozen=True)
class Fault:
    """One fault on the base link, active over ``[start_s, start_s + duration_s)``."""

    name: str
    duration_s: float
    start_s: float = FAULT_AT_S
    #: Capacity during the fault, as a share of the base rate (0: outage).
    capacity_share: float = 1.0
    #: Random media loss during the fault.
    loss: float = 0.0
    #: One-way delay added on the media path during the fault.
    extra_delay_ms: int = 0
    #: Nothing from the receiver reaches the sender during the fault.
    feedback_blackout: bool = False

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    @property
    def session_s(self) -> float:
        return self.end_s + OBSERVE_AFTER_S

    @property
    def cut_to_bps(self) -> float | None:
        """What the faulted link delivers, when the fault lowers it to something above zero."""
        rate = BASE_RATE_BPS * self.capacity_share * (1.0 - self.loss)
        return rate if 0 < rate < BASE_RATE_BPS else None


SCENARIOS: tuple[Fault, ...] = (
    Fault("outage-5s", 5.0, capacity_share=0.0),
    Fault("feedback-blackout-2s", 2.0, feedback_blackout=True),
    Fault("loss-30pct-3s", 3.0, loss=0.3),
    Fault("rtt-40ms-to-1s", 10.0, extra_delay_ms=RTT_JUMP_EXTRA_MS),
    Fault("capacity-drop-10x", 10.0, capacity_share=0.1),
)
NO_FAULT = Fault("none", 0.0)


def scenario(name: str) -> Fault:
    for f in SCENARIOS:
        if f.name == name:
            return f
    raise ValueError(f"unknown fault {name!r}; known: {', '.join(f.name for f in SCENARIOS)}")


# -- link stages --------------------------------------------------------------------------------
class LossWindow:
    """mm-loss that is on only during ``[start_ms, end_ms)``: a burst of random loss."""

    def __init__(self, start_ms: int, end_ms: int, loss: float, seed: int) -> None:
        self.start_ms, self.end_ms, self.loss = start_ms, end_ms, loss
        self._rng = np.random.default_rng(seed)
        self.lost_packets = 0

    def send(self, arrival_ms: int, size_bytes: int) -> int:
        if self.start_ms <= arrival_ms < self.end_ms and self._rng.random() < self.loss:
            self.lost_packets += 1
            return -1
        return arrival_ms

    def send_batch(self, arrival_ms: np.ndarray, size_bytes: np.ndarray) -> np.ndarray:
        return np.array(
            [self.send(int(t), int(s)) for t, s in zip(arrival_ms, size_bytes, strict=True)]
        )


def fault_trace(fault: Fault) -> Trace:
    """The base link, with the fault's capacity share over its window."""
    total_ms = round(fault.session_s * 1000)
    if fault.capacity_share == 1.0 or fault.duration_s <= 0:
        return generators.constant(BASE_RATE_BPS, total_ms, name="fault-base")
    start_ms, end_ms = round(fault.start_s * 1000), round(fault.end_s * 1000)
    return generators.steps(
        [
            (start_ms, BASE_RATE_BPS),
            (end_ms - start_ms, BASE_RATE_BPS * fault.capacity_share),
            (total_ms - end_ms, BASE_RATE_BPS),
        ],
        name=f"fault-{fault.name}",
    )


class FaultSession(Session):
    """A session with a fault on its link; records every target the sender followed."""

    def __init__(
        self, controller: Controller, fault: Fault, seed: int = 0, queue_packets: int | None = None
    ) -> None:
        start_ms, end_ms = round(fault.start_s * 1000), round(fault.end_s * 1000)
        link = LinkConfig(
            trace=fault_trace(fault),
            delay_ms=BASE_DELAY_MS,
            queue_packets=QUEUE_PACKETS if queue_packets is None else queue_packets,
            feedback_blackouts_ms=((start_ms, end_ms),) if fault.feedback_blackout else (),
            path_delay_steps_ms=(
                ((start_ms, end_ms, fault.extra_delay_ms),) if fault.extra_delay_ms > 0 else ()
            ),
        )
        super().__init__(controller, link, SessionConfig(duration_s=fault.session_s, seed=seed))
        self.fault = fault
        stages = list(self.uplink.stages)
        if fault.loss > 0:
            stages.insert(0, LossWindow(start_ms, end_ms, fault.loss, seed=seed + 1))
        self.use_uplink(StagePath(stages))
        self.bad_targets = 0
        self.targets: list[tuple[int, int]] = [(0, controller.target_bps)]
        self._check_target()

    def _check_target(self) -> None:
        t = self.controller.target_bps
        c = self.controller.config
        if not (isinstance(t, int | np.integer) and c.min_bps <= t <= c.max_bps):
            self.bad_targets += 1

    @property
    def feedback_dropped(self) -> int:
        return self.feedback_blacked_out

    def _handle(self, kind: int, arg: object, now_us: int) -> bool:
        decided = super()._handle(kind, arg, now_us)
        self._check_target()
        if self._target_bps != self.targets[-1][1]:
            self.targets.append((now_us, self._target_bps))
        return decided


# -- figures ------------------------------------------------------------------------------------
@dataclass
class FaultFigures:
    """One controller through one fault."""

    controller: str
    fault: str
    seed: int
    survived: bool
    cut_s: float | None = None
    recover_s: float | None = None
    stall_s: float = 0.0
    stall_caused_s: float = 0.0
    bad_targets: int = 0
    error: str | None = None
    notes: list[str] = field(default_factory=list)


def _target_at(targets: Sequence[tuple[int, int]], at_us: int) -> int:
    value = targets[0][1]
    for t, v in targets:
        if t > at_us:
            break
        value = v
    return value


def time_to_cut_s(targets: Sequence[tuple[int, int]], fault: Fault) -> float | None:
    """Seconds from the fault's start until the target is below what the faulted link delivers."""
    limit = fault.cut_to_bps
    if limit is None:
        return None
    start_us, end_us = round(fault.start_s * 1e6), round(fault.end_s * 1e6)
    if _target_at(targets, start_us) < limit:
        return 0.0
    for t, v in targets:
        if start_us < t < end_us and v < limit:
            return (t - start_us) / 1e6
    return None


def time_to_recover_s(
    targets: Sequence[tuple[int, int]], fault: Fault, session_end_us: int
) -> float | None:
    """Seconds from the fault's end until the target is >= 80 % of capacity for HOLD_S."""
    floor = RECOVER_SHARE * BASE_RATE_BPS
    end_us = round(fault.end_s * 1e6)
    hold_us = round(HOLD_S * 1e6)
    # Change points from the fault's end on, with the value in force at the end first.
    points = [(end_us, _target_at(targets, end_us))] + [(t, v) for t, v in targets if t > end_us]
    good_since: int | None = None
    for t, v in points:
        if v >= floor:
            if good_since is None:
                good_since = t
            continue
        if good_since is not None and t - good_since >= hold_us:
            return (good_since - end_us) / 1e6
        good_since = None
    if good_since is not None and session_end_us - good_since >= hold_us:
        return (good_since - end_us) / 1e6
    return None


def freeze_s(render_ms: Sequence[float], from_ms: float, end_ms: float) -> float:
    """Freeze time overlapping ``[from_ms, end_ms]``."""
    total = 0.0
    for start, dur in session_freezes(render_ms, 0.0, end_ms):
        total += max(0.0, min(start + dur, end_ms) - max(start, from_ms))
    return total / 1000.0


def _controller(name: str, trace: Trace) -> Controller:
    if name == "fixed:KBPS":
        name = f"fixed:{FIXED_KBPS}"
    if name.endswith(".npz"):  # an exported model (a candidate not shipped yet)
        return controller_from_model(name)
    return make_controller(name, ControllerConfig(), trace=trace)


def run_fault(
    name: str, fault: Fault, seed: int = 0, queue_packets: int | None = None
) -> tuple[FaultFigures, FaultSession | None]:
    """One controller through one fault; the session too, for tests that look closer."""
    label = f"fixed:{FIXED_KBPS}" if name == "fixed:KBPS" else name
    figures = FaultFigures(controller=label, fault=fault.name, seed=seed, survived=False)
    session: FaultSession | None = None
    try:
        session = FaultSession(_controller(name, fault_trace(fault)), fault, seed, queue_packets)
        session.run()
    except Exception as e:  # a crash is a result here: it is reported, not hidden
        figures.error = f"{type(e).__name__}: {e}"
        figures.notes.append(traceback.format_exc(limit=3))
        return figures, session
    end_us = round(fault.session_s * 1e6)
    render = session.receiver.render_ms
    alive = any(r >= (fault.session_s - ALIVE_TAIL_S) * 1000 for r in render)
    figures.bad_targets = session.bad_targets
    figures.survived = alive and session.bad_targets == 0
    if not alive:
        figures.notes.append(f"no frame rendered in the last {ALIVE_TAIL_S:g} s")
    figures.cut_s = time_to_cut_s(session.targets, fault)
    figures.recover_s = time_to_recover_s(session.targets, fault, end_us)
    figures.stall_s = freeze_s(render, fault.start_s * 1000, end_us / 1000)
    return figures, session


def baseline_stall_s(name: str, fault: Fault, seed: int, queue_packets: int | None) -> float:
    """The same controller's freeze time over the fault's span on the link with no fault."""
    clean = Fault("none", fault.duration_s, start_s=fault.start_s)
    session = FaultSession(_controller(name, fault_trace(clean)), clean, seed, queue_packets)
    session.run()
    return freeze_s(session.receiver.render_ms, fault.start_s * 1000, fault.session_s * 1000)


def run_all(
    names: Sequence[str],
    faults: Sequence[Fault] = SCENARIOS,
    seeds: Sequence[int] = (0,),
    queue_packets: int | None = None,
) -> list[FaultFigures]:
    out = []
    for name in names:
        for seed in seeds:
            base: dict[float, float] = {}
            for fault in faults:
                figures, _ = run_fault(name, fault, seed, queue_packets)
                if figures.error is None:
                    # Every fault starts at the same time on a session of its own length.
                    key = fault.session_s
                    if key not in base:
                        base[key] = baseline_stall_s(name, fault, seed, queue_packets)
                    figures.stall_caused_s = max(0.0, figures.stall_s - base[key])
                out.append(figures)
    return out


def constructible(names: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """(names that build, {name: why not} for the rest): learned ones may lack a model."""
    ok, skipped = [], {}
    for name in names:
        try:
            _controller(name, fault_trace(NO_FAULT))
        except ValueError as e:
            skipped[name] = str(e)
        else:
            ok.append(name)
    return ok, skipped


# -- the table ----------------------------------------------------------------------------------
def _fmt(v: float | None, missing: str) -> str:
    return missing if v is None else f"{v:.2f}"


def _median(values: list[float | None]) -> float | None:
    """Median where a missing value (never recovered) counts as worst."""
    if not values:
        return None
    m = float(np.median([math.inf if v is None else v for v in values]))
    return None if math.isinf(m) or math.isnan(m) else m


def markdown_table(rows: Sequence[FaultFigures]) -> str:
    """One line per controller and fault (medians over seeds), as the reliability note shows."""
    lines = [
        "| controller | fault | survived | cut (s) | recover to 80 % (s) | stall caused (s) |",
        "|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str], list[FaultFigures]] = {}
    for r in rows:
        groups.setdefault((r.controller, r.fault), []).append(r)
    for (ctl, fault), rs in groups.items():
        cut_applies = scenario(fault).cut_to_bps is not None
        survived = sum(r.survived for r in rs)
        errors = [r.error for r in rs if r.error]
        cut = _median([r.cut_s for r in rs]) if cut_applies else None
        rec = _median([r.recover_s for r in rs])
        stall = _median([r.stall_caused_s for r in rs])
        lines.append(
            f"| {ctl} | {fault} | {survived}/{len(rs)}"
            + (f" ({errors[0]})" if errors else "")
            + f" | {_fmt(cut, 'never' if cut_applies else 'n/a')}"
            + f" | {_fmt(rec, 'never')} | {_fmt(stall, '-')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--controllers", help="comma-separated (default: every one that builds)")
    p.add_argument("--faults", help="comma-separated fault names (default: all five)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per controller and fault")
    p.add_argument("--queue-packets", type=int, default=QUEUE_PACKETS)
    p.add_argument("--json", type=Path, help="write every run's figures as JSON")
    args = p.parse_args(argv)
    if args.seeds <= 0 or args.queue_packets <= 0:
        p.error("--seeds and --queue-packets must be > 0")
    try:
        wanted = args.controllers.split(",") if args.controllers else controller_names()
        faults = [scenario(f) for f in args.faults.split(",")] if args.faults else SCENARIOS
    except ValueError as e:
        p.error(str(e))
    names, skipped = constructible(wanted)
    if args.controllers and skipped:
        # Named on purpose: a typo or a missing model is an error, not a shorter table.
        p.error("; ".join(f"{name}: {why}" for name, why in skipped.items()))
    for name, why in skipped.items():
        print(f"skipped {name}: {why}", file=sys.stderr)
    rows = run_all(names, faults, range(args.seeds), args.queue_packets)
    print(markdown_table(rows))
    survived = sum(r.survived for r in rows)
    print(f"\nfaults survived: {survived}/{len(rows)} runs")
    if args.json:
        payload = {
            "base_rate_bps": BASE_RATE_BPS,
            "rtt_ms": 2 * BASE_DELAY_MS,
            "queue_packets": args.queue_packets,
            "skipped": skipped,
            "runs": [asdict(r) for r in rows],
        }
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(payload, indent=1))
        tmp.replace(args.json)
    return 0 if survived == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
