"""Train ``gcc-clone``: GCC turned into a neural network by imitation learning with DAgger.

Read top to bottom (CleanRL style):

1. Iteration 0 rolls GCC itself out over links drawn from the training traces. The session's
   controller is a :class:`~loki.learned.controller.RatioController` whose decisions all fall
   back to its parallel GCC, so the trajectory is GCC's while the very features the clone will
   see at run time are recorded. Label of each report: GCC's new target as a log2 ratio to the
   controller's previous target, clipped to the action range (+-1).
2. Train the network (observation -> label; MSE) on everything gathered so far.
3. DAgger (Ross et al., 2011): roll out the *clone* (each decision is GCC's with probability
   beta, else the clone's; beta halves every iteration and is 0 in the last), while the
   parallel GCC receives the same reports, RTT, loss reports and ticks; after each decision
   the parallel GCC is put in the clone's rate state (:func:`sync_gcc_rate`), so each
   report's label is what GCC decides *from where the clone is*; aggregate; retrain. So the
   clone learns to recover from its own closed-loop errors.
4. After every iteration the clone and GCC run closed loop on validation links (training
   families, traces not used for fitting) and the paired bitrate and stall figures are logged.
   DAgger's guarantee is for the best policy of the sequence, not the last, so the iteration
   whose closed loop is nearest GCC (:func:`closed_loop_gap`) is the one exported.

Outputs in ``--out`` (default ``loki/models/gcc-clone``): ``model.npz``, ``card.md``,
``curve.csv`` (per epoch) and ``closed_loop.csv`` (per iteration).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from gcc.goog_cc_network_control import GoogCcNetworkController
from loki.features import FEATURE_NAMES, HISTORY
from loki.learned.controller import ACTION_LOG2_RANGE, RatioController
from loki.learned.policies import STATE_HEAD_OUTPUTS, MlpPolicy
from loki.nn import Normalizer
from loki.train.common import (
    HIDDEN,
    CsvLog,
    RangeTracker,
    Stopwatch,
    TrainArgs,
    export_linears,
    out_dir,
    seed_everything,
    trunk,
    write_card,
    write_model,
)
from loki.train.data import (
    EpisodeSpec,
    LinkRanges,
    bursty_text,
    draw_spec,
    path_change_text,
    split_by_trace,
    training_trace_paths,
    write_synthetic_family,
)
from loki.train.evaluate import clone_gap
from loki.train.parallel import Executor
from loki.train.rollout import run_session

NAME = "gcc-clone"


@dataclass
class CloneArgs(TrainArgs):
    steps: int = 240_000  # labelled decisions over all iterations
    iterations: int = 4
    episode_s: float = 30.0
    epochs: int = 20
    lr: float = 1e-3
    batch: int = 512
    val_share: float = 0.1  # of traces, for the closed-loop check
    val_episodes: int = 48
    #: Per-sample weight 1 / (|label| + eps), normalised to mean 1 (None: plain MSE). GCC's
    #: moves are mostly tiny and its cuts large; plain MSE spends its precision on the cuts,
    #: while closed-loop drift comes from small biases in the tiny moves.
    small_move_eps: float | None = None
    #: Draw fitting and validation episodes family by family (see data.draw_spec).
    balance_families: bool = False
    #: Add the project's synthetic links as one more family (data.synthetic_traces).
    synthetic: bool = False
    #: Name GCC's move (decrease / hold / increase) and regress its size per move, instead of
    #: regressing one log ratio (policies.decode_state_head).
    state_head: bool = False


#: Subfolder of the output with every DAgger iteration's model (``iteration-K/model.npz``).
ITERATIONS_DIR = "iterations"


#: A label within this of 0 is GCC holding its rate (a hold is an exact 0; the loss-based
#: estimator's tiny adjustments are holds too).
HOLD_EPS = 1e-4


def move_of(y: torch.Tensor) -> torch.Tensor:
    """GCC's move as a class: 0 decrease, 1 hold, 2 increase."""
    move = torch.ones_like(y, dtype=torch.long)
    move[y < -HOLD_EPS] = 0
    move[y > HOLD_EPS] = 2
    return move


