"""Tests of InterArrivalDelta, the send-side grouping used by DelayBasedBwe.

libwebrtc has no unit test of its own for ``inter_arrival_delta.cc``. These replay the
scenarios of ``inter_arrival_unittest.cc`` (see test_inter_arrival.py) on the microsecond
``Timestamp`` variant; without tick rounding every delta is exact.
"""

from __future__ import annotations

from gcc.inter_arrival_delta import (
    ARRIVAL_TIME_OFFSET_THRESHOLD_US,
    REORDERED_RESET_THRESHOLD,
    InterArrivalDelta,
)

GROUP_LENGTH_US = 5_000
MIN_STEP_US = 20
TRIGGER_NEW_GROUP_US = GROUP_LENGTH_US + MIN_STEP_US
BURST_THRESHOLD_MS = 5
MS = 1_000

_DUMMY = (101, 303, 909)


def _new() -> InterArrivalDelta:
    return InterArrivalDelta(GROUP_LENGTH_US)


def _outputs(ia: InterArrivalDelta) -> tuple[int, int, int]:
    return (ia.send_time_delta_us, ia.arrival_time_delta_us, ia.packet_size_delta_bytes)


def expect_false(ia: InterArrivalDelta, send_us: int, arrival_ms: int, size: int) -> None:
    ia.send_time_delta_us, ia.arrival_time_delta_us, ia.packet_size_delta_bytes = _DUMMY
    assert ia.compute_deltas(send_us, arrival_ms * MS, arrival_ms * MS, size) is False
    assert _outputs(ia) == _DUMMY


def expect_true(
    ia: InterArrivalDelta,
    send_us: int,
    arrival_ms: int,
    size: int,
    expected: tuple[int, int, int],
) -> None:
    """``expected`` is (send delta us, arrival delta us, size delta bytes)."""
    assert ia.compute_deltas(send_us, arrival_ms * MS, arrival_ms * MS, size) is True
    assert _outputs(ia) == expected


def test_first_packet() -> None:
    expect_false(_new(), 0, 17, 1)


def test_first_group() -> None:
    ia = _new()
    expect_false(ia, 0, 17, 1)
    expect_false(ia, TRIGGER_NEW_GROUP_US, 23, 2)
    # Only the first packet of the third group reveals the deltas between the first two.
    expect_true(ia, 2 * TRIGGER_NEW_GROUP_US, 29, 1, (5_020, 6_000, 1))


def test_second_group() -> None:
    ia = _new()
    expect_false(ia, 0, 17, 1)
    expect_false(ia, TRIGGER_NEW_GROUP_US, 23, 2)
    expect_true(ia, 2 * TRIGGER_NEW_GROUP_US, 29, 1, (5_020, 6_000, 1))
    expect_true(ia, 3 * TRIGGER_NEW_GROUP_US, 35, 2, (5_020, 6_000, -1))


def test_accumulated_group() -> None:
    ia = _new()
    expect_false(ia, 0, 17, 1)
    expect_false(ia, TRIGGER_NEW_GROUP_US, 28, 2)
    send_us = TRIGGER_NEW_GROUP_US
    arrival_ms = 23
    for _ in range(10):
        arrival_ms += BURST_THRESHOLD_MS + 1
        send_us += MIN_STEP_US
        expect_false(ia, send_us, arrival_ms, 1)
    assert arrival_ms == 83
    # Deltas use each group's largest send time and last arrival.
    expect_true(ia, 2 * TRIGGER_NEW_GROUP_US, 500, 100, (5_220, 66_000, 11))


def test_out_of_order_packet_is_dropped() -> None:
    ia = _new()
    expect_false(ia, 0, 17, 1)
    expect_false(ia, TRIGGER_NEW_GROUP_US, 28, 2)
    send_us = TRIGGER_NEW_GROUP_US
    arrival_ms = 28
    for _ in range(10):
        arrival_ms += BURST_THRESHOLD_MS + 1
        send_us += MIN_STEP_US
        expect_false(ia, send_us, arrival_ms, 1)
    # Sent before the current group began: dropped, and not counted in the group.
    expect_false(ia, 0, 281, 100)
    expect_true(ia, 2 * TRIGGER_NEW_GROUP_US, 500, 100, (5_220, (88 - 17) * MS, 11))


def test_out_of_order_within_group() -> None:
    ia = _new()
    expect_false(ia, 0, 17, 1)
    expect_false(ia, TRIGGER_NEW_GROUP_US, 28, 2)
    send_us = TRIGGER_NEW_GROUP_US + 10 * MIN_STEP_US
    arrival_ms = 28
    for _ in range(10):
        # Decreasing send times, still in the group: none is older than its first packet.
        arrival_ms += BURST_THRESHOLD_MS + 1
        expect_false(ia, send_us, arrival_ms, 1)
        send_us -= MIN_STEP_US
    expect_false(ia, 0, 281, 100)
    expect_true(ia, 2 * TRIGGER_NEW_GROUP_US, 500, 100, (5_220, (88 - 17) * MS, 11))


