"""What the three PPO trainings (``rl``, ``loki``, ``hybrid``) share.

The environment (:class:`~loki.train.env.ControllerEnv`), the progress bar and learning curve
(:class:`CurveCallback`), the clone model every learned controller builds on (its observation
normaliser; Loki also its trunk and head), the closed-loop check against GCC on validation
links of the training families, and the export of the actor to ``model.npz``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.logger import Logger
from tqdm import tqdm

from loki.api import ControllerConfig
from loki.learned.models import MODEL_DIR, MODEL_FILE, REGISTERED, read_meta
from loki.nn import load_model
from loki.train.common import CURVE_FILE, CsvLog, RangeTracker, TrainArgs
from loki.train.data import (
    REPO_ROOT,
    EpisodeSpec,
    LinkRanges,
    draw_spec,
    split_by_trace,
    training_trace_paths,
)
from loki.train.env import ControllerEnv, Reward
from loki.train.parallel import Executor, make_vec_env
from loki.train.rollout import run_session

CURVE_COLUMNS = [
    "timesteps",
    "episodes",
    "reward",
    "utilisation",
    "frozen_share",
    "excess_delay_s",
    "loss",
    "change_log2",
    "fallbacks",
    "approx_kl",
    "value_loss",
    "std",
]


@dataclass
class PpoArgs(TrainArgs):
    clone: Path | None = None  # default: loki/models/gcc-clone/model.npz
    episode_s: float = 30.0
    n_steps: int = 1024  # per environment per update
    batch: int = 256
    epochs: int = 5
    lr: float = 3e-4
    gamma: float = 0.98
    gae_lambda: float = 0.95
    clip: float = 0.2
    log_std_init: float = -1.0
    val_share: float = 0.1
    val_episodes: int = 32
    #: Seeds the fit/validation split and the validation links; ``None``: the run's seed. Runs
    #: with different seeds and one split seed are judged on the same validation links.
    split_seed: int | None = None
    #: The reward's weights (loki/train/env.py); the same defaults train rl, loki and hybrid.
    reward: Reward = field(default_factory=Reward)
    #: Start the actor from this exported model and go on training it (rl, loki): a fine-tune.
    #: The critic starts fresh and is warmed up alone first (CriticWarmup).
    init: Path | None = None
    #: Critic-only steps at the start (the actor frozen); loki always, rl when fine-tuning.
    warmup_steps: int = 20_000


def clone_path(args: PpoArgs) -> Path:
    return Path(args.clone) if args.clone else MODEL_DIR / REGISTERED["gcc-clone"] / MODEL_FILE


def seed_text(args: PpoArgs) -> str:
    """The model card's seed sentence (the split seed when it differs from the run's)."""
    if args.split_seed is None or args.split_seed == args.seed:
        return f"Seed {args.seed}."
    return f"Seed {args.seed}; split and validation links from seed {args.split_seed}."


def display_path(path: Path) -> str:
    """A path as a model card shows it: relative to the repository when inside it."""
    try:
        return str(Path(path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def load_clone(args: PpoArgs) -> dict[str, np.ndarray]:
    path = clone_path(args)
    if not path.is_file():
        raise FileNotFoundError(
            f"no clone model at {path}: train it first ('loki train clone'); every learned "
            f"controller uses its observation normaliser"
        )
    return load_model(path)


def split_seed_of(args: PpoArgs) -> int:
    return args.seed if args.split_seed is None else args.split_seed


def split_traces(args: PpoArgs) -> tuple[list[str], list[str]]:
    """(fit, validation) trace paths of the training families, split by trace (seeded by the
    split seed)."""
    rng = np.random.default_rng(split_seed_of(args))
    return split_by_trace(training_trace_paths(args.traces), rng, args.val_share)


def _env(paths, factory, episode_s, seed, reward, path_change_share=0.0, bursty_share=0.0):
    ranges = LinkRanges(path_change_share=path_change_share, bursty_share=bursty_share)
    return ControllerEnv(
        paths, factory, episode_s=episode_s, ranges=ranges, reward=reward, seed=seed
    )


def make_envs(args: PpoArgs, paths: list[str], controller_cls):
    """One environment per worker (at least one), each seeded from the run's seed."""
    factory = functools.partial(controller_cls, ControllerConfig())
    n_envs = max(1, args.workers)
    fns = [
        functools.partial(
            _env,
            paths,
            factory,
            args.episode_s,
            args.seed * 1000 + i,
            args.reward,
            args.path_change_share,
            args.bursty_share,
        )
        for i in range(n_envs)
    ]
    return make_vec_env(fns, args.workers, args.ray_address)


