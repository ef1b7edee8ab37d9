"""The feedback guard: each kind of bad content is dropped and counted; good content passes."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loki.api import NO_PROBE, NOT_RECEIVED_US, Controller, ControllerConfig, TransportFeedback
from loki.guard import (
    MAX_ABS_VALUE,
    MAX_DELAY_DROP_US,
    MAX_FEEDBACK_AGE_US,
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


# -- the fast path and the full path agree ---------------------------------------------------------

INT64_MAX = int(np.iinfo(np.int64).max)
INT64_MIN = int(np.iinfo(np.int64).min)


def _state(guard: FeedbackGuard) -> tuple:
    return (
        guard.stats.to_dict(),
        guard._now_us,
        guard._newest_seq,
        guard._base_delay_us,
        guard._seq_resync.misses,
        guard._clock_resync.misses,
        guard._ring_seq.tobytes(),
        guard._ring_state.tobytes(),
    )


def _same_answer(a: TransportFeedback | None, b: TransportFeedback | None) -> None:
    assert (a is None) == (b is None)
    if a is None or b is None:
        return
    assert a.feedback_time_us == b.feedback_time_us
    assert type(a.feedback_time_us) is type(b.feedback_time_us) is int
    for x, y in zip(
        (a.seq, a.send_time_us, a.arrival_time_us, a.size_bytes, a.probe_cluster_id),
        (b.seq, b.send_time_us, b.arrival_time_us, b.size_bytes, b.probe_cluster_id),
        strict=True,
    ):
        assert x.dtype == y.dtype == np.int64 and x.tolist() == y.tolist()


def _compare(reports: list) -> int:
    """Feed both paths the same reports; they must answer and remember the same. Returns how
    many reports the fast path passed as they were (the caller's own object)."""
    fast, full = FeedbackGuard(Spy()), FeedbackGuard(Spy(), fast_path=False)
    passed_as_is = 0
    for r in reports:
        a, b = fast.sanitize(r), full.sanitize(r)
        _same_answer(a, b)
        assert _state(fast) == _state(full)
        passed_as_is += a is r
    return passed_as_is


def _session(rng: np.random.Generator, reports: int, *, late: bool) -> list[TransportFeedback]:
    """A clean feedback stream: packets 0.5-3 ms apart, some lost, some probes, a queue that
    comes and goes; with ``late``, some lost packets are reported again as received."""
    out: list[TransportFeedback] = []
    seq, t_us, queue_us, fb_us = int(rng.integers(0, 1 << 20)), 1_000_000, 0, 0
    lost: list[tuple[int, int, int]] = []
    for _ in range(reports):
        n = int(rng.integers(1, 60))
        seqs = list(range(seq, seq + n))
        send = (t_us + np.cumsum(rng.integers(500, 3_000, n))).tolist()
        queue_us = max(0, queue_us + int(rng.integers(-20_000, 20_000)))
        arrival = [s + 30_000 + queue_us for s in send]
        for i in np.flatnonzero(rng.random(n) < 0.05):
            arrival[i] = NOT_RECEIVED_US
        size = rng.integers(60, 1_300, n).tolist()
        probe = np.where(rng.random(n) < 0.1, rng.integers(0, 5, n), NO_PROBE).tolist()
        if late and lost and rng.random() < 0.3:
            s, ts, sz = lost.pop(0)
            seqs, send, arrival = [s, *seqs], [ts, *send], [ts + 40_000, *arrival]
            size, probe = [sz, *size], [NO_PROBE, *probe]
        lost += [
            (q, ts, sz)
            for q, ts, a, sz in zip(seqs, send, arrival, size, strict=True)
            if a == NOT_RECEIVED_US
        ]
        seq += n
        t_us = send[-1]
        fb_us = max(fb_us, t_us + 60_000 + queue_us)
        out.append(TransportFeedback.from_lists(fb_us, seqs, send, arrival, size, probe))
    return out


def _corrupt(r: TransportFeedback, rng: np.random.Generator) -> Any:
    """One of the ways a report goes wrong, or the report as it was."""
    cols = [
        c.copy()
        for c in (r.seq, r.send_time_us, r.arrival_time_us, r.size_bytes, r.probe_cluster_id)
    ]
    n = cols[0].shape[0]
    i = int(rng.integers(0, n))
    fb: Any = r.feedback_time_us
    how = int(rng.integers(0, 22))
    edge = [
        0,
        -1,
        1,
        65_535,
        65_536,
        MAX_ABS_VALUE,
        MAX_ABS_VALUE + 1,
        -MAX_ABS_VALUE,
        -MAX_ABS_VALUE - 1,
        INT64_MAX,
        INT64_MIN,
    ]
    if how == 0:
        cols = [np.concatenate([c, c[i : i + 1]]) for c in cols]  # duplicate a packet
    elif how == 1:
        order = rng.permutation(n)
        cols = [c[order] for c in cols]
    elif how == 2:
        cols[int(rng.integers(0, 5))] = cols[int(rng.integers(0, 5))].astype(
            [np.float64, np.int32, np.uint64, object][int(rng.integers(0, 4))]
        )
    elif how == 3:
        k = int(rng.integers(0, 5))
        cols[k] = cols[k].astype(np.float64)
        cols[k][i] = [math.nan, math.inf, -math.inf, 1e300][int(rng.integers(0, 4))]
    elif how == 4:
        cols[int(rng.integers(0, 5))][i] = edge[int(rng.integers(0, len(edge)))]
    elif how == 5:
        cols[3][i] = [0, -1, 65_536, 2**40][int(rng.integers(0, 4))]
    elif how == 6:
        cols[1][i] = fb + int(rng.integers(1, 10_000))  # sent after the report
    elif how == 7:
        cols[1][i] = fb - MAX_FEEDBACK_AGE_US - int(rng.integers(0, 2))  # on the age edge
    elif how == 8:
        cols[2][i] = [-2, -5_000_000, INT64_MAX][int(rng.integers(0, 3))]
    elif how == 9:
        cols[2] = cols[2] + 3_600_000_000  # a receiver clock jump
    elif how == 10:
        cols[2][i] = cols[1][i] + MAX_QUEUE_DELAY_US + int(rng.integers(0, 10**8))
    elif how == 11:
        cols[0] = cols[0] + 10 * SEQ_WINDOW  # a jump in numbering
    elif how == 12:
        cols[0][i] = cols[0][i] - SEQ_WINDOW - int(rng.integers(-2, 3))  # window edge
    elif how == 13:
        fb = fb - int(rng.integers(1, 10**7))  # time going backwards
    elif how == 14:
        fb = [float(fb), np.int64(fb), math.nan, True][int(rng.integers(0, 4))]
    elif how == 15:
        cols[4][i] = int(rng.integers(-100, -1))  # a probe id below NO_PROBE
    elif how == 16:
        cols[int(rng.integers(0, 5))] = cols[0][:-1] if n > 1 else cols[0][:0]  # lengths
    elif how == 17:
        cols[int(rng.integers(0, 5))] = cols[0].reshape(1, -1)  # two dimensions
    elif how == 18:
        cols = [c[:0] for c in cols]  # empty
    elif how == 19:
        cols[2][:] = NOT_RECEIVED_US  # all lost
    elif how == 20:
        cols[1] = cols[1].astype(">i8")  # int64, but the other byte order
    return TransportFeedback(fb, *cols)


def test_fast_path_takes_every_clean_report_and_matches_the_full_path() -> None:
    rng = np.random.default_rng(5)
    reports = _session(rng, 300, late=False)
    assert _compare(reports) == len(reports)


def test_fast_and_full_paths_agree_on_late_arrivals() -> None:
    rng = np.random.default_rng(6)
    reports = _session(rng, 300, late=True)
    passed_as_is = _compare(reports)
    assert 0 < passed_as_is < len(reports)


@pytest.mark.parametrize("seed", range(6))
def test_fast_and_full_paths_agree_on_dirty_reports(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    reports = [_corrupt(r, rng) if rng.random() < 0.4 else r for r in _session(rng, 250, late=True)]
    assert _compare(reports) > 0


def _one(fb_us: int, seq: int, send_us: int, arrival_us: int, **kw: int) -> TransportFeedback:
    """A one-packet report."""
    size, probe = kw.get("size", 1_200), kw.get("probe", NO_PROBE)
    return TransportFeedback.from_lists(fb_us, [seq], [send_us], [arrival_us], [size], [probe])


_T = 10**9
#: One-way delay 30 ms: the first report sets the clock reference.
_GOOD = _one(_T, 1_000, _T - 50_000, _T - 20_000)
EDGE_CASES = {
    "seq below the magnitude bound": [_one(_T, -MAX_ABS_VALUE - 1, _T - 50_000, _T)],
    "seq above the magnitude bound": [_one(_T, MAX_ABS_VALUE + 1, _T - 50_000, _T)],
    "send below the magnitude bound": [_one(-MAX_ABS_VALUE, 5, -MAX_ABS_VALUE - 1_000, 0)],
    "arrival above the magnitude bound": [_one(_T, 5, _T - 50_000, MAX_ABS_VALUE + 1)],
    "arrival below not-received": [_one(_T, 5, _T - 50_000, -2)],
    "probe id above the magnitude bound": [_one(_T, 5, _T - 50_000, 0, probe=MAX_ABS_VALUE + 1)],
    "delay far below the reference": [
        _GOOD,
        _one(_T + 1, 1_001, _T - 40_000, _T - 40_000 + 30_000 - MAX_DELAY_DROP_US - 1),
    ],
    "delay far above the reference": [
        _GOOD,
        _one(_T + 1, 1_001, _T - 40_000, _T - 40_000 + 30_000 + MAX_QUEUE_DELAY_US + 1),
    ],
    "a clean report after one outside the window": [
        _GOOD,
        _one(_T + 1, 1_001 + 4 * SEQ_WINDOW, _T - 40_000, _T - 10_000),
        _one(_T + 2, 1_002, _T - 30_000, _T),
    ],
    "a clean report after a clock jump": [
        _GOOD,
        _one(_T + 1, 1_001, _T - 40_000, _T + 3_600_000_000),
        _one(_T + 2, 1_002, _T - 30_000, _T),
    ],
    "a lower one-way delay moves the reference": [
        _GOOD,
        _one(_T + 1, 1_001, _T - 40_000, _T - 30_000),
        _one(_T + 2, 1_002, _T - 30_000, _T - 30_000 + 30_000 - MAX_DELAY_DROP_US + 5_000),
    ],
}


@pytest.mark.parametrize("case", list(EDGE_CASES))
def test_fast_and_full_paths_agree_on_each_bound(case: str) -> None:
    _compare(EDGE_CASES[case])


_OWD = st.integers(29_998, 30_002) | st.sampled_from(
    [MAX_QUEUE_DELAY_US + 30_000, MAX_QUEUE_DELAY_US + 30_001, -MAX_DELAY_DROP_US]
)
_ARRIVAL_AT = st.sampled_from(
    [NOT_RECEIVED_US, -2, 0, MAX_ABS_VALUE, MAX_ABS_VALUE + 1, INT64_MAX, INT64_MIN]
)
_PACKET = st.tuples(
    st.integers(-2, 2)
    | st.sampled_from([SEQ_WINDOW, SEQ_WINDOW + 1, -SEQ_WINDOW, MAX_ABS_VALUE, -MAX_ABS_VALUE]),
    st.sampled_from([-1, 0, 1_000, MAX_FEEDBACK_AGE_US, MAX_FEEDBACK_AGE_US + 1]),
    st.tuples(st.just("owd"), _OWD) | st.tuples(st.just("at"), _ARRIVAL_AT),
    st.sampled_from([0, 1, 1_200, 65_535, 65_536]),
    st.sampled_from([-2, -1, 0, 7, MAX_ABS_VALUE, MAX_ABS_VALUE + 1]),
)
_FEEDBACK_AT = st.sampled_from(
    [10**9, 10**9 + 1, -MAX_ABS_VALUE, -MAX_ABS_VALUE + MAX_FEEDBACK_AGE_US, MAX_ABS_VALUE]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_FEEDBACK_AT, st.lists(_PACKET, max_size=5)), max_size=8))
def test_fast_and_full_paths_agree_near_every_bound(steps: list) -> None:
    """Values on and just past each bound: sequence window and magnitude, send age, one-way
    delay against the reference, arrival, size and probe id."""
    reports = []
    for fb, packets in steps:
        rows = []
        for k, (dseq, age, (kind, arr), size, probe) in enumerate(packets):
            send = fb - age
            rows.append((1_000 + k + dseq, send, send + arr if kind == "owd" else arr, size, probe))
        cols = [np.array([row[j] for row in rows], dtype=np.int64) for j in range(5)]
        reports.append(TransportFeedback(fb, *cols))
    _compare(reports)