class CloneNet(nn.Module):
    """Trunk (the exposed high-level feature layer) and a linear head: one output predicting
    the label, or with ``state_head`` GCC's move and its size (policies.decode_state_head)."""

    def __init__(self, obs_size: int, state_head: bool = False) -> None:
        super().__init__()
        self.trunk = trunk(obs_size)
        self.state_head = state_head
        self.head = nn.Linear(HIDDEN[-1], STATE_HEAD_OUTPUTS if state_head else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.trunk(x))
        return out if self.state_head else out.squeeze(-1)

    def action(self, x: torch.Tensor) -> torch.Tensor:
        """The decoded action (for the held-back MSE, comparable across heads)."""
        out = self.forward(x)
        if not self.state_head:
            return out
        move = out[:, :3].argmax(dim=1)
        dec = out[:, 3].clamp(-1.0, 0.0)
        inc = out[:, 4].clamp(0.0, 1.0)
        return torch.where(move == 0, dec, torch.where(move == 2, inc, torch.zeros_like(dec)))

    def loss(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if not self.state_head:
            return (w * (self.forward(x) - y) ** 2).mean()
        out = self.forward(x)
        move = move_of(y)
        ce = nn.functional.cross_entropy(out[:, :3], move, reduction="none")
        size = torch.where(move == 0, out[:, 3], out[:, 4])
        sq = torch.where(move == 1, torch.zeros_like(y), (size - y) ** 2)
        return (w * (ce + sq)).mean()

    def export(self) -> dict[str, np.ndarray]:
        return {
            **export_linears(self.trunk, "clone.trunk"),
            **export_linears(self.head, "clone.head"),
        }


def label_of(gcc_bps: int, prev_bps: int) -> float:
    """GCC's target as an action of the clone: log2 ratio to the previous rate, clipped."""
    y = np.log2(max(gcc_bps, 1) / max(prev_bps, 1)) / ACTION_LOG2_RANGE
    return float(np.clip(y, -1.0, 1.0))


def sync_gcc_rate(gcc: GoogCcNetworkController, rate_bps: int) -> None:
    """Put the parallel GCC in the clone's state: GCC's current target becomes ``rate_bps``.

    DAgger with a stateful expert: GCC's label must be *GCC's decision from the state the
    clone is in*, not the target of a GCC that has drifted along its own trajectory (which
    the clone cannot observe: its labels would say "jump to 1.5 Mbps" from a 60 kbps state,
    and the clone learns runaway jumps). GCC's rate state is its loss-based target, capped by
    the delay-based (AIMD) estimate: :meth:`GoogCcNetworkController.assume_target` sets the
    target to the clone's rate and raises the AIMD estimate to it if below. On GCC's own
    trajectory this changes nothing, so iteration 0 is GCC exactly.
    """
    gcc.assume_target(rate_bps)


def collect_episode(job: tuple[EpisodeSpec, dict | None, float, int]):
    """Roll one episode out; return (observations, labels) of its decision reports.

    ``params`` None means GCC drives (beta is then irrelevant); otherwise each decision is the
    parallel GCC's with probability ``beta`` and the clone's otherwise.
    """
    from loki.emu.session import Session, SessionConfig

    spec, params, beta, seed = job
    rng = np.random.default_rng(seed)
    policy = normalize = None
    if params is not None:
        policy = MlpPolicy(params, "clone")
        normalize = Normalizer(params["obs_mean"], params["obs_std"])
    ctl = RatioController(None)
    session = Session(ctl, spec.link(), SessionConfig(duration_s=spec.duration_s, seed=spec.seed))
    obs_rows: list[np.ndarray] = []
    labels: list[float] = []
    while session.step():
        if not ctl.awaiting_action:
            continue
        if ctl.admitted:
            obs_rows.append(ctl.obs.copy())
            labels.append(label_of(ctl.gcc.target_bps, ctl.target_bps))
        if policy is None or not ctl.admitted or rng.random() < beta:
            ctl.apply_action(None)  # GCC's own target
        else:
            ctl.apply_action(policy(normalize(ctl.obs)))
        sync_gcc_rate(ctl.gcc, ctl.target_bps)
        session.refresh_target()
    obs = np.array(obs_rows, dtype=np.float32).reshape(-1, ctl.obs_size)
    return obs, np.array(labels, dtype=np.float32)


def closed_loop(executor: Executor, specs: list[EpisodeSpec], model_path: Path) -> dict:
    """Paired mean bitrate and stall of the clone against GCC on the validation links."""
    rows = executor.map(run_session, [(s, c) for c in ("gcc", str(model_path)) for s in specs])
    gcc, clone = rows[: len(specs)], rows[len(specs) :]

    def mean(rs, k):
        return float(np.mean([r[k] for r in rs]))

    return {
        "gcc_kbps": mean(gcc, "bitrate_kbps"),
        "clone_kbps": mean(clone, "bitrate_kbps"),
        "gcc_stall": mean(gcc, "stall_rate"),
        "clone_stall": mean(clone, "stall_rate"),
        "gcc_change_log2": mean(gcc, "change_log2"),
        "clone_change_log2": mean(clone, "change_log2"),
    }


def closed_loop_gap(loop: dict) -> float:
    """:func:`~loki.train.evaluate.clone_gap` of a :func:`closed_loop` result."""
    return clone_gap(loop["clone_kbps"], loop["gcc_kbps"], loop["clone_stall"], loop["gcc_stall"])


def train(args: CloneArgs) -> Path:
    clock = Stopwatch()
    seed_everything(args.seed)
    rng = np.random.default_rng(args.seed)
    paths = training_trace_paths(args.traces)
    fit_paths, val_paths = split_by_trace(paths, rng, args.val_share)
    out = out_dir(args, NAME)  # after the inputs are read: a bad one leaves nothing behind
    if args.synthetic:
        # A sanity family more than a sample of the world: fitted on and checked on.
        synthetic = write_synthetic_family(out)
        val_paths, fit_paths = val_paths + synthetic, fit_paths + synthetic
    ranges = LinkRanges()
    fit_ranges = replace(
        ranges, path_change_share=args.path_change_share, bursty_share=args.bursty_share
    )
    decisions_per_episode = int(args.episode_s * 10)
    episodes = max(2, args.steps // (args.iterations * decisions_per_episode))
    bal = args.balance_families
    val_specs = [
        draw_spec(val_paths, rng, 60.0, ranges, balance_families=bal)
        for _ in range(args.val_episodes)
    ]
    curve = CsvLog(out / "curve.csv", ["iteration", "epoch", "samples", "train_mse", "val_mse"])
    loop_log = CsvLog(
        out / "closed_loop.csv",
        [
            "iteration",
            "beta",
            "samples",
            "gap",
            "gcc_kbps",
            "clone_kbps",
            "gcc_stall",
            "clone_stall",
            "gcc_change_log2",
            "clone_change_log2",
        ],
    )
    obs_size = RatioController.obs_size
    net = CloneNet(obs_size, state_head=args.state_head)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    all_obs: list[np.ndarray] = []
    all_y: list[np.ndarray] = []
    seen = RangeTracker(obs_size)
    mean = std = None
    params: dict | None = None
    best: tuple[float, int, dict, dict, float] | None = None  # gap, iteration, weights, loop, mse
    every: list[tuple[int, dict]] = []  # (iteration, weights): each one is kept as a candidate
    model_path = out / "model.npz"
    with Executor(args.workers, args.ray_address) as ex:
        for it in range(args.iterations):
            beta = 0.0 if it == args.iterations - 1 else 0.5**it
            specs = [
                draw_spec(fit_paths, rng, args.episode_s, fit_ranges, balance_families=bal)
                for _ in range(episodes)
            ]
            jobs = [(s, params, beta, int(rng.integers(2**31))) for s in specs]
            got = []
            for i in tqdm(range(0, len(jobs), 8), desc=f"dagger {it} rollouts", unit="x8 ep"):
                got += ex.map(collect_episode, jobs[i : i + 8])
            for o, y in got:
                all_obs.append(o)
                all_y.append(y)
                seen.update(o)
            x_np = np.concatenate(all_obs)
            y_np = np.concatenate(all_y)
            if mean is None:  # the normaliser is fitted once, on GCC's own trajectories
                mean, std = x_np.mean(axis=0), x_np.std(axis=0)
            norm = Normalizer(mean, std)
            x = torch.as_tensor(norm(x_np))
            y = torch.as_tensor(y_np)
            if args.small_move_eps is None:
                w = torch.ones_like(y)
            else:
                w = 1.0 / (y.abs() + args.small_move_eps)
                w = w / w.mean()
            n = x.shape[0]
            perm = torch.randperm(n)
            n_hold = max(1, n // 20)
            hold, fit = perm[:n_hold], perm[n_hold:]
            for epoch in tqdm(range(args.epochs), desc=f"dagger {it} fit", leave=False):
                net.train()
                total = 0.0
                idx = fit[torch.randperm(fit.numel())]
                for b in range(0, idx.numel(), args.batch):
                    j = idx[b : b + args.batch]
                    loss = net.loss(x[j], y[j], w[j])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += loss.item() * j.numel()
                with torch.no_grad():
                    val = float(nn.functional.mse_loss(net.action(x[hold]), y[hold]))
                curve.row(
                    iteration=it, epoch=epoch, samples=n, train_mse=total / fit.numel(), val_mse=val
                )
            params = {
                **net.export(),
                "obs_mean": mean.astype(np.float32),
                "obs_std": std.astype(np.float32),
            }
            low, high = seen.bounds()
            meta = {"kind": "clone", "iteration": it, "seed": args.seed}
            write_model(
                out, net.export(), obs_mean=mean, obs_std=std, obs_low=low, obs_high=high, meta=meta
            )
            loop = closed_loop(ex, val_specs, model_path)
            gap = closed_loop_gap(loop)
            loop_log.row(iteration=it, beta=beta, samples=n, gap=gap, **loop)
            tqdm.write(
                f"dagger {it}: {n} samples, val mse {val:.4f}, closed loop kbps "
                f"{loop['clone_kbps']:.0f} vs GCC {loop['gcc_kbps']:.0f}, stall "
                f"{loop['clone_stall']:.4f} vs {loop['gcc_stall']:.4f}, gap {gap:.2f}"
            )
            weights_it = net.export()
            every.append((it, weights_it))
            if best is None or gap < best[0]:
                best = (gap, it, weights_it, loop, val)
    curve.close()
    loop_log.close()
    assert best is not None
    _, best_it, weights, last_loop, val = best
    meta = {
        "kind": "clone",
        "seed": args.seed,
        "iterations": args.iterations,
        "exported_iteration": best_it,
        "samples": int(sum(len(y) for y in all_y)),
        "train_minutes": round(clock.minutes, 2),
        "traces": len(paths),
        "command": args.command,
    }
    low, high = seen.bounds()
    # Every iteration as a model of its own (same normaliser and guard range as the export):
    # the closed loop on the validation links is one judge of a clone; bench/clone_selection.py
    # adds others (faults, constant links) and can pick among these.
    for it, w in every:
        write_model(
            out / ITERATIONS_DIR / f"iteration-{it}",
            w,
            obs_mean=mean,
            obs_std=std,
            obs_low=low,
            obs_high=high,
            meta={**meta, "exported_iteration": it},
        )
    write_model(out, weights, obs_mean=mean, obs_std=std, obs_low=low, obs_high=high, meta=meta)
    _card(out, args, meta, last_loop, val_mse=val, n_fit=len(fit_paths), n_val=len(val_paths))
    return model_path


def _head_text(args: CloneArgs) -> str:
    if args.state_head:
        return (
            "State head (`--state-head`): logits of GCC's move (decrease, hold, increase) and the "
            "size of a decrease and of an increase; the action is the likeliest move with its "
            f"size, as log2(next target / previous target) within +-{ACTION_LOG2_RANGE}."
        )
    return f"Linear head: log2(next target / previous target), clipped to +-{ACTION_LOG2_RANGE}."


def _card(
    out: Path, args: CloneArgs, meta: dict, loop: dict, *, val_mse: float, n_fit: int, n_val: int
) -> None:
    kbps_rel = loop["clone_kbps"] / max(loop["gcc_kbps"], 1e-9) - 1.0
    stall_rel = (loop["clone_stall"] - loop["gcc_stall"]) / max(loop["gcc_stall"], 1e-9)
    write_card(
        out,
        "gcc-clone: GCC imitated by a neural network (DAgger)",
        {
            "Command": f"`{args.command}`",
            "Model": (
                f"Input: {HISTORY} reports x {len(FEATURE_NAMES)} features "
                f"({', '.join(FEATURE_NAMES)}), normalised. Trunk {len(HIDDEN)} x {HIDDEN[0]} "
                f"tanh: its output is the high-level feature layer Loki fuses. {_head_text(args)} "
                "Weights `model.npz`, numpy inference."
            ),
            "Data": (
                f"Training families (held-out family never used): {n_fit} traces for fitting, "
                f"{n_val} for the closed-loop check; links drawn per episode: one-way delay "
                f"10-80 ms, drop-tail queue 50-400 packets, random loss 0 (half the episodes) "
                f"or 0-2 %{path_change_text(args.path_change_share)}"
                f"{bursty_text(args.bursty_share)}; "
                f"{args.episode_s:.0f} s episodes; {meta['samples']} labelled decisions over "
                f"{args.iterations} DAgger iterations (beta 1, 0.5, ... , 0); exported: iteration "
                f"{meta['exported_iteration']}, the one whose closed loop is nearest GCC on the "
                f"validation links; seed {args.seed}."
            ),
            "Measured": (
                f"Training time {meta['train_minutes']:.1f} min. MSE on the 5 % of reports kept "
                f"out of fitting: {val_mse:.4f}. "
                f"Closed loop on {args.val_episodes} validation links (60 s): bitrate "
                f"{loop['clone_kbps']:.0f} kbps vs GCC {loop['gcc_kbps']:.0f} ({kbps_rel:+.1%}), "
                f"stall rate {loop['clone_stall']:.4f} vs {loop['gcc_stall']:.4f} "
                f"({stall_rel:+.1%}), mean |log2 rate change| per decision "
                f"{loop['clone_change_log2']:.4f} vs {loop['gcc_change_log2']:.4f}. "
                f"Learning curves: `curve.csv`, `closed_loop.csv`. Evaluation on the held-out "
                f"family: see loki/LEARNING.md."
            ),
            "Meta": f"```json\n{json.dumps(meta, indent=1, sort_keys=True)}\n```",
        },
    )