class CurveCallback(BaseCallback):
    """tqdm progress over timesteps, one CSV row per rollout, the guard's range of inputs."""

    def __init__(self, log: CsvLog, total_steps: int, obs_size: int, desc: str) -> None:
        super().__init__()
        self.log = log
        self.total = total_steps
        self.desc = desc
        self.seen = RangeTracker(obs_size)
        self.episodes = 0
        self._sums: dict[str, float] = {}
        self._n = 0
        self._bar: tqdm | None = None

    def _on_training_start(self) -> None:
        self._bar = tqdm(total=self.total, desc=self.desc, unit="step")

    def _on_step(self) -> bool:
        self.seen.update(self.locals["new_obs"])
        for info, r in zip(self.locals["infos"], self.locals["rewards"], strict=True):
            s = info.get("stats")
            if s is not None:
                for k, v in s.items():
                    self._sums[k] = self._sums.get(k, 0.0) + v
            self._sums["reward"] = self._sums.get("reward", 0.0) + float(r)
            self._sums["fallbacks"] = self._sums.get("fallbacks", 0.0) + info.get("fallback", 0)
            self._n += 1
            if "episode" in info or info.get("TimeLimit.truncated"):
                self.episodes += 1
        if self._bar is not None:
            self._bar.update(self.training_env.num_envs)
        return True

    def _on_rollout_end(self) -> None:
        n = max(self._n, 1)
        vals = self.logger.name_to_value
        row = {k: v / n for k, v in self._sums.items()}
        row["fallbacks"] = self._sums.get("fallbacks", 0.0)
        self.log.row(
            timesteps=self.num_timesteps,
            episodes=self.episodes,
            approx_kl=float(vals.get("train/approx_kl", float("nan"))),
            value_loss=float(vals.get("train/value_loss", float("nan"))),
            std=float(vals.get("train/std", float("nan"))),
            **row,
        )
        if self._bar is not None:
            self._bar.set_postfix(reward=f"{row.get('reward', 0.0):.3f}")
        self._sums, self._n = {}, 0

    def _on_training_end(self) -> None:
        if self._bar is not None:
            self._bar.close()


def validation_specs(args: PpoArgs, val_paths: list[str]) -> list[EpisodeSpec]:
    rng = np.random.default_rng(split_seed_of(args) + 7919)
    return [draw_spec(val_paths, rng, 60.0, LinkRanges()) for _ in range(args.val_episodes)]


def closed_loop(args: PpoArgs, specs: list[EpisodeSpec], model: Path) -> dict:
    """Paired figures of the model against GCC on validation links of the training families."""
    with Executor(args.workers, args.ray_address) as ex:
        rows = ex.map(run_session, [(s, c) for c in ("gcc", str(model)) for s in specs])
    gcc, ours = rows[: len(specs)], rows[len(specs) :]

    def agg(rs):
        stall = np.array([r["stall_rate"] for r in rs])
        return {
            "kbps": float(np.mean([r["bitrate_kbps"] for r in rs])),
            "stall": float(stall.mean()),
            "stall_p95": float(np.percentile(stall, 95)),
            "fd_p95": float(np.mean([r["frame_delay_p95_ms"] for r in rs])),
            "change_log2": float(np.mean([r["change_log2"] for r in rs])),
            "fallbacks": int(sum(r["fallbacks"] for r in rs)),
            "decisions": int(sum(r["decisions"] for r in rs)),
        }

    return {"gcc": agg(gcc), "model": agg(ours), "episodes": len(specs)}


