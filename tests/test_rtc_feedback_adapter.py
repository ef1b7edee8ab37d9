"""Send history + feedback adapter, and the receiver's feedback generator feeding them."""

from __future__ import annotations

import numpy as np

from loki.api import NO_PROBE, NOT_RECEIVED_US
from rtc.feedback_adapter import SendHistory, TransportFeedbackAdapter
from rtc.feedback_generator import MAX_STATUSES_PER_PACKET, FeedbackGenerator
from rtc.transport_feedback import TransportCcFeedback, parse_rtcp, reference_time_for


def history_with(n: int, first_seq: int = 0) -> SendHistory:
    h = SendHistory()
    for s in range(first_seq, first_seq + n):
        h.add(s, 1_000 * s, 1_200 + s % 7, 3 if s % 10 == 0 else NO_PROBE)
    return h


def fb(base: int, arrivals: list[int | None]) -> TransportCcFeedback:
    first = next((t for t in arrivals if t is not None), 0)
    return TransportCcFeedback(1, 2, base % 65_536, reference_time_for(first), 0, tuple(arrivals))


def test_join_fills_send_times_sizes_and_probes() -> None:
    adapter = TransportFeedbackAdapter(history_with(20))
    report = adapter.on_feedback(fb(8, [500_000, None, 502_000]), feedback_time_us=77_000)
    assert report is not None
    assert report.feedback_time_us == 77_000
    assert report.seq.tolist() == [8, 9, 10]
    assert report.send_time_us.tolist() == [8_000, 9_000, 10_000]
    assert report.size_bytes.tolist() == [1_201, 1_202, 1_203]
    assert report.probe_cluster_id.tolist() == [NO_PROBE, NO_PROBE, 3]
    assert report.arrival_time_us.tolist() == [500_000, NOT_RECEIVED_US, 502_000]


def test_outstanding_bytes_are_those_sent_after_the_newest_reported_packet() -> None:
    h = history_with(20)
    sizes = [1_200 + s % 7 for s in range(20)]
    assert h.outstanding_bytes() == sum(sizes)  # nothing reported yet
    adapter = TransportFeedbackAdapter(h)
    adapter.on_feedback(fb(8, [500_000, None, 502_000]), 1)
    assert h.outstanding_bytes() == sum(sizes[11:])
    # A report of older packets (a late or reordered one) does not bring them back in flight.
    adapter.on_feedback(fb(2, [400_000]), 2)
    assert h.outstanding_bytes() == sum(sizes[11:])
    # A lost report's packets stop counting once a later packet is reported.
    adapter.on_feedback(fb(17, [None]), 3)
    assert h.outstanding_bytes() == sum(sizes[18:])
    h.add(20, 20_000, 1_000, NO_PROBE)
    assert h.outstanding_bytes() == sum(sizes[18:]) + 1_000


def test_duplicates_unknown_and_late_arrivals() -> None:
    adapter = TransportFeedbackAdapter(history_with(10))
    first = adapter.on_feedback(fb(0, [100_000, None, 101_000]), 1)
    assert first is not None and first.packets_lost == 1
    # The same report again says nothing new.
    assert adapter.on_feedback(fb(0, [100_000, None, 101_000]), 2) is None
    assert adapter.duplicate_packets == 3
    # Packet 1 turns up late: passed on once, as received.
    late = adapter.on_feedback(fb(1, [103_000, 101_000, 104_000]), 3)
    assert late is not None
    assert late.seq.tolist() == [1, 3] and late.packets_lost == 0
    # Sequence numbers never sent (the history holds 0..9) are skipped and counted.
    assert adapter.on_feedback(fb(9, [105_000, 106_000, 107_000]), 4).seq.tolist() == [9]
    assert adapter.unknown_packets == 2


def test_unwraps_sequence_numbers_against_the_history() -> None:
    h = history_with(40, first_seq=65_520)  # sends 65520 .. 65559 (wire 65520..65535, 0..23)
    adapter = TransportFeedbackAdapter(h)
    report = adapter.on_feedback(fb(65_534, [1_000, 2_000, 3_000, 4_000]), 9)
    assert report.seq.tolist() == [65_534, 65_535, 65_536, 65_537]
    assert report.send_time_us.tolist() == [1_000 * s for s in range(65_534, 65_538)]


def test_reference_time_unwrapped_across_reports() -> None:
    h = history_with(4)
    adapter = TransportFeedbackAdapter(h)
    top = (1 << 24) - 1
    a = TransportCcFeedback(1, 2, 0, top, 0, (top * 64_000 + 1_000, top * 64_000 + 2_000))
    b = TransportCcFeedback(1, 2, 2, 0, 1, (10_000, 11_000))  # after the 24-bit wrap
    ra, rb = adapter.on_feedback(a, 1), adapter.on_feedback(b, 2)
    gap = int(rb.arrival_time_us[0] - ra.arrival_time_us[-1])
    assert gap == 64_000 - 2_000 + 10_000
    assert np.all(np.diff(np.concatenate([ra.arrival_time_us, rb.arrival_time_us])) > 0)


def test_generator_reports_everything_once_and_late_packets_again() -> None:
    gen = FeedbackGenerator(sender_ssrc=9)
    for seq, t in ((65_534, 1_000_000), (65_535, 1_001_000), (1, 1_003_000)):
        gen.on_packet(seq, t, media_ssrc=5)
    packets = gen.build_packets()
    assert len(packets) == 1
    parsed = parse_rtcp(packets[0])
    assert parsed.media_ssrc == 5 and parsed.base_seq == 65_534
    assert parsed.arrival_us == (1_000_000, 1_001_000, None, 1_003_000)
    assert gen.build_packets() == []
    gen.on_packet(0, 1_004_000)  # the missing packet arrives late
    again = parse_rtcp(gen.build_packets()[0])
    assert again.base_seq == 0 and again.arrival_us == (1_004_000, 1_003_000)


def test_generator_splits_large_and_gappy_reports() -> None:
    gen = FeedbackGenerator(sender_ssrc=9)
    n = MAX_STATUSES_PER_PACKET + 50
    for s in range(n):
        gen.on_packet(s, 2_000_000 + 100 * s)
    gen.on_packet(n, 2_000_000 + 100 * n + 9_000_000)  # a 9 s outage: no 16-bit delta
    packets = [parse_rtcp(p) for p in gen.build_packets()]
    assert [p.status_count for p in packets] == [MAX_STATUSES_PER_PACKET, 50, 1]
    assert [p.feedback_count for p in packets] == [0, 1, 2]


def test_generator_to_adapter_end_to_end() -> None:
    h = history_with(30)
    gen = FeedbackGenerator(sender_ssrc=9)
    rx = {s: 5_000_000 + 1_700 * s for s in range(30) if s % 4 != 3}
    for s, t in rx.items():
        gen.on_packet(s, t)
    adapter = TransportFeedbackAdapter(h)
    reports = [adapter.on_feedback(parse_rtcp(p), 0) for p in gen.build_packets()]
    seq = np.concatenate([r.seq for r in reports])
    arr = np.concatenate([r.arrival_time_us for r in reports])
    assert seq.tolist() == list(range(30))
    for s, t in zip(seq.tolist(), arr.tolist(), strict=True):
        assert t == (NOT_RECEIVED_US if s % 4 == 3 else (rx[s] + 125) // 250 * 250)
