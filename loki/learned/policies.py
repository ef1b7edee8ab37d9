"""The numpy forward passes of the learned models, read from their exported ``.npz`` files.

Each policy maps an observation (normalised, or raw when built with the normaliser, which is
then folded into its first layer) to one action in [-1, 1] (what the action means is
the controller's business, see :mod:`loki.learned.controller`). Parameter names in the files:

* ``clone.trunk.{0,1}`` and ``clone.head.0``: the GCC clone; its trunk's output is the clone's
  high-level feature layer (the penultimate layer), which Loki fuses;
* ``actor.trunk.{0,1}`` and ``actor.head.0``: a PPO actor (``rl`` and ``hybrid``);
* ``learner.trunk.{0,1}``, ``fusion.gate_c``/``fusion.gate_r`` and ``head.0``: Loki's learner,
  gates and action head (with the frozen ``clone.trunk``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fusion.dual_weight import DualWeightFusion
from loki.nn import Mlp, Normalizer

ACTION_LOW = -1.0
ACTION_HIGH = 1.0


#: A clone head that names GCC's next move instead of regressing it: logits of (decrease, hold,
#: increase), then the size of a decrease and of an increase (log2 rate ratio).
STATE_HEAD_OUTPUTS = 5


def _clip_action(y: float) -> float:
    return min(max(y, ACTION_LOW), ACTION_HIGH)


def decode_state_head(out: np.ndarray) -> float:
    """The action of a state head's outputs: the likeliest move, with its own size.

    Why a head like this: GCC climbs about +0.011 (log2) per 100 ms report on a steady link,
    and a one-number regression whose bias is that size turns the climb into a slide (loki/
    LEARNING.md, session 5). Which move to make is a classification a small bias does not flip.
    """
    move = int(np.argmax(out[:3]))
    if move == 1:
        return 0.0
    if move == 0:
        return min(max(float(out[3]), ACTION_LOW), 0.0)
    return min(max(float(out[4]), 0.0), ACTION_HIGH)


def decode_state_head_creep(out: np.ndarray) -> float:
    """A state head decoded as the argmax for a cut, and otherwise as the expected climb.

    Why: near a known capacity GCC makes its smallest increases (about a packet per response
    time), which the argmax rounds to a hold; the clone then holds most of the time and climbs
    in larger steps (loki/LEARNING.md, session 6, "How the clone moves"). Weighting the
    increase by its probability against a hold keeps that creep; a cut stays the argmax's,
    since averaging it in would thin out the rare move (the ensembles' lesson, same section).
    """
    if out[0] >= out[1] and out[0] >= out[2]:
        return min(max(float(out[3]), ACTION_LOW), 0.0)
    # p_inc / (p_hold + p_inc) = sigmoid(z_inc - z_hold)
    p_inc = 1.0 / (1.0 + float(np.exp(out[1] - out[2])))
    return p_inc * min(max(float(out[4]), 0.0), ACTION_HIGH)


def decode_state_head_expected(out: np.ndarray) -> float:
    """A state head decoded as its expected move (a hold counts as 0): the plain mean, the
    reference the creep decoding departs from only where it cuts."""
    z = out[:3] - float(np.max(out[:3]))
    p = np.exp(z)
    p /= p.sum()
    dec = min(max(float(out[3]), ACTION_LOW), 0.0)
    inc = min(max(float(out[4]), 0.0), ACTION_HIGH)
    return float(p[0]) * dec + float(p[2]) * inc


#: How a state head's outputs become an action, by the name a model's meta gives.
STATE_HEAD_DECODERS = {
    "argmax": decode_state_head,
    "creep": decode_state_head_creep,
    "expected": decode_state_head_expected,
}


def state_head_decoder(name: str) -> Callable[[np.ndarray], float]:
    """The decoding called ``name``; a ValueError naming the known ones otherwise."""
    if name not in STATE_HEAD_DECODERS:
        raise ValueError(
            f"unknown state-head decoding {name!r}; known: {', '.join(STATE_HEAD_DECODERS)}"
        )
    return STATE_HEAD_DECODERS[name]


def fold_normalizer(
    weight: np.ndarray, bias: np.ndarray, normalizer: Normalizer | None
) -> tuple[np.ndarray, np.ndarray]:
    """First layer applied to raw inputs: W (x - m) s + b = (W s) x + (b - (W s) m)."""
    if normalizer is None:
        return weight, bias
    w = (weight * normalizer.inv_std[None, :]).astype(np.float32)
    b = (bias - w @ normalizer.mean).astype(np.float32)
    return np.ascontiguousarray(w), b


class MlpPolicy:
    """Trunk (the high-level feature layer) then a linear head: the clone and the PPO actors.

    Without ``normalizer`` it takes normalised observations; with it, raw ones (the scaling
    is folded into the first layer, which saves two numpy calls per decision).
    """

    def __init__(
        self,
        params: dict[str, np.ndarray],
        prefix: str,
        normalizer: Normalizer | None = None,
        decode: str = "argmax",
    ) -> None:
        self._decode = state_head_decoder(decode)
        self.trunk = Mlp(params, f"{prefix}.trunk", tanh_last=True)
        self.head = Mlp(params, f"{prefix}.head", tanh_last=False)
        if len(self.trunk.layers) != 2 or len(self.head.layers) != 1:
            raise ValueError("MlpPolicy expects a two-layer trunk and a one-layer head")
        l1, l2 = self.trunk.layers
        self._w1, self._b1 = fold_normalizer(l1.weight, l1.bias, normalizer)
        self._w2, self._b2 = l2.weight, l2.bias
        head = self.head.layers[0]
        self.state_head = head.weight.shape[0] == STATE_HEAD_OUTPUTS
        if not self.state_head and head.weight.shape[0] != 1:
            raise ValueError(
                f"MlpPolicy: a head of {head.weight.shape[0]} outputs is neither an action "
                f"(1) nor a rate-control state head ({STATE_HEAD_OUTPUTS})"
            )
        self._wh = np.ascontiguousarray(head.weight if self.state_head else head.weight[0])
        self._bh = head.bias.copy() if self.state_head else float(head.bias[0])

    @property
    def obs_size(self) -> int:
        return self.trunk.in_size

    def features(self, x: np.ndarray) -> np.ndarray:
        """The high-level feature layer (the penultimate layer) for an observation."""
        return np.tanh(self._w2 @ np.tanh(self._w1 @ x + self._b1) + self._b2)

    def __call__(self, x: np.ndarray) -> float:
        f = np.tanh(self._w2 @ np.tanh(self._w1 @ x + self._b1) + self._b2)
        if self.state_head:
            return self._decode(self._wh @ f + self._bh)
        return _clip_action(float(self._wh @ f) + self._bh)


class FusionPolicy:
    """Loki: frozen clone trunk and learner trunk, dual-weight fusion, action head.

    The two trunks run as one stacked first layer and one block-diagonal second layer, which
    halves the number of numpy calls per decision (the decision-latency budget is 50 us).
    """

    def __init__(self, params: dict[str, np.ndarray], normalizer: Normalizer | None = None) -> None:
        clone = Mlp(params, "clone.trunk", tanh_last=True)
        learner = Mlp(params, "learner.trunk", tanh_last=True)
        if len(clone.layers) != 2 or len(learner.layers) != 2:
            raise ValueError("FusionPolicy expects two-layer trunks")
        c1, c2 = clone.layers
        r1, r2 = learner.layers
        h = c2.weight.shape[0]
        if r2.weight.shape[0] != h:
            raise ValueError("clone and learner features must have the same size to be fused")
        self.feature_size = h
        self._w1, self._b1 = fold_normalizer(
            np.concatenate([c1.weight, r1.weight]), np.concatenate([c1.bias, r1.bias]), normalizer
        )
        n1c, n1r = c1.weight.shape[0], r1.weight.shape[0]
        w2 = np.zeros((2 * h, n1c + n1r), dtype=np.float32)
        w2[:h, :n1c] = c2.weight
        w2[h:, n1c:] = r2.weight
        self._w2 = w2
        self._b2 = np.concatenate([c2.bias, r2.bias])
        self.fusion = DualWeightFusion(params)
        # sigmoid(z) = (1 + tanh(z / 2)) / 2, so with t = tanh(W_g f / 2 + b_g / 2):
        # head(w_c f_c + w_r f_r) = ([w_h, w_h] / 2) @ (f + t * f) + b_h, over f = [f_c, f_r].
        self._wg_half = np.ascontiguousarray(self.fusion._w * 0.5, dtype=np.float32)
        self._bg_half = (self.fusion._b * 0.5).astype(np.float32)
        head = Mlp(params, "head", tanh_last=False)
        wh = head.layers[0].weight[0]
        self._wh2 = np.ascontiguousarray(np.concatenate([wh, wh]) * 0.5, dtype=np.float32)
        self._bh = float(head.layers[0].bias[0])

    @property
    def obs_size(self) -> int:
        return int(self._w1.shape[1])

    def features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(f_c, f_r): the clone's and the learner's high-level features."""
        f = np.tanh(self._w2 @ np.tanh(self._w1 @ x + self._b1) + self._b2)
        return f[: self.feature_size], f[self.feature_size :]

    def gates(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(w_c, w_r): the two weight sets for this observation (for analysis)."""
        return self.fusion.gates(*self.features(x))

    def __call__(self, x: np.ndarray) -> float:
        f = np.tanh(self._w2 @ np.tanh(self._w1 @ x + self._b1) + self._b2)
        t = np.tanh(self._wg_half @ f + self._bg_half)
        return _clip_action(float(self._wh2 @ (f + t * f)) + self._bh)
