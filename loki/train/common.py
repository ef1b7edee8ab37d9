"""Pieces every training script shares: arguments, seeding, logs, export, model cards.

Torch is imported here (training needs it; inference never imports this package).
"""

from __future__ import annotations

import csv
import json
import os
import random
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from loki.learned.models import GUARD_HIGH_KEY, GUARD_LOW_KEY, META_KEY, MODEL_DIR, MODEL_FILE
from loki.nn import NORM_MEAN_KEY, NORM_STD_KEY

#: Hidden sizes of every trunk (the high-level feature layer is the last one).
HIDDEN = (64, 64)
CARD_FILE = "card.md"
CURVE_FILE = "curve.csv"


@dataclass
class TrainArgs:
    """Arguments common to ``loki train clone|rl|loki|hybrid``."""

    traces: list[Path] | None = None
    steps: int = 100_000
    seed: int = 0
    workers: int = 1
    ray_address: str | None = None
    out: Path | None = None
    #: Share of training episodes with a path change (data.draw_path_change); 0: none, and the
    #: episodes are drawn exactly as before the option existed. Validation links have none.
    path_change_share: float = 0.0
    #: Share of training episodes with Poisson-timed deliveries (``--bursty``,
    #: traces.poisson_delivery); 0: none, drawn exactly as before. Validation links have none.
    bursty_share: float = 0.0
    #: The exact command line, for the model card.
    command: str = field(default_factory=lambda: shlex.join(["loki", *sys.argv[1:]]))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def out_dir(args: TrainArgs, name: str) -> Path:
    d = Path(args.out) if args.out is not None else MODEL_DIR / name
    d.mkdir(parents=True, exist_ok=True)
    return d


class CsvLog:
    """A learning curve: one CSV row per update, flushed as it goes."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        self.path = path
        self.columns = columns
        self._f = open(path, "w", newline="")  # noqa: SIM115 - lives as long as the run
        self._w = csv.writer(self._f)
        self._w.writerow(columns)
        self._f.flush()

    def row(self, **values: float) -> None:
        self._w.writerow([_fmt(values.get(c, "")) for c in self.columns])
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def _fmt(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def trunk(in_size: int, hidden: tuple[int, ...] = HIDDEN) -> nn.Sequential:
    """Linear + tanh layers: the network whose last layer is the high-level feature layer."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(in_size, h), nn.Tanh()]
        in_size = h
    return nn.Sequential(*layers)


def export_linears(module: nn.Module, prefix: str) -> dict[str, np.ndarray]:
    """Linear layers of ``module`` in order as ``{prefix}.{i}.weight/bias`` (see loki.nn.Mlp)."""
    out: dict[str, np.ndarray] = {}
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    for i, lin in enumerate(linears):
        out[f"{prefix}.{i}.weight"] = lin.weight.detach().cpu().numpy().astype(np.float32)
        out[f"{prefix}.{i}.bias"] = lin.bias.detach().cpu().numpy().astype(np.float32)
    return out


def load_linears(module: nn.Module, params: dict[str, np.ndarray], prefix: str) -> None:
    """The inverse of :func:`export_linears`."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for i, lin in enumerate(linears):
            lin.weight.copy_(torch.as_tensor(params[f"{prefix}.{i}.weight"]))
            lin.bias.copy_(torch.as_tensor(params[f"{prefix}.{i}.bias"]))


def write_model(
    directory: Path,
    params: dict[str, np.ndarray],
    *,
    obs_mean: np.ndarray,
    obs_std: np.ndarray,
    obs_low: np.ndarray,
    obs_high: np.ndarray,
    meta: dict,
) -> Path:
    """Write ``model.npz`` atomically: weights, normaliser, guard range and meta."""
    arrays = dict(params)
    arrays[NORM_MEAN_KEY] = np.asarray(obs_mean, dtype=np.float32)
    arrays[NORM_STD_KEY] = np.asarray(obs_std, dtype=np.float32)
    arrays[GUARD_LOW_KEY] = np.asarray(obs_low, dtype=np.float32)
    arrays[GUARD_HIGH_KEY] = np.asarray(obs_high, dtype=np.float32)
    arrays[META_KEY] = np.array(json.dumps(meta, sort_keys=True))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / MODEL_FILE
    tmp = directory / (MODEL_FILE + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
    return path


def write_card(directory: Path, title: str, sections: dict[str, str]) -> Path:
    lines = [f"# {title}", ""]
    for head, body in sections.items():
        lines += [f"## {head}", "", body.rstrip(), ""]
    path = directory / CARD_FILE
    path.write_text("\n".join(lines))
    return path


class Stopwatch:
    """Wall time of a training run, for the model card (training is not a controller: it may
    read the clock)."""

    def __init__(self) -> None:
        self._t0 = time.perf_counter()

    @property
    def minutes(self) -> float:
        return (time.perf_counter() - self._t0) / 60.0


class RangeTracker:
    """Per-input min and max of every observation seen in training: the guard's range."""

    def __init__(self, size: int) -> None:
        self.low = np.full(size, np.inf, dtype=np.float32)
        self.high = np.full(size, -np.inf, dtype=np.float32)

    def update(self, obs: np.ndarray) -> None:
        obs = np.asarray(obs, dtype=np.float32).reshape(-1, self.low.size)
        ok = np.isfinite(obs).all(axis=1)
        if ok.any():
            np.minimum(self.low, obs[ok].min(axis=0), out=self.low)
            np.maximum(self.high, obs[ok].max(axis=0), out=self.high)

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        if not np.isfinite(self.low).all():
            raise ValueError("no observations recorded")
        return self.low.copy(), self.high.copy()
