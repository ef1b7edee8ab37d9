"""Transport-cc feedback: build/parse round trips, padding, wrap-around, malformed input."""

from __future__ import annotations

import contextlib
import itertools
import json
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtc.transport_feedback import (
    REFERENCE_TIME_MOD,
    TransportCcFeedback,
    TransportFeedbackError,
    Unwrapper,
    build_rtcp,
    parse_fci,
    parse_rtcp,
    reference_time_for,
    sequence_unwrapper,
)

FIXTURES = Path(__file__).parent / "fixtures"


def feedback(base_seq: int, arrivals: list[int | None], count: int = 7) -> TransportCcFeedback:
    first = next((t for t in arrivals if t is not None), 0)
    return TransportCcFeedback(
        sender_ssrc=0x11223344,
        media_ssrc=0x55667788,
        base_seq=base_seq,
        reference_time=reference_time_for(first),
        feedback_count=count,
        arrival_us=tuple(arrivals),
    )


def rounded(arrivals: list[int | None]) -> tuple[int | None, ...]:
    return tuple(None if t is None else (t + 125) // 250 * 250 for t in arrivals)


def test_round_trip_small_deltas_and_losses() -> None:
    arrivals = [1_000_000, 1_001_000, None, 1_004_250, None, None, 1_010_000]
    pkt = build_rtcp(feedback(100, arrivals))
    assert len(pkt) % 4 == 0
    fb = parse_rtcp(pkt)
    assert fb.base_seq == 100 and fb.feedback_count == 7
    assert fb.sender_ssrc == 0x11223344 and fb.media_ssrc == 0x55667788
    assert fb.arrival_us == rounded(arrivals)
    assert fb.received_count == 4


def test_padded_packet_sets_p_bit_and_parses() -> None:
    # One received packet: 16 fixed + 2 chunk + 1 delta = 19 bytes of body -> 1 byte padding.
    pkt = build_rtcp(feedback(5, [640_000]))
    assert pkt[0] & 0x20, "padding bit must be set when the body is not 32-bit aligned"
    assert pkt[-1] == 1
    assert parse_rtcp(pkt).arrival_us == (640_000,)
    # aiortc hands the parser the body with the padding removed: not a multiple of 4.
    body = pkt[4 : len(pkt) - pkt[-1]]
    assert len(body) % 4 != 0
    assert parse_fci(body).arrival_us == (640_000,)


def test_zero_padding_without_p_bit_is_accepted() -> None:
    pkt = build_rtcp(feedback(5, [640_000]))
    body = pkt[4 : len(pkt) - pkt[-1]] + b"\x00"
    assert parse_fci(body).arrival_us == (640_000,)


def test_sequence_numbers_wrap() -> None:
    arrivals = [2_000_000 + 1000 * i for i in range(12)]
    fb = parse_rtcp(build_rtcp(feedback(65_530, arrivals)))
    seqs = [s for s, _ in fb.packets()]
    assert seqs == [65_530, 65_531, 65_532, 65_533, 65_534, 65_535, 0, 1, 2, 3, 4, 5]


def test_large_and_negative_deltas() -> None:
    # A 100 ms gap (large positive) and a reordered packet that arrived 3 ms earlier.
    arrivals = [5_000_000, 5_100_000, 5_097_000, 5_098_000]
    pkt = build_rtcp(feedback(10, arrivals))
    assert parse_rtcp(pkt).arrival_us == rounded(arrivals)


def test_delta_beyond_16_bits_is_refused() -> None:
    with pytest.raises(TransportFeedbackError, match="does not fit"):
        build_rtcp(feedback(0, [1_000_000, 1_000_000 + 9_000_000]))


def test_long_runs_use_run_length_chunks() -> None:
    arrivals: list[int | None] = [None] * 300 + [3_000_000 + 500 * i for i in range(200)]
    pkt = build_rtcp(feedback(1000, arrivals))
    # Two run-length chunks, 200 one-byte deltas: far smaller than 500 statuses as vectors.
    assert len(pkt) <= 4 + 16 + 2 * 2 + 200 + 3
    assert parse_rtcp(pkt).arrival_us == rounded(arrivals)


def test_reference_time_wraps_at_24_bits() -> None:
    epoch_us = REFERENCE_TIME_MOD * 64_000
    t = epoch_us - 64_000 + 10_000  # the last reference tick of the epoch
    fb = feedback(0, [t])
    assert fb.reference_time == REFERENCE_TIME_MOD - 1
    assert parse_rtcp(build_rtcp(fb)).arrival_us == (t,)
    u = Unwrapper(24)
    assert u.unwrap(REFERENCE_TIME_MOD - 1) == REFERENCE_TIME_MOD - 1
    assert u.unwrap(0) == REFERENCE_TIME_MOD
    assert u.unwrap(REFERENCE_TIME_MOD - 2) == REFERENCE_TIME_MOD - 2


def test_sequence_unwrapper_forwards_backwards_and_across_wrap() -> None:
    u = sequence_unwrapper()
    assert [u.unwrap(s) for s in (65_534, 65_535, 0, 1, 65_535, 3)] == [
        65_534,
        65_535,
        65_536,
        65_537,
        65_535,
        65_539,
    ]
    with pytest.raises(ValueError):
        u.unwrap(65_536)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "too short"),
        (bytes(15), "too short"),
        (struct.pack("!IIHHI", 1, 2, 0, 0, 0), "no packets"),
        (struct.pack("!IIHHI", 1, 2, 0, 3, 0), "truncated in the status chunks"),
        (struct.pack("!IIHHIH", 1, 2, 0, 3, 0, 0x2003), "truncated in the receive deltas"),
        (struct.pack("!IIHHIH", 1, 2, 0, 3, 0, 0x6003), "reserved symbol"),
        (struct.pack("!IIHHIH", 1, 2, 0, 1, 0, 0xF000), "reserved symbol"),
        (struct.pack("!IIHHIHB", 1, 2, 0, 1, 0, 0x2001, 4) + b"\x00\x00\x00\x07", "unexpected"),
    ],
)
def test_malformed_input_raises_the_specific_error(body: bytes, message: str) -> None:
    with pytest.raises(TransportFeedbackError, match=message):
        parse_fci(body)