def test_two_bursts() -> None:
    ia = _new()
    expect_false(ia, 0, 17, 1)
    send_us = TRIGGER_NEW_GROUP_US
    arrival_ms = 100  # no packets for 100 ms
    for _ in range(10):
        # Sent 30 ms apart but arriving 5 ms apart: one queued burst, one group.
        send_us += 30_000
        arrival_ms += BURST_THRESHOLD_MS
        expect_false(ia, send_us, arrival_ms, 1)
    send_us += 30_000
    arrival_ms += BURST_THRESHOLD_MS + 1
    expect_true(ia, send_us, arrival_ms, 100, (5_020 + 300_000, 133_000, 9))


def test_no_bursts() -> None:
    ia = _new()
    expect_false(ia, 0, 17, 1)
    expect_false(ia, TRIGGER_NEW_GROUP_US, 28, 2)
    expect_true(ia, TRIGGER_NEW_GROUP_US + 30_000, 34, 100, (5_020, 11_000, 1))


def test_group_length_is_strictly_greater() -> None:
    ia = _new()
    expect_false(ia, 0, 17, 1)
    expect_false(ia, GROUP_LENGTH_US, 30, 2)  # exactly 5 ms after the first: same group
    expect_false(ia, GROUP_LENGTH_US + 1, 40, 1)  # more than 5 ms: a new group
    # G1 = {0, 5000} (last arrival 30 ms), G2 = {5001} (40 ms).
    expect_true(ia, 2 * GROUP_LENGTH_US + 2, 50, 1, (1, 10_000, 1 - 3))


def test_burst_ends_after_100_ms() -> None:
    ia = _new()
    expect_false(ia, 0, 17, 1)
    send_us = 10_000
    arrival_ms = 100
    expect_false(ia, send_us, arrival_ms, 1)  # starts G2
    # 20 ms send spacing, 5 ms arrival spacing: one queued burst, but only for 100 ms.
    for _ in range(19):
        send_us += 20_000
        arrival_ms += 5
        expect_false(ia, send_us, arrival_ms, 1)
    assert (send_us, arrival_ms) == (390_000, 195)
    # 100 ms after G2's first arrival: G3 starts, completing G2.
    expect_true(ia, 410_000, 200, 1, (390_000, (195 - 17) * MS, 20 - 1))
    expect_false(ia, 430_000, 205, 1)  # joins G3's burst
    expect_true(ia, 450_000, 255, 1, (430_000 - 390_000, 10_000, 2 - 20))


def _step(ia: InterArrivalDelta, t: list[int], size: int) -> bool:
    return ia.compute_deltas(t[0] * MS, t[1] * MS, t[2] * MS, size)


def _advance(t: list[int], delta_ms: int) -> list[int]:
    return [t[0] + delta_ms, t[1] + delta_ms, t[2] + delta_ms]


def test_positive_arrival_time_jump() -> None:
    ia = InterArrivalDelta(GROUP_LENGTH_US)
    delta_ms = 30
    t = [10_000, 20_000, 30_000]  # send, arrival, system (ms)
    assert not _step(ia, t, 1000)
    t = _advance(t, delta_ms)
    assert not _step(ia, t, 1000)
    t = _advance(t, delta_ms)
    t[1] += ARRIVAL_TIME_OFFSET_THRESHOLD_US // MS
    assert _step(ia, t, 1000)
    assert _outputs(ia) == (30_000, 30_000, 0)
    # The jump is now between the two completed groups: reset.
    t = _advance(t, delta_ms)
    assert not _step(ia, t, 1000)
    for _ in range(2):
        t = _advance(t, delta_ms)
        assert not _step(ia, t, 1000)
    t = _advance(t, delta_ms)
    assert _step(ia, t, 1000)
    assert _outputs(ia) == (30_000, 30_000, 0)


def test_negative_arrival_time_jump() -> None:
    ia = InterArrivalDelta(GROUP_LENGTH_US)
    delta_ms = 30
    t = [10_000, 20_000, 30_000]
    assert not _step(ia, t, 1000)
    t = _advance(t, delta_ms)
    assert not _step(ia, t, 1000)
    t = _advance(t, delta_ms)
    assert _step(ia, t, 1000)
    assert _outputs(ia) == (30_000, 30_000, 0)
    # Three negative arrival deltas, then a reset, then two more before a valid delta.
    t[1] -= 1000
    for _ in range(REORDERED_RESET_THRESHOLD + 3):
        t = _advance(t, delta_ms)
        assert not _step(ia, t, 1000)
    t = _advance(t, delta_ms)
    assert _step(ia, t, 1000)
    assert _outputs(ia) == (30_000, 30_000, 0)


def test_reset_forgets_groups() -> None:
    ia = _new()
    expect_false(ia, 0, 17, 1)
    expect_false(ia, TRIGGER_NEW_GROUP_US, 23, 2)
    ia.reset()
    expect_false(ia, 2 * TRIGGER_NEW_GROUP_US, 29, 1)
    expect_false(ia, 3 * TRIGGER_NEW_GROUP_US, 35, 1)
    expect_true(ia, 4 * TRIGGER_NEW_GROUP_US, 41, 1, (5_020, 6_000, 0))
