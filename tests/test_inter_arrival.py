"""Port of libwebrtc ``remote_bitrate_estimator/inter_arrival_unittest.cc``.

As upstream, every ``expect_false`` / ``expect_true`` drives two instances at once: one on
90 kHz RTP timestamps and one on abs-send-time shifted to 32 bits, each with its own rounding of
the microsecond send times. The two arrival-time-jump tests use a third instance working
directly in milliseconds (group length 5, coefficient 1).
"""

from __future__ import annotations

import pytest

from gcc.inter_arrival import (
    ARRIVAL_TIME_OFFSET_THRESHOLD_MS,
    REORDERED_RESET_THRESHOLD,
    InterArrival,
    is_newer_timestamp,
)

TIMESTAMP_GROUP_LENGTH_US = 5000
MIN_STEP_US = 20
TRIGGER_NEW_GROUP_US = TIMESTAMP_GROUP_LENGTH_US + MIN_STEP_US
BURST_THRESHOLD_MS = 5
ABS_SEND_TIME_FRACTION = 18
ABS_SEND_TIME_INTER_ARRIVAL_UPSHIFT = 8
INTER_ARRIVAL_SHIFT = ABS_SEND_TIME_FRACTION + ABS_SEND_TIME_INTER_ARRIVAL_UPSHIFT
RTP_TIMESTAMP_TO_MS = 1.0 / 90.0
AST_TO_MS = 1000.0 / float(1 << INTER_ARRIVAL_SHIFT)

#: Start points of the wrap tests: just below 2**32 in the RTP and abs-send-time instances.
START_RTP_TIMESTAMP_WRAP_US = 47_721_858_827
START_ABS_SEND_TIME_WRAP_US = 63_999_995

_DUMMY_TIMESTAMP = 101
_DUMMY_ARRIVAL_MS = 303
_DUMMY_SIZE = 909


