"""The learned controllers: ``gcc-clone``, ``rl``, ``loki`` and ``hybrid``.

Importing this package registers them with :mod:`loki.controllers`; each runs its committed
model from ``loki/models/<name>/model.npz`` in numpy (no torch at run time). See
``loki/LEARNING.md`` for the state, action, reward and decision interval.
"""

from __future__ import annotations

from loki.controllers import register_controller
from loki.learned.controller import (
    ACTION_LOG2_RANGE,
    HYBRID_EVERY_REPORTS,
    HybridController,
    LearnedController,
    RatioController,
)
from loki.learned.guard import InputGuard
from loki.learned.models import REGISTERED, controller_from_model, make_registered, model_path


def _factory(name: str):
    def make(config, trace):
        return make_registered(name, config)

    return make


for _name in REGISTERED:
    register_controller(_name, _factory(_name))

__all__ = [
    "ACTION_LOG2_RANGE",
    "HYBRID_EVERY_REPORTS",
    "HybridController",
    "InputGuard",
    "LearnedController",
    "RatioController",
    "controller_from_model",
    "model_path",
]
