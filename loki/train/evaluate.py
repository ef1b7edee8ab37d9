"""Evaluate the learned controllers against GCC, paired, on trace families
(``python -m loki.train.evaluate``).

The protocol is fixed here, before any result is seen, and is the same for every controller:
every trace of the family, :data:`WINDOWS` 60 s windows spread over the trace's period, each
over the links of :data:`LINKS` (one-way delay, drop-tail queue, random loss). Each session
runs every controller with the same seed. Figures per controller: mean bitrate, mean and 95th
percentile of the per-session stall rate, mean of the per-session p95 frame delay, mean
|log2 rate change| per decision, guard fallbacks; each paired against GCC (relative
difference, with a bootstrap 95 % interval over sessions). The held-out family
(``mahimahi_cellular_us``) is evaluated once the models are final; the training families
(``--sample`` traces each) serve for development. Several ``--traces`` folders run as one
evaluation (the development set is one command: the four training families, ``--sample 3``,
144 sessions), summarised over all their sessions and per family. ``--replicas R`` runs every
session R times with only the session seed changed: one run's stall figures move by several
points when a rate moves by 0.1 % (loki/LEARNING.md, session 11), so models close to each
other are compared with replicas; the intervals then resample whole sessions.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from loki.argtypes import positive_int
from loki.train.data import EpisodeSpec, cached_trace
from loki.train.parallel import Executor
from loki.train.rollout import check_controller, run_session
from traces.load import find_traces, trace_family
from traces.trace import TraceError

WINDOWS = 4
DURATION_S = 60.0
#: Session seeds of replica r are the first's plus r times this (beyond any first seed).
REPLICA_SEED_STEP = 10_000_000
#: (one-way delay ms, drop-tail queue packets, random loss)
LINKS = ((20, 100, 0.0), (50, 300, 0.0), (30, 200, 0.01))
METRICS = ("bitrate_kbps", "stall_rate", "frame_delay_p95_ms", "change_log2")
RESAMPLES = 2000


#: Issue 4's tolerances for the clone against GCC: mean bitrate within 5 %, mean stall rate
#: within 10 % relative.
CLONE_BITRATE_TOL = 0.05
CLONE_STALL_TOL = 0.10


def clone_gap(clone_kbps: float, gcc_kbps: float, clone_stall: float, gcc_stall: float) -> float:
    """How far a clone is from GCC in units of those tolerances: the larger of the two ratios
    (below 1: within both). The DAgger trainer and bench/clone_selection.py judge by it."""
    kbps = abs(clone_kbps / max(gcc_kbps, 1e-9) - 1.0) / CLONE_BITRATE_TOL
    stall = abs(clone_stall - gcc_stall) / max(gcc_stall, 1e-4) / CLONE_STALL_TOL
    return max(kbps, stall)


def specs_for(
    family_dir: Path, sample: int | None, seed: int, bursty: bool = False, replicas: int = 1
) -> list[EpisodeSpec]:
    """The family's sessions; with ``replicas`` > 1 each one ``replicas`` times, with only the
    session seed (the encoder's frame sizes, random loss, Poisson timing) changed."""
    if replicas < 1:
        raise ValueError(f"--replicas must be >= 1, got {replicas}")
    paths = [str(p) for p in find_traces(family_dir)]
    if sample is not None and sample < len(paths):
        rng = np.random.default_rng(seed)
        paths = sorted(rng.choice(paths, size=sample, replace=False).tolist())
    specs = []
    for i, p in enumerate(paths):
        period = cached_trace(p).period_ms
        for w in range(WINDOWS):
            for j, (delay, queue, loss) in enumerate(LINKS):
                for r in range(replicas):
                    specs.append(
                        EpisodeSpec(
                            p,
                            period * w // WINDOWS,
                            delay,
                            queue,
                            loss,
                            DURATION_S,
                            seed=seed + 1000 * i + 10 * w + j + REPLICA_SEED_STEP * r,
                            bursty=bursty,
                            replica=r,
                        )
                    )
    return specs


def _bootstrap_rel(
    ours: np.ndarray, base: np.ndarray, stat, rng, members: np.ndarray | None = None
) -> tuple[float, float, float]:
    """Relative difference stat(ours)/stat(base) - 1 with a paired bootstrap 95 % interval.

    ``members`` (clusters x replicas) are the indices of each session's replicas: the
    bootstrap draws sessions with all their replicas, since the replicas of one session are
    not independent of each other (default: every entry its own session)."""
    point = stat(ours) / stat(base) - 1.0 if stat(base) else float("nan")
    if members is None:
        members = np.arange(ours.size).reshape(-1, 1)
    n = members.shape[0]
    idx = rng.integers(0, n, (RESAMPLES, n))
    vals = []
    for row in idx:
        pick = members[row].ravel()
        b = stat(base[pick])
        if b:
            vals.append(stat(ours[pick]) / b - 1.0)
    lo, hi = np.percentile(vals, [2.5, 97.5]) if vals else (float("nan"), float("nan"))
    return float(point), float(lo), float(hi)


def _session_key(row: dict) -> tuple:
    """A session's identity, whatever its controller and replica."""
    return _key(row)[:-2]


def _paired(rows_c: list[dict], rows_base: list[dict]) -> tuple[list[dict], list[dict], object]:
    """The two controllers' rows of the sessions both ran, in the baseline's order, and the
    clusters (replicas of one session) as an index matrix, or None without replicas."""
    ours = {_key(r)[:-1]: r for r in rows_c}
    pairs = [(ours[k], r) for r in rows_base if (k := _key(r)[:-1]) in ours]
    groups: dict[tuple, list[int]] = {}
    for i, (_, r) in enumerate(pairs):
        groups.setdefault(_session_key(r), []).append(i)
    sizes = {len(g) for g in groups.values()}
    if len(sizes) > 1:
        # Unequal replica counts (a later run added replicas to some sessions only): keep the
        # sessions with the most, so that every cluster has the same size.
        most = max(sizes)
        pairs = [pairs[i] for g in groups.values() if len(g) == most for i in g]
        return _paired([a for a, _ in pairs], [b for _, b in pairs])
    a, b = [a for a, _ in pairs], [b for _, b in pairs]
    if sizes <= {1}:
        return a, b, None
    return a, b, np.array(list(groups.values()), dtype=np.int64)


def summarise(rows: list[dict], controllers: list[str], baseline: str = "gcc") -> dict:
    by = {c: [r for r in rows if r["controller"] == c] for c in controllers}
    rng = np.random.default_rng(0)

    def col(rs, k):
        return np.array([r[k] for r in rs], dtype=np.float64)

    def arr(c, k):
        return col(by[c], k)

    def p95(a):
        return float(np.percentile(a, 95))

    out = {}
    for c in controllers:
        s = {
            "sessions": len(by[c]),
            "bitrate_kbps": float(arr(c, "bitrate_kbps").mean()),
            "stall_mean": float(arr(c, "stall_rate").mean()),
            "stall_p95": p95(arr(c, "stall_rate")),
            "frame_delay_p95_ms": float(arr(c, "frame_delay_p95_ms").mean()),
            "change_log2": float(arr(c, "change_log2").mean()),
            "fallbacks": int(arr(c, "fallbacks").sum()),
            "decisions": int(arr(c, "decisions").sum()),
        }
        replicas = {int(r.get("replica", 0)) for r in by[c]}
        if len(replicas) > 1:
            s["replicas"] = len(replicas)
        if c != baseline:
            ours, base, members = _paired(by[c], by[baseline])
            for name, key, stat in (
                ("bitrate", "bitrate_kbps", np.mean),
                ("stall_mean", "stall_rate", np.mean),
                ("stall_p95", "stall_rate", p95),
                ("frame_delay_p95", "frame_delay_p95_ms", np.mean),
            ):
                s[f"vs_{baseline}_{name}"] = _bootstrap_rel(
                    col(ours, key), col(base, key), stat, rng, members
                )
        out[c] = s
    return out


#: ``--gcc-curve`` adds GCC scaled by these factors (``scaled:FACTOR:gcc``): its own
#: bitrate-for-stall curve, from 0.7x to 1.15x (beyond, GCC's stall grows several times faster
#: than its bitrate on the training families; loki/LEARNING.md, session 8).
CURVE_FACTORS = (0.7, 0.85, 0.93, 1.07, 1.15)


def curve_name(factor: float, baseline: str = "gcc") -> str:
    return f"scaled:{factor:g}:{baseline}"


def _on_curve(name: str, baseline: str) -> bool:
    """Whether ``name`` is ``scaled:FACTOR:<baseline>``, a point of the baseline's curve."""
    parts = name.split(":", 2)
    return len(parts) == 3 and parts[0] == "scaled" and parts[2] == baseline


def curve_positions(summary: dict, baseline: str = "gcc") -> dict[str, dict]:
    """Each controller's mean stall against GCC's curve at the controller's own bitrate.

    The curve is the ``scaled:*:<baseline>`` rows of ``summary`` and the baseline itself, as
    relative changes against the baseline, joined linearly. Why: a controller that trades
    bitrate for stall may only be moving along GCC's curve; it beats GCC where its stall is
    below the curve's at equal bitrate. Controllers outside the curve's bitrate range get no
    position (extrapolating the curve would be a guess).
    """
    key_b, key_s = f"vs_{baseline}_bitrate", f"vs_{baseline}_stall_mean"
    points = sorted(
        [(0.0, 0.0)]
        + [(v[key_b][0], v[key_s][0]) for c, v in summary.items() if _on_curve(c, baseline)]
    )
    if len(points) < 2:
        return {}
    xs = np.array([p[0] for p in points])
    ys = np.array([p[1] for p in points])
    out = {}
    for c, v in summary.items():
        if c == baseline or _on_curve(c, baseline):
            continue
        b, st = v[key_b][0], v[key_s][0]
        if not xs[0] <= b <= xs[-1]:
            out[c] = {"bitrate": b, "stall": st, "curve_stall": None, "below_curve": None}
            continue
        curve = float(np.interp(b, xs, ys))
        out[c] = {"bitrate": b, "stall": st, "curve_stall": curve, "below_curve": st - curve}
    return out


def _spec_key(spec: EpisodeSpec, controller: str) -> tuple:
    return (
        spec.trace_path,
        spec.offset_ms,
        spec.delay_ms,
        spec.loss,
        int(spec.bursty),
        spec.replica,
        controller,
    )


def _key(row: dict) -> tuple:
    return (
        row["trace"],
        int(row["offset_ms"]),
        int(row["delay_ms"]),
        float(row["loss"]),
        int(row.get("bursty", 0)),
        int(row.get("replica", 0)),
        row["controller"],
    )


def _read_sessions(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            for k, v in r.items():
                if k not in ("controller", "trace", "queue_packets"):
                    r[k] = float(v)
            out.append(r)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--traces", type=Path, nargs="+", required=True, help="one or more family folders"
    )
    p.add_argument("--controllers", default="gcc,gcc-clone,rl,hybrid,loki")
    p.add_argument("--sample", type=positive_int, help="at most N traces of the family (seeded)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=positive_int, default=1)
    p.add_argument("--ray-address")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--gcc-curve",
        action="store_true",
        help="also run GCC x " + "/".join(f"{f:g}" for f in CURVE_FACTORS) + " (scaled:F:gcc) and "
        "place every controller against that curve: its stall vs the curve's at equal bitrate",
    )
    p.add_argument(
        "--bursty",
        action="store_true",
        help="re-time every session's deliveries as a Poisson process within each 200 ms "
        "(traces.poisson_delivery): the family's rates with a packet-level link's jitter",
    )
    p.add_argument(
        "--replicas",
        type=positive_int,
        default=1,
        help="run every session N times with only the session seed changed (the encoder's "
        "frame sizes, random loss); figures pool them, intervals resample whole sessions. "
        "One run's mean stall moves by 2-5 points when a rate moves by 0.1 %% "
        "(loki/LEARNING.md, session 11)",
    )
    args = p.parse_args(argv)
    controllers = [c.strip() for c in args.controllers.split(",") if c.strip()]
    if "gcc" not in controllers:
        controllers.insert(0, "gcc")
    if args.gcc_curve:
        controllers += [curve_name(f) for f in CURVE_FACTORS]
        controllers = list(dict.fromkeys(controllers))
    if args.out.exists() and not args.out.is_dir():
        p.error(f"--out {args.out} is a file; give a folder")
    try:
        for c in controllers:
            check_controller(c)
        specs = []
        for folder in args.traces:
            found = specs_for(folder, args.sample, args.seed, args.bursty, args.replicas)
            if not found:
                p.error(f"no traces under {folder}")
            specs += found
    except (TraceError, ValueError, OSError) as e:
        p.error(str(e))
    # Sessions already in the output folder are kept (a later run adds controllers).
    done = _read_sessions(args.out / "sessions.csv")
    have = {_key(r) for r in done}
    jobs = [(s, c) for s in specs for c in controllers if _spec_key(s, c) not in have]
    rows: list[dict] = []
    with Executor(args.workers, args.ray_address) as ex:
        for i in tqdm(range(0, len(jobs), 16), desc="sessions", unit="x16"):
            rows += ex.map(run_session, jobs[i : i + 16])
    rows = done + rows
    wanted = {_spec_key(s, c) for s in specs for c in controllers}
    rows = [r for r in rows if _key(r) in wanted]
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "sessions.csv", "w", newline="") as f:
        # Rows kept from a run before a column existed (``bursty``, ``replica``) write it as 0.
        fields = list(dict.fromkeys(k for r in rows for k in r))
        w = csv.DictWriter(f, fieldnames=fields, restval=0)
        w.writeheader()
        w.writerows(rows)
    summary = summarise(rows, controllers)
    positions = curve_positions(summary)
    if positions:
        summary["gcc_curve"] = positions
    families = sorted({trace_family(r["trace"]) for r in rows})
    if len(families) > 1:
        summary["families"] = {
            f: summarise([r for r in rows if trace_family(r["trace"]) == f], controllers)
            for f in families
        }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    width = max(10, *(len(c) for c in controllers))
    for c in controllers:
        s = summary[c]
        line = (
            f"{c:>{width}}: {s['bitrate_kbps']:7.0f} kbps  stall {s['stall_mean']:.4f} "
            f"p95 {s['stall_p95']:.4f}  fd95 {s['frame_delay_p95_ms']:6.0f} ms  "
            f"|dlog2| {s['change_log2']:.4f}  fallbacks {s['fallbacks']}/{s['decisions']}"
        )
        if c != "gcc":
            line += "  vs gcc: " + ", ".join(
                f"{k[7:]} {v[0]:+.1%} [{v[1]:+.1%},{v[2]:+.1%}]"
                for k, v in s.items()
                if k.startswith("vs_gcc_")
            )
        print(line)
    if positions:
        print("\nmean stall vs GCC's curve at equal bitrate (negative: better than GCC there):")
        for c, pos in positions.items():
            if pos["curve_stall"] is None:
                print(f"{c:>{width}}: bitrate {pos['bitrate']:+.1%} is outside the curve's range")
                continue
            print(
                f"{c:>{width}}: bitrate {pos['bitrate']:+.1%}, stall {pos['stall']:+.1%} vs the "
                f"curve's {pos['curve_stall']:+.1%}: {100 * pos['below_curve']:+.1f} points"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
