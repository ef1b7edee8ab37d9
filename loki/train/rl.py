"""Train ``rl``: the learning actor alone (OnRL-like), PPO over randomised links.

Read top to bottom:

1. Load the clone model: its observation normaliser (fitted on GCC's trajectories) is the one
   every learned controller uses, so all of them read the same scaled inputs.
2. Environments: a :class:`~loki.learned.controller.RatioController` (next rate = previous x
   2 ** a) driven by the agent over links drawn from the training traces (trace, start offset,
   one-way delay, queue, random loss); one environment per worker process (or Ray actor).
3. PPO (stable-baselines3) with :class:`~loki.train.sb3_policies.NormalizedMlpPolicy`: actor
   and critic 2 x 64 tanh, initialised at random (this model learns without GCC's help).
4. Export the actor (trunk + head) to ``model.npz`` with the normaliser and the range of
   inputs seen in training (the guard's), run it closed loop against GCC on validation links,
   and write ``card.md``; the learning curve is ``curve.csv``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from loki.features import HISTORY, N_FEATURES
from loki.learned.controller import ACTION_LOG2_RANGE, RatioController
from loki.train.common import (
    Stopwatch,
    out_dir,
    seed_everything,
    write_card,
    write_model,
)
from loki.train.data import episode_links_text
from loki.train.ppo import (
    CriticWarmup,
    PpoArgs,
    closed_loop,
    describe_closed_loop,
    init_model,
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

NAME = "rl"


@dataclass
class RlArgs(PpoArgs):
    steps: int = 300_000
    lr: float = 3e-4
    log_std_init: float = -1.0


def train(args: RlArgs) -> Path:
    clock = Stopwatch()
    seed_everything(args.seed)
    set_torch_threads()
    # A fine-tune keeps the normaliser the model was trained with. (The inputs are read before
    # the output folder exists: a bad --init or trace leaves nothing behind.)
    start = init_model(args, "rl") if args.init is not None else load_clone(args)
    fit_paths, val_paths = split_traces(args)
    out = out_dir(args, NAME)
    mean, std = start["obs_mean"], start["obs_std"]

    env = make_envs(args, fit_paths, RatioController)
    model = new_ppo(NormalizedMlpPolicy, env, args, mlp_policy_kwargs(mean, std, args.log_std_init))
    callbacks = []
    if args.init is not None:
        model.policy.load_actor(start)
        callbacks.append(CriticWarmup(args.warmup_steps))
    curve = learn_with_curve(model, env, args, out, RatioController.obs_size, NAME, callbacks)

    low, high = curve.seen.bounds()
    meta = {
        "kind": "rl",
        "seed": args.seed,
        "split_seed": split_seed_of(args),
        "steps": int(model.num_timesteps),
        "command": args.command,
    }
    if args.init is not None:
        meta["init"] = str(args.init)
    path = write_model(
        out,
        model.policy.export_actor(),
        obs_mean=mean,
        obs_std=std,
        obs_low=low,
        obs_high=high,
        meta=meta,
    )
    loop = closed_loop(args, validation_specs(args, val_paths), path)
    meta["train_minutes"] = round(clock.minutes, 2)
    write_model(
        out,
        model.policy.export_actor(),
        obs_mean=mean,
        obs_std=std,
        obs_low=low,
        obs_high=high,
        meta=meta,
    )
    write_card(
        out,
        "rl: the learning actor alone (PPO, OnRL-like)",
        {
            "Command": f"`{args.command}`",
            "Model": (
                f"Observation: the clone's ({HISTORY} reports x {N_FEATURES} features, its "
                "normaliser). Actor "
                f"2 x 64 tanh + linear head, "
                + ("random initialisation" if args.init is None else f"started from {args.init}")
                + "; action a in [-1, 1], next "
                f"rate = previous x 2^({ACTION_LOG2_RANGE} a), every feedback report (100 ms). "
                "Critic 2 x 64 tanh (training only). Deterministic (mean) action at run time, "
                "numpy."
            ),
            "Data": (
                f"Training families only ({len(fit_paths)} traces; {len(val_paths)} more for the "
                f"closed-loop check); per episode ({args.episode_s:.0f} s): trace, start offset, "
                f"{episode_links_text(args.path_change_share, args.bursty_share)}. PPO: "
                f"{model.num_timesteps} steps, {max(1, args.workers)} environment(s) x "
                f"{args.n_steps} steps per update, {args.epochs} epochs, batch {args.batch}, lr "
                f"{args.lr}, gamma {args.gamma}, GAE {args.gae_lambda}, clip {args.clip}, "
                f"log-std init {args.log_std_init}. Reward weights {args.reward}. "
                + seed_text(args)
            ),
            "Measured": f"Training time {meta['train_minutes']:.1f} min. "
            + describe_closed_loop(loop),
            "Meta": f"```json\n{json.dumps(meta, indent=1, sort_keys=True)}\n```",
        },
    )
    return path
