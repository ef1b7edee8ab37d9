"""``loki train online``: update a deployed ``loki`` model from experience logs.

Method: advantage-weighted regression (Peng et al., 2019, AWR) with a behaviour-regularising
term towards the deployed model, on the fusion gates and the action head only; both trunks
(the GCC clone's, and the learner's) stay frozen. Why not on-policy PPO: live logs come from
many senders, running whatever model version they had, with delays before they are
collected, so they are off-policy by the time they are used; PPO's clipped ratio is only
valid on data of the current policy. AWR needs no importance ratio (the logged
log-probabilities are kept for diagnostics and for a later on-policy variant), learns only
from actions that did better than expected, and the pull towards the deployed model keeps an
update small, which the A/B gate then checks.

Reward per decision: the training reward (:func:`loki.train.env.reward_of`) from the
emulator's ground-truth terms when the log has them; for live logs, which lack the
receiver's truth, a proxy from the feedback signals (received rate, queueing delay, loss).
Returns are discounted (gamma 0.98, as PPO trained) to the end of each session; the baseline
is a ridge regression of returns on the frozen features.

Everything random (minibatch order) is drawn from ``--seed``: same logs, same seed, same model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

# The parser (add_online_arguments) is built on every `loki` start: the emulator, the models
# and torch are imported only when an update runs.
if TYPE_CHECKING:
    from loki.train.env import Reward

GAMMA = 0.98
#: AWR temperature on standardised advantages, and the weight cap (Peng et al. use 20).
AWR_BETA = 1.0
MAX_WEIGHT = 20.0
#: Weight of the squared distance to the deployed model's action (behaviour regularisation).
BEHAVIOUR_WEIGHT = 0.5
RIDGE = 1e-2
EPOCHS = 30
BATCH = 512
LR = 1e-3
#: Live proxy reward: received rate (log2(1 + Mbps)) minus queueing delay beyond this.
PROXY_DELAY_ALLOWANCE_100MS = 1.5
PARAM_KEYS = (
    "fusion.gate_c.weight",
    "fusion.gate_c.bias",
    "fusion.gate_r.weight",
    "fusion.gate_r.bias",
    "head.0.weight",
    "head.0.bias",
)


@dataclass
class Batch:
    """The training rows of one or more logs."""

    features: np.ndarray  # (N, 2H) frozen [f_c, f_r]
    action: np.ndarray  # (N,) logged action (with exploration)
    returns: np.ndarray  # (N,)


def rewards_of(recs: np.ndarray, w: Reward) -> np.ndarray:
    """Reward of decision k: the terms measured at decision k + 1 (its interval)."""
    from loki.experience import TRUTH_FIELDS

    truth = np.stack([recs[f] for f in TRUTH_FIELDS], axis=1).astype(np.float64)
    tgt = np.maximum(recs["target_bps"].astype(np.float64), 1.0)
    change = np.abs(np.diff(np.log2(tgt), prepend=np.log2(tgt[0])))
    if np.all(np.isfinite(truth[:, :4])):
        util, frozen, excess, loss = truth[:, 0], truth[:, 1], truth[:, 2], truth[:, 3]
        r = util - w.stall * frozen - w.delay * excess - w.loss * loss
    else:
        qd = np.maximum(recs["queue_delay_100ms"] - PROXY_DELAY_ALLOWANCE_100MS, 0.0)
        r = recs["recv_log2mbps"] - w.delay * qd - w.loss * recs["loss"]
    r = np.asarray(r, dtype=np.float64) - w.change * change
    return r[1:]


def discounted_returns(r: np.ndarray, gamma: float = GAMMA) -> np.ndarray:
    out = np.empty_like(r)
    acc = 0.0
    for i in range(r.size - 1, -1, -1):
        acc = r[i] + gamma * acc
        out[i] = acc
    return out


def prepare_log(job: tuple) -> dict:
    """One log's rows for training (a picklable job, so Ray or a pool can run it)."""
    from loki.experience import read_log
    from loki.learned.policies import FusionPolicy
    from loki.nn import Normalizer, load_model

    path, model, reward = job
    log = read_log(path)
    recs = log.records
    policy = FusionPolicy(load_model(model), Normalizer.from_params(load_model(model)))
    if recs.size < 3:
        return {"features": np.zeros((0, 2 * policy.feature_size)), "action": [], "returns": []}
    ret = discounted_returns(rewards_of(recs, reward))
    recs = recs[:-1]
    keep = (recs["fallback"] == 0) & np.isfinite(recs["action"])
    feats = np.stack([np.concatenate(policy.features(o)) for o in recs["obs"][keep]])
    return {
        "features": feats.astype(np.float32),
        "action": np.clip(recs["action"][keep], -1.0, 1.0).astype(np.float32),
        "returns": ret[keep].astype(np.float32),
    }


