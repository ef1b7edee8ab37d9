"""The fault floor: what counts as a fault, the floor during and after it, when it lapses, and
what it changes for a learned controller in the emulator (``rl`` through an RTT jump)."""

import pytest

from bench.faults import FaultSession, scenario, time_to_recover_s
from loki.controllers import controller_names
from loki.learned.fault_floor import (
    COLLAPSE_SHARE,
    FEEDBACK_GAP_US,
    HOLD_US,
    MAX_FLOOR_US,
    QUIET_US,
    FaultFloor,
)
from loki.learned.models import controller_from_model, model_path

MBPS = 1_000_000


def test_no_fault_no_floor():
    f = FaultFloor()
    for k in range(1, 50):
        f.on_report(k * 100_000)
        f.on_tick(k * 100_000 + 50_000, 2 * MBPS)
        f.on_loss_report(10, 100, k * 100_000, 2 * MBPS)  # 10 %: not above GCC's threshold
        assert f.floor_bps(MBPS, 3 * MBPS, k * 100_000) == MBPS
    assert f.faults == 0 and f.floored == 0 and sum(f.causes.values()) == 0


def test_feedback_gap_is_a_fault_after_a_second():
    f = FaultFloor()
    f.on_report(1_000_000)
    f.on_tick(1_000_000 + FEEDBACK_GAP_US - 1, 2 * MBPS)
    assert f.faults == 0
    f.on_tick(1_000_000 + FEEDBACK_GAP_US, 2 * MBPS)
    assert f.faults == 1 and f.causes["gap"] == 1


def test_high_loss_is_a_fault():
    f = FaultFloor()
    f.on_loss_report(11, 100, 5_000_000, 2 * MBPS)
    assert f.faults == 1 and f.causes["loss"] == 1
    f.on_loss_report(0, 0, 6_000_000, 2 * MBPS)  # an empty report says nothing
    assert f.causes["loss"] == 1


def test_floor_during_and_after_a_fault():
    f = FaultFloor()
    t0 = 10_000_000
    f.on_loss_report(30, 100, t0, 2 * MBPS)  # onset: the controller was at 2 Mbps
    gcc = 3 * MBPS
    # Under way: only a quarter of the reference, which is capped at the onset target (2 Mbps).
    # (100 kbps is also a collapse against GCC's 3 Mbps: the fault goes on from there.)
    assert f.floor_bps(100_000, gcc, t0 + 100_000) == round(COLLAPSE_SHARE * 2 * MBPS)
    assert f.floor_bps(900_000, gcc, t0 + 100_000) == 900_000
    assert f.under_way(t0 + 100_000 + QUIET_US - 1)
    # Over: the reference itself, GCC's target when it is below the onset target.
    at = t0 + 100_000 + QUIET_US
    assert not f.under_way(at)
    assert f.floor_bps(900_000, 1_500_000, at) == 1_500_000
    assert f.floor_bps(900_000, gcc, at) == 2 * MBPS
    assert f.floor_bps(2_500_000, gcc, at) == 2_500_000
    assert f.floored == 3


def test_floor_lapses_when_recovered_and_held_long_enough():
    f = FaultFloor()
    t0 = 10_000_000
    f.on_loss_report(30, 100, t0, 2 * MBPS)
    # Recovered (>= 90 % of 2 Mbps) but within the hold: still a floor.
    assert f.active(1_900_000, t0 + HOLD_US - 1)
    # Past the hold and recovered: over.
    assert not f.active(1_900_000, t0 + HOLD_US)
    assert f.floor_bps(500_000, 3 * MBPS // 2, t0 + HOLD_US + 1) == 500_000


def test_floor_holds_until_recovered_but_not_forever():
    f = FaultFloor()
    t0 = 10_000_000
    f.on_loss_report(30, 100, t0, 2 * MBPS)
    assert f.active(MBPS, t0 + HOLD_US)
    assert f.active(MBPS, t0 + MAX_FLOOR_US - 1)
    assert not f.active(MBPS, t0 + MAX_FLOOR_US)


def test_collapse_below_a_quarter_of_gcc_is_a_fault():
    f = FaultFloor()
    t = 5_000_000
    assert f.floor_bps(600_000, 2 * MBPS, t) == 600_000  # 30 %: network's choice
    assert f.faults == 0
    assert f.floor_bps(400_000, 2 * MBPS, t) == 500_000  # 20 %: floored at 25 %
    assert f.causes["collapse"] == 1 and f.floored == 1


@pytest.mark.skipif(
    "rl" not in controller_names() or not model_path("rl").is_file(), reason="no rl model"
)
def test_rl_through_an_rtt_jump_with_and_without_the_floor():
    """Measured (session 4): alone, rl reads the 960 ms delay step as congestion and sits near
    30 kbps for 10 s; with the floor it stays at a quarter of GCC's target and recovers within
    a few seconds of the fault's end (GCC: never below 80 % of capacity)."""
    fault = scenario("rtt-40ms-to-1s")
    end_us = round(fault.session_s * 1e6)
    lows = {}
    for floor in (False, True):
        ctl = controller_from_model(model_path("rl"), fault_floor=floor)
        s = FaultSession(ctl, fault)
        s.run()
        during = [v for t, v in s.targets if fault.start_s * 1e6 + 2e6 < t < fault.end_s * 1e6]
        lows[floor] = (min(during), time_to_recover_s(s.targets, fault, end_us), ctl)
    assert lows[False][0] < 100_000 and lows[False][2].fallbacks == 0
    assert lows[True][0] >= 400_000
    assert lows[True][1] is not None and lows[True][1] <= 4.0
    assert lows[True][2].fallbacks == lows[True][2].fault_floor.floored > 0
