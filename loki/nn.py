"""Numpy inference for the learned controllers: a sender embeds the models with numpy alone.

Training (``loki.train``) runs in torch and exports each model as one ``.npz`` of named float32
arrays; this module reads such a file and evaluates the few layer kinds the models use. Every
function works on one observation (1-D arrays): a controller decides once per feedback report,
so batching buys nothing at run time and per-call overhead is what counts. Weights are stored
as ``(out, in)`` matrices, as torch's ``nn.Linear`` keeps them, and applied as ``W @ x + b``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

#: Keys every exported model carries (see :func:`load_model`).
NORM_MEAN_KEY = "obs_mean"
NORM_STD_KEY = "obs_std"
#: Smallest standard deviation used to scale an input (features that never moved in training).
MIN_STD = 1e-3


def load_model(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """All arrays of an exported model, as float32 (numbers) or as stored (strings).

    A file that is not an ``.npz`` archive raises ValueError naming it (numpy's own message
    speaks of pickles, which a model never holds)."""
    try:
        z = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise ValueError(f"{path} is not a model file (an .npz archive)") from e
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is not a model file (an .npz archive of named arrays)")
    with z:
        out: dict[str, np.ndarray] = {}
        for k in z.files:
            a = z[k]
            out[k] = a.astype(np.float32) if a.dtype.kind == "f" else a
    return out


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class Dense:
    """One linear layer ``W @ x + b`` followed by an optional tanh."""

    weight: np.ndarray
    bias: np.ndarray
    tanh: bool = True

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = self.weight @ x + self.bias
        return np.tanh(y) if self.tanh else y


class Mlp:
    """A stack of :class:`Dense` layers read from a model file under a key prefix.

    Layers are ``{prefix}.{i}.weight`` / ``{prefix}.{i}.bias`` for i = 0, 1, ...; all but the
    last use tanh unless ``tanh_last`` says otherwise (a trunk ends in tanh: its output is the
    high-level feature layer; a head ends linear).
    """

    def __init__(self, params: dict[str, np.ndarray], prefix: str, *, tanh_last: bool) -> None:
        layers: list[Dense] = []
        i = 0
        while f"{prefix}.{i}.weight" in params:
            layers.append(
                Dense(
                    np.ascontiguousarray(params[f"{prefix}.{i}.weight"], dtype=np.float32),
                    np.ascontiguousarray(params[f"{prefix}.{i}.bias"], dtype=np.float32),
                )
            )
            i += 1
        if not layers:
            raise KeyError(f"model has no layers under {prefix!r}")
        if not tanh_last:
            last = layers[-1]
            layers[-1] = Dense(last.weight, last.bias, tanh=False)
        self.layers = tuple(layers)

    @property
    def in_size(self) -> int:
        return int(self.layers[0].weight.shape[1])

    @property
    def out_size(self) -> int:
        return int(self.layers[-1].weight.shape[0])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        for layer in self.layers:
            x = layer(x)
        return x


class Normalizer:
    """Scales an observation by the mean and spread of the training data."""

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.mean = np.ascontiguousarray(mean, dtype=np.float32)
        self.inv_std = (1.0 / np.maximum(np.asarray(std, dtype=np.float32), MIN_STD)).astype(
            np.float32
        )

    @classmethod
    def from_params(cls, params: dict[str, np.ndarray]) -> Normalizer:
        return cls(params[NORM_MEAN_KEY], params[NORM_STD_KEY])

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return (obs - self.mean) * self.inv_std
