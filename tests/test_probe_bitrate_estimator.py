"""Port of libwebrtc's ``probe_bitrate_estimator_unittest.cc`` (same inputs, same tolerances).

Each ``add`` call is the C++ fixture's ``AddPacketFeedback(cluster, bytes, send_ms, recv_ms,
min_probes=5, min_bytes=5000)``; the measured rate is the return of the latest call.
"""

from __future__ import annotations

import pytest

from gcc.probe_bitrate_estimator import ProbeBitrateEstimator
from gcc.units import F32_0_95

DEFAULT_MIN_PROBES = 5
DEFAULT_MIN_BYTES = 5000
#: The C++ test's ``kTargetUtilizationFraction = 0.95f``.
TARGET_UTILIZATION_FRACTION = F32_0_95


class Fixture:
    def __init__(self) -> None:
        self.estimator = ProbeBitrateEstimator()
        self.measured_bps: int | None = None

    def add(
        self,
        cluster_id: int,
        size_bytes: int,
        send_ms: int,
        recv_ms: int,
        min_probes: int = DEFAULT_MIN_PROBES,
        min_bytes: int = DEFAULT_MIN_BYTES,
    ) -> None:
        self.measured_bps = self.estimator.handle_probe_and_estimate_bitrate(
            cluster_id, send_ms * 1000, recv_ms * 1000, size_bytes, min_probes, min_bytes
        )


@pytest.fixture
def f() -> Fixture:
    return Fixture()


def test_one_cluster(f: Fixture) -> None:
    f.add(0, 1000, 0, 10)
    f.add(0, 1000, 10, 20)
    f.add(0, 1000, 20, 30)
    f.add(0, 1000, 30, 40)
    assert f.measured_bps == pytest.approx(800_000, abs=10)


def test_one_cluster_too_few_probes(f: Fixture) -> None:
    f.add(0, 2000, 0, 10)
    f.add(0, 2000, 10, 20)
    f.add(0, 2000, 20, 30)
    assert f.measured_bps is None


def test_one_cluster_too_few_bytes(f: Fixture) -> None:
    min_bytes = 6000
    for i in range(5):
        f.add(0, 800, 10 * i, 10 * i + 10, DEFAULT_MIN_PROBES, min_bytes)
    assert f.measured_bps is None


def test_small_cluster(f: Fixture) -> None:
    min_bytes = 1000
    for i in range(6):
        f.add(0, 150, 10 * i, 10 * i + 10, DEFAULT_MIN_PROBES, min_bytes)
    assert f.measured_bps == pytest.approx(120_000, abs=10)


def test_large_cluster(f: Fixture) -> None:
    min_probes = 30
    min_bytes = 312_500
    for send_ms in range(25):  # Received 5 ms after sending, 1 ms apart.
        f.add(0, 12_500, send_ms, send_ms + 5, min_probes, min_bytes)
    assert f.measured_bps == pytest.approx(100_000_000, abs=10)


def test_fast_receive(f: Fixture) -> None:
    f.add(0, 1000, 0, 15)
    f.add(0, 1000, 10, 30)
    f.add(0, 1000, 20, 35)
    f.add(0, 1000, 30, 40)
    assert f.measured_bps == pytest.approx(800_000, abs=10)


def test_too_fast_receive(f: Fixture) -> None:
    f.add(0, 1000, 0, 19)
    f.add(0, 1000, 10, 22)
    f.add(0, 1000, 20, 25)
    f.add(0, 1000, 40, 27)
    assert f.measured_bps is None


def test_slow_receive(f: Fixture) -> None:
    f.add(0, 1000, 0, 10)
    f.add(0, 1000, 10, 40)
    f.add(0, 1000, 20, 70)
    f.add(0, 1000, 30, 85)
    # Expected send rate = 800 kbps, expected receive rate = 320 kbps.
    assert f.measured_bps == pytest.approx(TARGET_UTILIZATION_FRACTION * 320_000, abs=10)


