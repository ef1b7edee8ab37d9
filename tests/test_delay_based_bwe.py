"""Behavioural tests of DelayBasedBwe on a small FIFO-bottleneck model.

libwebrtc's ``delay_based_bwe_unittest.cc`` drives a full simulated call; these tests check the
same behaviours directly: a steady path keeps the detector Normal and lets the estimate grow up
to the acknowledged-rate cap; a queue building behind a bottleneck is detected and cuts the
rate below the acknowledged rate; the no-acked-rate halving; probes; the 2 s stream timeout;
receive-order sorting and lost packets.
"""

from __future__ import annotations

import itertools
import random

import pytest

from gcc.bandwidth_usage import BandwidthUsage
from gcc.delay_based_bwe import STREAM_TIMEOUT_US, DelayBasedBwe, DelayBasedBweResult
from loki.api import NOT_RECEIVED_US, TransportFeedback

PACKET_BYTES = 1200
PROPAGATION_US = 20_000
FEEDBACK_INTERVAL_US = 100_000


class _BottleneckPath:
    """Packets sent at a fixed rate through a FIFO link of a fixed capacity."""

    def __init__(self, capacity_bps: int) -> None:
        self.capacity_bps = capacity_bps
        self.link_free_us = 0
        self.next_send_us = 0
        self.seq = 0

    def report(
        self, send_rate_bps: int, until_us: int
    ) -> tuple[list[int], list[int], list[int], list[int]]:
        """Packets sent from the last call until ``until_us``: (seq, send, arrival, size)."""
        seqs: list[int] = []
        sends: list[int] = []
        arrivals: list[int] = []
        sizes: list[int] = []
        interval_us = PACKET_BYTES * 8_000_000 // send_rate_bps
        serialisation_us = PACKET_BYTES * 8_000_000 // self.capacity_bps
        while self.next_send_us < until_us:
            send_us = self.next_send_us
            start_us = max(send_us, self.link_free_us)
            self.link_free_us = start_us + serialisation_us
            seqs.append(self.seq)
            sends.append(send_us)
            arrivals.append(self.link_free_us + PROPAGATION_US)
            sizes.append(PACKET_BYTES)
            self.seq += 1
            self.next_send_us += interval_us
        return seqs, sends, arrivals, sizes


def _run(
    bwe: DelayBasedBwe,
    path: _BottleneckPath,
    send_rate_bps: int,
    start_us: int,
    duration_us: int,
    acked_bitrate_bps: int | None,
) -> list[tuple[int, DelayBasedBweResult]]:
    results = []
    t_us = start_us
    while t_us < start_us + duration_us:
        t_us += FEEDBACK_INTERVAL_US
        _, sends, arrivals, sizes = path.report(send_rate_bps, t_us)
        at_us = t_us + 2 * PROPAGATION_US
        result = bwe.incoming_packet_feedback_vector(
            sends, arrivals, sizes, acked_bitrate_bps, None, at_us
        )
        results.append((at_us, result))
    return results


def test_steady_path_stays_normal_and_increases_to_the_acked_cap() -> None:
    bwe = DelayBasedBwe()
    bwe.set_start_bitrate(1_000_000)
    path = _BottleneckPath(capacity_bps=10_000_000)
    results = _run(bwe, path, 1_000_000, 0, 10_000_000, acked_bitrate_bps=1_000_000)
    states = {r.delay_detector_state for _, r in results}
    assert states == {BandwidthUsage.NORMAL}
    targets = [r.target_bitrate_bps for _, r in results]
    assert all(r.updated for _, r in results)
    assert targets == sorted(targets)  # never decreases
    assert targets[0] == 1_001_000  # Hold -> Increase: the 1 kbps minimum step
    assert targets[-1] == 1_510_000  # capped at 1.5 * acked + 10 kbps
    assert bwe.last_estimate() == 1_510_000
    assert bwe.latest_estimate() == 1_510_000
    assert not any(r.recovered_from_overuse or r.probe for _, r in results)


def test_growing_queue_is_detected_and_cuts_below_the_acked_rate() -> None:
    bwe = DelayBasedBwe()
    bwe.set_start_bitrate(2_000_000)
    path = _BottleneckPath(capacity_bps=1_000_000)
    results = _run(bwe, path, 2_000_000, 0, 2_000_000, acked_bitrate_bps=1_000_000)
    overuse = [
        (at_us, r) for at_us, r in results if r.delay_detector_state is BandwidthUsage.OVERUSING
    ]
    assert overuse, "a queue growing at 1 Mbps must be detected within 2 s"
    cuts = [(at_us, r) for at_us, r in overuse if r.updated]
    first_at_us, first = cuts[0]
    assert first_at_us <= 1_000_000
    # 0.85 * acked - 5 kbps, below the acknowledged rate.
    assert first.target_bitrate_bps == 845_000
    assert bwe.last_estimate() == 845_000
    assert bwe.last_state() is BandwidthUsage.OVERUSING
    # Before the cut the estimate was held at the start rate (above the 1.5 * acked cap).
    assert all(
        r.target_bitrate_bps == 2_000_000
        for at_us, r in results
        if at_us < first_at_us and r.updated
    )


