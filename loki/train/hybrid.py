"""Train ``hybrid``: HRCC-style decision-level blend, RL scaling GCC's estimate.

Read top to bottom:

1. Load the clone's observation normaliser; the hybrid's two extra inputs (GCC's estimate on
   the features' log2(1 + Mbps) scale, and the current scale exponent) get fixed scalings.
2. Environments: a :class:`~loki.learned.controller.HybridController`: GCC runs on every
   report; every 4th report (400 ms) the agent picks a in [-1, 1] and the target becomes GCC's
   estimate x 2 ** a (0.5x to 2x; HRCC's 2^(2a'-1)) until the next pick.
3. PPO (stable-baselines3), actor and critic 2 x 64 tanh, random initialisation.
4. Export, closed-loop check against GCC on validation links, model card, learning curve.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loki.features import OBS_SIZE
from loki.learned.controller import HYBRID_EVERY_REPORTS, HybridController
from loki.train.common import (
    Stopwatch,
    out_dir,
    seed_everything,
    write_card,
    write_model,
)
from loki.train.data import episode_links_text
from loki.train.ppo import (
    PpoArgs,
    closed_loop,
    describe_closed_loop,
    learn_with_curve,
    load_clone,
    make_envs,
    new_ppo,
    seed_text,
    set_torch_threads,
    split_seed_of,
    split_traces,
    validation_specs,
)
from loki.train.sb3_policies import NormalizedMlpPolicy, mlp_policy_kwargs

NAME = "hybrid"
#: Scaling of the extra inputs: GCC's estimate (log2(1 + Mbps): mean, std) and the exponent.
EXTRA_MEAN = np.array([1.5, 0.0], dtype=np.float32)
EXTRA_STD = np.array([1.0, 0.5], dtype=np.float32)


@dataclass
class HybridArgs(PpoArgs):
    steps: int = 75_000  # decisions (each spans 4 reports)
    n_steps: int = 512
    lr: float = 3e-4
    log_std_init: float = -1.0


def train(args: HybridArgs) -> Path:
    clock = Stopwatch()
    seed_everything(args.seed)
    set_torch_threads()
    clone = load_clone(args)
    mean = np.concatenate([clone["obs_mean"], EXTRA_MEAN])
    std = np.concatenate([clone["obs_std"], EXTRA_STD])
    fit_paths, val_paths = split_traces(args)
    out = out_dir(args, NAME)  # after the inputs are read: a bad one leaves nothing behind

    env = make_envs(args, fit_paths, HybridController)
    model = new_ppo(NormalizedMlpPolicy, env, args, mlp_policy_kwargs(mean, std, args.log_std_init))
    curve = learn_with_curve(model, env, args, out, HybridController.obs_size, NAME)

    low, high = curve.seen.bounds()
    meta = {
        "kind": "hybrid",
        "seed": args.seed,
        "split_seed": split_seed_of(args),
        "steps": int(model.num_timesteps),
        "command": args.command,
    }
    actor = model.policy.export_actor()
    path = write_model(
        out, actor, obs_mean=mean, obs_std=std, obs_low=low, obs_high=high, meta=meta
    )
    loop = closed_loop(args, validation_specs(args, val_paths), path)
    meta["train_minutes"] = round(clock.minutes, 2)
    write_model(out, actor, obs_mean=mean, obs_std=std, obs_low=low, obs_high=high, meta=meta)
    write_card(
        out,
        "hybrid: RL scales GCC's estimate (HRCC-style)",
        {
            "Command": f"`{args.command}`",
            "Model": (
                "GCC decides on every feedback report; every "
                f"{HYBRID_EVERY_REPORTS} reports ({HYBRID_EVERY_REPORTS * 100} ms) the actor "
                "(2 x 64 tanh + linear head) picks a in [-1, 1] and the target is GCC's estimate x "
                "2^a (0.5x to 2x) until the next pick. Observation: the clone's "
                f"{OBS_SIZE} inputs plus GCC's estimate and the current exponent. "
                "Deterministic at run time, numpy."
            ),
            "Data": (
                f"Training families only ({len(fit_paths)} traces; {len(val_paths)} more for the "
                f"closed-loop check); per episode ({args.episode_s:.0f} s): trace, start offset, "
                f"{episode_links_text(args.path_change_share, args.bursty_share)}. PPO: "
                f"{model.num_timesteps} decisions, {max(1, args.workers)} environment(s) x "
                f"{args.n_steps} per update, {args.epochs} epochs, batch {args.batch}, "
                f"lr {args.lr}, gamma {args.gamma}, GAE {args.gae_lambda}, clip {args.clip}, "
                f"log-std init {args.log_std_init}. Reward weights {args.reward}. "
                + seed_text(args)
            ),
            "Measured": f"Training time {meta['train_minutes']:.1f} min. "
            + describe_closed_loop(loop),
            "Meta": f"```json\n{json.dumps(meta, indent=1, sort_keys=True)}\n```",
        },
    )
    return path