def test_burst_receive(f: Fixture) -> None:
    f.add(0, 1000, 0, 50)
    f.add(0, 1000, 10, 50)
    f.add(0, 1000, 20, 50)
    f.add(0, 1000, 40, 50)
    assert f.measured_bps is None


def test_multiple_clusters(f: Fixture) -> None:
    f.add(0, 1000, 0, 10)
    f.add(0, 1000, 10, 20)
    f.add(0, 1000, 20, 30)
    f.add(0, 1000, 40, 60)
    # Expected send rate = 600 kbps, expected receive rate = 480 kbps.
    assert f.measured_bps == pytest.approx(TARGET_UTILIZATION_FRACTION * 480_000, abs=10)

    f.add(0, 1000, 50, 60)
    # Expected send rate = 640 kbps, expected receive rate = 640 kbps.
    assert f.measured_bps == pytest.approx(640_000, abs=10)

    f.add(1, 1000, 60, 70)
    f.add(1, 1000, 65, 77)
    f.add(1, 1000, 70, 84)
    f.add(1, 1000, 75, 90)
    # Expected send rate = 1600 kbps, expected receive rate = 1200 kbps.
    assert f.measured_bps == pytest.approx(TARGET_UTILIZATION_FRACTION * 1_200_000, abs=10)


def test_ignore_old_clusters(f: Fixture) -> None:
    f.add(0, 1000, 0, 10)
    f.add(0, 1000, 10, 20)
    f.add(0, 1000, 20, 30)

    f.add(1, 1000, 60, 70)
    f.add(1, 1000, 65, 77)
    f.add(1, 1000, 70, 84)
    f.add(1, 1000, 75, 90)
    # Expected send rate = 1600 kbps, expected receive rate = 1200 kbps.
    assert f.measured_bps == pytest.approx(TARGET_UTILIZATION_FRACTION * 1_200_000, abs=10)

    # Coming in 6 s later.
    f.add(0, 1000, 40 + 6000, 60 + 6000)
    assert f.measured_bps is None


def test_ignore_size_last_send_packet(f: Fixture) -> None:
    f.add(0, 1000, 0, 10)
    f.add(0, 1000, 10, 20)
    f.add(0, 1000, 20, 30)
    f.add(0, 1000, 30, 40)
    f.add(0, 1500, 40, 50)
    # Expected send rate = 800 kbps, expected receive rate = 900 kbps.
    assert f.measured_bps == pytest.approx(800_000, abs=10)


def test_ignore_size_first_receive_packet(f: Fixture) -> None:
    f.add(0, 1500, 0, 10)
    f.add(0, 1000, 10, 20)
    f.add(0, 1000, 20, 30)
    f.add(0, 1000, 30, 40)
    # Expected send rate = 933 kbps, expected receive rate = 800 kbps.
    assert f.measured_bps == pytest.approx(TARGET_UTILIZATION_FRACTION * 800_000, abs=10)


def test_no_last_estimated_bitrate_bps(f: Fixture) -> None:
    assert f.estimator.fetch_and_reset_last_estimated_bitrate() is None


def test_fetch_last_estimated_bitrate_bps(f: Fixture) -> None:
    f.add(0, 1000, 0, 10)
    f.add(0, 1000, 10, 20)
    f.add(0, 1000, 20, 30)
    f.add(0, 1000, 30, 40)
    estimated = f.estimator.fetch_and_reset_last_estimated_bitrate()
    assert estimated is not None
    assert estimated == pytest.approx(800_000, abs=10)
    assert f.estimator.fetch_and_reset_last_estimated_bitrate() is None


# Exact values under libwebrtc's unit rounding (not asserted by the C++ test, which allows +-10).
def test_exact_values_under_libwebrtc_rounding(f: Fixture) -> None:
    f.add(0, 1000, 0, 10)
    f.add(0, 1000, 10, 40)
    f.add(0, 1000, 20, 70)
    f.add(0, 1000, 30, 85)
    # recv 3000 B / 75 ms = 320 000 bps; 0.95f * 320 000 = 303 999.996 -> llround 304 000.
    assert f.measured_bps == 304_000
