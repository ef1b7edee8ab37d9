"""Fuzzing the transport-cc path: bytes either parse or raise the parser's own error, never more.

Arbitrary bytes and mutated valid packets (truncated, padded, oversized status counts, bad chunk
types, negative and huge deltas, sequence and reference-time wrap, lying length and padding
fields) go through the parser; whatever parses goes on through the sender's adapter and a
guarded GCC (:mod:`bench.fuzz_feedback` holds the chain; its script runs the long version).
"""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.fuzz_feedback import (
    FeedbackChain,
    FuzzStats,
    check_packet,
    mutate,
    run_generated,
    valid_packet,
)
from rtc.transport_feedback import (
    TransportCcFeedback,
    TransportFeedbackError,
    build_rtcp,
    parse_fci,
    parse_rtcp,
)

FUZZ = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def chain() -> FeedbackChain:
    # One chain for many inputs: its adapter and controller state carry across them, as in a
    # session that keeps receiving garbage.
    return FeedbackChain()


def _assert_clean(stats: FuzzStats) -> None:
    assert not stats.failures, stats.failures[0]


@FUZZ
@given(data=st.binary(max_size=200), whole=st.booleans())
def test_arbitrary_bytes(chain: FeedbackChain, data: bytes, whole: bool) -> None:
    stats = FuzzStats()
    check_packet(data, chain, stats, whole)
    _assert_clean(stats)


@FUZZ
@given(seed=st.integers(0, 2**32 - 1), n_mutations=st.integers(0, 4), whole=st.booleans())
def test_mutated_valid_packets(
    chain: FeedbackChain, seed: int, n_mutations: int, whole: bool
) -> None:
    rng = random.Random(seed)
    pkt = valid_packet(rng)
    for _ in range(n_mutations):
        pkt = mutate(pkt, rng)
    stats = FuzzStats()
    check_packet(pkt if whole else pkt[4:], chain, stats, whole)
    _assert_clean(stats)


@FUZZ
@given(
    base=st.integers(0, 65_535),
    count=st.integers(1, 65_535),
    ref=st.integers(0, (1 << 24) - 1),
    chunks=st.lists(st.integers(0, 0xFFFF), max_size=12),
    deltas=st.binary(max_size=40),
)
def test_hand_built_bodies(
    chain: FeedbackChain, base: int, count: int, ref: int, chunks: list[int], deltas: bytes
) -> None:
    """Any status count against any chunks and deltas: the field-level corner cases."""
    body = struct.pack("!IIHHI", 1, 2, base, count, ref << 8) + b"".join(
        struct.pack("!H", c) for c in chunks
    )
    stats = FuzzStats()
    check_packet(body + deltas, chain, stats, whole=False)
    _assert_clean(stats)


def test_generated_run_counts_everything() -> None:
    """The long script's generator, shortly: counts add up and nothing fails."""
    stats = run_generated(2_000, seed=7)
    _assert_clean(stats)
    assert stats.inputs == 2_000
    assert stats.parsed + stats.rejected == stats.inputs
    # The mix reaches every stage: rejections, parses, and reports to the controller.
    assert stats.rejected > 100 and stats.parsed > 100 and stats.reports > 10


@pytest.mark.parametrize(
    "body",
    [
        # 65535 statuses announced, one run-length chunk of 8191 "not received": truncated.
        struct.pack("!IIHHIH", 1, 2, 0, 0xFFFF, 0, 0x1FFF),
        # Statuses all "large delta" but no delta bytes.
        struct.pack("!IIHHIH", 1, 2, 0, 7, 0, 0xC000 | 0x2AAA),
        # A negative first delta from reference time 0.
        struct.pack("!IIHHIHh", 1, 2, 0, 1, 0, 0x4001, -0x8000) + b"\x00",
    ],
)
def test_field_corner_cases_parse_or_raise_own_error(body: bytes) -> None:
    try:
        fb = parse_fci(body)
    except TransportFeedbackError:
        return
    assert 1 <= fb.status_count <= 0xFFFF


def test_negative_first_delta_gives_a_time_the_adapter_can_carry() -> None:
    """reference time 0 and a delta of -8.192 s: the arrival is negative, not NOT_RECEIVED."""
    body = struct.pack("!IIHHIHh", 1, 2, 0, 1, 0, 0x4001, -0x8000) + b"\x00"
    fb = parse_fci(body)
    assert fb.arrival_us == (-0x8000 * 250,)
    chain = FeedbackChain()
    stats = FuzzStats()
    check_packet(body, chain, stats, whole=False)
    _assert_clean(stats)
    # The guard refuses a negative receive time (only -1 has a meaning: not received).
    assert chain.controller.stats.bad_arrival_packets == 1


def test_wrapped_sequence_numbers_reach_the_controller_in_order() -> None:
    chain = FeedbackChain()
    # The history holds 0..2999; a report whose base is 65535 covers 65535 (unknown), 0, 1, 2.
    fb = TransportCcFeedback(1, 2, 65_535, 0, 0, (None, 1_000, 2_000, 3_000))
    report = chain.adapter.on_feedback(parse_rtcp(build_rtcp(fb)), chain.now_us)
    assert report is not None
    assert report.seq.tolist() == [0, 1, 2]
    assert chain.adapter.unknown_packets == 1
