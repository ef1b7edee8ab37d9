"""The pacer's rules (loki.emu.pacer), on hand-worked cases."""

import itertools
import math

import pytest

from loki.api import NO_PROBE, ProbeCluster
from loki.emu.pacer import PACE_MULTIPLIER, PROBE_PACKET_IP_BYTES, Pacer


def drain(pacer: Pacer, until_us: int, now: int = 0) -> list[tuple[int, tuple[int, ...]]]:
    """(send time, packet) of everything the pacer sends up to ``until_us``, each pace event
    at the whole microsecond after the pacer's send time (as the emulator runs it)."""
    out = []
    while True:
        pkt = pacer.pop_due(now)
        if pkt is not None:
            out.append((now, pkt))
            continue
        t = pacer.next_send_us(now)
        if t is None or t > until_us:
            return out
        now = max(now, math.ceil(t))


def test_packets_leave_at_the_pacing_rate():
    pacer = Pacer(0)
    pacer.set_target(1_000_000)  # paced at 2.5 Mbps: a 1250-byte packet every 4 ms
    assert pacer.pacing_rate_bps == PACE_MULTIPLIER * 1_000_000
    for seq in range(5):
        pacer.enqueue((1250, seq, 0, NO_PROBE), 0)
    sent = drain(pacer, 1_000_000)
    assert [t for t, _ in sent] == [0, 4000, 8000, 12000, 16000]
    assert [p[1] for _, p in sent] == [0, 1, 2, 3, 4]
    assert pacer.queue_packets == 0 and pacer.queue_bytes == 0


def test_an_idle_pacer_catches_up_at_most_the_burst_budget():
    pacer = Pacer(0)
    pacer.set_target(1_000_000)
    for seq in range(4):
        pacer.enqueue((1250, seq, 0, NO_PROBE), 100_000)
    # Idle since 0: the send clock moves to 5 ms before now, so 5 ms of packets leave at once.
    sent = drain(pacer, 1_000_000, now=100_000)
    assert [t for t, _ in sent] == [100_000, 100_000, 103_000, 107_000]


def test_retransmissions_go_before_queued_media():
    pacer = Pacer(0)
    pacer.set_target(1_000_000)
    pacer.enqueue((1000, 10, 1, NO_PROBE), 0)
    pacer.enqueue((1000, 11, 1, NO_PROBE), 0)
    pacer.enqueue_retransmission((900, 3, 0, NO_PROBE), 0)
    order = [p[1] for _, p in drain(pacer, 1_000_000)]
    assert order == [3, 10, 11]


def test_a_long_queue_is_paced_to_drain_in_two_seconds():
    pacer = Pacer(0)
    pacer.set_target(100_000)  # 250 kbps of pacing would take 80 s for 2.5 MB
    for seq in range(2000):
        pacer.enqueue((1250, seq, seq // 10, NO_PROBE), 0)
    sent = drain(pacer, 3_000_000)
    # After the first packet 1999 x 1250 bytes wait: a drain rate of that over 2 s, 9.995
    # Mbps, spaces the next one 1000.5 us later (the event at the next whole us).
    assert sent[1][0] == 1001
    # The rate falls with the queue, down to the pacing rate: far more than the 75 packets
    # 250 kbps would send in 3 s.
    assert 1500 < len(sent) < 2000


def test_probe_cluster_is_sent_at_its_own_rate_as_padding():
    pacer = Pacer(0)
    pacer.set_target(500_000)
    cluster = ProbeCluster(id=7, at_us=10_000, target_bps=4_000_000, min_probes=5)
    pacer.add_probe_cluster(cluster)
    sent = drain(pacer, 100_000)
    probes = [(t, p) for t, p in sent if p[3] == 7]
    n_needed = max(cluster.min_probes, -(-cluster.min_bytes // PROBE_PACKET_IP_BYTES))
    assert len(probes) == n_needed
    assert all(p == (PROBE_PACKET_IP_BYTES, -1, -1, 7) for _, p in probes)
    gaps = {b - a for (a, _), (b, _) in itertools.pairwise(probes)}
    spacing_us = PROBE_PACKET_IP_BYTES * 8e6 / 4_000_000
    assert probes[0][0] == 10_000
    assert all(abs(g - spacing_us) <= 1 for g in gaps)


def test_queues_grow_past_their_initial_rings_in_order():
    pacer = Pacer(0)
    pacer.set_target(50_000_000)
    for seq in range(300):
        pacer.enqueue((200, seq, 0, NO_PROBE), 0)
        if seq % 3 == 0:
            pacer.enqueue_retransmission((100, -seq, 0, NO_PROBE), 0)
    generation = pacer.generation
    assert generation > 0  # both rings were replaced by larger ones
    order = [p[1] for _, p in drain(pacer, 10_000_000)]
    assert order == [-s for s in range(0, 300, 3)] + list(range(300))


@pytest.mark.parametrize("n", [1, 63, 64, 65, 200])
def test_media_reservation_keeps_the_queue(n: int):
    pacer = Pacer(0)
    pacer.set_target(1_000_000)
    for seq in range(40):
        pacer.enqueue((100, seq, 0, NO_PROBE), 0)
    pacer.pop_due(0)
    pacer.reserve_media(n)
    assert pacer.media.shape[0] >= 39 + n
    assert [p[1] for _, p in drain(pacer, 10_000_000)] == list(range(1, 40))
