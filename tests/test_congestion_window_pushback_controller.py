"""gcc/congestion_window_pushback_controller.py: libwebrtc's expectations for the stage
(congestion_window_pushback_controller_unittest.cc) and the data window's arithmetic."""

from __future__ import annotations

import pytest

from gcc.congestion_window_pushback_controller import (
    MIN_DATA_WINDOW_BYTES,
    CongestionWindow,
    CongestionWindowPushbackController,
)


def test_full_window_pushes_back_by_a_tenth_per_update():
    c = CongestionWindowPushbackController()
    c.update_outstanding_data(100_000)
    c.set_data_window(50_000)  # fill 2 > 1.5
    assert c.update_target_bitrate(80_000) == 72_000
    c.set_data_window(75_000)  # fill 1.33: x0.95 on top
    assert c.update_target_bitrate(80_000) == int(80_000 * 0.9 * 0.95)


def test_window_below_full_leaves_the_target_and_climbs_back_to_it():
    c = CongestionWindowPushbackController()
    c.update_outstanding_data(199_999)
    c.set_data_window(200_000)
    assert c.update_target_bitrate(80_000) == 80_000
    c.set_data_window(100_000)
    assert c.update_target_bitrate(80_000) == 72_000  # fill 2
    assert c.encoding_rate_ratio == pytest.approx(0.9)
    c.set_data_window(400_000)  # fill 0.5: x1.05 per update, capped at 1
    assert c.update_target_bitrate(100_000) == int(100_000 * 0.9 * 1.05)
    for _ in range(5):
        c.update_target_bitrate(100_000)
    assert c.update_target_bitrate(100_000) == 100_000


def test_nearly_empty_window_snaps_back_at_once():
    c = CongestionWindowPushbackController()
    c.update_outstanding_data(100_000)
    c.set_data_window(10_000)
    for _ in range(10):
        c.update_target_bitrate(1_000_000)
    assert c.encoding_rate_ratio < 0.4
    c.update_outstanding_data(900)  # fill 0.09
    assert c.update_target_bitrate(1_000_000) == 1_000_000


def test_pushback_stops_at_the_minimum_unless_the_estimate_is_lower():
    c = CongestionWindowPushbackController(min_pushback_target_bps=30_000)
    c.update_outstanding_data(100_000)
    c.set_data_window(50_000)
    assert c.update_target_bitrate(35_000) == 31_500
    assert c.update_target_bitrate(35_000) == 30_000  # 28 350 would be below the minimum
    assert c.update_target_bitrate(20_000) == 20_000  # an estimate below it is obeyed


def test_no_window_no_pushback():
    c = CongestionWindowPushbackController()
    c.update_outstanding_data(10**9)
    assert c.update_target_bitrate(80_000) == 80_000
    c.set_data_window(0)
    assert c.update_target_bitrate(80_000) == 80_000


def test_data_window_is_target_times_min_rtt_plus_queue_averaged():
    w = CongestionWindow(queue_size_ms=350)
    assert w.update(1_000_000) is None  # no RTT yet
    w.on_feedback_rtt(150_000)
    w.on_feedback_rtt(50_000)
    # 1 Mbps x (50 + 350) ms = 50 000 bytes
    assert w.update(1_000_000) == pytest.approx(50_000)
    # averaged with the previous window: (25 000 + 50 000) / 2
    assert w.update(500_000) == pytest.approx(37_500)
    tiny = CongestionWindow(queue_size_ms=1)
    tiny.on_feedback_rtt(1_000)
    assert tiny.update(30_000) == MIN_DATA_WINDOW_BYTES
