"""Port of libwebrtc's ``robust_throughput_estimator_unittest.cc`` (same inputs and checks).

``FeedbackGenerator`` mirrors the C++ one: send clock from 100 s, receive clock from 10 s, each
packet advancing both by ``size / rate`` (``DataSize / DataRate``, truncated to microseconds).
The C++ ``DefaultEnabled`` / ``CandDisable`` tests check the field-trial switch; their analogue
here is the factory flag.
"""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gcc.acknowledged_bitrate_estimator import AcknowledgedBitrateEstimator
from gcc.acknowledged_bitrate_estimator_interface import create_acknowledged_bitrate_estimator
from gcc.robust_throughput_estimator import (
    RobustThroughputEstimator,
    RobustThroughputEstimatorSettings,
)
from gcc.units import transfer_time_us

PACKET_BYTES = 1000


def bytes_per_sec(rate: int) -> int:
    return rate * 8


Feedback = tuple[list[int], list[int], list[int]]


class FeedbackGenerator:
    def __init__(self) -> None:
        self.send_clock_us = 100_000_000
        self.recv_clock_us = 10_000_000

    def create_feedback_vector(
        self, number_of_packets: int, packet_bytes: int, send_bps: int, recv_bps: int
    ) -> Feedback:
        send, recv, size = [], [], []
        for _ in range(number_of_packets):
            send.append(self.send_clock_us)
            self.send_clock_us += transfer_time_us(packet_bytes, send_bps)
            self.recv_clock_us += transfer_time_us(packet_bytes, recv_bps)
            recv.append(self.recv_clock_us)
            size.append(packet_bytes)
        return send, recv, size

    def advance_receive_clock(self, delta_us: int) -> None:
        self.recv_clock_us += delta_us

    def advance_send_clock(self, delta_us: int) -> None:
        self.send_clock_us += delta_us


def feed(estimator: RobustThroughputEstimator, feedback: Feedback) -> int | None:
    estimator.incoming_packet_feedback_vector(*feedback)
    return estimator.bitrate()


def within_5_percent(rate_bps: int | None, expected_bytes_per_sec: float) -> bool:
    assert rate_bps is not None
    return abs(rate_bps / 8 - expected_bytes_per_sec) <= 0.05 * expected_bytes_per_sec


def test_default_enabled() -> None:
    assert isinstance(create_acknowledged_bitrate_estimator(), RobustThroughputEstimator)


def test_can_disable() -> None:
    estimator = create_acknowledged_bitrate_estimator(use_robust_throughput_estimator=False)
    assert isinstance(estimator, AcknowledgedBitrateEstimator)


def test_initial_estimate() -> None:
    gen = FeedbackGenerator()
    est = RobustThroughputEstimator()
    send_rate = recv_rate = bytes_per_sec(100_000)

    # No estimate until the estimator has enough data.
    assert feed(est, gen.create_feedback_vector(9, PACKET_BYTES, send_rate, recv_rate)) is None
    # Estimate once `required_packets` packets have been received.
    assert feed(est, gen.create_feedback_vector(1, PACKET_BYTES, send_rate, recv_rate)) == (
        send_rate
    )
    # Estimate remains stable when send and receive rates are stable.
    assert feed(est, gen.create_feedback_vector(15, PACKET_BYTES, send_rate, recv_rate)) == (
        send_rate
    )


