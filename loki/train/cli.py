"""``loki train clone|rl|loki|hybrid``: the training commands (wired into loki/cli.py).

Torch and stable-baselines3 are imported only when a training command runs, so ``loki`` works
without them (``pip install 'loki-bwe[train]'`` adds them).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the parser is built on every `loki` start: no training imports then
    from loki.train.env import Reward

MODELS = ("clone", "rl", "loki", "hybrid")
#: Defaults of --steps per model (the full pipeline fits in an hour on 2 cores).
DEFAULT_STEPS = {"clone": 240_000, "rl": 300_000, "loki": 300_000, "hybrid": 75_000}


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``train`` to a ``loki`` sub-command parser; returns the ``train`` parser."""
    p = subparsers.add_parser(
        "train",
        help="train a learned controller (gcc-clone, rl, loki, hybrid)",
        description="Train a learned controller; writes model.npz, card.md and curve.csv.",
    )
    p.add_argument(
        "model",
        choices=(*MODELS, "online", "risk"),
        help="clone = gcc-clone; train clone first; online = update a model from session logs; "
        "risk = fit a model's stall-risk layer on its network's logged sessions",
    )
    p.add_argument(
        "--traces",
        type=Path,
        nargs="+",
        metavar="DIR",
        help="trace folders (default: the four training families of ../shared/traces; the "
        "held-out family is refused)",
    )
    p.add_argument("--steps", type=_positive_int, help="decisions to train on (see DEFAULT_STEPS)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--split-seed",
        type=int,
        help="rl/loki/hybrid: seed of the fit/validation split and the validation links "
        "(default: --seed); give several seeds one split seed to compare them on the same links",
    )
    p.add_argument("--workers", type=_positive_int, default=1, help="local rollout processes")
    p.add_argument("--ray-address", help="collect rollouts on this Ray cluster ('auto', host:port)")
    p.add_argument("--out", type=Path, help="output folder (default: loki/models/<name>)")
    p.add_argument("--clone", type=Path, help="clone model.npz for rl/loki/hybrid")
    p.add_argument(
        "--small-move-eps",
        type=float,
        help="clone: weight each report by 1 / (|label| + EPS) in the fit (default: plain MSE)",
    )
    p.add_argument(
        "--balance-families",
        action="store_true",
        help="clone: draw episodes family by family instead of trace by trace",
    )
    p.add_argument(
        "--synthetic",
        action="store_true",
        help="clone: add the project's synthetic links (constant, steps, outages, walks, "
        "Markov) as one more training family",
    )
    p.add_argument(
        "--state-head",
        action="store_true",
        help="clone: name GCC's move (decrease/hold/increase) and regress its size, instead "
        "of regressing one log ratio",
    )
    p.add_argument(
        "--path-changes",
        type=float,
        metavar="SHARE",
        help="share of training episodes in which the path's one-way delay steps up by "
        "100-1000 ms for 2-15 s and back (a handover; default 0: none)",
    )
    p.add_argument(
        "--bursty",
        type=float,
        metavar="SHARE",
        help="share of training episodes whose deliveries are re-timed as a Poisson process "
        "within each 200 ms (a packet-level link's jitter on a cooked trace; default 0: none); "
        "also for 'loki train risk'",
    )
    p.add_argument(
        "--log-std-init",
        type=float,
        help="rl/loki/hybrid: initial log std of the exploration noise (log2 rate units; "
        "defaults per model in their Args)",
    )
    p.add_argument(
        "--init",
        type=Path,
        metavar="MODEL",
        help="rl/loki: start from this exported model and go on training it (a fine-tune; "
        "the critic is warmed up alone first)",
    )
    p.add_argument(
        "--learner",
        help="loki: where the learner trunk starts: clone (default), rl, random, or a model.npz",
    )
    p.add_argument(
        "--anchor-gcc",
        action="store_true",
        help="loki: the action scales the parallel GCC's estimate (0.5x to 2x, every report) "
        "instead of the previous target",
    )
    from loki.train.online import add_online_arguments

    add_online_arguments(p)  # --logs DIR..., --from MODEL, --epochs, --stall/change-weight
    p.add_argument(
        "--sessions",
        type=_positive_int,
        help="risk: sessions to log (default 192 of 30 s; --logs DIR keeps them)",
    )
    p.add_argument(
        "--session-s",
        type=float,
        help="risk: length of each logged session in seconds (default 30)",
    )
    p.add_argument(
        "--level-only",
        action="store_true",
        help="risk: keep the model's fitted layer and set its --risk-level and/or "
        "--min-target-kbps (no logging, no fit); writes --out (default: over --from)",
    )
    p.add_argument(
        "--min-target-kbps",
        type=float,
        metavar="K",
        help="risk --level-only: the lowest target the model asks the sender for (below the "
        "encoder's floor a sender can starve itself of feedback; loki/LEARNING.md, session "
        "12); 0 removes it",
    )
    p.add_argument(
        "--min-target-queue-ms",
        type=float,
        metavar="Q",
        help="risk --level-only --min-target-kbps: the minimum holds only while the path's "
        "queueing delay is below Q ms (default 200)",
    )
    p.set_defaults(func=cmd_train)
    return p


