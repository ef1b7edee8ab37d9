"""Train ``loki``: the clone's and the learner's features fused by two learned weight sets.

Read top to bottom:

1. Load the clone (frozen: trunk, head, normaliser). The learner trunk has the clone's shape
   and starts as a copy of the clone's trunk (``--learner clone``, the default): RL then
   moves it away from GCC's features only where the reward says so. Starting it from the
   ``rl`` model's trunk (``--learner rl``) was measured worse: rl's features were trained for
   rl's own head, and mixed into the clone's head they led PPO to a fixed-rate policy (see
   loki/LEARNING.md).
2. Policy (:class:`~loki.train.sb3_policies.FusionPolicy`): frozen clone trunk -> f_c, learner
   trunk -> f_r, dual-weight fusion (gates w_c = sigmoid(W_c [f_c, f_r] + b_c) starting at
   0.73, w_r starting at 0.27: they sum to 1), fused = w_c * f_c + w_r * f_r, then the action
   head, initialised from the clone's head. With the learner a copy of the clone, the policy
   starts *exactly* as the clone: the long tail starts as safe as GCC, and PPO moves weight to
   the learner only where the reward says so. Exploration noise starts at the scale of the
   clone's own moves (log-std -4.0: a std of 0.018 in log2 rate per decision; GCC's moves
   have a median of 0.003 and a p90 of 0.011). With a std of 0.1, ten times GCC's moves,
   PPO's mean-action steps (bounded by the KL target in units of the std) were larger
   than the clone's increases, and the fused policy collapsed to holding its rate
   (loki/LEARNING.md).
3. Critic warm-up: for the first ``warmup_steps`` the actor is frozen and only the critic
   learns, so the first policy updates follow a critic that already knows the clone's value.
4. PPO with the smoothness cost in the reward (|log2 rate change| per decision), export,
   closed-loop check against GCC on validation links of the training families, model card.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from fusion.dual_weight import CLONE_GATE_BIAS, LEARNER_GATE_BIAS
from loki.features import HISTORY, N_FEATURES
from loki.learned.controller import ACTION_LOG2_RANGE, AnchoredController, RatioController
from loki.learned.models import MODEL_DIR, MODEL_FILE, REGISTERED, read_meta
from loki.nn import load_model
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
    clone_path,
    closed_loop,
    describe_closed_loop,
    display_path,
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
from loki.train.sb3_policies import FusionPolicy, NormalizeObs

NAME = "loki"


@dataclass
class LokiArgs(PpoArgs):
    steps: int = 300_000
    lr: float = 1e-4
    log_std_init: float = -4.0
    target_kl: float | None = 0.02
    #: Where the learner trunk starts: "clone" (a copy of the clone's trunk), "rl" (the rl
    #: model's actor trunk), "random", or the path of a model.npz with an actor trunk.
    learner: str | Path = "clone"
    #: Anchor the action at the parallel GCC's estimate (target = GCC x 2 ** a every report,
    #: :class:`~loki.learned.controller.AnchoredController`) instead of at the previous target.
    anchor_gcc: bool = False


def learner_init(args: LokiArgs, clone: dict) -> tuple[dict | None, str, str]:
    """(params, key prefix, description) the learner trunk starts from; None: random."""
    if args.learner == "random":
        return None, "", "random"
    if args.learner == "clone":
        return clone, "clone.trunk", "a copy of the clone's trunk"
    path = MODEL_DIR / REGISTERED["rl"] / MODEL_FILE if args.learner == "rl" else Path(args.learner)
    return load_model(path), "actor.trunk", f"the actor trunk of {path}"


def train(args: LokiArgs) -> Path:
    clock = Stopwatch()
    seed_everything(args.seed)
    set_torch_threads()
    if args.init is not None:
        # A fine-tune: the frozen clone trunk and the normaliser are the model's own.
        start = init_model(args, "loki")
        clone = {k: v for k, v in start.items() if k.startswith(("clone.", "obs_"))}
        clone["clone.head.0.weight"], clone["clone.head.0.bias"] = (
            start["head.0.weight"],
            start["head.0.bias"],
        )
        learner_params, learner_prefix = start, "learner.trunk"
        learner_from = f"the learner trunk, gates and head of {args.init} (a fine-tune)"
        clone_from = f"the clone trunk inside {args.init}"
        # The action keeps its meaning: a model trained anchored goes on anchored.
        if read_meta(start).get("anchor") == "gcc":
            args = replace(args, anchor_gcc=True)
    else:
        clone = load_clone(args)
        learner_params, learner_prefix, learner_from = learner_init(args, clone)
        clone_from = display_path(clone_path(args))
    fit_paths, val_paths = split_traces(args)
    out = out_dir(args, NAME)  # after the inputs are read: a bad one leaves nothing behind
    mean, std = clone["obs_mean"], clone["obs_std"]

    controller_cls = AnchoredController if args.anchor_gcc else RatioController
    env = make_envs(args, fit_paths, controller_cls)
    model = new_ppo(
        FusionPolicy,
        env,
        args,
        {
            "clone_params": clone,
            "features_extractor_class": NormalizeObs,
            "features_extractor_kwargs": {"mean": mean, "std": std},
            "log_std_init": args.log_std_init,
        },
        target_kl=args.target_kl,
    )
    if learner_params is not None:
        model.policy.load_learner(learner_params, learner_prefix)
    if args.init is not None:
        model.policy.load_fusion_and_head(start)
    curve = learn_with_curve(
        model, env, args, out, controller_cls.obs_size, NAME, [CriticWarmup(args.warmup_steps)]
    )

    low, high = curve.seen.bounds()
    meta = {
        "kind": "loki",
        "seed": args.seed,
        "split_seed": split_seed_of(args),
        "steps": int(model.num_timesteps),
        "command": args.command,
        "clone": clone_from,
        "learner_init": learner_from,
        **({"anchor": "gcc"} if args.anchor_gcc else {}),
        **({"init": str(args.init)} if args.init is not None else {}),
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
        "loki: dual-weight fusion of the GCC clone and the learner (PPO)",
        {
            "Command": f"`{args.command}`",
            "Model": (
                f"Observation: the clone's ({HISTORY} reports x {N_FEATURES} features, its "
                "normaliser). Frozen clone "
                "trunk (2 x 64 tanh) -> f_c; learner trunk (2 x 64 tanh) -> f_r; gates "
                "w_c = sigmoid(W_c [f_c, f_r] + b_c), w_r = sigmoid(W_r [f_c, f_r] + b_r), "
                f"initialised W = 0, b_c = {CLONE_GATE_BIAS}, b_r = {LEARNER_GATE_BIAS}; fused = "
                "w_c * f_c + w_r * f_r (element-wise); linear action head initialised from the "
                "clone's. Action a in [-1, 1]: next rate = "
                + ("GCC's estimate" if args.anchor_gcc else "previous")
                + f" x 2^({ACTION_LOG2_RANGE} a), every feedback report (100 ms); "
                "deterministic at run time, numpy."
            ),
            "Data": (
                f"Training families only ({len(fit_paths)} traces; {len(val_paths)} more for the "
                f"closed-loop check); per episode ({args.episode_s:.0f} s): trace, start offset, "
                f"{episode_links_text(args.path_change_share, args.bursty_share)}. "
                f"Clone: {clone_from}; learner "
                "trunk initialised from "
                f"{learner_from}. PPO: "
                f"{model.num_timesteps} steps ({args.warmup_steps} critic-only warm-up), "
                f"{max(1, args.workers)} environment(s) x {args.n_steps} steps per update, "
                f"{args.epochs} epochs, batch {args.batch}, lr {args.lr}, target KL "
                f"{args.target_kl}, gamma {args.gamma}, GAE "
                f"{args.gae_lambda}, clip {args.clip}, log-std init {args.log_std_init}. Reward "
                f"weights {args.reward}. " + seed_text(args)
            ),
            "Measured": f"Training time {meta['train_minutes']:.1f} min. "
            + describe_closed_loop(loop),
            "Meta": f"```json\n{json.dumps(meta, indent=1, sort_keys=True)}\n```",
        },
    )
    return path