def test_estimate_adapts() -> None:
    gen = FeedbackGenerator()
    est = RobustThroughputEstimator()

    # 1 second, 800 kbps, estimate is stable.
    send_rate = recv_rate = bytes_per_sec(100_000)
    for _ in range(10):
        fb = gen.create_feedback_vector(10, PACKET_BYTES, send_rate, recv_rate)
        assert feed(est, fb) == send_rate

    # 1 second, 1600 kbps, estimate increases.
    send_rate = recv_rate = bytes_per_sec(200_000)
    for _ in range(20):
        rate = feed(est, gen.create_feedback_vector(10, PACKET_BYTES, send_rate, recv_rate))
        assert rate is not None
        assert bytes_per_sec(100_000) <= rate <= send_rate

    # 1 second, 1600 kbps, estimate is stable.
    for _ in range(20):
        fb = gen.create_feedback_vector(10, PACKET_BYTES, send_rate, recv_rate)
        assert feed(est, fb) == send_rate

    # 1 second, 400 kbps, estimate decreases.
    send_rate = recv_rate = bytes_per_sec(50_000)
    for _ in range(5):
        rate = feed(est, gen.create_feedback_vector(10, PACKET_BYTES, send_rate, recv_rate))
        assert rate is not None
        assert send_rate <= rate <= bytes_per_sec(200_000)

    # 1 second, 400 kbps, estimate is stable.
    for _ in range(5):
        fb = gen.create_feedback_vector(10, PACKET_BYTES, send_rate, recv_rate)
        assert feed(est, fb) == send_rate


def test_capped_by_receive_rate() -> None:
    gen = FeedbackGenerator()
    est = RobustThroughputEstimator()
    send_rate, recv_rate = bytes_per_sec(100_000), bytes_per_sec(25_000)
    rate = feed(est, gen.create_feedback_vector(20, PACKET_BYTES, send_rate, recv_rate))
    assert within_5_percent(rate, 25_000)


def test_capped_by_send_rate() -> None:
    gen = FeedbackGenerator()
    est = RobustThroughputEstimator()
    send_rate, recv_rate = bytes_per_sec(50_000), bytes_per_sec(100_000)
    rate = feed(est, gen.create_feedback_vector(20, PACKET_BYTES, send_rate, recv_rate))
    assert within_5_percent(rate, 50_000)


def test_delay_spike() -> None:
    gen = FeedbackGenerator()
    # A 500 ms window amplifies the effect of a delay spike.
    est = RobustThroughputEstimator(
        RobustThroughputEstimatorSettings(min_window_duration_us=500_000)
    )
    send_rate = recv_rate = bytes_per_sec(100_000)
    assert feed(est, gen.create_feedback_vector(20, PACKET_BYTES, send_rate, recv_rate)) == (
        send_rate
    )

    # Delay spike: 25 packets sent, but none received.
    gen.advance_receive_clock(250_000)
    # Deliver them all during the next 50 ms (30 packets including the 5 sent meanwhile).
    recv_rate = bytes_per_sec(600_000)
    for _ in range(30):  # Estimate should not drop.
        rate = feed(est, gen.create_feedback_vector(1, PACKET_BYTES, send_rate, recv_rate))
        assert within_5_percent(rate, 100_000)

    # Delivery at normal rate. Once the packets received before the gap have left the window
    # the receive rate is high, but the estimate stays capped by the send rate.
    recv_rate = bytes_per_sec(100_000)
    for _ in range(20):
        rate = feed(est, gen.create_feedback_vector(5, PACKET_BYTES, send_rate, recv_rate))
        assert within_5_percent(rate, 100_000)


def test_high_loss() -> None:
    gen = FeedbackGenerator()
    est = RobustThroughputEstimator()
    send_rate = recv_rate = bytes_per_sec(100_000)
    send, recv, size = gen.create_feedback_vector(20, PACKET_BYTES, send_rate, recv_rate)
    # 50 % loss: the C++ test marks odd packets lost and sorts them to the end; lost packets
    # are not passed to this estimator at all.
    rate = feed(est, (send[::2], recv[::2], size[::2]))
    assert within_5_percent(rate, 100_000 / 2)


