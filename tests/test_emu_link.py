"""The link stages against mahimahi's rules: a literal replay of ``LinkQueue::rationalize`` as the
oracle, then each rule on hand-worked cases, then mm-delay, mm-loss and the composed paths."""

from __future__ import annotations

import random
from collections import deque

import numpy as np
import pytest

from loki.emu import (
    DROPPED,
    TUN_HEADER_BYTES,
    Delay,
    DropTail,
    Link,
    Loss,
    Path,
    feedback_path,
    uplink_path,
)
from traces.trace import Trace

OPP_BYTES = 1504
FULL_IP_BYTES = OPP_BYTES - TUN_HEADER_BYTES  # an IP packet that fills one opportunity


def trace_of(*ops_ms: int) -> Trace:
    return Trace("test", np.array(ops_ms, dtype=np.int64))


def mahimahi_replay(
    ops_ms: list[int],
    arrivals_ms: list[int],
    sizes_bytes: list[int],
    limit_packets: int = 0,
    limit_bytes: int = 0,
) -> list[int]:
    """Event-by-event replay of link_queue.cc: read_packet(now) = rationalize(now) + enqueue,
    rationalize walks every opportunity <= now moving min(left in opp, left in packet) bytes;
    drop-tail tests packet_queue_ (the in-transit packet is not in it)."""
    n, period = len(ops_ms), ops_ms[-1]
    charge = [s + TUN_HEADER_BYTES for s in sizes_bytes]
    exits = [DROPPED] * len(arrivals_ms)
    queue: deque[int] = deque()
    state = {"next": 0, "queued_bytes": 0, "transit": -1, "transit_left": 0}

    def opp_ms(k: int) -> int:
        return (k // n) * period + ops_ms[k % n]

    def rationalize(now_ms: int) -> None:
        while opp_ms(state["next"]) <= now_ms:
            this_ms = opp_ms(state["next"])
            state["next"] += 1
            left = OPP_BYTES
            while left > 0:
                if state["transit_left"] == 0:
                    if not queue:
                        break
                    state["transit"] = queue.popleft()
                    state["queued_bytes"] -= charge[state["transit"]]
                    state["transit_left"] = charge[state["transit"]]
                amount = min(left, state["transit_left"])
                state["transit_left"] -= amount
                left -= amount
                if state["transit_left"] == 0:
                    exits[state["transit"]] = this_ms

    for i, now_ms in enumerate(arrivals_ms):
        rationalize(now_ms)
        fits = True
        if limit_bytes:
            fits &= state["queued_bytes"] + charge[i] <= limit_bytes
        if limit_packets:
            fits &= len(queue) + 1 <= limit_packets
        if fits:
            queue.append(i)
            state["queued_bytes"] += charge[i]
    # Flush: enough whole loops after the last arrival to carry every queued byte.
    rationalize(arrivals_ms[-1] + (sum(charge) // (OPP_BYTES * n) + 2) * period)
    return exits


def test_link_matches_mahimahi_replay_on_random_cases() -> None:
    rng = random.Random(20240607)
    sizes = [1, 60, 100, 500, 1000, 1400, 1496, 1500, 1501, 2000, 3100]
    for _ in range(1500):
        ops = sorted(rng.randint(0, 12) for _ in range(rng.randint(1, 8)))
        if ops[-1] == 0:
            ops[-1] = rng.randint(1, 6)
        arrivals = sorted(rng.randint(0, 80) for _ in range(rng.randint(1, 40)))
        size_list = [rng.choice(sizes) for _ in arrivals]
        queue = rng.choice(
            [
                None,
                DropTail(limit_packets=rng.randint(1, 4)),
                DropTail(limit_bytes=rng.randint(5, 5000)),
                DropTail(rng.randint(1, 4), rng.randint(5, 5000)),
            ]
        )
        expected = mahimahi_replay(
            ops,
            arrivals,
            size_list,
            queue.limit_packets if queue else 0,
            queue.limit_bytes if queue else 0,
        )
        link = Link(trace_of(*ops), queue)
        got = [link.send(a, s) for a, s in zip(arrivals, size_list, strict=True)]
        assert got == expected, (ops, arrivals, size_list, queue)
        assert link.dropped_packets == expected.count(DROPPED)


def test_link_matches_replay_on_a_real_shaped_trace_under_load() -> None:
    rng = np.random.default_rng(7)
    ops = [*np.sort(rng.integers(1, 3000, size=2500)).tolist(), 3000]
    # About 1.05x the trace's capacity on average: queues build, drop-tail drops.
    arrivals = np.sort(rng.integers(0, 9000, size=16_000)).tolist()
    sizes = rng.integers(40, 1501, size=16_000).tolist()
    for queue in (None, DropTail(limit_packets=30), DropTail(limit_bytes=20_000)):
        expected = mahimahi_replay(
            ops,
            arrivals,
            sizes,
            queue.limit_packets if queue else 0,
            queue.limit_bytes if queue else 0,
        )
        link = Link(trace_of(*ops), queue)
        got = link.send_batch(np.array(arrivals), np.array(sizes))
        assert got.tolist() == expected
        assert (link.dropped_packets > 100) == (queue is not None)


def test_small_packets_share_one_opportunity() -> None:
    link = Link(trace_of(10))  # one opportunity every 10 ms
    # 14 packets of 100 + 4 bytes = 1456 <= 1504 go in the opportunity at 10; the 15th does not.
    exits = [link.send(0, 100) for _ in range(15)]
    assert exits == [10] * 14 + [20]


def test_large_packet_spans_opportunities_and_remainder_waits() -> None:
    link = Link(trace_of(10))
    assert link.send(0, 1000) == 10  # 1004 bytes, 500 left in the opportunity at 10
    assert link.send(0, 1000) == 20  # 500 at 10, the remaining 504 at 20
    assert link.send(0, 4000) == 40  # 4004 bytes: 1000 left at 20, 1504 at 30, 1500 at 40
    assert link.send(0, 1) == 50  # 5 bytes: the 4 left at 40, the last byte at 50
    assert link.send(0, 1) == 50  # shares the 1503 bytes left at 50


def test_full_size_ip_packet_fills_exactly_one_opportunity() -> None:
    link = Link(trace_of(10))
    assert [link.send(0, FULL_IP_BYTES) for _ in range(3)] == [10, 20, 30]
    link = Link(trace_of(10))
    assert [link.send(0, FULL_IP_BYTES + 1) for _ in range(2)] == [20, 30]


def test_opportunities_on_an_empty_queue_are_wasted_not_banked() -> None:
    link = Link(trace_of(*range(1, 11)))  # 1 opportunity per ms, period 10
    assert link.send(5, FULL_IP_BYTES) == 6
    # 13 opportunities went by unused; two packets at 19 still leave one per opportunity.
    assert link.send(19, FULL_IP_BYTES) == 20
    assert link.send(19, FULL_IP_BYTES) == 21


def test_leftover_bytes_serve_only_packets_queued_before_that_opportunity() -> None:
    link = Link(trace_of(10))
    assert link.send(0, 100) == 10
    assert link.send(9, 100) == 10  # queued before the opportunity at 10: shares it
    assert link.send(10, 100) == 20  # arrives at 10: that opportunity is spent before enqueue


def test_every_packet_spends_at_least_one_ms_in_the_link() -> None:
    link = Link(trace_of(0, 0, 5, 5))
    assert link.send(0, 10) == 5  # the two opportunities at 0 are spent before it is queued
    assert link.send(5, 10) == 10  # those at 5 (and loop 1's 5 + 0) likewise: next is 5 + 5
    rng = np.random.default_rng(3)
    ops = np.sort(rng.integers(0, 50, size=40))
    ops[-1] = 50
    link = Link(Trace("dense", ops))
    arrivals = np.sort(rng.integers(0, 500, size=300))
    exits = link.send_batch(arrivals, rng.integers(1, 1501, size=300))
    assert np.all(exits - arrivals >= 1)


def test_trace_loops_with_period_equal_to_last_timestamp() -> None:
    link = Link(trace_of(2, 5))  # opportunities at 2, 5 | 7, 10 | 12, 15 ...
    assert [link.send(0, FULL_IP_BYTES) for _ in range(5)] == [2, 5, 7, 10, 12]
    # Idle for many loops: the first opportunity after 1003 is 1005 (loop 200 at 1000 + 5).
    assert link.send(1003, FULL_IP_BYTES) == 1005
    assert link.send(1003, FULL_IP_BYTES) == 1007


def test_loop_boundary_with_an_opportunity_at_zero() -> None:
    # ops [0, 3]: 0, 3 | 3, 6 | 6, 9: two opportunities at every multiple of 3 after 0.
    link = Link(trace_of(0, 3))
    assert [link.send(0, FULL_IP_BYTES) for _ in range(4)] == [3, 3, 6, 6]
    assert link.send(6, FULL_IP_BYTES) == 9


def test_packet_spanning_a_loop_wrap() -> None:
    link = Link(trace_of(4))  # period 4, one opportunity per loop
    assert link.send(1, 3 * OPP_BYTES - TUN_HEADER_BYTES) == 12  # opportunities 4, 8, 12


def test_droptail_counts_waiting_packets_not_the_one_in_transit() -> None:
    link = Link(trace_of(*range(1, 1001)), DropTail(limit_packets=2))
    # At ms 0 nothing has started: two may wait, the third is dropped.
    assert [link.send(0, FULL_IP_BYTES) for _ in range(3)] == [1, 2, DROPPED]
    # At ms 1 the first left and the second has started (in transit): one slot is free.
    assert [link.send(1, FULL_IP_BYTES) for _ in range(2)] == [3, DROPPED]
    assert link.dropped_packets == 2


def test_droptail_packet_half_sent_is_in_transit_not_waiting() -> None:
    link = Link(trace_of(10), DropTail(limit_packets=1))
    assert link.send(0, 2 * FULL_IP_BYTES) == 20  # starts at 10, finishes at 20
    # At ms 12 it is in transit (half sent): the queue is empty, so one packet may wait.
    assert link.send(12, FULL_IP_BYTES) == 30
    assert link.send(12, FULL_IP_BYTES) == DROPPED


def test_droptail_by_bytes_counts_the_tun_header() -> None:
    # Ten 100-byte IP packets are 10 * 104 = 1040 bytes in mahimahi's queue.
    link = Link(trace_of(10), DropTail(limit_bytes=1040))
    assert [link.send(0, 100) for _ in range(11)] == [10] * 10 + [DROPPED]
    link = Link(trace_of(10), DropTail(limit_bytes=1039))
    assert [link.send(0, 100) for _ in range(10)] == [10] * 9 + [DROPPED]


def test_droptail_dropped_packet_does_not_block_a_smaller_one() -> None:
    link = Link(trace_of(10), DropTail(limit_bytes=2000))
    assert link.send(0, 1400) == 10
    assert link.send(0, 1000) == DROPPED  # 1404 + 1004 > 2000
    assert link.send(0, 500) == 20  # 1404 + 504 <= 2000: 100 bytes at 10, the rest at 20


def test_droptail_needs_a_limit() -> None:
    with pytest.raises(ValueError):
        DropTail()
    with pytest.raises(ValueError):
        DropTail(limit_packets=-1)


def test_link_rejects_time_going_backwards() -> None:
    link = Link(trace_of(10))
    link.send(5, 100)
    with pytest.raises(ValueError):
        link.send(4, 100)


def test_send_batch_equals_send_one_by_one() -> None:
    rng = np.random.default_rng(11)
    arrivals = np.sort(rng.integers(0, 5000, size=6000))
    sizes = rng.integers(1, 1501, size=6000)
    trace = trace_of(*np.sort(rng.integers(1, 700, size=500)).tolist(), 700)
    one = Link(trace, DropTail(limit_packets=20))
    many = Link(trace, DropTail(limit_packets=20))
    expected = [one.send(int(a), int(s)) for a, s in zip(arrivals, sizes, strict=True)]
    assert many.send_batch(arrivals, sizes).tolist() == expected
    assert one.dropped_packets == many.dropped_packets > 0


def test_delay_adds_whole_ms_and_rejects_bad_values() -> None:
    delay = Delay(20)
    assert delay.send(7, 1500) == 27
    assert delay.send_batch(np.array([0, 5, 5]), np.array([1, 2, 3])).tolist() == [20, 25, 25]
    assert Delay(0).send(3, 1) == 3
    for bad in (-1, 2.5):
        with pytest.raises(ValueError):
            Delay(bad)


def test_loss_is_seeded_and_independent_of_call_style() -> None:
    n = 10_000
    arrivals = np.arange(n)
    sizes = np.full(n, 1200)
    a = Loss(0.3, seed=5)
    b = Loss(0.3, seed=5)
    one_by_one = [a.send(int(t), 1200) for t in arrivals]
    # Mixed batch sizes across draw-block boundaries read the same stream.
    parts = [b.send_batch(arrivals[i : i + 777], sizes[i : i + 777]) for i in range(0, n, 777)]
    assert np.concatenate(parts).tolist() == one_by_one
    other = Loss(0.3, seed=6).send_batch(arrivals, sizes)
    assert other.tolist() != one_by_one


def test_loss_rate_matches_probability() -> None:
    n = 200_000
    for p in (0.01, 0.1, 0.5):
        out = Loss(p, seed=1).send_batch(np.arange(n), np.full(n, 100))
        lost = np.count_nonzero(out == DROPPED) / n
        # 5 standard deviations of a binomial proportion.
        assert abs(lost - p) < 5 * np.sqrt(p * (1 - p) / n)
        survivors = out[out != DROPPED]
        assert np.array_equal(survivors, np.arange(n)[out != DROPPED])
    assert np.all(Loss(0.0, seed=1).send_batch(np.arange(100), np.ones(100)) >= 0)
    assert np.all(Loss(1.0, seed=1).send_batch(np.arange(100), np.ones(100)) == DROPPED)
    with pytest.raises(ValueError):
        Loss(1.5, seed=0)


def test_uplink_path_is_loss_then_link_then_delay() -> None:
    rng = np.random.default_rng(2)
    trace = trace_of(*np.sort(rng.integers(1, 500, size=300)).tolist(), 500)
    arrivals = np.sort(rng.integers(0, 3000, size=4000))
    sizes = rng.integers(100, 1501, size=4000)
    path = uplink_path(trace, delay_ms=30, loss_rate=0.2, queue=DropTail(limit_packets=25), seed=9)
    got = path.send_batch(arrivals, sizes)
    # The same thing by hand: survivors of the loss draws go through the link, then + 30 ms.
    kept = Loss(0.2, seed=9).send_batch(arrivals, sizes) != DROPPED
    link_exit = Link(trace, DropTail(limit_packets=25)).send_batch(arrivals[kept], sizes[kept])
    expected = np.full(arrivals.size, DROPPED)
    expected[kept] = np.where(link_exit == DROPPED, DROPPED, link_exit + 30)
    assert got.tolist() == expected.tolist()
    # Per-packet calls agree with the batch.
    again = uplink_path(trace, delay_ms=30, loss_rate=0.2, queue=DropTail(limit_packets=25), seed=9)
    one_by_one = [again.send(int(a), int(s)) for a, s in zip(arrivals, sizes, strict=True)]
    assert one_by_one == got.tolist()


def test_link_reads_the_trace_at_send_time_not_after_the_delay() -> None:
    # Capacity only in the first 100 ms of each 1000 ms loop: link-then-delay serves a packet sent
    # at 0 at once; delay-then-link would find the window closed and wait for the next loop.
    trace = trace_of(*range(1, 101), 1000)
    path = uplink_path(trace, delay_ms=200)
    assert path.send(0, FULL_IP_BYTES) == 201
    assert Path([Delay(200), Link(trace)]).send(0, FULL_IP_BYTES) == 1000


def test_feedback_path_has_delay_and_loss_but_no_rate_limit() -> None:
    path = feedback_path(delay_ms=20)
    out = path.send_batch(np.zeros(5000, dtype=np.int64), np.full(5000, 1500))
    assert np.all(out == 20)  # 60 Mbit in one ms: no link, nothing waits
    lossy = feedback_path(delay_ms=20, loss_rate=0.5, seed=3)
    out = np.array([lossy.send(t, 80) for t in range(4000)])
    assert 0.45 < np.mean(out == DROPPED) < 0.55
    assert np.all(out[out != DROPPED] == np.arange(4000)[out != DROPPED] + 20)


def test_path_send_agrees_with_batch_for_every_chain_shape() -> None:
    trace = trace_of(*range(2, 41, 2))  # one opportunity every 2 ms
    rng = np.random.default_rng(4)
    arrivals = np.sort(rng.integers(0, 2000, size=1500))
    sizes = rng.integers(100, 1501, size=1500)

    def shapes() -> list[list]:
        return [
            [Delay(7)],
            [Link(trace)],
            [Delay(3), Link(trace, DropTail(limit_packets=4)), Delay(5)],
            [Loss(0.1, 1), Link(trace, DropTail(limit_packets=4)), Loss(0.1, 2), Delay(5)],
        ]

    for one, many in zip(shapes(), shapes(), strict=True):
        path_one, path_many = Path(one), Path(many)
        by_packet = [path_one.send(int(a), int(s)) for a, s in zip(arrivals, sizes, strict=True)]
        assert path_many.send_batch(arrivals, sizes).tolist() == by_packet
    assert Path([Delay(7)]).send(5, 100) == 12
    lossy = Path(shapes()[3])
    lossy.send_batch(arrivals, sizes)
    assert lossy.stage(Link).dropped_packets > 0
    assert lossy.stage(Loss).lost_packets > 0
