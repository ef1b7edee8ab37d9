"""Port of libwebrtc's ``send_side_bandwidth_estimation_unittest.cc`` (upstream, mid-2024).

The C++ tests are first; the tests after them pin the classic loss rule's exact arithmetic
(values worked out by hand from ``send_side_bandwidth_estimation.cc``), which the C++ file only
checks loosely.
"""

from __future__ import annotations

import pytest

from gcc.send_side_bandwidth_estimation import (
    RttBasedBackoff,
    RttBasedBackoffConfig,
    SendSideBandwidthEstimation,
)

MS = 1_000  # microseconds


@pytest.mark.parametrize("use_delay_based", [False, True], ids=["remb", "delay_based"])
def test_probing(use_delay_based: bool) -> None:
    """``InitialRembWithProbing`` and ``InitialDelayBasedBweWithProbing``."""
    bwe = SendSideBandwidthEstimation()
    now_ms = 0
    bwe.set_min_max_bitrate(100_000, 1_500_000)
    bwe.set_send_bitrate(200_000, now_ms * MS)

    remb_bps = 1_000_000
    second_remb_bps = remb_bps + 500_000

    bwe.update_packets_lost(0, 1, now_ms * MS)
    bwe.update_rtt(50 * MS, now_ms * MS)

    # Initial REMB applies immediately.
    if use_delay_based:
        bwe.update_delay_based_estimate(now_ms * MS, remb_bps)
    else:
        bwe.update_receiver_estimate(now_ms * MS, remb_bps)
    bwe.update_estimate(now_ms * MS)
    assert bwe.target_rate() == remb_bps

    # Second REMB doesn't apply immediately.
    now_ms += 2001
    if use_delay_based:
        bwe.update_delay_based_estimate(now_ms * MS, second_remb_bps)
    else:
        bwe.update_receiver_estimate(now_ms * MS, second_remb_bps)
    bwe.update_estimate(now_ms * MS)
    assert bwe.target_rate() == remb_bps


def test_doesnt_reapply_bitrate_decrease_without_following_remb() -> None:
    event_log: list[tuple[int, int, int, int]] = []
    bwe = SendSideBandwidthEstimation(event_log=event_log)
    min_bitrate_bps = 100_000
    initial_bitrate_bps = 1_000_000
    now_ms = 1000
    bwe.set_min_max_bitrate(min_bitrate_bps, 1_500_000)
    bwe.set_send_bitrate(initial_bitrate_bps, now_ms * MS)

    fraction_loss = 128
    rtt_ms = 50
    now_ms += 10_000

    assert bwe.target_rate() == initial_bitrate_bps
    assert bwe.fraction_loss() == 0
    assert bwe.round_trip_time_us() == 0

    # Signal heavy loss to go down in bitrate.
    bwe.update_packets_lost(50, 100, now_ms * MS)
    bwe.update_rtt(rtt_ms * MS, now_ms * MS)

    # Trigger an update 2 seconds later to not be rate limited.
    now_ms += 1000
    bwe.update_estimate(now_ms * MS)
    assert bwe.target_rate() < initial_bitrate_bps
    # The bitrate must not hit the min bitrate, or this test would not make sense.
    assert bwe.target_rate() > min_bitrate_bps
    assert bwe.fraction_loss() == fraction_loss
    assert bwe.round_trip_time_us() == rtt_ms * MS

    # A further update applies neither a downgrade nor an upgrade: there is no newer receiver
    # block saying whether things are good now.
    last_bitrate_bps = bwe.target_rate()
    now_ms += 1000
    bwe.update_estimate(now_ms * MS)
    assert bwe.target_rate() == last_bitrate_bps
    # The old loss rate still applies.
    assert bwe.fraction_loss() == fraction_loss
    assert bwe.round_trip_time_us() == rtt_ms * MS

    # The C++ test's mock event log: exactly one loss-based update without and one with loss.
    assert sum(1 for e in event_log if e[1] > 0 and e[2] == 0) == 1
    assert sum(1 for e in event_log if e[1] > 0 and e[2] > 0) == 1
    # Exact value (the C++ test only brackets it): 1 000 000 * (512 - 128) / 512.
    assert last_bitrate_bps == 750_000