def test_malformed_rtcp_header() -> None:
    good = build_rtcp(feedback(0, [1_000_000, 1_002_000]))
    with pytest.raises(TransportFeedbackError, match="not a transport-cc"):
        parse_rtcp(good[:1] + bytes([206]) + good[2:])
    with pytest.raises(TransportFeedbackError, match="length field"):
        parse_rtcp(good[:-4])
    with pytest.raises(TransportFeedbackError, match="version"):
        parse_rtcp(bytes([good[0] & 0x3F]) + good[1:])


arrival_lists = st.lists(
    st.one_of(st.none(), st.integers(min_value=-4_000_000, max_value=4_000_000)),
    min_size=1,
    max_size=600,
)


@settings(max_examples=200, deadline=None)
@given(
    base=st.integers(0, 65_535),
    start=st.integers(10_000_000, 10**12),
    offsets=arrival_lists,
)
def test_round_trip_property(base: int, start: int, offsets: list[int | None]) -> None:
    """Any arrival pattern whose consecutive gaps fit 16 bits survives build and parse."""
    arrivals = [None if o is None else start + o for o in offsets]
    try:
        pkt = build_rtcp(feedback(base, arrivals))
    except TransportFeedbackError:
        return  # a gap of more than 8 s between neighbours: the caller must split
    fb = parse_rtcp(pkt)
    assert fb.base_seq == base
    epoch = REFERENCE_TIME_MOD * 64_000
    first = next((t for t in arrivals if t is not None), None)
    shift = (first // epoch) * epoch if first is not None else 0
    got = [None if t is None else t + shift for t in fb.arrival_us]
    assert tuple(got) == rounded(arrivals) or first is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_random_bytes_never_crash_the_parser(data: bytes) -> None:
    with contextlib.suppress(TransportFeedbackError):
        parse_fci(data)


def test_packets_captured_from_chromium() -> None:
    """Real transport-cc packets Chromium 156 sent to an aiortc sender (decrypted)."""
    fixture = json.loads((FIXTURES / "chromium_transport_cc.json").read_text())
    packets = [bytes.fromhex(h) for h in fixture["transport_cc_packets"]]
    assert len(packets) >= 10
    padded = 0
    counts = []
    for pkt in packets:
        fb = parse_rtcp(pkt)
        padded += bool(pkt[0] & 0x20)
        counts.append(fb.feedback_count)
        assert fb.status_count >= 1
        # Every packet Chromium built must come out of our builder bit for bit when its
        # content is rebuilt, except for chunk choices; so compare parsed content instead.
        again = parse_rtcp(build_rtcp(fb))
        assert again.arrival_us == fb.arrival_us and again.base_seq == fb.base_seq
    assert padded > 0, "Chromium pads most transport-cc packets; the fixture should show it"
    # Feedback packet counts increase by one per packet (mod 256).
    assert all((b - a) % 256 == 1 for a, b in itertools.pairwise(counts))
    # Consecutive reports continue the sequence space without gaps.
    fbs = [parse_rtcp(p) for p in packets]
    for a, b in itertools.pairwise(fbs):
        assert (a.base_seq + a.status_count) % 65_536 == b.base_seq