def test_reordered_feedback() -> None:
    gen = FeedbackGenerator()
    est = RobustThroughputEstimator()
    send_rate = recv_rate = bytes_per_sec(100_000)
    assert feed(est, gen.create_feedback_vector(20, PACKET_BYTES, send_rate, recv_rate)) == (
        send_rate
    )

    delayed = gen.create_feedback_vector(10, PACKET_BYTES, send_rate, recv_rate)
    newer = gen.create_feedback_vector(10, PACKET_BYTES, send_rate, recv_rate)
    # Some feedback is missing, so the estimate is expected to drop...
    rate = feed(est, newer)
    assert rate is not None
    assert rate < send_rate
    # ...but to recover completely as soon as the feedback arrives.
    assert feed(est, delayed) == send_rate
    # And then to remain stable, as if the feedback had not been reordered.
    for _ in range(10):
        fb = gen.create_feedback_vector(15, PACKET_BYTES, send_rate, recv_rate)
        assert feed(est, fb) == send_rate


def test_deep_reordering() -> None:
    gen = FeedbackGenerator()
    # A 500 ms window amplifies the effect of reordering.
    est = RobustThroughputEstimator(
        RobustThroughputEstimatorSettings(min_window_duration_us=500_000)
    )
    send_rate = recv_rate = bytes_per_sec(100_000)
    delayed_send, _, delayed_size = gen.create_feedback_vector(
        1, PACKET_BYTES, send_rate, recv_rate
    )
    for _ in range(10):
        fb = gen.create_feedback_vector(10, PACKET_BYTES, send_rate, recv_rate)
        assert feed(est, fb) == send_rate

    # The delayed packet arrives ~1 s late. With a 500 ms window it was sent ~500 ms before the
    # second-oldest packet; the send rate must not drop.
    rate = feed(est, (delayed_send, [gen.recv_clock_us], delayed_size))
    assert within_5_percent(rate, 100_000)
    # Throughput should stay stable.
    for _ in range(10):
        rate = feed(est, gen.create_feedback_vector(10, PACKET_BYTES, send_rate, recv_rate))
        assert within_5_percent(rate, 100_000)


def test_stream_paused_and_resumed() -> None:
    gen = FeedbackGenerator()
    est = RobustThroughputEstimator()
    send_rate = recv_rate = bytes_per_sec(100_000)
    rate = feed(est, gen.create_feedback_vector(20, PACKET_BYTES, send_rate, recv_rate))
    assert within_5_percent(rate, 100 * 1000.0)

    # No packets sent or feedback received for 60 s.
    gen.advance_send_clock(60_000_000)
    gen.advance_receive_clock(60_000_000)

    # Resume at the same rate: the estimate is initially invalid, for lack of recent data...
    assert feed(est, gen.create_feedback_vector(5, PACKET_BYTES, send_rate, recv_rate)) is None
    # ...and back to the normal level once there is enough.
    for _ in range(4):
        fb = gen.create_feedback_vector(5, PACKET_BYTES, send_rate, recv_rate)
        assert feed(est, fb) == send_rate


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (RobustThroughputEstimatorSettings(), (20, 500, 1_000_000, 5_000_000, 10)),
        (
            RobustThroughputEstimatorSettings(window_packets=5, min_window_duration_us=50_000),
            (20, 500, 750_000, 5_000_000, 10),
        ),
    ],
)
def test_settings_defaults_and_out_of_range_fallbacks(
    settings: RobustThroughputEstimatorSettings, expected: tuple[int, ...]
) -> None:
    got = (
        settings.window_packets,
        settings.max_window_packets,
        settings.min_window_duration_us,
        settings.max_window_duration_us,
        settings.required_packets,
    )
    assert got == expected


# -- the incremental window against the estimator's definition ------------------------------