def test_setting_send_bitrate_overrides_delay_based_estimate() -> None:
    bwe = SendSideBandwidthEstimation()
    min_bitrate_bps = 10_000
    max_bitrate_bps = 10_000_000
    initial_bitrate_bps = 300_000
    delay_based_bitrate_bps = 350_000
    forced_high_bitrate = 2_500_000
    now_ms = 0

    bwe.set_min_max_bitrate(min_bitrate_bps, max_bitrate_bps)
    bwe.set_send_bitrate(initial_bitrate_bps, now_ms * MS)

    bwe.update_delay_based_estimate(now_ms * MS, delay_based_bitrate_bps)
    bwe.update_estimate(now_ms * MS)
    assert initial_bitrate_bps <= bwe.target_rate() <= delay_based_bitrate_bps

    bwe.set_send_bitrate(forced_high_bitrate, now_ms * MS)
    assert bwe.target_rate() == forced_high_bitrate


def test_rtt_based_backoff_default_enabled() -> None:
    assert RttBasedBackoff().rtt_limit_us == 3_000_000


def test_rtt_based_backoff_can_be_disabled() -> None:
    assert RttBasedBackoff(RttBasedBackoffConfig(disabled=True)).rtt_limit_us == float("inf")


def test_fraction_loss_is_not_overflowed() -> None:
    bwe = SendSideBandwidthEstimation()
    now_ms = 1000
    bwe.set_min_max_bitrate(100_000, 1_500_000)
    bwe.set_send_bitrate(1_000_000, now_ms * MS)
    now_ms += 10_000
    assert bwe.target_rate() == 1_000_000
    assert bwe.fraction_loss() == 0
    # Signal negative loss.
    bwe.update_packets_lost(-1, 100, now_ms * MS)
    assert bwe.fraction_loss() == 0


def make_bwe_300k() -> SendSideBandwidthEstimation:
    bwe = SendSideBandwidthEstimation()
    bwe.set_bitrates(300_000, 10_000, 10_000_000, 0)
    return bwe


def test_rtt_is_above_limit_if_rtt_greater_than_limit() -> None:
    bwe = make_bwe_300k()
    bwe.update_propagation_rtt(0, 5000 * MS)
    assert bwe.is_rtt_above_limit()


def test_rtt_is_below_limit_if_rtt_less_than_limit() -> None:
    bwe = make_bwe_300k()
    bwe.update_propagation_rtt(0, 1000 * MS)
    assert not bwe.is_rtt_above_limit()


# --- Beyond the C++ file: exact behaviour of the classic rule ---------------------------------


def test_low_loss_increases_8_percent_over_last_second_minimum_plus_1kbps() -> None:
    bwe = make_bwe_300k()
    bwe.update_packets_lost(0, 100, 0)
    assert bwe.target_rate() == 325_000  # int(300 000 * 1.08 + 0.5) + 1000.
    bwe.update_packets_lost(0, 100, 500 * MS)
    assert bwe.target_rate() == 325_000  # Base is still the 300 000 of t = 0.
    bwe.update_packets_lost(0, 100, 1000 * MS)
    assert bwe.target_rate() == 352_000  # 300 000 left the 1 s window: 325 000 * 1.08 + 1000.


def test_loss_reports_accumulate_to_20_packets() -> None:
    bwe = make_bwe_300k()
    bwe.update_packets_lost(3, 10, 0)
    assert bwe.fraction_loss() == 0 and bwe.target_rate() == 300_000
    bwe.update_packets_lost(1, 9, 100 * MS)
    assert bwe.fraction_loss() == 0  # 19 packets: still accumulating.
    bwe.update_packets_lost(1, 1, 200 * MS)
    assert bwe.fraction_loss() == (5 << 8) // 20 == 64


def test_moderate_loss_holds() -> None:
    bwe = make_bwe_300k()
    bwe.update_packets_lost(5, 100, 0)  # q8 = 12: 4.7 %.
    assert bwe.fraction_loss() == 12
    assert bwe.target_rate() == 300_000


def test_loss_thresholds_are_float32_two_and_ten_percent() -> None:
    low = make_bwe_300k()
    low.update_packets_lost(5, 256, 0)  # Exactly 5/256 = 1.95 %: increase.
    assert low.target_rate() == 325_000
    at_ten = make_bwe_300k()
    at_ten.update_packets_lost(25, 256, 0)  # 9.77 %: hold.
    assert at_ten.target_rate() == 300_000
    above_ten = make_bwe_300k()
    above_ten.update_packets_lost(26, 256, 0)  # 10.2 %: decrease by (512 - 26) / 512.
    assert above_ten.target_rate() == int(300_000 * 486 / 512) == 284_765


