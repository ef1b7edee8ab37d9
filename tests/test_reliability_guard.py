"""The feedback guard: each kind of bad content is dropped and counted; good content passes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loki.api import NO_PROBE, NOT_RECEIVED_US, Controller, ControllerConfig, TransportFeedback
from loki.guard import (
    MAX_QUEUE_DELAY_US,
    RESYNC_REPORTS,
    SEQ_WINDOW,
    FeedbackGuard,
    guarded,
)

CONFIG = ControllerConfig(start_bps=300_000, min_bps=50_000, max_bps=5_000_000)


class Spy(Controller):
    """Remembers what reached it; answers whatever rate it is told to."""

    def __init__(self) -> None:
        super().__init__(CONFIG)
        self.reports: list[TransportFeedback] = []
        self.rtts: list[tuple[int, int]] = []
        self.losses: list[tuple[int, int, int]] = []
        self.ticks: list[int] = []
        self.answer: float = 400_000

    @property
    def target_bps(self):
        return self.answer

    def on_feedback(self, report: TransportFeedback) -> int:
        self.reports.append(report)
        return self.answer

    def on_rtt(self, rtt_us: int, at_us: int) -> None:
        self.rtts.append((rtt_us, at_us))

    def on_loss_report(self, packets_lost: int, packets_expected: int, at_us: int) -> None:
        self.losses.append((packets_lost, packets_expected, at_us))

    def on_process_interval(self, at_us: int) -> None:
        self.ticks.append(at_us)


def report(
    ft_us: int,
    seqs: list[int],
    *,
    owd_us: int = 30_000,
    lost: tuple[int, ...] = (),
    size: int = 1_200,
) -> TransportFeedback:
    """Packets sent 1 ms apart (seq s at s ms), each arriving ``owd_us`` later."""
    send = [s * 1_000 for s in seqs]
    arrival = [
        NOT_RECEIVED_US if s in lost else t + owd_us for s, t in zip(seqs, send, strict=True)
    ]
    return TransportFeedback.from_lists(ft_us, seqs, send, arrival, [size] * len(seqs))


@pytest.fixture
def pair() -> tuple[FeedbackGuard, Spy]:
    spy = Spy()
    return FeedbackGuard(spy), spy


def test_clean_reports_pass_unchanged(pair) -> None:
    guard, spy = pair
    r = report(200_000, list(range(10, 20)), lost=(12,))
    guard.on_feedback(r)
    (got,) = spy.reports
    for a, b in zip(
        (got.seq, got.send_time_us, got.arrival_time_us, got.size_bytes, got.probe_cluster_id),
        (r.seq, r.send_time_us, r.arrival_time_us, r.size_bytes, r.probe_cluster_id),
        strict=True,
    ):
        assert a.tolist() == b.tolist()
    assert guard.stats.packets_dropped == 0


def test_empty_report_never_reaches_the_controller(pair) -> None:
    guard, spy = pair
    guard.on_feedback(report(100_000, []))
    assert spy.reports == [] and guard.stats.empty_reports == 1


def test_duplicates_within_and_across_reports(pair) -> None:
    guard, spy = pair
    guard.on_feedback(report(100_000, [1, 2, 2, 3, 1]))
    assert spy.reports[-1].seq.tolist() == [1, 2, 3]
    guard.on_feedback(report(150_000, [2, 3, 4]))
    assert spy.reports[-1].seq.tolist() == [4]
    assert guard.stats.duplicate_packets == 4


def test_reordered_packets_are_sorted_and_a_late_arrival_passes_once(pair) -> None:
    guard, spy = pair
    guard.on_feedback(report(100_000, [5, 3, 4], lost=(4,)))
    assert spy.reports[-1].seq.tolist() == [3, 4, 5]
    assert spy.reports[-1].packets_lost == 1
    # Packet 4 turns up in a later report: it passes as received, and lost twice is dropped.
    guard.on_feedback(report(200_000, [4, 6]))
    assert spy.reports[-1].seq.tolist() == [4, 6] and spy.reports[-1].packets_lost == 0
    guard.on_feedback(report(300_000, [4, 7], lost=(4,)))
    assert spy.reports[-1].seq.tolist() == [7]


def test_stale_sequence_numbers_are_dropped(pair) -> None:
    guard, spy = pair
    big = SEQ_WINDOW + 100
    guard.on_feedback(report(big * 1_000 + 50_000, [big, big + 1]))
    # 16-bit wrapped numbers of long-gone packets.
    guard.on_feedback(report(big * 1_000 + 60_000, [3, 4, big + 2]))
    assert spy.reports[-1].seq.tolist() == [big + 2]
    assert guard.stats.out_of_window_packets == 2


def test_a_jump_in_numbering_resyncs_after_consecutive_reports(pair) -> None:
    guard, spy = pair
    guard.on_feedback(report(100_000, [1, 2]))
    far = 10 * SEQ_WINDOW
    for i in range(RESYNC_REPORTS):
        guard.on_feedback(report(far * 1_000 + 100_000 + i, [far + 2 * i, far + 2 * i + 1]))
    assert guard.stats.seq_resyncs == 1
    assert spy.reports[-1].seq.tolist() == [far + 2, far + 3]
    # One corrupt report alone never moves the window.
    guard.on_feedback(report(far * 1_000 + 200_000, [far + 4]))
    guard.on_feedback(report(far * 1_000 + 300_000, [7]))
    guard.on_feedback(report(far * 1_000 + 400_000, [far + 5]))
    assert spy.reports[-1].seq.tolist() == [far + 5] and guard.stats.seq_resyncs == 1


@pytest.mark.parametrize("size", [0, -1_200, 70_000, 2**40])
def test_absurd_sizes_are_dropped(pair, size: int) -> None:
    guard, spy = pair
    r = report(100_000, [1, 2, 3])
    sizes = r.size_bytes.copy()
    sizes[1] = size
    guard.on_feedback(
        TransportFeedback(
            100_000, r.seq, r.send_time_us, r.arrival_time_us, sizes, r.probe_cluster_id
        )
    )
    assert spy.reports[-1].seq.tolist() == [1, 3] and guard.stats.bad_size_packets == 1


def test_packets_reported_before_sent_or_too_old_are_dropped(pair) -> None:
    guard, spy = pair
    # Feedback at 5 ms cannot cover a packet sent at 9 ms.
    guard.on_feedback(report(5_000, [1, 9]))
    assert spy.reports[-1].seq.tolist() == [1]
    # At 61.003 s, packet 2 (sent at 2 ms) is older than the 60 s send history.
    guard.on_feedback(report(61_003_000, [2, 30_000]))
    assert spy.reports[-1].seq.tolist() == [30_000]
    assert guard.stats.bad_send_time_packets == 2


def test_arrival_far_before_send_or_beyond_any_queue_is_dropped(pair) -> None:
    guard, spy = pair
    guard.on_feedback(report(100_000, [1, 2]))  # one-way delay 30 ms: the reference
    r = report(200_000, [3, 4, 5])
    arrival = r.arrival_time_us.copy()
    arrival[0] = r.send_time_us[0] - 5_000_000  # "arrived" 5 s before it was sent
    arrival[2] = r.send_time_us[2] + MAX_QUEUE_DELAY_US + 1_000_000
    guard.on_feedback(
        TransportFeedback(200_000, r.seq, r.send_time_us, arrival, r.size_bytes, r.probe_cluster_id)
    )
    assert spy.reports[-1].seq.tolist() == [4]
    assert guard.stats.bad_arrival_packets == 2


def test_a_receiver_clock_jump_resyncs(pair) -> None:
    guard, spy = pair
    guard.on_feedback(report(100_000, [1, 2]))
    for i in range(RESYNC_REPORTS):
        s = 3 + 2 * i
        guard.on_feedback(report(200_000 + i, [s, s + 1], owd_us=3_600_000_000))
    assert guard.stats.clock_resyncs == 1
    assert spy.reports[-1].seq.tolist() == [5, 6]


def test_time_only_goes_forward(pair) -> None:
    guard, spy = pair
    guard.on_process_interval(1_000_000)
    guard.on_process_interval(900_000)
    guard.on_feedback(report(800_000, [1]))
    assert spy.ticks == [1_000_000, 1_000_000]
    assert spy.reports[-1].feedback_time_us == 1_000_000
    assert guard.stats.time_backwards == 2


def test_non_finite_inputs_are_refused(pair) -> None:
    guard, spy = pair
    guard.on_process_interval(math.nan)
    guard.on_rtt(math.inf, 1_000)
    guard.on_rtt(40_000, math.nan)
    guard.on_loss_report(math.nan, 100, 1_000)
    r = report(100_000, [1, 2, 3])
    arrival = r.arrival_time_us.astype(np.float64)
    arrival[1] = math.nan
    guard.on_feedback(
        TransportFeedback(100_000, r.seq, r.send_time_us, arrival, r.size_bytes, r.probe_cluster_id)
    )
    guard.on_feedback(
        TransportFeedback(
            math.inf, r.seq, r.send_time_us, r.arrival_time_us, r.size_bytes, r.probe_cluster_id
        )
    )
    assert spy.ticks == [] and spy.rtts == [] and spy.losses == []
    assert spy.reports[-1].seq.tolist() == [1, 3]
    assert spy.reports[-1].arrival_time_us.dtype == np.int64
    assert guard.stats.bad_rtts == 2 and guard.stats.bad_loss_reports == 1
    assert guard.stats.non_finite_packets == 1 + 3


def test_rtt_and_loss_figures_are_bounded(pair) -> None:
    guard, spy = pair
    guard.on_rtt(0, 1)
    guard.on_rtt(-5, 2)
    guard.on_rtt(10**12, 3)
    guard.on_rtt(45_000, 4)
    guard.on_loss_report(50, 10, 5)  # more lost than expected
    guard.on_loss_report(-3, 10, 6)  # RFC 3550 counts can step back
    guard.on_loss_report(0, 0, 7)  # an empty interval is legitimate
    guard.on_loss_report(1, -10, 8)
    assert spy.rtts == [(45_000, 4)]
    assert spy.losses == [(10, 10, 5), (0, 10, 6), (0, 0, 7)]
    assert guard.stats.bad_rtts == 3
    assert guard.stats.clamped_loss_reports == 2 and guard.stats.bad_loss_reports == 1


@pytest.mark.parametrize("answer", [math.nan, math.inf, -math.inf])
def test_non_finite_target_keeps_the_last_good_one(pair, answer: float) -> None:
    guard, spy = pair
    guard.on_process_interval(0)
    assert guard.target_bps == 400_000
    spy.answer = answer
    guard.on_process_interval(25_000)
    assert guard.target_bps == 400_000
    assert guard.stats.bad_targets >= 1


@pytest.mark.parametrize(("answer", "bounded"), [(1, 50_000), (10**12, 5_000_000), (-5, 50_000)])
def test_target_is_clamped_to_the_configured_range(pair, answer: int, bounded: int) -> None:
    guard, spy = pair
    spy.answer = answer
    guard.on_process_interval(0)
    assert guard.target_bps == bounded


def test_probe_ids_below_zero_become_no_probe(pair) -> None:
    guard, spy = pair
    r = report(100_000, [1, 2])
    probes = np.array([-7, 3])
    guard.on_feedback(
        TransportFeedback(100_000, r.seq, r.send_time_us, r.arrival_time_us, r.size_bytes, probes)
    )
    assert spy.reports[-1].probe_cluster_id.tolist() == [NO_PROBE, 3]


def test_guarded_wraps_once_and_keeps_the_name() -> None:
    spy = Spy()
    spy.name = "spy"  # type: ignore[misc]
    g = guarded(spy)
    assert guarded(g) is g and g.name == "spy" and g.config is spy.config
