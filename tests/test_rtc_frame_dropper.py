"""The live encoder's debt rule: the balance the emulator's encoder model drops frames on."""

from __future__ import annotations

import pytest

from loki.emu.encoder import MAX_DEBT_S
from rtc.frame_dropper import DebtFrameDropper

TARGET_BPS = 300_000
FRAME_S = 1 / 30


def test_drops_only_while_deeper_in_debt_than_the_limit_and_refills_at_the_target() -> None:
    d = DebtFrameDropper(TARGET_BPS, buffer_s=1.0, initial_s=0.75)
    assert d.balance_bits == pytest.approx(0.75 * TARGET_BPS)
    assert not d.should_drop(keyframe_requested=False)
    # A huge frame: 0.75 s of budget in hand, 1.5 s spent, one frame's refill.
    d.on_frame(int(1.5 * TARGET_BPS / 8), FRAME_S)
    expected = (0.75 - 1.5 + FRAME_S) * TARGET_BPS
    assert d.balance_bits == pytest.approx(expected)
    assert expected < -MAX_DEBT_S * TARGET_BPS
    assert d.should_drop(keyframe_requested=False)
    assert not d.should_drop(keyframe_requested=True)  # a requested keyframe is never skipped
    drops = 0
    while d.should_drop(keyframe_requested=False):
        d.on_frame(0, FRAME_S)
        drops += 1
    # Each skipped frame gives back one frame's budget until the debt is under the limit.
    assert drops == int((-expected - MAX_DEBT_S * TARGET_BPS) / (TARGET_BPS * FRAME_S)) + 1
    assert d.frames_dropped == drops


def test_the_balance_is_capped_at_the_buffer_size_also_after_a_target_cut() -> None:
    d = DebtFrameDropper(TARGET_BPS, buffer_s=1.0, initial_s=0.75)
    for _ in range(100):
        d.on_frame(100, FRAME_S)  # tiny frames: the balance fills up to the cap
    assert d.balance_bits == pytest.approx(1.0 * TARGET_BPS)
    d.set_target(TARGET_BPS / 3)
    assert d.balance_bits == pytest.approx(TARGET_BPS / 3)
    assert d.frames_dropped == 0
