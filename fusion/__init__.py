"""Loki's dual-weight fusion layer: blend the GCC clone's and the learner's high-level features.

:mod:`fusion.dual_weight` is the numpy forward pass a sender runs; :mod:`fusion.torch_module`
is the same layer as a torch module for training (imported only by the training code).
"""

from fusion.dual_weight import CLONE_GATE_BIAS, LEARNER_GATE_BIAS, DualWeightFusion

__all__ = ["CLONE_GATE_BIAS", "LEARNER_GATE_BIAS", "DualWeightFusion"]