def make_rtp_timestamp(us: int) -> int:
    return ((us * 90 + 500) // 1000) & 0xFFFFFFFF


def make_abs_send_time(us: int) -> int:
    absolute_send_time = (((us << 18) + 500_000) // 1_000_000) & 0x00FFFFFF
    return (absolute_send_time << 8) & 0xFFFFFFFF


class _Fixture:
    def __init__(self) -> None:
        self.inter_arrival = InterArrival(TIMESTAMP_GROUP_LENGTH_US // 1000, 1.0, True)
        self.inter_arrival_rtp = InterArrival(
            make_rtp_timestamp(TIMESTAMP_GROUP_LENGTH_US), RTP_TIMESTAMP_TO_MS, True
        )
        self.inter_arrival_ast = InterArrival(
            make_abs_send_time(TIMESTAMP_GROUP_LENGTH_US), AST_TO_MS, True
        )

    def expect_false(self, timestamp_us: int, arrival_time_ms: int, packet_size: int) -> None:
        """Neither instance completes a group; the outputs are left untouched."""
        _internal_expect_false(
            self.inter_arrival_rtp, make_rtp_timestamp(timestamp_us), arrival_time_ms, packet_size
        )
        _internal_expect_false(
            self.inter_arrival_ast, make_abs_send_time(timestamp_us), arrival_time_ms, packet_size
        )

    def expect_true(
        self,
        timestamp_us: int,
        arrival_time_ms: int,
        packet_size: int,
        expected_timestamp_delta_us: int,
        expected_arrival_time_delta_ms: int,
        expected_packet_size_delta: int,
        timestamp_near: int,
    ) -> None:
        """Both instances complete a group with these deltas (timestamps within ``near``)."""
        _internal_expect_true(
            self.inter_arrival_rtp,
            make_rtp_timestamp(timestamp_us),
            arrival_time_ms,
            packet_size,
            make_rtp_timestamp(expected_timestamp_delta_us),
            expected_arrival_time_delta_ms,
            expected_packet_size_delta,
            timestamp_near,
        )
        _internal_expect_true(
            self.inter_arrival_ast,
            make_abs_send_time(timestamp_us),
            arrival_time_ms,
            packet_size,
            make_abs_send_time(expected_timestamp_delta_us),
            expected_arrival_time_delta_ms,
            expected_packet_size_delta,
            timestamp_near << 8,
        )

    def wrap_test_helper(
        self, wrap_start_us: int, timestamp_near: int, unorderly_within_group: bool
    ) -> None:
        # Step through the range of a 32 bit int, 1/4 at a time, so that packets close to the
        # wrap-around are not judged out of order.
        # G1
        arrival_time = 17
        self.expect_false(0, arrival_time, 1)
        # G2
        arrival_time += BURST_THRESHOLD_MS + 1
        self.expect_false(wrap_start_us // 4, arrival_time, 1)
        # G3
        arrival_time += BURST_THRESHOLD_MS + 1
        self.expect_true(wrap_start_us // 2, arrival_time, 1, wrap_start_us // 4, 6, 0, 0)
        # G4
        arrival_time += BURST_THRESHOLD_MS + 1
        g4_arrival_time = arrival_time
        self.expect_true(
            wrap_start_us // 2 + wrap_start_us // 4,
            arrival_time,
            1,
            wrap_start_us // 4,
            6,
            0,  # Delta G3-G2
            timestamp_near,
        )
        # G5
        arrival_time += BURST_THRESHOLD_MS + 1
        self.expect_true(wrap_start_us, arrival_time, 2, wrap_start_us // 4, 6, 0, timestamp_near)
        for i in range(10):
            # Slowly step across the wrap point.
            arrival_time += BURST_THRESHOLD_MS + 1
            if unorderly_within_group:
                # Decreasing timestamps, still accumulated: not older than the group's first.
                self.expect_false(wrap_start_us + MIN_STEP_US * (9 - i), arrival_time, 1)
            else:
                self.expect_false(wrap_start_us + MIN_STEP_US * i, arrival_time, 1)
        g5_arrival_time = arrival_time
        # This packet is out of order and should be dropped.
        arrival_time += BURST_THRESHOLD_MS + 1
        self.expect_false(wrap_start_us - 100, arrival_time, 100)
        # G6
        arrival_time += BURST_THRESHOLD_MS + 1
        g6_arrival_time = arrival_time
        self.expect_true(
            wrap_start_us + TRIGGER_NEW_GROUP_US,
            arrival_time,
            10,
            wrap_start_us // 4 + 9 * MIN_STEP_US,
            g5_arrival_time - g4_arrival_time,
            (2 + 10) - 1,  # Delta G5-G4
            timestamp_near,
        )
        # This packet is out of order and should be dropped.
        arrival_time += BURST_THRESHOLD_MS + 1
        self.expect_false(wrap_start_us + TIMESTAMP_GROUP_LENGTH_US, arrival_time, 100)
        # G7
        arrival_time += BURST_THRESHOLD_MS + 1
        self.expect_true(
            wrap_start_us + 2 * TRIGGER_NEW_GROUP_US,
            arrival_time,
            100,
            TRIGGER_NEW_GROUP_US - 9 * MIN_STEP_US,  # Delta G6-G5
            g6_arrival_time - g5_arrival_time,
            10 - (2 + 10),
            timestamp_near,
        )


def _preset_outputs(inter_arrival: InterArrival) -> None:
    inter_arrival.timestamp_delta = _DUMMY_TIMESTAMP
    inter_arrival.arrival_time_delta_ms = _DUMMY_ARRIVAL_MS
    inter_arrival.packet_size_delta_bytes = _DUMMY_SIZE


def _internal_expect_false(
    inter_arrival: InterArrival, timestamp: int, arrival_time_ms: int, packet_size: int
) -> None:
    _preset_outputs(inter_arrival)
    computed = inter_arrival.compute_deltas(
        timestamp, arrival_time_ms, arrival_time_ms, packet_size
    )
    assert computed is False
    assert inter_arrival.timestamp_delta == _DUMMY_TIMESTAMP
    assert inter_arrival.arrival_time_delta_ms == _DUMMY_ARRIVAL_MS
    assert inter_arrival.packet_size_delta_bytes == _DUMMY_SIZE


def _internal_expect_true(
    inter_arrival: InterArrival,
    timestamp: int,
    arrival_time_ms: int,
    packet_size: int,
    expected_timestamp_delta: int,
    expected_arrival_time_delta_ms: int,
    expected_packet_size_delta: int,
    timestamp_near: int,
) -> None:
    _preset_outputs(inter_arrival)
    computed = inter_arrival.compute_deltas(
        timestamp, arrival_time_ms, arrival_time_ms, packet_size
    )
    assert computed is True
    assert abs(expected_timestamp_delta - inter_arrival.timestamp_delta) <= timestamp_near
    assert inter_arrival.arrival_time_delta_ms == expected_arrival_time_delta_ms
    assert inter_arrival.packet_size_delta_bytes == expected_packet_size_delta


@pytest.fixture
def fx() -> _Fixture:
    return _Fixture()


def test_first_packet(fx: _Fixture) -> None:
    fx.expect_false(0, 17, 1)


def test_first_group(fx: _Fixture) -> None:
    # G1
    arrival_time = 17
    g1_arrival_time = arrival_time
    fx.expect_false(0, arrival_time, 1)
    # G2
    arrival_time += BURST_THRESHOLD_MS + 1
    g2_arrival_time = arrival_time
    fx.expect_false(TRIGGER_NEW_GROUP_US, arrival_time, 2)
    # G3: only the first packet of the third group reveals the deltas between the first two.
    arrival_time += BURST_THRESHOLD_MS + 1
    fx.expect_true(
        2 * TRIGGER_NEW_GROUP_US,
        arrival_time,
        1,
        TRIGGER_NEW_GROUP_US,  # Delta G2-G1
        g2_arrival_time - g1_arrival_time,
        1,
        0,
    )


def test_second_group(fx: _Fixture) -> None:
    # G1
    arrival_time = 17
    g1_arrival_time = arrival_time
    fx.expect_false(0, arrival_time, 1)
    # G2
    arrival_time += BURST_THRESHOLD_MS + 1
    g2_arrival_time = arrival_time
    fx.expect_false(TRIGGER_NEW_GROUP_US, arrival_time, 2)
    # G3
    arrival_time += BURST_THRESHOLD_MS + 1
    g3_arrival_time = arrival_time
    fx.expect_true(
        2 * TRIGGER_NEW_GROUP_US,
        arrival_time,
        1,
        TRIGGER_NEW_GROUP_US,  # Delta G2-G1
        g2_arrival_time - g1_arrival_time,
        1,
        0,
    )
    # G4: the first packet of the 4th group yields the deltas between groups 2 and 3.
    arrival_time += BURST_THRESHOLD_MS + 1
    fx.expect_true(
        3 * TRIGGER_NEW_GROUP_US,
        arrival_time,
        2,
        TRIGGER_NEW_GROUP_US,  # Delta G3-G2
        g3_arrival_time - g2_arrival_time,
        -1,
        0,
    )


def test_accumulated_group(fx: _Fixture) -> None:
    # G1
    arrival_time = 17
    g1_arrival_time = arrival_time
    fx.expect_false(0, arrival_time, 1)
    # G2
    arrival_time += BURST_THRESHOLD_MS + 1
    fx.expect_false(TRIGGER_NEW_GROUP_US, 28, 2)
    timestamp = TRIGGER_NEW_GROUP_US
    for _ in range(10):
        # A bunch of packets arriving within the same group.
        arrival_time += BURST_THRESHOLD_MS + 1
        timestamp += MIN_STEP_US
        fx.expect_false(timestamp, arrival_time, 1)
    g2_arrival_time = arrival_time
    g2_timestamp = timestamp
    assert (g2_timestamp, g2_arrival_time - g1_arrival_time) == (5220, 66)
    # G3
    arrival_time = 500
    fx.expect_true(
        2 * TRIGGER_NEW_GROUP_US,
        arrival_time,
        100,
        g2_timestamp,
        g2_arrival_time - g1_arrival_time,
        (2 + 10) - 1,  # Delta G2-G1
        0,
    )


def test_out_of_order_packet(fx: _Fixture) -> None:
    # G1
    arrival_time = 17
    timestamp = 0
    fx.expect_false(timestamp, arrival_time, 1)
    g1_timestamp = timestamp
    g1_arrival_time = arrival_time
    # G2
    arrival_time += 11
    timestamp += TRIGGER_NEW_GROUP_US
    fx.expect_false(timestamp, 28, 2)
    for _ in range(10):
        arrival_time += BURST_THRESHOLD_MS + 1
        timestamp += MIN_STEP_US
        fx.expect_false(timestamp, arrival_time, 1)
    g2_timestamp = timestamp
    g2_arrival_time = arrival_time
    # This packet is out of order and should be dropped.
    arrival_time = 281
    fx.expect_false(g1_timestamp, arrival_time, 100)
    # G3
    arrival_time = 500
    timestamp = 2 * TRIGGER_NEW_GROUP_US
    fx.expect_true(
        timestamp,
        arrival_time,
        100,
        g2_timestamp - g1_timestamp,  # Delta G2-G1
        g2_arrival_time - g1_arrival_time,
        (2 + 10) - 1,
        0,
    )


def test_out_of_order_within_group(fx: _Fixture) -> None:
    # G1
    arrival_time = 17
    timestamp = 0
    fx.expect_false(timestamp, arrival_time, 1)
    g1_timestamp = timestamp
    g1_arrival_time = arrival_time
    # G2
    timestamp += TRIGGER_NEW_GROUP_US
    arrival_time += 11
    fx.expect_false(TRIGGER_NEW_GROUP_US, 28, 2)
    timestamp += 10 * MIN_STEP_US
    g2_timestamp = timestamp
    for _ in range(10):
        # Decreasing timestamps, still accumulated: higher than the group's first timestamp.
        arrival_time += BURST_THRESHOLD_MS + 1
        fx.expect_false(timestamp, arrival_time, 1)
        timestamp -= MIN_STEP_US
    g2_arrival_time = arrival_time
    # However, this packet is deemed out of order and should be dropped.
    arrival_time = 281
    timestamp = g1_timestamp
    fx.expect_false(timestamp, arrival_time, 100)
    # G3
    timestamp = 2 * TRIGGER_NEW_GROUP_US
    arrival_time = 500
    fx.expect_true(
        timestamp,
        arrival_time,
        100,
        g2_timestamp - g1_timestamp,
        g2_arrival_time - g1_arrival_time,
        (2 + 10) - 1,
        0,
    )


def test_two_bursts(fx: _Fixture) -> None:
    # G1
    g1_arrival_time = 17
    fx.expect_false(0, g1_arrival_time, 1)
    # G2
    timestamp = TRIGGER_NEW_GROUP_US
    arrival_time = 100  # Simulate no packets arriving for 100 ms.
    for _ in range(10):
        # A bunch of packets arriving in one burst (within 5 ms apart).
        timestamp += 30_000
        arrival_time += BURST_THRESHOLD_MS
        fx.expect_false(timestamp, arrival_time, 1)
    g2_arrival_time = arrival_time
    g2_timestamp = timestamp
    assert (g2_timestamp, g2_arrival_time) == (5020 + 300_000, 150)
    # G3
    timestamp += 30_000
    arrival_time += BURST_THRESHOLD_MS + 1
    fx.expect_true(
        timestamp,
        arrival_time,
        100,
        g2_timestamp,
        g2_arrival_time - g1_arrival_time,
        10 - 1,  # Delta G2-G1
        0,
    )


def test_no_bursts(fx: _Fixture) -> None:
    # G1
    fx.expect_false(0, 17, 1)
    # G2
    timestamp = TRIGGER_NEW_GROUP_US
    arrival_time = 28
    fx.expect_false(timestamp, arrival_time, 2)
    # G3
    fx.expect_true(
        TRIGGER_NEW_GROUP_US + 30_000,
        arrival_time + BURST_THRESHOLD_MS + 1,
        100,
        timestamp - 0,
        arrival_time - 17,
        2 - 1,  # Delta G2-G1
        0,
    )


def test_wrap_tests_start_just_before_the_wrap() -> None:
    # Upstream's comment says 0xfffffffe for both; for abs-send-time it is the last 24-bit
    # value, 0xffffff, shifted up.
    assert make_rtp_timestamp(START_RTP_TIMESTAMP_WRAP_US) == 0xFFFFFFFE
    assert make_abs_send_time(START_ABS_SEND_TIME_WRAP_US) == 0xFFFFFF00


def test_rtp_timestamp_wrap(fx: _Fixture) -> None:
    fx.wrap_test_helper(START_RTP_TIMESTAMP_WRAP_US, 1, False)


def test_abs_send_time_wrap(fx: _Fixture) -> None:
    fx.wrap_test_helper(START_ABS_SEND_TIME_WRAP_US, 1, False)


def test_rtp_timestamp_wrap_out_of_order_within_group(fx: _Fixture) -> None:
    fx.wrap_test_helper(START_RTP_TIMESTAMP_WRAP_US, 1, True)


def test_abs_send_time_wrap_out_of_order_within_group(fx: _Fixture) -> None:
    fx.wrap_test_helper(START_ABS_SEND_TIME_WRAP_US, 1, True)


def _step(inter_arrival: InterArrival, times: list[int], packet_size: int) -> bool:
    send_time_ms, arrival_time_ms, system_time_ms = times
    return inter_arrival.compute_deltas(send_time_ms, arrival_time_ms, system_time_ms, packet_size)


def _assert_deltas(inter_arrival: InterArrival, time_delta_ms: int) -> None:
    assert inter_arrival.timestamp_delta == time_delta_ms
    assert inter_arrival.arrival_time_delta_ms == time_delta_ms
    assert inter_arrival.packet_size_delta_bytes == 0


def test_positive_arrival_time_jump(fx: _Fixture) -> None:
    ia = fx.inter_arrival
    packet_size = 1000
    time_delta_ms = 30
    t = [10_000, 20_000, 30_000]  # send, arrival, system (ms)
    assert not _step(ia, t, packet_size)

    t = [t[0] + time_delta_ms, t[1] + time_delta_ms, t[2] + time_delta_ms]
    assert not _step(ia, t, packet_size)

    t = [
        t[0] + time_delta_ms,
        t[1] + time_delta_ms + ARRIVAL_TIME_OFFSET_THRESHOLD_MS,
        t[2] + time_delta_ms,
    ]
    assert _step(ia, t, packet_size)
    _assert_deltas(ia, time_delta_ms)

    # The previous arrival time jump should now be detected and cause a reset.
    t = [t[0] + time_delta_ms, t[1] + time_delta_ms, t[2] + time_delta_ms]
    assert not _step(ia, t, packet_size)

    # The two next packets will not give a valid delta since we're in the initial state.
    for _ in range(2):
        t = [t[0] + time_delta_ms, t[1] + time_delta_ms, t[2] + time_delta_ms]
        assert not _step(ia, t, packet_size)

    t = [t[0] + time_delta_ms, t[1] + time_delta_ms, t[2] + time_delta_ms]
    assert _step(ia, t, packet_size)
    _assert_deltas(ia, time_delta_ms)


def test_negative_arrival_time_jump(fx: _Fixture) -> None:
    ia = fx.inter_arrival
    packet_size = 1000
    time_delta_ms = 30
    t = [10_000, 20_000, 30_000]
    assert not _step(ia, t, packet_size)

    t = [t[0] + time_delta_ms, t[1] + time_delta_ms, t[2] + time_delta_ms]
    assert not _step(ia, t, packet_size)

    t = [t[0] + time_delta_ms, t[1] + time_delta_ms, t[2] + time_delta_ms]
    assert _step(ia, t, packet_size)
    _assert_deltas(ia, time_delta_ms)

    # Three out of order will fail, after that we will be reset and two more will fail before
    # we get our first valid delta after the reset.
    t[1] -= 1000
    for _ in range(REORDERED_RESET_THRESHOLD + 3):
        t = [t[0] + time_delta_ms, t[1] + time_delta_ms, t[2] + time_delta_ms]
        assert not _step(ia, t, packet_size)

    t = [t[0] + time_delta_ms, t[1] + time_delta_ms, t[2] + time_delta_ms]
    assert _step(ia, t, packet_size)
    _assert_deltas(ia, time_delta_ms)


# -- beyond the upstream file -----------------------------------------------------------------


def test_is_newer_timestamp_breaks_the_half_range_tie() -> None:
    assert is_newer_timestamp(1, 0xFFFFFFFF)
    assert not is_newer_timestamp(0xFFFFFFFF, 1)
    assert not is_newer_timestamp(5, 5)
    assert is_newer_timestamp(0x80000000, 0)
    assert not is_newer_timestamp(0, 0x80000000)
