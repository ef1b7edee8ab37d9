"""The dual-weight fusion layer, numpy forward pass.

Loki (MobiCom'21) blends the frozen GCC clone's high-level features ``f_c`` with the learning
actor's ``f_r`` through two learned weight sets that act as confidence coefficients; Loki+
(2024) states the blend is element-wise. Here each weight set is a gate computed from both
feature vectors, so the blend can favour whichever model is more trustworthy *in the current
network state*:

    z   = [f_c, f_r]
    w_c = sigmoid(W_c z + b_c)          (one weight per feature)
    w_r = sigmoid(W_r z + b_r)
    fused = w_c * f_c + w_r * f_r       (element-wise)

The gates start at ``W = 0``, ``b_c = +1``, ``b_r = -1``: w_c = 0.73 and w_r = 0.27, which
sum to exactly 1. With the learner trunk starting as a copy of the clone's (f_r = f_c), the
fused features are then exactly the clone's: the controller starts as the clone, the clone
keeps the larger weight while the learner moves, and the learner's gate is open enough
(0.27, not 0.02) for its trunk to receive gradient. RL moves weight where that pays.
"""

from __future__ import annotations

import numpy as np

from loki.nn import sigmoid

#: Initial gate biases: sigmoid(1) = 0.731 for the clone, sigmoid(-1) = 0.269 for the learner
#: (sigmoid(b) + sigmoid(-b) = 1: equal trunks give exactly the clone's features).
CLONE_GATE_BIAS = 1.0
LEARNER_GATE_BIAS = -1.0
#: Parameter names, shared with the torch module and the exported model files.
GATE_C = "fusion.gate_c"
GATE_R = "fusion.gate_r"


class DualWeightFusion:
    """Gated element-wise blend of two equally sized feature vectors."""

    def __init__(self, params: dict[str, np.ndarray]) -> None:
        wc = np.asarray(params[f"{GATE_C}.weight"], dtype=np.float32)
        wr = np.asarray(params[f"{GATE_R}.weight"], dtype=np.float32)
        if wc.shape != wr.shape or wc.shape[1] != 2 * wc.shape[0]:
            raise ValueError(f"fusion gates need shape (H, 2H), got {wc.shape} and {wr.shape}")
        self.feature_size = int(wc.shape[0])
        # Both gates in one matrix: one matmul per decision instead of two.
        self._w = np.ascontiguousarray(np.concatenate([wc, wr]), dtype=np.float32)
        self._b = np.concatenate([params[f"{GATE_C}.bias"], params[f"{GATE_R}.bias"]]).astype(
            np.float32
        )

    def gates(self, f_c: np.ndarray, f_r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The two weight sets (w_c, w_r) for this pair of feature vectors."""
        g = sigmoid(self._w @ np.concatenate([f_c, f_r]) + self._b)
        h = self.feature_size
        return g[:h], g[h:]

    def __call__(self, f_c: np.ndarray, f_r: np.ndarray) -> np.ndarray:
        w_c, w_r = self.gates(f_c, f_r)
        return w_c * f_c + w_r * f_r