def cmd_train(args: argparse.Namespace) -> int:
    if args.model == "risk":
        try:
            return _train_risk(args)
        except (FileNotFoundError, ValueError, RuntimeError) as e:
            from loki.cli import CliError

            raise CliError(str(e)) from e
    for flag, value in (
        ("--sessions", args.sessions),
        ("--session-s", args.session_s),
        ("--level-only", args.level_only or None),
        ("--min-target-kbps", args.min_target_kbps),
        ("--min-target-queue-ms", args.min_target_queue_ms),
    ):
        if value is not None:
            from loki.cli import CliError

            raise CliError(f"{flag} is for 'loki train risk' only")
    if args.risk_level is not None and args.model != "online":
        from loki.cli import CliError

        raise CliError("--risk-level is for 'loki train risk|online'")
    if args.model == "online" and args.bursty is not None:
        from loki.cli import CliError

        raise CliError("--bursty is for 'loki train clone|rl|loki|hybrid|risk'")
    if args.model == "online":
        from loki.train.online import cmd_train_online

        try:
            return cmd_train_online(args)
        except (FileNotFoundError, ValueError, RuntimeError) as e:
            from loki.cli import CliError

            raise CliError(str(e)) from e
    share = args.path_changes
    if share is not None and not 0.0 <= share <= 1.0:
        from loki.cli import CliError

        raise CliError(f"--path-changes must be a share in [0, 1], got {share}")
    if args.bursty is not None and not 0.0 <= args.bursty <= 1.0:
        from loki.cli import CliError

        raise CliError(f"--bursty must be a share in [0, 1], got {args.bursty}")
    common = {
        "path_change_share": share or 0.0,
        "bursty_share": args.bursty or 0.0,
        "traces": args.traces,
        "steps": args.steps or DEFAULT_STEPS[args.model],
        "seed": args.seed,
        "workers": args.workers,
        "ray_address": args.ray_address,
        "out": args.out,
    }
    try:
        path = _train(args, common)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        from loki.cli import CliError

        raise CliError(str(e)) from e
    print(f"wrote {path}")
    return 0


def _given(*flags: tuple[str, bool]) -> list[str]:
    """The flags of ``(flag, given)`` pairs that were given (to refuse them in one line)."""
    return [flag for flag, given in flags if given]


def _set_risk_level(args: argparse.Namespace) -> int:
    """``loki train risk --level-only``: the fitted layer as it is, at another level and/or
    with another minimum target."""
    from loki.learned.models import (
        DEFAULT_MIN_TARGET_QUEUE_MS,
        model_path,
        with_min_target,
        with_risk_level,
    )

    fitting = _given(
        ("--traces", args.traces is not None),
        ("--sessions", args.sessions is not None),
        ("--session-s", args.session_s is not None),
        ("--logs", args.logs is not None),
        ("--bursty", args.bursty is not None),
    )
    if fitting:
        raise ValueError(f"{', '.join(fitting)}: options of a fit, not of --level-only")
    if args.risk_level is None and args.min_target_kbps is None:
        raise ValueError("--level-only needs --risk-level L and/or --min-target-kbps K")
    min_target_bps = None
    if args.min_target_kbps is not None:
        if not math.isfinite(args.min_target_kbps) or args.min_target_kbps < 0:
            raise ValueError(f"--min-target-kbps must be >= 0, got {args.min_target_kbps}")
        min_target_bps = round(args.min_target_kbps * 1000) or None
    if args.min_target_queue_ms is not None and not min_target_bps:
        raise ValueError("--min-target-queue-ms goes with a --min-target-kbps above 0")
    queue_ms = (
        DEFAULT_MIN_TARGET_QUEUE_MS
        if args.min_target_queue_ms is None
        else args.min_target_queue_ms
    )
    source = Path(args.from_model) if args.from_model is not None else model_path("loki")
    if not source.is_file():
        raise FileNotFoundError(f"no such model: {source}")
    out = Path(args.out) if args.out is not None else source
    out_file = out if out.suffix == ".npz" else out / "model.npz"
    written = source
    if args.risk_level is not None:
        written = with_risk_level(written, out_file, args.risk_level)
    if args.min_target_kbps is not None:
        written = with_min_target(written, out_file, min_target_bps, queue_ms)
    card = source.parent / "card.md"
    shown = source.resolve()
    if shown.is_relative_to(Path.cwd()):
        shown = shown.relative_to(Path.cwd())  # a shipped model's card names a repo path
    what, flags = [], []
    if args.risk_level is not None:
        what.append(f"level of the stall-risk layer set to {args.risk_level:g}")
        flags.append(f"--risk-level {args.risk_level:g}")
    if args.min_target_kbps is not None:
        what.append(
            f"minimum target set to {args.min_target_kbps:g} kbps while the queueing delay is "
            f"below {queue_ms:g} ms"
            if min_target_bps
            else "minimum target removed"
        )
        flags.append(f"--min-target-kbps {args.min_target_kbps:g}")
        if args.min_target_queue_ms is not None:
            flags.append(f"--min-target-queue-ms {args.min_target_queue_ms:g}")
    note = (
        f"\n{' and '.join(what).capitalize()} by `loki train risk --level-only "
        f"{' '.join(flags)} --from {shown}` (arrays unchanged).\n"
    )
    if card.is_file():
        # The card says what the model is: the level goes into it (a copy's, or the model's own).
        (out_file.parent / "card.md").write_text(card.read_text().rstrip("\n") + "\n" + note)
    print(f"wrote {out_file}")
    return 0


