"""The dual-weight fusion layer as a torch module, for training (see :mod:`fusion.dual_weight`).

Parameter names match the numpy layer, so :meth:`DualWeightFusionModule.export` gives the
arrays :class:`fusion.dual_weight.DualWeightFusion` reads.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fusion.dual_weight import CLONE_GATE_BIAS, GATE_C, GATE_R, LEARNER_GATE_BIAS


class DualWeightFusionModule(nn.Module):
    """fused = sigmoid(W_c [f_c, f_r] + b_c) * f_c + sigmoid(W_r [f_c, f_r] + b_r) * f_r."""

    def __init__(
        self,
        feature_size: int,
        clone_bias: float = CLONE_GATE_BIAS,
        learner_bias: float = LEARNER_GATE_BIAS,
    ) -> None:
        super().__init__()
        self.gate_c = nn.Linear(2 * feature_size, feature_size)
        self.gate_r = nn.Linear(2 * feature_size, feature_size)
        with torch.no_grad():
            for gate, bias in ((self.gate_c, clone_bias), (self.gate_r, learner_bias)):
                gate.weight.zero_()
                gate.bias.fill_(bias)

    def gates(self, f_c: torch.Tensor, f_r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.cat([f_c, f_r], dim=-1)
        return torch.sigmoid(self.gate_c(z)), torch.sigmoid(self.gate_r(z))

    def forward(self, f_c: torch.Tensor, f_r: torch.Tensor) -> torch.Tensor:
        w_c, w_r = self.gates(f_c, f_r)
        return w_c * f_c + w_r * f_r

    def load(self, params: dict[str, np.ndarray]) -> None:
        """The inverse of :meth:`export` (to go on training an exported model)."""
        with torch.no_grad():
            for name, gate in ((GATE_C, self.gate_c), (GATE_R, self.gate_r)):
                gate.weight.copy_(torch.as_tensor(params[f"{name}.weight"]))
                gate.bias.copy_(torch.as_tensor(params[f"{name}.bias"]))

    def export(self) -> dict[str, np.ndarray]:
        """Arrays named as the numpy layer and the model files expect."""
        out = {}
        for name, gate in ((GATE_C, self.gate_c), (GATE_R, self.gate_r)):
            out[f"{name}.weight"] = gate.weight.detach().cpu().numpy().astype(np.float32)
            out[f"{name}.bias"] = gate.bias.detach().cpu().numpy().astype(np.float32)
        return out
