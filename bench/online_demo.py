"""Online learning demonstration (issue 8): adapt the shipped ``loki`` to a new network.

The "new deployment" is a synthetic family the model never met: a Markov-modulated
cellular-like link (traces.generators.markov_modulated) with lower, burstier states than the
generator's defaults, and faster fading. The held-out real family (mahimahi_cellular_us) is
never touched. Steps:

1. generate the family: collection traces (the sessions senders log), gate traces (what
   the A/B gate judges a candidate on during deployment) and held-back traces (the final
   report only), from disjoint generator seeds;
2. for each round: run the deployed model with exploration noise on sessions of the
   collection traces, logging every decision (loki.experience); update from *every* log
   gathered so far, starting from the deployed model; the gate A/Bs the candidate against the
   deployed model on the gate traces, and only an accepted candidate is deployed (a held or
   refused one is dropped; the next round starts again from the deployed one). The update is
   ``--method risk`` (default since session 8): the stall-risk layer
   (loki/learned/stall_risk.py) fitted on the logs, one candidate per strength in
   ``--risk-ks``, the gate's best accepted one going on; or ``--method awr``: advantage-
   weighted regression on the fusion gates and head (``--stall-weight`` sets its reward);
3. A/B on the held-back traces: shipped vs finally deployed, and GCC; the same on a
   subsample of the original training families (nothing must break there).

    .venv/bin/python -m bench.online_demo --out /tmp/online_demo --tol-bitrate 0
    .venv/bin/python -m bench.online_demo --out /tmp/online_demo_awr --method awr --stall-weight 16

(the committed results: bench/results/online-demo/result.json, the first, about 10 minutes on
2 cores; result-awr.json, the second, about 4 minutes. ``--tol-bitrate 0``: the gate refuses
any candidate that sends less than the deployed model, issue 8's "mean bitrate not lower".
The stall weight 16 was chosen by the gate traces in session 7; the gate and held-back sets
have 48 traces each since session 8; see loki/LEARNING.md)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from loki.ab import TOL_BITRATE, TOL_STALL, ab_specs, compare, run_pairs
from loki.learned.models import model_path, without_risk_layer
from loki.train.data import default_training_dirs
from loki.train.env import Reward
from loki.train.online import train_online, train_online_risk
from loki.train.parallel import Executor
from loki.train.risk import log_sessions
from traces.generators import LinkState, markov_modulated
from traces.mahimahi import write_mahimahi

#: The new network: deeper and more frequent fades than the training families.
NEW_STATES = (
    LinkState("outage", 0.25e6, 1_500),
    LinkState("weak", 0.8e6, 2_500),
    LinkState("fair", 2.0e6, 4_000),
    LinkState("good", 4.0e6, 3_000),
)
NEW_TRANSITIONS = (
    (0.0, 0.7, 0.3, 0.0),
    (0.4, 0.0, 0.5, 0.1),
    (0.2, 0.4, 0.0, 0.4),
    (0.1, 0.3, 0.6, 0.0),
)
FLUCTUATION = 0.4
TRACE_MS = 120_000
COLLECT_TRACES = 24
#: Gate and held-back traces (12 sessions each). Session 8 raised both from 12 to 48: with 12,
#: the p95 stall rate's paired interval on the held-back traces was about 50 points wide, as
#: wide as the -20 % the adaptation bar asks for, and the gate's verdicts on 12 traces did not
#: carry over to 12 others (loki/LEARNING.md). The first 12 of each are the earlier sets.
HELDOUT_TRACES = 48
GATE_TRACES = 48
#: Generator seeds: collection traces from 0, held-back ones from 10_000, gate ones from
#: 20_000 (disjoint).
HELDOUT_SEED_BASE = 10_000
GATE_SEED_BASE = 20_000


def make_family(
    root: Path, gate_traces: int = GATE_TRACES, heldout_traces: int = HELDOUT_TRACES
) -> tuple[Path, Path, Path]:
    collect, held, gate = root / "collect", root / "heldout", root / "gate"
    for d, n, base in (
        (collect, COLLECT_TRACES, 0),
        (held, heldout_traces, HELDOUT_SEED_BASE),
        (gate, gate_traces, GATE_SEED_BASE),
    ):
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            tr = markov_modulated(
                TRACE_MS,
                states=NEW_STATES,
                transitions=NEW_TRANSITIONS,
                fluctuation=FLUCTUATION,
                seed=base + i,
                name=f"newnet_{base + i}",
            )
            write_mahimahi(tr, d / f"newnet_{base + i}.up")
    return collect, held, gate


def gate_figures(res: dict) -> dict:
    """What a round keeps of the gate's A/B: verdict, reasons, QoS and the point changes."""
    return {
        "verdict": res["verdict"],
        "reasons": res["reasons"],
        "qos": res["qos"],
        **{k: v["estimate"] for k, v in res["changes"].items()},
    }


