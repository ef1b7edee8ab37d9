"""The safety guard in front of every learned controller.

A network only knows the inputs it was trained on. The guard keeps NaN and infinite values away
from the network and checks each observation against the range seen in training (per input,
widened by a margin); outside it, the controller falls back to GCC's estimate for that decision
(OnRL falls back to GCC on abnormal conditions in the same way) and the guard counts it.
"""

from __future__ import annotations

import numpy as np

#: How far beyond the training range (as a share of the range's width) still counts as inside.
RANGE_MARGIN = 0.05


class InputGuard:
    """Says whether an observation may reach the network; counts the ones that may not."""

    __slots__ = ("_high", "_low", "checks", "fallbacks", "non_finite", "out_of_range")

    def __init__(self, low: np.ndarray | None = None, high: np.ndarray | None = None) -> None:
        if (low is None) != (high is None):
            raise ValueError("InputGuard needs both bounds or neither")
        if low is not None and high is not None:
            low = np.asarray(low, dtype=np.float32)
            high = np.asarray(high, dtype=np.float32)
            if low.shape != high.shape or np.any(high < low):
                raise ValueError("InputGuard bounds must have one shape and low <= high")
            span = high - low
            low, high = low - RANGE_MARGIN * span, high + RANGE_MARGIN * span
        self._low = low
        self._high = high
        self.checks = 0
        self.fallbacks = 0
        self.non_finite = 0
        self.out_of_range = 0

    def admit(self, obs: np.ndarray) -> bool:
        """True when ``obs`` is finite and inside the training range; else counts a fallback."""
        self.checks += 1
        if self._low is None:
            if np.isfinite(obs).all():
                return True
        # One pass for the common case: NaN fails both comparisons, so it is caught too.
        elif ((obs >= self._low) & (obs <= self._high)).all():  # type: ignore[operator]
            return True
        self.fallbacks += 1
        if np.isfinite(obs).all():
            self.out_of_range += 1
        else:
            self.non_finite += 1
        return False

    def admit_action(self, action: float) -> bool:
        """A non-finite network output is a fallback too (it should never happen)."""
        if np.isfinite(action):
            return True
        self.non_finite += 1
        self.fallbacks += 1
        return False
