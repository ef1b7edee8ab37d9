"""Several state-head clones averaged, exported as one ordinary clone model.

Why: the clone's closed loop varies more from seed to seed than the changes tried in sessions
3-5 move it (held-out bitrate against GCC from +4.9 % to +15.4 % over four seeds of one
command; loki/LEARNING.md), and a bar of 5 % on 13 traces sits inside that spread. Averaging
the members' outputs (the move's logits and the sizes of a decrease and an increase) keeps
what the seeds agree on and damps what each one does alone, the usual reason for an ensemble.

The average is exact as one wider network of the same shape, so nothing changes at run time
(same file format, same numpy forward pass, no ensemble code in a sender): the members'
first layers are stacked (each with its own input normaliser folded in, as the seeds fit
their normalisers on their own episodes), their second layers are put block-diagonally and
their heads side by side, scaled by 1 / K. The guard's training range is the union of the
members' ranges: every member has seen what the ensemble accepts, or one of them has.

    python -m loki.train.ensemble --members A/model.npz B/model.npz C/model.npz --out DIR
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from loki.learned.models import GUARD_HIGH_KEY, GUARD_LOW_KEY, read_meta
from loki.learned.policies import STATE_HEAD_OUTPUTS, fold_normalizer
from loki.nn import Normalizer, load_model
from loki.train.common import write_card, write_model


def ensemble_params(members: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Weights of one network whose outputs are the mean of the members' outputs."""
    if len(members) < 2:
        raise ValueError("an ensemble needs at least two members")
    w1, b1, w2s, b2, wh, bh = [], [], [], [], [], []
    for i, p in enumerate(members):
        if read_meta(p).get("kind") != "clone":
            raise ValueError(f"member {i}: not a clone model")
        if p["clone.head.0.weight"].shape[0] != STATE_HEAD_OUTPUTS:
            raise ValueError(
                f"member {i}: not a state-head clone (the average of one-number heads would "
                "mix directions and sizes in one value)"
            )
        w, b = fold_normalizer(
            p["clone.trunk.0.weight"], p["clone.trunk.0.bias"], Normalizer.from_params(p)
        )
        w1.append(w)
        b1.append(b)
        w2s.append(p["clone.trunk.1.weight"])
        b2.append(p["clone.trunk.1.bias"])
        wh.append(p["clone.head.0.weight"])
        bh.append(p["clone.head.0.bias"])
    if len({w.shape[1] for w in w1}) != 1:
        raise ValueError("members take observations of different sizes")
    k = len(members)
    rows = sum(w.shape[0] for w in w2s)
    cols = sum(w.shape[1] for w in w2s)
    w2 = np.zeros((rows, cols), dtype=np.float32)
    r = c = 0
    for w in w2s:
        w2[r : r + w.shape[0], c : c + w.shape[1]] = w
        r, c = r + w.shape[0], c + w.shape[1]
    return {
        "clone.trunk.0.weight": np.concatenate(w1).astype(np.float32),
        "clone.trunk.0.bias": np.concatenate(b1).astype(np.float32),
        "clone.trunk.1.weight": w2,
        "clone.trunk.1.bias": np.concatenate(b2).astype(np.float32),
        "clone.head.0.weight": (np.concatenate(wh, axis=1) / k).astype(np.float32),
        "clone.head.0.bias": (np.sum(bh, axis=0) / k).astype(np.float32),
    }


def write_ensemble(member_paths: Sequence[Path], out: Path, command: str) -> Path:
    """Export the ensemble of ``member_paths`` to ``out/model.npz`` with its card."""
    members = [load_model(p) for p in member_paths]
    params = ensemble_params(members)
    size = params["clone.trunk.0.weight"].shape[1]
    low = np.min([m[GUARD_LOW_KEY] for m in members], axis=0)
    high = np.max([m[GUARD_HIGH_KEY] for m in members], axis=0)
    meta = {
        "kind": "clone",
        "command": command,
        "ensemble_of": [str(p) for p in member_paths],
        "members": [read_meta(m) for m in members],
    }
    path = write_model(
        out,
        params,
        obs_mean=np.zeros(size, dtype=np.float32),  # folded into the first layer
        obs_std=np.ones(size, dtype=np.float32),
        obs_low=low,
        obs_high=high,
        meta=meta,
    )
    listing = "\n".join(
        f"- `{p}`: {read_meta(m).get('command', '?')}, iteration "
        f"{read_meta(m).get('exported_iteration', '?')}"
        for p, m in zip(member_paths, members, strict=True)
    )
    write_card(
        out,
        "gcc-clone ensemble",
        {
            "Command": f"`{command}`",
            "Members": listing,
            "What it is": (
                f"The mean of {len(members)} state-head clones' outputs as one network of "
                f"{params['clone.trunk.0.weight'].shape[0]} + "
                f"{params['clone.trunk.1.weight'].shape[0]} hidden units "
                "(loki/train/ensemble.py)."
            ),
        },
    )
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--members", nargs="+", type=Path, required=True, help="clone model.npz files")
    p.add_argument("--out", type=Path, required=True, help="folder for model.npz and card.md")
    args = p.parse_args(argv)
    missing = [str(m) for m in args.members if not m.is_file()]
    if missing:
        p.error(f"no such model file: {', '.join(missing)}")
    command = "python -m loki.train.ensemble " + " ".join(argv if argv else sys.argv[1:])
    try:
        path = write_ensemble(args.members, args.out, command)
    except ValueError as e:
        p.error(str(e))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