def gather(logs: list[Path], model: Path, reward: Reward, ray_address: str | None = None) -> Batch:
    from loki.train.parallel import Executor

    jobs = [(str(p), str(model), reward) for p in logs]
    with Executor(1, ray_address) as ex:
        parts = ex.map(prepare_log, jobs)
    parts = [p for p in parts if len(p["action"])]
    if not parts:
        raise ValueError("no usable decisions in the logs")
    return Batch(
        np.concatenate([p["features"] for p in parts]),
        np.concatenate([p["action"] for p in parts]),
        np.concatenate([p["returns"] for p in parts]),
    )


def advantages(batch: Batch) -> np.ndarray:
    """Returns minus a ridge-regression baseline on the frozen features, standardised."""
    x = np.concatenate([batch.features, np.ones((len(batch.returns), 1))], axis=1).astype(
        np.float64
    )
    y = batch.returns.astype(np.float64)
    coef = np.linalg.solve(x.T @ x + RIDGE * np.eye(x.shape[1]), x.T @ y)
    adv = y - x @ coef
    return (adv - adv.mean()) / (adv.std() + 1e-8)


def update(
    params: dict[str, np.ndarray], batch: Batch, *, seed: int, epochs: int = EPOCHS
) -> tuple[dict[str, np.ndarray], dict]:
    """AWR + behaviour regularisation on gates and head; returns new params and figures."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    t = {k: torch.tensor(params[k], dtype=torch.float64, requires_grad=True) for k in PARAM_KEYS}
    f0 = {k: v.detach().clone() for k, v in t.items()}
    feats = torch.tensor(batch.features, dtype=torch.float64)
    act = torch.tensor(batch.action, dtype=torch.float64)
    adv = advantages(batch)
    weight = torch.tensor(np.minimum(np.exp(adv / AWR_BETA), MAX_WEIGHT))
    h = feats.shape[1] // 2

    def forward(p: dict, f: torch.Tensor) -> torch.Tensor:
        gc = torch.sigmoid(f @ p["fusion.gate_c.weight"].T + p["fusion.gate_c.bias"])
        gr = torch.sigmoid(f @ p["fusion.gate_r.weight"].T + p["fusion.gate_r.bias"])
        fused = gc * f[:, :h] + gr * f[:, h:]
        return (fused @ p["head.0.weight"].T + p["head.0.bias"]).squeeze(-1)

    with torch.no_grad():
        a0 = torch.clamp(forward(f0, feats), -1.0, 1.0)
    opt = torch.optim.Adam(list(t.values()), lr=LR)
    n = feats.shape[0]
    loss_v = 0.0
    for _ in range(epochs):
        order = rng.permutation(n)
        for i in range(0, n, BATCH):
            idx = torch.as_tensor(order[i : i + BATCH])
            a = forward(t, feats[idx])
            awr = (weight[idx] * (a - act[idx]) ** 2).mean()
            reg = ((a - a0[idx]) ** 2).mean()
            loss = awr + BEHAVIOUR_WEIGHT * reg
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_v = float(loss.detach())
    with torch.no_grad():
        a1 = torch.clamp(forward(t, feats), -1.0, 1.0)
    out = dict(params)
    for k in PARAM_KEYS:
        out[k] = t[k].detach().numpy().astype(np.float32)
    figures = {
        "decisions": int(n),
        "final_loss": loss_v,
        "mean_abs_action_shift": float((a1 - a0).abs().mean()),
        "mean_return": float(batch.returns.mean()),
    }
    return out, figures


def train_online(
    logs: list[str | Path],
    model: Path,
    out: Path,
    *,
    seed: int = 0,
    epochs: int = EPOCHS,
    ray_address: str | None = None,
    reward: Reward | None = None,
) -> dict:
    """Update ``model`` from the logs under ``logs`` and write ``out`` (a folder or .npz)."""
    from loki.experience import file_sha256, find_logs, read_log
    from loki.learned.models import read_meta
    from loki.nn import load_model
    from loki.train.env import Reward

    params = load_model(model)
    meta = read_meta(params)
    if meta.get("kind") != "loki":
        raise ValueError(f"{model}: online updates are for 'loki' models, got {meta.get('kind')}")
    paths = find_logs(list(logs))
    if not paths:
        raise ValueError(f"no experience logs under {', '.join(map(str, logs))}")
    reward = reward or Reward()
    batch = gather(paths, model, reward, ray_address)
    new, figures = update(params, batch, seed=seed, epochs=epochs)
    from_hash = file_sha256(model)
    hashes = {read_log(p).header["model_sha256"] for p in paths}
    figures.update(
        logs=len(paths),
        seed=seed,
        epochs=epochs,
        reward=asdict(reward),
        off_policy_logs=sum(h != from_hash for h in hashes),
    )
    meta = {**meta, "online": {"from": str(model), "from_sha256": from_hash, **figures}}
    new["meta"] = np.array(json.dumps(meta, sort_keys=True))
    out_file = out if out.suffix == ".npz" else out / "model.npz"
    out_file.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out_file, **new)
    card = out_file.parent / "card.md"
    card.write_text(
        "# loki, updated online (AWR on gates and head; trunks frozen)\n\n"
        f"From `{model}` (sha256 {from_hash[:12]}), {len(paths)} logs, seed {seed}.\n\n"
        f"```json\n{json.dumps(figures, indent=1)}\n```\n"
    )
    figures["out"] = str(out_file)
    return figures


#: ``--method risk``: the factor's strength, 2 ** (-k (p - mean p)) (the gate's pick in the
#: demonstration, bench/online_demo.py, among 1, 2, 4 and 8).
RISK_K = 4.0


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half)."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    s = scores[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[order[i : j + 1]] = 0.5 * (i + j) + 1.0
        i = j + 1
    pos = labels.astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def train_online_risk(
    logs: list[str | Path],
    model: Path,
    out: Path,
    *,
    k: float = RISK_K,
    smoothing: float = 1.0,
    level: float = 1.0,
    source: Path | None = None,
) -> dict:
    """Fit the stall-risk layer (loki/learned/stall_risk.py) on the logs under ``logs`` and
    write ``model`` with it as ``out``. The network's weights are not touched; a layer the
    model already has is replaced (refitted on these logs). ``smoothing``: the weight of the
    newest factor in the running mean of its log2 (1: none). ``level``: the factor at the mean
    risk (1: the network's operating point). ``source``: the file the model and its card name
    as the origin, when ``model`` is a working copy of it."""
    from loki.experience import file_sha256, find_logs, read_log
    from loki.learned.models import KINDS, read_meta
    from loki.learned.stall_risk import (
        HORIZON_DECISIONS,
        StallRisk,
        check_level,
        fit_risk,
        risk_rows,
    )
    from loki.nn import load_model

    if not 0 <= k < float("inf"):
        raise ValueError(f"--risk-k must be a number >= 0, got {k}")
    if not 0 < smoothing <= 1:
        raise ValueError(f"--risk-smoothing must be in (0, 1], got {smoothing}")
    check_level(level)
    params = load_model(model)
    meta = read_meta(params)
    if meta.get("kind") not in KINDS:
        raise ValueError(f"{model}: not a learned model (kind {meta.get('kind')!r})")
    paths = find_logs(list(logs))
    if not paths:
        raise ValueError(f"no experience logs under {', '.join(map(str, logs))}")
    xs, ys, live = [], [], 0
    for p in paths:
        recs = read_log(p).records
        live += int(not np.all(np.isfinite(recs["frozen_share"])))
        x, y = risk_rows(recs)
        xs.append(x)
        ys.append(y)
    x, y = np.concatenate(xs), np.concatenate(ys)
    inputs = params["obs_mean"].shape[0] if "obs_mean" in params else x.shape[1]
    if x.shape[1] != inputs:
        raise ValueError(
            f"{model}: the logs' observations have {x.shape[1]} inputs, the model {inputs}"
        )
    layer = fit_risk(x, y)
    risk = StallRisk(layer, k, 0.5).probabilities(x)
    figures = {
        "method": "risk",
        "logs": len(paths),
        "live_logs": live,
        "decisions": len(y),
        "horizon_decisions": HORIZON_DECISIONS,
        "freeze_share": float(y.mean()),
        "auc_in_sample": _auc(risk, y),
        "k": float(k),
        "mean_risk": float(risk.mean()),
    }
    if smoothing != 1.0:
        figures["smoothing"] = float(smoothing)
    if level != 1.0:
        figures["level"] = float(level)
    origin = Path(source) if source is not None else Path(model)
    from_hash = file_sha256(origin)
    if origin.is_absolute() and origin.is_relative_to(Path.cwd()):
        origin = origin.relative_to(Path.cwd())  # a shipped model's card names a repo path
    new = {key: v for key, v in params.items() if not key.startswith("risk.")}
    new.update(layer)
    meta = {
        **{key: v for key, v in meta.items() if key != "risk"},
        "risk": {
            "k": float(k),
            "mean_risk": figures["mean_risk"],
            **({"smoothing": float(smoothing)} if smoothing != 1.0 else {}),
            **({"level": float(level)} if level != 1.0 else {}),
        },
        "online": {"from": str(origin), "from_sha256": from_hash, **figures},
    }
    new["meta"] = np.array(json.dumps(meta, sort_keys=True))
    out_file = out if out.suffix == ".npz" else out / "model.npz"
    out_file.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out_file, **new)
    (out_file.parent / "card.md").write_text(
        f"# {meta['kind']}, with a stall-risk layer fitted on logged sessions\n\n"
        f"From `{origin}` (sha256 {from_hash[:12]}), {len(paths)} logs; the network's weights "
        "are unchanged; its target is scaled by 2^(-k (p - mean p)) within [0.5, 1.5], p the "
        "predicted risk of a freeze within the next two seconds (loki/learned/stall_risk.py)."
        f"\n\n```json\n{json.dumps(figures, indent=1)}\n```\n"
    )
    figures["out"] = str(out_file)
    return figures


def add_online_arguments(p) -> None:
    """Arguments of ``loki train online`` (wired by loki/train/cli.py)."""
    p.add_argument("--logs", type=Path, nargs="+", metavar="DIR", help="experience log folders")
    p.add_argument("--from", dest="from_model", type=Path, help="the deployed loki model.npz")
    p.add_argument(
        "--method",
        choices=("awr", "risk"),
        default="risk",
        help="risk (default): fit a stall-risk layer that scales the model's target (the "
        "network is not changed); awr: advantage-weighted regression on the fusion gates and head",
    )
    p.add_argument(
        "--risk-k",
        type=float,
        default=RISK_K,
        help=f"risk: the factor's strength (default {RISK_K:g})",
    )
    p.add_argument(
        "--risk-smoothing",
        type=float,
        default=1.0,
        help="risk: weight of the newest factor in a running mean of its log2 (default 1: "
        "none; smaller is smoother)",
    )
    p.add_argument(
        "--risk-level",
        type=float,
        help="risk: the factor at the mean risk, within [0.5, 1.5] (default 1: the network's "
        "own operating point; below 1 sends less everywhere except through a path change)",
    )
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.add_argument(
        "--stall-weight", type=float, help="reward's stall weight (default: the training reward's)"
    )
    p.add_argument(
        "--change-weight",
        type=float,
        help="reward's weight on |log2 rate change| per decision (rl, loki, hybrid; default 0.5)",
    )


def cmd_train_online(args) -> int:
    """``loki train online``: needs --logs, --from and --out."""
    from loki.train.cli import reward_from_args

    if not args.logs or not args.from_model or not args.out:
        raise SystemExit("loki train online needs --logs DIR..., --from MODEL and --out MODEL")
    level = getattr(args, "risk_level", None)
    if getattr(args, "method", "risk") == "risk":
        awr_only = [
            flag
            for flag, value in (
                ("--stall-weight", getattr(args, "stall_weight", None)),
                ("--change-weight", getattr(args, "change_weight", None)),
            )
            if value is not None
        ]
        if awr_only:
            raise ValueError(f"{', '.join(awr_only)}: for --method awr (the reward of its update)")
        figures = train_online_risk(
            args.logs,
            args.from_model,
            args.out,
            k=args.risk_k,
            smoothing=args.risk_smoothing,
            level=1.0 if level is None else level,
        )
        print(json.dumps(figures, indent=1))
        return 0
    if level is not None:
        raise ValueError("--risk-level: for --method risk (the stall-risk layer's level)")
    figures = train_online(
        args.logs,
        args.from_model,
        args.out,
        seed=args.seed,
        epochs=getattr(args, "epochs", EPOCHS),
        ray_address=args.ray_address,
        reward=reward_from_args(args),
    )
    print(json.dumps(figures, indent=1))
    return 0
