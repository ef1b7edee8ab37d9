"""``loki ab``: the A/B gate a model update must pass before it replaces the deployed one.

Both models run on the same emulated sessions (same traces, windows, links and seeds, the
protocol of :mod:`loki.train.evaluate`), so every per-session figure comes in pairs and the
paired bootstrap of :mod:`loki.stats` gives each difference a 95 % interval. The verdict:

* ``refuse`` (exit status 1) if B raises the p95 stall rate by more than ``--tol-stall``
  (relative, and by more than :data:`STALL_ABS_FLOOR` absolute, so 0.000 -> 0.001 is not a
  regression) or lowers the mean bitrate by more than ``--tol-bitrate``: the bars of issue 8;
* otherwise ``accept`` if B's mean QoS score is at least A's, ``hold`` if not.

The QoS score (per session, higher is better) weighs the judged figures as the training
reward does (loki.train.env): utilisation - 8 x stall rate - 0.6 x p95 frame delay beyond
400 ms (s). iQIYI's A/B tests ranked RL bitrate models by such a scalar QoS score.

With ``--logs``, logged sessions (loki.experience) of each model, matched by model hash,
are summarised too; they are not paired (different senders met different networks), so they
inform and do not decide.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from loki.stats import derive_seed, paired_relative_change

TOL_STALL = 0.05
TOL_BITRATE = 0.05
STALL_ABS_FLOOR = 0.002
QOS_STALL_WEIGHT = 8.0
QOS_DELAY_WEIGHT = 0.6
QOS_DELAY_ALLOWANCE_MS = 400.0
RESAMPLES = 2000
#: (name, per-session column, statistic)
COMPARED = (
    ("bitrate_mean", "bitrate_kbps", "mean"),
    ("stall_mean", "stall_rate", "mean"),
    ("stall_p95", "stall_rate", "p95"),
    ("frame_delay_p95_mean", "frame_delay_p95_ms", "mean"),
)


def qos_score(row: dict) -> float:
    fd = row["frame_delay_p95_ms"]
    excess_s = 0.0 if not np.isfinite(fd) else max(0.0, fd - QOS_DELAY_ALLOWANCE_MS) / 1000.0
    return (
        float(row["utilization"])
        - QOS_STALL_WEIGHT * float(row["stall_rate"])
        - QOS_DELAY_WEIGHT * excess_s
    )


def ab_specs(trace_dirs: list[Path], sample: int | None, seed: int, duration_s: float | None):
    from loki.train.evaluate import specs_for

    specs = []
    for d in trace_dirs:
        specs += specs_for(Path(d), sample, seed)
    if duration_s is not None:
        specs = [replace(s, duration_s=duration_s) for s in specs]
    return specs


def run_pairs(specs, a: str, b: str, workers: int = 1, ray_address: str | None = None):
    from loki.train.parallel import Executor
    from loki.train.rollout import run_session

    jobs = [(s, m) for s in specs for m in (a, b)]
    with Executor(workers, ray_address) as ex:
        rows = ex.map(run_session, jobs)
    return rows[0::2], rows[1::2]


def paired_mean_diff(c: np.ndarray, b: np.ndarray, seed: list[int]) -> dict:
    d = c - b
    rng = np.random.default_rng(seed)
    reps = d[rng.integers(0, d.size, size=(RESAMPLES, d.size))].mean(axis=1)
    lo, hi = np.quantile(reps, [0.025, 0.975])
    return {"estimate": float(d.mean()), "ci_low": float(lo), "ci_high": float(hi)}


def compare(
    rows_a: list[dict],
    rows_b: list[dict],
    *,
    seed: int = 0,
    tol_stall=TOL_STALL,
    tol_bitrate=TOL_BITRATE,
) -> dict:
    """Paired changes B vs A, the QoS scores and the verdict."""
    out: dict = {"sessions": len(rows_a), "changes": {}}
    for name, col, stat in COMPARED:
        ca = np.array([r[col] for r in rows_a], dtype=np.float64)
        cb = np.array([r[col] for r in rows_b], dtype=np.float64)
        ch = paired_relative_change(cb, ca, stat, resamples=RESAMPLES, seed=derive_seed(seed, name))
        out["changes"][name] = ch.to_dict()
    qa = np.array([qos_score(r) for r in rows_a])
    qb = np.array([qos_score(r) for r in rows_b])
    out["qos"] = {
        "a": float(qa.mean()),
        "b": float(qb.mean()),
        "b_minus_a": paired_mean_diff(qb, qa, derive_seed(seed, "qos")),
    }
    stall = out["changes"]["stall_p95"]
    bitrate = out["changes"]["bitrate_mean"]
    reasons = []
    if stall["estimate"] > tol_stall and stall["candidate"] - stall["baseline"] > STALL_ABS_FLOOR:
        reasons.append(f"p95 stall rate {stall['baseline']:.4f} -> {stall['candidate']:.4f}")
    if bitrate["estimate"] < -tol_bitrate:
        reasons.append(f"mean bitrate {bitrate['estimate']:+.1%}")
    verdict = "refuse" if reasons else "accept" if qb.mean() >= qa.mean() else "hold"
    out.update(verdict=verdict, reasons=reasons, tol_stall=tol_stall, tol_bitrate=tol_bitrate)
    return out


def summarise_logs(log_dirs: list[Path], a: str, b: str) -> dict:
    from loki.experience import file_sha256, find_logs, read_log

    hashes = {"a": file_sha256(a), "b": file_sha256(b)}
    logs = [read_log(p) for p in find_logs(log_dirs)]
    out = {}
    for side, h in hashes.items():
        recs = [log.records for log in logs if log.header["model_sha256"] == h]
        if not recs:
            out[side] = {"sessions": 0}
            continue
        allr = np.concatenate(recs)
        out[side] = {
            "sessions": len(recs),
            "decisions": int(allr.size),
            "recv_log2mbps_mean": float(np.nanmean(allr["recv_log2mbps"])),
            "queue_delay_ms_mean": float(np.nanmean(allr["queue_delay_100ms"]) * 100),
            "loss_mean": float(np.nanmean(allr["loss"])),
            "frozen_share_mean": float(np.nanmean(allr["frozen_share"]))
            if np.isfinite(allr["frozen_share"]).any()
            else None,
        }
    return out


def add_ab_parser(subparsers) -> argparse.ArgumentParser:
    from loki.argtypes import number, positive_float, positive_int

    tolerance = number(float, lambda v: 0.0 <= v < float("inf"), "a relative tolerance >= 0")
    p = subparsers.add_parser("ab", help="A/B gate: paired QoE of two models, with a verdict")
    p.add_argument("--a", required=True, help="deployed model (.npz or registry name)")
    p.add_argument("--b", required=True, help="candidate model (.npz or registry name)")
    p.add_argument("--traces", type=Path, nargs="+", required=True, metavar="DIR")
    p.add_argument("--logs", type=Path, nargs="+", metavar="DIR")
    p.add_argument("--sample", type=positive_int, help="at most N traces per folder (seeded)")
    p.add_argument("--duration-s", type=positive_float, help="session length (default 60 s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=positive_int, default=1)
    p.add_argument("--ray-address")
    p.add_argument("--tol-stall", type=tolerance, default=TOL_STALL)
    p.add_argument("--tol-bitrate", type=tolerance, default=TOL_BITRATE)
    p.add_argument("--json", type=Path, help="write the full result here")
    p.set_defaults(func=cmd_ab)
    return p


def _model_file(model: str) -> str:
    """The file a model was loaded from (logs name their model by the file's hash)."""
    from loki.controllers import MODEL_SUFFIX
    from loki.learned.models import REGISTERED, model_path

    if model.endswith(MODEL_SUFFIX):
        return model

    if model not in REGISTERED:
        raise ValueError(f"--logs matches sessions by model file: {model!r} is not a learned model")
    return str(model_path(model))


def cmd_ab(args: argparse.Namespace) -> int:
    from loki.cli import CliError, _check_output_paths
    from loki.train.rollout import check_controller
    from traces.trace import TraceError

    _check_output_paths(args.json)
    try:
        for flag, model in (("--a", args.a), ("--b", args.b)):
            try:
                check_controller(model)
            except ValueError as e:
                raise ValueError(f"{flag}: {e}") from e
        if args.logs:
            args.a, args.b = _model_file(args.a), _model_file(args.b)
        specs = ab_specs(args.traces, args.sample, args.seed, args.duration_s)
    except (TraceError, ValueError, OSError) as e:
        raise CliError(str(e)) from e
    if not specs:
        raise CliError(f"no traces under {', '.join(map(str, args.traces))}")
    rows_a, rows_b = run_pairs(specs, args.a, args.b, args.workers, args.ray_address)
    res = compare(
        rows_a, rows_b, seed=args.seed, tol_stall=args.tol_stall, tol_bitrate=args.tol_bitrate
    )
    res.update(a=args.a, b=args.b)
    if args.logs:
        res["logs"] = summarise_logs(args.logs, args.a, args.b)
    print_result(res)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))
    return 1 if res["verdict"] == "refuse" else 0


def print_result(res: dict) -> None:
    print(f"A/B over {res['sessions']} paired sessions (B vs A, 95 % bootstrap CI):")
    for name, ch in res["changes"].items():
        print(
            f"  {name:>22}: {ch['baseline']:9.4f} -> {ch['candidate']:9.4f}  "
            f"{ch['estimate']:+7.1%} [{ch['ci_low']:+7.1%}, {ch['ci_high']:+7.1%}]"
        )
    q = res["qos"]
    d = q["b_minus_a"]
    print(
        f"  {'QoS score':>22}: {q['a']:9.4f} -> {q['b']:9.4f}  "
        f"{d['estimate']:+.4f} [{d['ci_low']:+.4f}, {d['ci_high']:+.4f}]"
    )
    why = f" ({'; '.join(res['reasons'])})" if res["reasons"] else ""
    print(f"verdict: {res['verdict']}{why}")