def test_overuse_without_acked_rate_halves_the_estimate() -> None:
    bwe = DelayBasedBwe()
    bwe.set_start_bitrate(2_000_000)
    path = _BottleneckPath(capacity_bps=1_000_000)
    results = _run(bwe, path, 2_000_000, 0, 2_000_000, acked_bitrate_bps=None)
    updated = [r for _, r in results if r.updated]
    first_cut = next(
        i for i, r in enumerate(updated) if r.delay_detector_state is BandwidthUsage.OVERUSING
    )
    before_bps = updated[first_cut - 1].target_bitrate_bps
    assert before_bps > 2_000_000  # still growing: no acked rate caps the increase
    assert updated[first_cut].target_bitrate_bps == before_bps // 2
    # The initial check always passes (estimate / 2 - 1 < 0.5 * estimate): halved every report.
    assert updated[first_cut + 1].delay_detector_state is BandwidthUsage.OVERUSING
    assert updated[first_cut + 1].target_bitrate_bps == before_bps // 4


def test_overuse_cuts_at_most_once_per_rtt() -> None:
    bwe = DelayBasedBwe()
    bwe.set_start_bitrate(2_000_000)
    bwe.on_rtt_update(300_000)  # capped at 200 ms by AIMD
    path = _BottleneckPath(capacity_bps=1_000_000)
    results = _run(bwe, path, 2_000_000, 0, 3_000_000, acked_bitrate_bps=1_900_000)
    cut_times = [
        at_us
        for at_us, r in results
        if r.updated and r.delay_detector_state is BandwidthUsage.OVERUSING
    ]
    assert len(cut_times) >= 2
    assert all(b - a >= 200_000 for a, b in itertools.pairwise(cut_times))


def test_probe_result_sets_the_estimate() -> None:
    bwe = DelayBasedBwe()
    bwe.set_start_bitrate(300_000)
    path = _BottleneckPath(capacity_bps=10_000_000)
    _, sends, arrivals, sizes = path.report(300_000, 100_000)
    result = bwe.incoming_packet_feedback_vector(sends, arrivals, sizes, None, 900_000, 140_000)
    assert result.updated and result.probe
    assert result.target_bitrate_bps == 900_000
    assert bwe.latest_estimate() == 900_000


def test_no_received_packets_changes_nothing() -> None:
    bwe = DelayBasedBwe()
    bwe.set_start_bitrate(300_000)
    result = bwe.incoming_packet_feedback_vector(
        [0, 1000], [NOT_RECEIVED_US, NOT_RECEIVED_US], [1200, 1200], 300_000, None, 50_000
    )
    assert result == DelayBasedBweResult()
    empty = bwe.incoming_packet_feedback_vector([], [], [], 300_000, None, 60_000)
    assert empty == DelayBasedBweResult()
    assert bwe.last_estimate() == 0


def test_stream_timeout_resets_the_detector() -> None:
    bwe = DelayBasedBwe()
    bwe.set_start_bitrate(2_000_000)
    path = _BottleneckPath(capacity_bps=1_000_000)
    results = _run(bwe, path, 2_000_000, 0, 1_500_000, acked_bitrate_bps=1_000_000)
    last_at_us, last = results[-1]
    assert last.delay_detector_state is BandwidthUsage.OVERUSING

    # Exactly the timeout later: no reset, the queue keeps looking like overuse.
    path2 = _BottleneckPath(capacity_bps=1_000_000)
    path2.next_send_us = path.next_send_us
    path2.link_free_us = path.link_free_us
    path2.seq = path.seq
    _, sends, arrivals, sizes = path2.report(2_000_000, path.next_send_us + 10_000)
    kept = bwe.incoming_packet_feedback_vector(
        sends, arrivals, sizes, 1_000_000, None, last_at_us + STREAM_TIMEOUT_US
    )
    assert kept.delay_detector_state is BandwidthUsage.OVERUSING

    # More than the timeout: grouping and trendline start over, the verdict is Normal again.
    _, sends, arrivals, sizes = path2.report(2_000_000, path2.next_send_us + 10_000)
    reset = bwe.incoming_packet_feedback_vector(
        sends, arrivals, sizes, 1_000_000, None, last_at_us + 2 * STREAM_TIMEOUT_US + 1
    )
    assert reset.delay_detector_state is BandwidthUsage.NORMAL
    assert reset.updated


def test_draining_queue_underuses_then_recovers() -> None:
    bwe = DelayBasedBwe()
    bwe.set_start_bitrate(2_000_000)
    path = _BottleneckPath(capacity_bps=1_000_000)
    results = _run(bwe, path, 2_000_000, 0, 1_000_000, acked_bitrate_bps=1_000_000)
    results += _run(bwe, path, 500_000, 1_000_000, 6_000_000, acked_bitrate_bps=500_000)
    states = [r.delay_detector_state for _, r in results]
    assert BandwidthUsage.UNDERUSING in states
    first_under = states.index(BandwidthUsage.UNDERUSING)
    recovered = [i for i, (_, r) in enumerate(results) if r.recovered_from_overuse]
    assert recovered and recovered[0] > first_under
    i = recovered[0]
    assert states[i - 1] is BandwidthUsage.UNDERUSING
    assert states[i] is BandwidthUsage.NORMAL