class _NaiveEstimator:
    """The estimator as libwebrtc's code reads: a window of (send, recv, size) sorted by arrival,
    trimmed one packet at a time, and every statistic recomputed over the whole window."""

    def __init__(self, settings: RobustThroughputEstimatorSettings) -> None:
        self.s = settings
        self.window: list[tuple[int, int, int]] = []
        self.latest_discarded = -math.inf

    def add(self, send: list[int], recv: list[int], size: list[int]) -> None:
        for packet in zip(send, recv, size, strict=True):
            i = len(self.window)
            while i > 0 and packet[1] < self.window[i - 1][1]:
                i -= 1
            self.window.insert(i, packet)
            if self.window[-1][1] - packet[1] > 1_000_000:
                self.window = []
                self.latest_discarded = -math.inf
        s = self.s
        while self.window:
            n = len(self.window)
            span = self.window[-1][1] - self.window[0][1]
            if not (
                n > s.max_window_packets
                or span > s.max_window_duration_us
                or (n > s.window_packets and span > s.min_window_duration_us)
            ):
                break
            self.latest_discarded = max(self.latest_discarded, self.window.pop(0)[0])

    def bitrate(self) -> int | None:
        w = self.window
        if len(w) < self.s.required_packets or not w:
            return None
        gaps = [*sorted((b[1] - a[1] for a, b in itertools.pairwise(w)), reverse=True), 0, 0]
        total = sum(p[2] for p in w)
        recv_dur = max(w[-1][1] - w[0][1] - gaps[0] + gaps[1], 1_000)
        recv_rate = (total - w[0][2]) * 8_000_000 // recv_dur
        kept = [p for p in w if p[0] >= self.latest_discarded]
        if len(kept) < self.s.required_packets:
            return recv_rate
        first = min(p[0] for p in kept)
        last = max(p[0] for p in kept)
        last_size = next(p[2] for p in kept if p[0] == last)
        send_dur = max(last - first, 1_000)
        send_rate = (sum(p[2] for p in kept) - last_size) * 8_000_000 // send_dur
        return min(send_rate, recv_rate)


@st.composite
def _reports(draw):
    """Reports of packets with jittery, sometimes reordered, sometimes tied times."""
    n_reports = draw(st.integers(1, 40))
    send_us, recv_us = 0, 10_000_000
    out = []
    for _ in range(n_reports):
        k = draw(st.integers(0, 30))
        send, recv, size = [], [], []
        for _ in range(k):
            send_us += draw(st.sampled_from([0, 1, 500, 1_000, 20_000, -3_000]))
            recv_us += draw(st.sampled_from([0, 0, 1_000, 2_000, 7_000, 150_000, -2_000]))
            send.append(send_us)
            recv.append(recv_us)
            size.append(draw(st.integers(50, 1_500)))
        if draw(st.booleans()):  # GoogCC sorts by arrival before calling
            order = sorted(range(k), key=recv.__getitem__)
            send, recv, size = ([c[i] for i in order] for c in (send, recv, size))
        out.append((send, recv, size))
    return out


@settings(max_examples=80, deadline=None)
@given(
    reports=_reports(),
    window=st.sampled_from(
        [
            RobustThroughputEstimatorSettings(),
            RobustThroughputEstimatorSettings(
                window_packets=10, max_window_packets=12, min_window_duration_us=100_000
            ),
            RobustThroughputEstimatorSettings(max_window_duration_us=1_000_000),
        ]
    ),
)
def test_matches_the_definition_report_by_report(reports, window) -> None:
    est = RobustThroughputEstimator(window)
    naive = _NaiveEstimator(window)
    for send, recv, size in reports:
        est.incoming_packet_feedback_vector(send, recv, size)
        naive.add(send, recv, size)
        assert est.bitrate() == naive.bitrate()


def test_long_stream_compacts_and_matches_the_definition() -> None:
    est = RobustThroughputEstimator()
    naive = _NaiveEstimator(RobustThroughputEstimatorSettings())
    send_us, recv_us = 0, 0
    for r in range(250):  # 7000 packets: the dropped prefix is cut off several times
        send, recv, size = [], [], []
        for i in range(28):
            send_us += 3_500 + (i * 7919 + r) % 900
            recv_us += 3_000 + (i * 104_729 + r * 31) % 2_500
            send.append(send_us)
            recv.append(recv_us)
            size.append(1_000 + i)
        est.incoming_packet_feedback_vector(send, recv, size)
        naive.add(send, recv, size)
        assert est.bitrate() == naive.bitrate()
