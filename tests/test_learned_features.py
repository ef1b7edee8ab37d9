"""The observation every learned controller reads: FeatureBuilder against a plain reference."""

import math

import numpy as np
import pytest

from gcc.goog_cc_network_control import GoogCcNetworkController
from loki.api import TransportFeedback
from loki.features import (
    FEATURE_HIGH,
    FEATURE_LOW,
    FEATURE_NAMES,
    HISTORY,
    N_FEATURES,
    FeatureBuilder,
    gcc_sensors,
)


def _reference_row(report, prev_target_bps, interval_us, base_us, rtt_us, sensors):
    """The features written out the slow, obvious way."""
    got = [i for i in range(len(report)) if report.arrival_time_us[i] >= 0]
    sizes = report.size_bytes.astype(float)
    send = report.send_time_us.astype(float)
    recv_bps = sum(sizes[i] for i in got) * 8e6 / interval_us
    span = send[-1] - send[0] if len(report) > 1 else 0.0
    send_bps = sizes.sum() * 8e6 / max(span, interval_us / 2)
    owd = [float(report.arrival_time_us[i] - report.send_time_us[i]) for i in got]
    qd = qd_max = grad = 0.0
    if owd:
        base_us = min(base_us, min(owd))
        qd = (sum(owd) / len(owd) - base_us) / 1e5
        qd_max = (max(owd) - base_us) / 1e5
        if len(owd) >= 3:
            x = [send[i] for i in got]
            mx, my = sum(x) / len(x), sum(owd) / len(owd)
            den = sum((a - mx) ** 2 for a in x)
            if den > 0:
                grad = sum((a - mx) * (b - my) for a, b in zip(x, owd, strict=True)) / den
    lg = lambda bps: math.log2(1 + max(bps, 0) / 1e6)  # noqa: E731
    row = [
        lg(recv_bps),
        lg(send_bps),
        lg(prev_target_bps),
        qd,
        qd_max,
        grad,
        1 - len(got) / len(report),
        rtt_us / 1e5,
        interval_us / 1e5,
        recv_bps / max(prev_target_bps, 1),
        *sensors,
    ]
    return np.clip(np.array(row), FEATURE_LOW, FEATURE_HIGH), base_us


def test_rows_match_the_reference_and_history_shifts():
    rng = np.random.default_rng(0)
    fb = FeatureBuilder()
    t, prev_t, base = 0, None, math.inf
    rows = []
    for _ in range(400):
        n = int(rng.integers(1, 50))
        t += int(rng.integers(60_000, 140_000))
        send = np.sort(rng.integers(t - 100_000, t, n))
        arrival = send + rng.integers(10_000, 900_000, n)
        arrival[rng.random(n) < rng.choice([0.0, 0.1, 1.0])] = -1
        report = TransportFeedback.from_lists(
            t, list(range(n)), send.tolist(), arrival.tolist(), rng.integers(60, 1260, n).tolist()
        )
        rtt = int(rng.integers(1_000, 2_000_000))
        prev = int(rng.integers(30_000, 20_000_000))
        fb.on_rtt(rtt)
        interval = 100_000 if prev_t is None else max(t - prev_t, 1_000)
        prev_t = t
        sensors = (
            float(rng.choice([-1, 0, 1])),
            rng.uniform(-12, 12),
            rng.uniform(0, 8),
            float(rng.choice([-1, 0, 1])),
            rng.uniform(0, 8),
        )
        want, base = _reference_row(report, prev, interval, base, rtt, sensors)
        got = fb.row(report, prev, sensors)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        rows.append(got)
    obs = fb.observation()
    assert obs.shape == (HISTORY * N_FEATURES,)
    np.testing.assert_array_equal(obs, np.concatenate(rows[-HISTORY:]))


def test_observation_is_a_copy_and_starts_at_zero():
    fb = FeatureBuilder()
    obs = fb.observation()
    assert not obs.any()
    obs[:] = 1.0
    assert not fb.observation().any()


def test_nan_passes_the_clip_so_the_guard_can_see_it():
    fb = FeatureBuilder()
    fb.on_rtt(20_000)
    report = TransportFeedback.from_lists(
        100_000, [0, 1], [0, 50_000], [20_000, 70_000], [1000, 1000]
    )
    row = fb.row(report, 300_000)
    assert np.isfinite(row).all()
    fb._rtt_us = float("nan")  # a broken RTT source
    row = fb.row(report, 300_000)
    assert math.isnan(row[7]) and np.isnan(fb.observation()).any()


@pytest.mark.parametrize("prev", [1, 30_000, 20_000_000])
def test_rows_are_clipped_to_the_feature_bounds(prev):
    fb = FeatureBuilder()
    fb.on_rtt(10_000_000)  # 100 s: beyond the RTT bound
    report = TransportFeedback.from_lists(100_000, [0, 1, 2], [0, 10, 20], [5, 6, 7], [1200] * 3)
    row = fb.row(report, prev)
    assert np.all(row >= FEATURE_LOW) and np.all(row <= FEATURE_HIGH)
    assert row[7] == FEATURE_HIGH[7]


def test_gcc_sensors_follow_the_detector_and_the_acked_rate():
    """The sensor columns read GCC's detector, acked rate and AIMD state: overuse shows as +1
    on a queue that builds, the acked rate approaches what was received, and the overuse
    gives AIMD a link capacity estimate."""
    gcc = GoogCcNetworkController()
    assert gcc_sensors(gcc) == (0.0, 0.0, 0.0, 0.0, 0.0)
    t_us, seq, saw_overuse = 0, 0, False
    states: set[float] = set()
    for k in range(60):
        t_us += 100_000
        n = 25  # 25 x 1200 B per 100 ms: 2.4 Mbps offered
        send = [t_us - 100_000 + i * 4_000 for i in range(n)]
        # The first 3 s the queue is steady; then it grows by 2 ms per packet (overuse).
        extra = [0 if k < 30 else (k - 30) * n * 2_000 + i * 2_000 for i in range(n)]
        arrival = [s + 20_000 + e for s, e in zip(send, extra, strict=True)]
        report = TransportFeedback.from_lists(
            t_us + 20_000, list(range(seq, seq + n)), send, arrival, [1200] * n
        )
        seq += n
        gcc.on_feedback(report)
        usage, trend, acked, state, link = gcc_sensors(gcc)
        saw_overuse |= usage == 1.0 and trend > 1.0
        states.add(state)
        if k == 29:
            assert usage == 0.0 and abs(trend) < 1.0
            assert 1.0 < acked < 2.0  # log2(1 + ~2.4 Mbps) = 1.77
            # A steady queue: AIMD increases, and no overuse has set a capacity yet.
            assert state == 1.0 and link == 0.0
    assert saw_overuse
    # The overuse made AIMD hold after its decrease, and set the capacity near the
    # throughput it measured then (2.4 Mbps offered, less once the queue grows).
    assert 0.0 in states
    assert 0.5 < link < 2.0
    assert FEATURE_NAMES[-5:] == (
        "delay_usage",
        "delay_trend",
        "acked_rate",
        "rate_state",
        "link_capacity",
    )