def test_timeout_of_an_underusing_detector_counts_as_recovery() -> None:
    """libwebrtc compares the new detector's state with the one from before the reset."""
    bwe = DelayBasedBwe()
    bwe.set_start_bitrate(2_000_000)
    path = _BottleneckPath(capacity_bps=1_000_000)
    results = _run(bwe, path, 2_000_000, 0, 1_000_000, acked_bitrate_bps=1_000_000)
    results += _run(bwe, path, 500_000, 1_000_000, 600_000, acked_bitrate_bps=500_000)
    last_at_us, last = results[-1]
    assert last.delay_detector_state is BandwidthUsage.UNDERUSING
    _, sends, arrivals, sizes = path.report(500_000, path.next_send_us + 30_000)
    result = bwe.incoming_packet_feedback_vector(
        sends, arrivals, sizes, 500_000, None, last_at_us + STREAM_TIMEOUT_US + 1
    )
    assert result.delay_detector_state is BandwidthUsage.NORMAL
    assert result.recovered_from_overuse


def test_receive_order_and_lost_packets() -> None:
    """Shuffled input with losses gives what the sorted, loss-free input gives."""
    path = _BottleneckPath(capacity_bps=1_000_000)
    reference = DelayBasedBwe()
    shuffled = DelayBasedBwe()
    for bwe in (reference, shuffled):
        bwe.set_start_bitrate(2_000_000)
    rng = random.Random(7)
    states = []
    for k in range(1, 21):
        t_us = k * FEEDBACK_INTERVAL_US
        _seqs, sends, arrivals, sizes = path.report(2_000_000, t_us)
        at_us = t_us + 2 * PROPAGATION_US
        expected = reference.incoming_packet_feedback_vector(
            sends, arrivals, sizes, 1_000_000, None, at_us
        )
        # Reorder in transport order, and add lost packets that must not matter.
        packets = list(zip(sends, arrivals, sizes, strict=True))
        rng.shuffle(packets)
        packets += [(s, NOT_RECEIVED_US, 1200) for s in (t_us - 5, t_us - 3)]
        got = shuffled.incoming_packet_feedback_vector(
            [p[0] for p in packets],
            [p[1] for p in packets],
            [p[2] for p in packets],
            1_000_000,
            None,
            at_us,
        )
        assert got == expected
        states.append(expected.delay_detector_state)
    # The comparison covered both verdicts.
    assert BandwidthUsage.NORMAL in states
    assert BandwidthUsage.OVERUSING in states


def test_receive_order_breaks_arrival_ties_by_send_time() -> None:
    """libwebrtc's ReceiveTimeOrder: arrival time, then send time, then sequence order."""
    sends = [0, 10_000, 6_000, 20_000, 30_000, 30_000]
    arrivals = [20_000, 40_000, 40_000, NOT_RECEIVED_US, 60_000, 60_000]
    assert DelayBasedBwe._receive_order(sends, arrivals) == [0, 2, 1, 4, 5]
    # Already in order: returned as is.
    assert DelayBasedBwe._receive_order([0, 1, 2], [5, 5, 7]) == [0, 1, 2]


def test_transport_feedback_entry_point_matches_lists() -> None:
    path = _BottleneckPath(capacity_bps=1_000_000)
    from_lists, from_report = DelayBasedBwe(), DelayBasedBwe()
    for k in range(1, 16):
        t_us = k * FEEDBACK_INTERVAL_US
        seqs, sends, arrivals, sizes = path.report(2_000_000, t_us)
        at_us = t_us + 2 * PROPAGATION_US
        expected = from_lists.incoming_packet_feedback_vector(
            sends, arrivals, sizes, 1_000_000, None, at_us
        )
        report = TransportFeedback.from_lists(at_us, seqs, sends, arrivals, sizes)
        got = from_report.incoming_transport_feedback(report, 1_000_000, None)
        assert got == expected
        assert isinstance(got.target_bitrate_bps, int)


def test_min_bitrate_bounds_the_cut() -> None:
    bwe = DelayBasedBwe()
    bwe.set_start_bitrate(2_000_000)
    bwe.set_min_bitrate(1_500_000)
    path = _BottleneckPath(capacity_bps=1_000_000)
    results = _run(bwe, path, 2_000_000, 0, 2_000_000, acked_bitrate_bps=1_000_000)
    assert min(r.target_bitrate_bps for _, r in results if r.updated) == 1_500_000


@pytest.mark.parametrize("rtt_us", [10_000, 100_000])
def test_expected_period_is_default_before_first_decrease(rtt_us: int) -> None:
    bwe = DelayBasedBwe()
    bwe.set_start_bitrate(500_000)
    bwe.on_rtt_update(rtt_us)
    assert bwe.get_expected_bwe_period_us() == 3_000_000