def describe_closed_loop(loop: dict) -> str:
    g, m = loop["gcc"], loop["model"]

    def rel(a, b):
        return f"{(a - b) / b:+.1%}" if b else "n/a"

    return (
        f"Closed loop against GCC on {loop['episodes']} validation links of the training "
        f"families (60 s, traces not used for fitting): bitrate {m['kbps']:.0f} vs "
        f"{g['kbps']:.0f} kbps ({rel(m['kbps'], g['kbps'])}); mean stall rate {m['stall']:.4f} vs"
        f" {g['stall']:.4f} ({rel(m['stall'], g['stall'])}); p95 stall rate "
        f"{m['stall_p95']:.4f} vs {g['stall_p95']:.4f}; mean p95 frame delay "
        f"{m['fd_p95']:.0f} vs {g['fd_p95']:.0f} ms; mean |log2 rate change| per decision "
        f"{m['change_log2']:.4f} vs {g['change_log2']:.4f}; guard fallbacks "
        f"{m['fallbacks']} of {m['decisions']} decisions."
    )


class CriticWarmup(BaseCallback):
    """Freeze the actor's parameters until ``warmup_steps`` timesteps have been collected."""

    def __init__(self, warmup_steps: int) -> None:
        super().__init__()
        self.warmup_steps = warmup_steps
        self._frozen = False

    def _set(self, trainable: bool) -> None:
        for p in self.model.policy.actor_parameters():
            p.requires_grad_(trainable)
        self._frozen = not trainable

    def _on_training_start(self) -> None:
        if self.warmup_steps > 0:
            self._set(False)

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:
        if self._frozen and self.num_timesteps >= self.warmup_steps:
            self._set(True)


def init_model(args: PpoArgs, kind: str) -> dict[str, np.ndarray]:
    """The exported model a fine-tune starts from, checked to be of ``kind``."""
    path = Path(args.init)  # type: ignore[arg-type]
    if not path.is_file():
        raise FileNotFoundError(f"--init: no model file at {path}")
    params = load_model(path)
    got = read_meta(params).get("kind")
    if got != kind:
        raise ValueError(f"--init: {path} is a {got!r} model; 'loki train {kind}' needs a {kind!r}")
    return params


def set_torch_threads() -> None:
    # Tiny networks: one thread is fastest, and leaves the other core to the rollout workers.
    torch.set_num_threads(1)


def new_ppo(policy, env, args: PpoArgs, policy_kwargs: dict, **extra) -> PPO:
    """The PPO every learned controller trains with: the run's hyperparameters, CPU, seeded."""
    model = PPO(
        policy,
        env,
        learning_rate=args.lr,
        n_steps=args.n_steps,
        batch_size=args.batch,
        n_epochs=args.epochs,
        gamma=args.gamma,
        gae_lambda=args.gae_lambda,
        clip_range=args.clip,
        ent_coef=0.0,
        max_grad_norm=0.5,
        policy_kwargs=policy_kwargs,
        seed=args.seed,
        device="cpu",
        verbose=0,
        **extra,
    )
    # What SB3 would configure itself at learn() (verbose 0: no output), minus the empty
    # /tmp/SB3-<date> folder it makes for every run; the curve reads the recorded values.
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def learn_with_curve(
    model: PPO, env, args: PpoArgs, out: Path, obs_size: int, name: str, extra_callbacks=()
) -> CurveCallback:
    """Train for ``args.steps``, logging the learning curve to ``out/curve.csv``; closes env."""
    log = CsvLog(out / CURVE_FILE, CURVE_COLUMNS)
    curve = CurveCallback(log, args.steps, obs_size, desc=f"train {name}")
    callback = CallbackList([curve, *extra_callbacks]) if extra_callbacks else curve
    model.learn(total_timesteps=args.steps, callback=callback)
    env.close()
    log.close()
    return curve
