"""Port of libwebrtc ``goog_cc/trendline_estimator_unittest.cc`` (upstream, 2024-05).

25 packets sent 20 ms apart; the receive spacing decides the verdict. ``_run_until_state_change``
replicates the C++ fixture's ``RunTestUntilStateChange`` exactly: it returns *without* advancing
``count`` when the state changes, so the next call feeds that packet a second time.
"""

from __future__ import annotations

import pytest

from gcc.bandwidth_usage import BandwidthUsage
from gcc.trendline_estimator import TrendlineEstimator

PACKET_COUNT = 25
PACKET_SIZE_BYTES = 1200


class _Fixture:
    def __init__(self, recv_step_ms: float, packet_size_bytes: int = PACKET_SIZE_BYTES) -> None:
        # PacketTimeGenerator: int64 clock + double step * n, converted back to int64 (truncated).
        self.send_times = [int(123456789 + 20 * i) for i in range(PACKET_COUNT)]
        self.recv_times = [int(987654321 + recv_step_ms * i) for i in range(PACKET_COUNT)]
        self.packet_sizes = [packet_size_bytes] * PACKET_COUNT
        self.estimator = TrendlineEstimator()
        self.count = 1

    def run_until_state_change(self) -> None:
        assert 1 <= self.count < PACKET_COUNT
        initial_state = self.estimator.state()
        while self.count < PACKET_COUNT:
            c = self.count
            recv_delta = float(self.recv_times[c] - self.recv_times[c - 1])
            send_delta = float(self.send_times[c] - self.send_times[c - 1])
            self.estimator.update(
                recv_delta,
                send_delta,
                self.send_times[c],
                self.recv_times[c],
                self.packet_sizes[c],
                True,
            )
            if self.estimator.state() != initial_state:
                return
            self.count += 1


def test_normal() -> None:
    fx = _Fixture(recv_step_ms=20)  # delivered at the same pace
    assert fx.estimator.state() == BandwidthUsage.NORMAL
    fx.run_until_state_change()
    assert fx.estimator.state() == BandwidthUsage.NORMAL
    assert fx.count == PACKET_COUNT  # all packets processed


@pytest.mark.parametrize("packet_size_bytes", [PACKET_SIZE_BYTES, 100])
def test_overusing(packet_size_bytes: int) -> None:
    """``Overusing``, and with 100-byte packets ``IncludesSmallPacketsByDefault``."""
    fx = _Fixture(recv_step_ms=1.1 * 20, packet_size_bytes=packet_size_bytes)  # 10 % slower
    assert fx.estimator.state() == BandwidthUsage.NORMAL
    fx.run_until_state_change()
    assert fx.estimator.state() == BandwidthUsage.OVERUSING
    # Exact intermediate (not asserted upstream): the switch happens on packet 24.
    assert fx.count == 24
    fx.run_until_state_change()
    assert fx.estimator.state() == BandwidthUsage.OVERUSING
    assert fx.count == PACKET_COUNT


def test_overusing_intermediate_values() -> None:
    """The reference's trace of the Overusing run: first above threshold at count 23."""
    fx = _Fixture(recv_step_ms=1.1 * 20)
    states = []
    for c in range(1, 25):
        fx.estimator.update(
            float(fx.recv_times[c] - fx.recv_times[c - 1]),
            float(fx.send_times[c] - fx.send_times[c - 1]),
            fx.send_times[c],
            fx.recv_times[c],
            PACKET_SIZE_BYTES,
            True,
        )
        states.append(fx.estimator.state())
        if c == 2:
            # The first detection only stamps the threshold's update time.
            assert fx.estimator.threshold == 12.5
        if c == 3:
            # 12.5 - 0.039 * 12.5 * 22 < 6: the first real update drops it to its floor.
            assert fx.estimator.threshold == 6.0
        if c == 22:
            assert fx.estimator.threshold == 6.0
            assert fx.estimator.modified_trend < 6.0
        if c == 23:
            # Above the threshold (6.0) for the first time; one sample is not enough.
            assert fx.estimator.modified_trend == pytest.approx(6.23, abs=0.005)
            assert fx.estimator.state() == BandwidthUsage.NORMAL
    assert states[:23] == [BandwidthUsage.NORMAL] * 23
    assert states[23] == BandwidthUsage.OVERUSING


def test_underusing() -> None:
    fx = _Fixture(recv_step_ms=0.85 * 20)  # 15 % faster delivery
    assert fx.estimator.state() == BandwidthUsage.NORMAL
    fx.run_until_state_change()
    assert fx.estimator.state() == BandwidthUsage.UNDERUSING
    # Exact intermediates: the first full window (count 20), trend -0.11476, mt -9.18 < -6.
    assert fx.count == 20
    assert fx.estimator.trend == pytest.approx(-0.11476, abs=5e-6)
    assert fx.estimator.modified_trend == pytest.approx(-9.18, abs=0.005)
    fx.run_until_state_change()
    assert fx.estimator.state() == BandwidthUsage.UNDERUSING
    assert fx.count == PACKET_COUNT