def _train_risk(args: argparse.Namespace) -> int:
    import json

    from loki.train.risk import SESSION_S, SESSIONS, train_risk

    if args.logs is not None and len(args.logs) != 1:
        raise ValueError("loki train risk --logs takes one folder (where the logs are kept)")
    ignored = _given(
        ("--steps", args.steps is not None),
        ("--ray-address", args.ray_address is not None),
        ("--clone", args.clone is not None),
        ("--method", args.method != "risk"),
        ("--stall-weight", args.stall_weight is not None),
        ("--change-weight", args.change_weight is not None),
    )
    if ignored:
        raise ValueError(f"{', '.join(ignored)}: not options of 'loki train risk'")
    if args.level_only:
        return _set_risk_level(args)
    if args.min_target_kbps is not None or args.min_target_queue_ms is not None:
        raise ValueError("--min-target-kbps is set with --level-only (on a fitted model)")
    path, figures = train_risk(
        from_model=args.from_model,
        traces=args.traces,
        sessions=args.sessions or SESSIONS,
        session_s=SESSION_S if args.session_s is None else args.session_s,
        seed=args.seed,
        workers=args.workers,
        k=args.risk_k,
        smoothing=args.risk_smoothing,
        level=1.0 if args.risk_level is None else args.risk_level,
        out=args.out,
        logs=args.logs[0] if args.logs else None,
        bursty_share=args.bursty or 0.0,
    )
    print(json.dumps(figures, indent=1))
    print(f"wrote {path}")
    return 0


def reward_from_args(args: argparse.Namespace) -> Reward:
    """The training reward (PPO and online): the defaults, with the weights given on the
    command line."""
    from dataclasses import replace

    from loki.train.env import Reward

    given = {
        "stall": getattr(args, "stall_weight", None),
        "change": getattr(args, "change_weight", None),
    }
    for name, w in given.items():
        if w is not None and not (w >= 0 and w < float("inf")):
            raise ValueError(f"--{name}-weight must be a finite number >= 0, got {w}")
    return replace(Reward(), **{k: v for k, v in given.items() if v is not None})


def _train(args: argparse.Namespace, common: dict) -> Path:
    for flag in ("balance_families", "synthetic", "state_head"):
        if getattr(args, flag) and args.model != "clone":
            raise ValueError(f"--{flag.replace('_', '-')} is for 'loki train clone' only")
    if args.anchor_gcc and args.model != "loki":
        raise ValueError("--anchor-gcc is for 'loki train loki' only")
    if args.init is not None and args.model not in ("rl", "loki"):
        raise ValueError("--init is for 'loki train rl' and 'loki train loki'")
    if args.model != "clone":
        common = {**common, "reward": reward_from_args(args)}
        if args.log_std_init is not None:
            common["log_std_init"] = args.log_std_init
        if args.split_seed is not None:
            common["split_seed"] = args.split_seed
    if args.model == "clone":
        from loki.train.clone import CloneArgs, train

        eps = args.small_move_eps
        if eps is not None and not (eps > 0 and eps < float("inf")):
            raise ValueError(f"--small-move-eps must be a finite number > 0, got {eps}")
        extra: dict = {} if eps is None else {"small_move_eps": eps}
        if args.balance_families:
            extra["balance_families"] = True
        if args.synthetic:
            extra["synthetic"] = True
        if args.state_head:
            extra["state_head"] = True
        return train(CloneArgs(**common, **extra))
    if args.model == "rl":
        from loki.train.rl import RlArgs, train

        return train(RlArgs(**common, clone=args.clone, init=args.init))
    if args.model == "loki":
        from loki.train.loki_fusion import LokiArgs, train

        return train(
            LokiArgs(
                **common,
                clone=args.clone,
                learner=args.learner or "clone",
                init=args.init,
                anchor_gcc=args.anchor_gcc,
            )
        )
    from loki.train.hybrid import HybridArgs, train

    return train(HybridArgs(**common, clone=args.clone))
