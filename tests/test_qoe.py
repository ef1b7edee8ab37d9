"""The judging rules: W3C freeze rule, stall rate, MMSys'21 score."""

import numpy as np
import pytest

from loki.qoe import compute_qoe, find_freezes, session_freezes


def frames(start_ms: float, n: int, step_ms: float = 1000 / 30) -> list[float]:
    return [start_ms + i * step_ms for i in range(n)]


def test_gap_above_threshold_is_a_freeze():
    # 30 fps: mean 33.3 ms, threshold max(100, 183.3) = 183.3 ms.
    r = frames(0, 31)
    r.append(r[-1] + 190)
    assert find_freezes(r) == [(r[-2], pytest.approx(190))]


def test_gap_below_threshold_is_not_a_freeze():
    r = frames(0, 31)
    r.append(r[-1] + 180)
    assert find_freezes(r) == []


def test_threshold_is_three_frames_at_low_frame_rate():
    # 5 fps: mean 200 ms, threshold max(600, 350) = 600 ms.
    r = frames(0, 20, 200)
    assert find_freezes([*r, r[-1] + 590]) == []
    assert len(find_freezes([*r, r[-1] + 610])) == 1


def test_trailing_gap_and_slow_startup_count_as_stall():
    r = frames(1500, 60)  # starts 1.5 s late, stops at 1500 + 59 * 33.3 = 3466 ms
    fr = session_freezes(r, 0.0, 5000.0)
    assert fr[0] == (1000.0, 500.0)  # start-up beyond the 1 s grace
    assert fr[-1][1] == pytest.approx(5000.0 - r[-1])
    assert len(fr) == 2


def test_startup_within_grace_is_not_a_stall():
    assert session_freezes(frames(800, 60), 0.0, 800 + 60 * 1000 / 30) == []


def test_nothing_rendered_is_one_full_stall():
    assert session_freezes([], 0.0, 1000.0) == [(0.0, 1000.0)]


def test_compute_qoe_figures():
    r = frames(0, 300)  # 10 s at 30 fps, smooth
    q = compute_qoe(
        duration_ms=300 * 1000 / 30,
        capacity_bytes=2_000_000,
        link_bytes=1_000_000,
        frames_sent=300,
        render_ms=r,
        frame_delay_ms=np.linspace(40, 140, 300),
        frame_bytes_rendered=900_000,
        packets_sent=1000,
        packets_lost=10,
        packet_delay_ms=np.full(990, 50.0),
    )
    assert q.stall_rate == 0.0
    assert q.freezes == 0
    assert q.bitrate_kbps == pytest.approx(720.0)
    assert q.utilization == pytest.approx(0.5)
    assert q.loss_rate == pytest.approx(0.01)
    assert q.frame_delay_p50_ms == pytest.approx(90.0, abs=0.2)
    # delay score 1 (p95 == min), rate score 0.5, loss 1 %.
    assert q.score_mmsys21 == pytest.approx(100 * (0.2 * 1.0 + 0.2 * 0.5 + 0.3 * 0.99))


def test_stall_rate_of_one_freeze():
    r = frames(0, 150)
    r2 = [x + r[-1] + 1000 for x in frames(0, 150)]
    q = compute_qoe(
        duration_ms=r2[-1] + 1000 / 30,
        capacity_bytes=1,
        link_bytes=1,
        frames_sent=300,
        render_ms=r + r2,
        frame_delay_ms=[50.0],
        frame_bytes_rendered=1,
        packets_sent=1,
        packets_lost=0,
        packet_delay_ms=[50.0],
    )
    assert q.freezes == 1
    assert q.stall_rate == pytest.approx(1000 / (r2[-1] + 1000 / 30))


def _freezes_by_definition(render_ms: list[float]) -> list[tuple[float, float]]:
    """The freeze rule written out plainly: the mean of up to 30 preceding gaps."""
    out = []
    gaps: list[float] = []
    for i in range(1, len(render_ms)):
        gap = render_ms[i] - render_ms[i - 1]
        if gaps:
            window = gaps[-30:]
            mean = sum(window) / len(window)
            if gap > max(3.0 * mean, mean + 150.0):
                out.append((render_ms[i - 1], gap))
        gaps.append(gap)
    return out


def test_freezes_follow_the_rule_over_long_irregular_series():
    rng = np.random.default_rng(3)
    for _ in range(50):
        steps_ms = rng.choice([33.3, 33.4, 0.0, 100.0, 160.0, 700.0, 2500.0], size=400)
        r = np.cumsum(steps_ms).tolist()
        got = find_freezes(r)
        want = _freezes_by_definition(r)
        assert [t for t, _ in got] == [t for t, _ in want]
        assert [g for _, g in got] == pytest.approx([g for _, g in want])
