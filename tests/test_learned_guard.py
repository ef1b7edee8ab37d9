"""The guard: NaN/inf and out-of-range observations never reach the network, and are counted."""

import numpy as np
import pytest

from loki.learned.guard import RANGE_MARGIN, InputGuard


def test_without_bounds_only_non_finite_values_are_refused():
    g = InputGuard()
    assert g.admit(np.array([1e9, -1e9], dtype=np.float32))
    assert not g.admit(np.array([0.0, np.nan], dtype=np.float32))
    assert not g.admit(np.array([np.inf, 0.0], dtype=np.float32))
    assert (g.checks, g.fallbacks, g.non_finite, g.out_of_range) == (3, 2, 2, 0)


def test_training_range_with_margin():
    g = InputGuard(np.array([0.0, -1.0]), np.array([10.0, 1.0]))
    assert g.admit(np.array([10.0 + 0.9 * RANGE_MARGIN * 10, 0.0], dtype=np.float32))
    assert not g.admit(np.array([10.0 + 1.1 * RANGE_MARGIN * 10, 0.0], dtype=np.float32))
    assert not g.admit(np.array([5.0, -1.0 - 1.1 * RANGE_MARGIN * 2], dtype=np.float32))
    assert g.out_of_range == 2 and g.fallbacks == 2


def test_non_finite_action_is_a_fallback():
    g = InputGuard()
    assert g.admit_action(0.3)
    assert not g.admit_action(float("nan"))
    assert g.fallbacks == 1


def test_bad_bounds_are_refused():
    with pytest.raises(ValueError):
        InputGuard(np.zeros(2), None)
    with pytest.raises(ValueError):
        InputGuard(np.ones(2), np.zeros(2))