def test_high_loss_decrease_limited_to_once_per_300ms_plus_rtt() -> None:
    bwe = make_bwe_300k()
    bwe.update_rtt(100 * MS, 0)
    bwe.update_packets_lost(20, 100, 0)  # q8 = 51.
    first = int(300_000 * (512 - 51) / 512)
    assert bwe.target_rate() == first == 270_117
    bwe.update_packets_lost(20, 100, 399 * MS)  # New report, but only 399 ms < 300 + 100 ms.
    assert bwe.target_rate() == first
    bwe.update_estimate(400 * MS)  # The 399 ms report has not been used for a decrease yet.
    assert bwe.target_rate() == int(first * (512 - 51) / 512)


def test_stale_loss_report_is_ignored_after_6s() -> None:
    bwe = make_bwe_300k()
    bwe.update_packets_lost(0, 100, 0)
    bwe.update_estimate(5_999 * MS)
    grown = bwe.target_rate()
    assert grown > 325_000
    bwe.update_estimate(6_000 * MS + 5_000 * MS)
    assert bwe.target_rate() == grown


def test_delay_based_estimate_caps_loss_based_target() -> None:
    bwe = make_bwe_300k()
    bwe.update_packets_lost(0, 100, 0)
    bwe.update_estimate(3_000 * MS)  # Out of the start phase.
    bwe.update_delay_based_estimate(3_000 * MS, 200_000)
    assert bwe.target_rate() == 200_000
    bwe.update_delay_based_estimate(3_100 * MS, 0)  # 0 means "no cap" again.
    bwe.update_estimate(3_100 * MS)
    assert bwe.target_rate() > 200_000


def test_receiver_limit_caps_only_target_rate() -> None:
    bwe = make_bwe_300k()
    bwe.update_packets_lost(0, 100, 0)
    bwe.update_estimate(3_000 * MS)
    loss_based = bwe.current_target_bps
    bwe.update_receiver_estimate(3_000 * MS, 100_000)
    assert bwe.target_rate() == 100_000
    assert bwe.current_target_bps == loss_based  # The loss-based state keeps its own value.


def test_target_is_bounded_by_configured_min_and_max() -> None:
    bwe = SendSideBandwidthEstimation()
    bwe.set_bitrates(300_000, 250_000, 320_000, 0)
    bwe.update_packets_lost(0, 100, 0)
    assert bwe.target_rate() == 320_000
    bwe.update_packets_lost(100, 100, 1_000 * MS)  # 100 % loss: halve, floored at the min.
    assert bwe.target_rate() == 250_000


def test_rtt_backoff_cuts_to_80_percent_once_per_second_with_5kbps_floor() -> None:
    bwe = SendSideBandwidthEstimation()
    bwe.set_bitrates(1_000_000, 5_000, 10_000_000, 0)
    bwe.update_propagation_rtt(0, 4_000 * MS)
    bwe.update_estimate(0)
    assert bwe.target_rate() == 800_000
    bwe.update_estimate(999 * MS)
    assert bwe.target_rate() == 800_000
    bwe.update_estimate(1_000 * MS)
    assert bwe.target_rate() == 640_000
    assert bwe.get_estimated_link_capacity() == 640_000

    floor = SendSideBandwidthEstimation()
    floor.set_bitrates(6_000, 5_000, 10_000_000, 0)
    floor.update_propagation_rtt(0, 4_000 * MS)
    floor.update_estimate(0)
    assert floor.target_rate() == 5_000  # max(0.8 * 6000, 5000).


def test_rtt_timeout_counts_only_time_spent_sending() -> None:
    bwe = make_bwe_300k()
    bwe.update_propagation_rtt(0, 1_000 * MS)
    assert not bwe.is_rtt_above_limit()
    bwe.on_sent_packet(2_001 * MS)  # Sent for 2.001 s without a new RTT: 3.001 s corrected.
    assert bwe.is_rtt_above_limit()


def test_link_capacity_tracks_acknowledged_rate_with_10s_time_constant() -> None:
    bwe = SendSideBandwidthEstimation()
    bwe.set_bitrates(300_000, 10_000, 10_000_000, 0)
    assert bwe.get_estimated_link_capacity() == 300_000  # The starting rate.
    bwe.set_acknowledged_rate(400_000, 0)
    bwe.update_delay_based_estimate(0, 1_000_000)  # Target 300 000: min(ack, target) = 300 000.
    assert bwe.get_estimated_link_capacity() == 300_000
    bwe.update_packets_lost(0, 100, 1_000 * MS)  # Target -> 1 000 000 (start phase).
    # Update 1 s after the previous one: alpha = exp(-0.1); sample min(400 000, 1e6).
    assert bwe.get_estimated_link_capacity() == int(
        0.9048374180359595 * 300_000 + (1 - 0.9048374180359595) * 400_000
    )