def risk_round(
    log_dirs: list[Path],
    current: str,
    folder: Path,
    ks: list[float],
    gate_specs: list,
    workers: int,
    seed: int,
    tols: dict,
) -> tuple[dict, Path]:
    """One round of ``--method risk``: the stall-risk layer fitted on every log so far, one
    candidate per strength k, each A/B'd against the deployed model on the gate traces; the
    round's candidate is the accepted one with the best QoS (or, if none is accepted, the best
    QoS, which the loop then does not deploy)."""
    tried = []
    for k in ks:
        path = folder / f"k{k:g}/model.npz"
        fig = train_online_risk(log_dirs, Path(current), path, k=k)
        rows_a, rows_b = run_pairs(gate_specs, current, str(path), workers)
        fig["gate"] = gate_figures(compare(rows_a, rows_b, seed=seed, **tols))
        tried.append((fig, path))
    accepted = [t for t in tried if t[0]["gate"]["verdict"] == "accept"]
    fig, path = max(accepted or tried, key=lambda t: t[0]["gate"]["qos"]["b"])
    fig = {**fig, "tried": [{"k": f["k"], "gate": f["gate"]} for f, _ in tried]}
    return fig, path


def summary_row(rows: list[dict]) -> dict:
    s = np.array([r["stall_rate"] for r in rows])
    return {
        "bitrate_kbps": float(np.mean([r["bitrate_kbps"] for r in rows])),
        "stall_mean": float(s.mean()),
        "stall_p95": float(np.percentile(s, 95)),
        "frame_delay_p95_ms": float(np.nanmean([r["frame_delay_p95_ms"] for r in rows])),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--sessions", type=int, default=96, help="logged sessions per round")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--train-sample", type=int, default=2, help="traces per training family")
    p.add_argument("--heldout-sample", type=int, help="held-back traces used (default all)")
    p.add_argument("--gate-traces", type=int, default=GATE_TRACES, help="traces the gate judges on")
    p.add_argument(
        "--heldout-traces", type=int, default=HELDOUT_TRACES, help="held-back traces generated"
    )
    p.add_argument("--duration-s", type=float, default=30.0, help="A/B session length")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stall-weight", type=float, default=Reward().stall)
    p.add_argument(
        "--explore-std",
        type=float,
        default=0.02,
        help="exploration noise of the logged sessions, log2 rate per decision (default: about "
        "the shipped loki's own at the end of its training, 0.018)",
    )
    p.add_argument(
        "--method",
        choices=("awr", "risk"),
        default="risk",
        help="the update (loki train online --method): risk (default since session 8) or awr",
    )
    p.add_argument(
        "--risk-ks",
        default="1,2,4,8",
        help="risk: the factor strengths tried each round; the gate picks among them",
    )
    p.add_argument(
        "--tol-bitrate",
        type=float,
        default=TOL_BITRATE,
        help="the gate's bitrate tolerance (0: refuse any candidate that sends less)",
    )
    p.add_argument(
        "--tol-stall", type=float, default=TOL_STALL, help="the gate's p95 stall tolerance"
    )
    args = p.parse_args(argv)
    out = args.out
    if not (0 <= args.tol_bitrate < 1 and 0 <= args.tol_stall < float("inf")):
        p.error("--tol-bitrate must be in [0, 1) and --tol-stall >= 0")
    tols = {"tol_bitrate": args.tol_bitrate, "tol_stall": args.tol_stall}
    try:
        risk_ks = [float(k) for k in args.risk_ks.split(",") if k.strip()]
    except ValueError:
        p.error(f"--risk-ks: expected numbers like 1,2,4,8, got {args.risk_ks!r}")
    if not risk_ks or any(not 0 <= k < float("inf") for k in risk_ks):
        p.error(f"--risk-ks: expected numbers >= 0, got {args.risk_ks!r}")
    for flag, n in (("--gate-traces", args.gate_traces), ("--heldout-traces", args.heldout_traces)):
        if n < 1:
            p.error(f"{flag} must be at least 1, got {n}")
    if (out / "family").exists():
        p.error(f"{out / 'family'} exists: give a new --out (a run never reuses another's traces)")
    collect, held, gate = make_family(out / "family", args.gate_traces, args.heldout_traces)
    collect_traces = sorted(str(p) for p in collect.iterdir())
    gate_specs = ab_specs([gate], None, args.seed + 3, args.duration_s)
    # The shipped loki's network alone: the demonstration adapts the network the project trained
    # (session 3's weights); the stall-risk layer the shipped loki carries since session 9 was
    # fitted on the training families and is what this loop would replace.
    shipped = str(without_risk_layer(model_path("loki"), out / "shipped/model.npz"))
    current = shipped
    rounds = []
    log_dirs: list[Path] = []
    for r in range(args.rounds):
        logs = out / f"logs/round{r}"
        log_sessions(
            current,
            collect_traces,
            logs,
            args.sessions,
            args.seed + r,
            args.workers,
            args.explore_std,
        )
        log_dirs.append(logs)
        if args.method == "risk":
            fig, new = risk_round(
                log_dirs,
                current,
                out / f"models/round{r}",
                risk_ks,
                gate_specs,
                args.workers,
                args.seed + r,
                tols,
            )
        else:
            new = out / f"models/round{r}/model.npz"
            fig = train_online(
                log_dirs,
                Path(current),
                new,
                seed=args.seed + r,
                epochs=args.epochs,
                reward=Reward(stall=args.stall_weight),
            )
            rows_a, rows_b = run_pairs(gate_specs, current, str(new), args.workers)
            fig["gate"] = gate_figures(compare(rows_a, rows_b, seed=args.seed + r, **tols))
        rounds.append(fig)
        print(f"round {r}: gate {json.dumps(fig['gate'])}")
        if fig["gate"]["verdict"] == "accept":
            current = str(new)
    result: dict = {"method": args.method, **tols, "rounds": rounds, "updated": current}
    for label, dirs, sample in (
        ("new_family_heldout", [held], args.heldout_sample),
        ("training_families", default_training_dirs(), args.train_sample),
    ):
        specs = ab_specs(dirs, sample, args.seed + 7, args.duration_s)
        rows_a, rows_b = run_pairs(specs, shipped, current, args.workers)
        with Executor(args.workers) as ex:
            from loki.train.rollout import run_session

            rows_g = ex.map(run_session, [(s, "gcc") for s in specs])
        res = compare(rows_a, rows_b, seed=args.seed, **tols)
        res["table"] = {
            "gcc": summary_row(rows_g),
            "shipped": summary_row(rows_a),
            "updated": summary_row(rows_b),
        }
        result[label] = res
        print(f"\n== {label}: {len(specs)} paired sessions ==")
        for name, row in res["table"].items():
            print(
                f"  {name:>8}: {row['bitrate_kbps']:7.0f} kbps  stall mean {row['stall_mean']:.4f}"
                f"  p95 {row['stall_p95']:.4f}  frame delay p95 {row['frame_delay_p95_ms']:.0f} ms"
            )
        for name, ch in res["changes"].items():
            ci = f"[{ch['ci_low']:+7.1%}, {ch['ci_high']:+7.1%}]"
            print(f"  {name:>22}: {ch['estimate']:+7.1%} {ci}")
        print(f"  verdict: {res['verdict']} {res['reasons']}")
    (out / "result.json").write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
