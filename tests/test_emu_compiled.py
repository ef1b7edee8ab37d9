"""Resolving compiled code once per argument layout (loki.emu.compiled)."""

import numpy as np
from numba import njit

from loki.emu.compiled import entry_point


@njit(cache=False)
def _total(values: np.ndarray, scale: int) -> float:
    out = 0.0
    for v in values:
        out += v * scale
    return out


def test_the_same_layout_resolves_once_and_calls_like_the_dispatcher():
    a = np.arange(5, dtype=np.int64)
    first = entry_point(_total, (a, 2))
    again = entry_point(_total, (np.zeros(100, dtype=np.int64), 7))
    assert again is first
    assert first(a, 3) == _total(a, 3) == 30.0


def test_another_layout_gets_its_own_code():
    ints = entry_point(_total, (np.arange(4, dtype=np.int64), 1))
    floats = entry_point(_total, (np.arange(4, dtype=np.float64), 1))
    strided = entry_point(_total, (np.arange(8, dtype=np.int64)[::2], 1))
    readonly = np.arange(4, dtype=np.int64)
    readonly.flags.writeable = False
    frozen = entry_point(_total, (readonly, 1))
    assert len({id(ints), id(floats), id(strided), id(frozen)}) == 4
    assert floats(np.array([0.5, 1.5]), 2) == 4.0
    assert strided(np.arange(8, dtype=np.int64)[::2], 1) == 12.0
    assert frozen(readonly, 2) == 12.0


def test_an_int_beyond_int64_does_not_get_the_int64_code():
    huge = 2**63  # a uint64 to numba
    a = np.arange(3, dtype=np.int64)
    small = entry_point(_total, (a, 1))
    assert entry_point(_total, (a, huge)) is not small
    assert entry_point(_total, (a, 1)) is small
