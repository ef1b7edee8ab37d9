"""libwebrtc unit-arithmetic rounding, as listed in the GCC reference."""

from __future__ import annotations

import numpy as np
import pytest

from gcc.units import (
    F32_0_9,
    f32,
    llround,
    rate_bps,
    scale_rate,
    size_at_rate_bytes,
    timestamp_ms,
    transfer_time_us,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(2.5, 3), (-2.5, -3), (2.4999, 2), (-2.5001, -3), (0.49999999999999994, 0), (7.0, 7)],
)
def test_llround_rounds_half_away_from_zero(value: float, expected: int) -> None:
    assert llround(value) == expected


def test_scale_rate_is_data_rate_times_double() -> None:
    assert scale_rate(425, 0.95) == 404  # 403.75
    assert scale_rate(1800, 0.7) == 1260


def test_rate_and_time_divisions_truncate() -> None:
    assert rate_bps(3000, 75_000) == 320_000
    assert rate_bps(1000, 3_000_001) == 2666  # 2666.66 truncated
    assert transfer_time_us(1000, 4_800_000) == 1666  # 1666.67 us truncated


def test_size_at_rate_rounds_to_nearest_byte() -> None:
    assert size_at_rate_bytes(1800, 15_000) == 3  # 3.375 B
    assert size_at_rate_bytes(300_000, 15_000) == 563  # 562.5 B rounds up


def test_timestamp_ms_rounds_halves_up() -> None:
    assert [timestamp_ms(v) for v in (1499, 1500, 1501, -1500, -1501)] == [1, 2, 2, -1, -2]


def test_f32_matches_numpy_float32() -> None:
    for value in (0.9, 0.95, 1 / 3, 838.0952380952381, 1e10 + 1):
        assert f32(value) == float(np.float32(value))
    assert F32_0_9 == 0.8999999761581421
