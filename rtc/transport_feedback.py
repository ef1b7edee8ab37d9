"""Transport-wide congestion-control feedback (RTCP RTPFB, FMT=15): build and parse.

The wire format is draft-holmer-rmcat-transport-wide-cc-extensions-01 as libwebrtc implements it
(``modules/rtp_rtcp/source/rtcp_packet/transport_feedback.cc``); see
``shared/docs/gcc-reference.md`` section D. After the common RTCP header and the two SSRCs:

* base sequence number (16 bits), packet status count (16 bits), reference time (24 bits,
  units of 64 ms, unsigned and wrapping as in libwebrtc), feedback packet count (8 bits);
* packet status chunks, 16 bits each: run-length ``0|S(2)|run(13)``, or status vector
  ``1|s|symbols`` with 14 one-bit symbols (s=0: 0 not received, 1 received with a small delta)
  or 7 two-bit symbols (s=1: 00 not received, 01 small delta, 10 large or negative delta);
* one receive delta per received packet, in 250 us ticks: uint8 for a small delta, int16 for a
  large one; the first is relative to the reference time, each later one to the previous
  received packet;
* padding to a 32-bit boundary. libwebrtc sets the RTCP P bit and puts the padding count in the
  last byte; zero bytes after the deltas are accepted as well.

Malformed input raises :class:`TransportFeedbackError` (a ``ValueError``), never an
``IndexError`` or ``struct.error``: the parser checks every length before it reads.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

RTCP_VERSION = 2
RTCP_RTPFB_PT = 205
TRANSPORT_CC_FMT = 15
RTCP_HEADER_BYTES = 4
#: Sender SSRC, media SSRC, base seq, status count, reference time + feedback count.
FIXED_FCI_BYTES = 16

DELTA_TICK_US = 250
REFERENCE_TICK_US = 64_000
REFERENCE_TIME_BITS = 24
REFERENCE_TIME_MOD = 1 << REFERENCE_TIME_BITS
SEQ_MOD = 1 << 16
FEEDBACK_COUNT_MOD = 1 << 8

SMALL_DELTA_MAX_TICKS = 0xFF
LARGE_DELTA_MIN_TICKS = -0x8000
LARGE_DELTA_MAX_TICKS = 0x7FFF
RUN_LENGTH_MAX = 0x1FFF
ONE_BIT_VECTOR_SYMBOLS = 14
TWO_BIT_VECTOR_SYMBOLS = 7
#: libwebrtc's kMaxReportedPackets: the status count field is 16 bits.
MAX_STATUS_COUNT = 0xFFFF

NOT_RECEIVED = 0
SMALL_DELTA = 1
LARGE_DELTA = 2
RESERVED_SYMBOL = 3


class TransportFeedbackError(ValueError):
    """A transport-cc packet that cannot be parsed or built; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class TransportCcFeedback:
    """One parsed (or to-be-built) transport-cc feedback packet.

    ``arrival_us`` has one entry per reported packet, for sequence numbers ``base_seq``,
    ``base_seq + 1``, ... (mod 2^16): ``None`` for a packet reported as not received, else its
    arrival time in microseconds on the receiver's clock, counted from reference time 0 of the
    current 24-bit epoch (so that ``reference_time * 64 ms <= first arrival`` up to the delta
    range). Times are multiples of 250 us, the format's resolution.
    """

    sender_ssrc: int
    media_ssrc: int
    base_seq: int
    reference_time: int
    feedback_count: int
    arrival_us: tuple[int | None, ...]

    @property
    def status_count(self) -> int:
        return len(self.arrival_us)

    @property
    def reference_time_us(self) -> int:
        return self.reference_time * REFERENCE_TICK_US

    def packets(self) -> list[tuple[int, int | None]]:
        """(16-bit sequence number, arrival us or None) for every reported packet."""
        base = self.base_seq
        return [((base + i) % SEQ_MOD, t) for i, t in enumerate(self.arrival_us)]

    @property
    def received_count(self) -> int:
        return sum(1 for t in self.arrival_us if t is not None)


# -- parsing ------------------------------------------------------------------------------------
def parse_fci(data: bytes) -> TransportCcFeedback:
    """Parse the body of a transport-cc packet: everything after the 4-byte RTCP header.

    This is what aiortc's RTCP parser hands a feedback parser (RTCP padding already removed);
    up to three trailing zero bytes of padding are accepted.
    """
    n = len(data)
    if n < FIXED_FCI_BYTES:
        raise TransportFeedbackError(
            f"transport-cc packet too short: {n} bytes, need at least {FIXED_FCI_BYTES}"
        )
    sender_ssrc, media_ssrc, base_seq, status_count, ref_and_count = struct.unpack_from(
        "!IIHHI", data, 0
    )
    reference_time = ref_and_count >> 8
    feedback_count = ref_and_count & 0xFF
    if status_count == 0:
        raise TransportFeedbackError("transport-cc packet reports no packets (status count 0)")
    pos = FIXED_FCI_BYTES

    # Status chunks until status_count symbols are known.
    symbols: list[int] = []
    while len(symbols) < status_count:
        if pos + 2 > n:
            raise TransportFeedbackError(
                f"transport-cc packet truncated in the status chunks: {len(symbols)} of "
                f"{status_count} statuses read at byte {pos}"
            )
        chunk = (data[pos] << 8) | data[pos + 1]
        pos += 2
        left = status_count - len(symbols)
        if chunk & 0x8000 == 0:
            symbol = (chunk >> 13) & 0x3
            if symbol == RESERVED_SYMBOL:
                raise TransportFeedbackError("transport-cc run-length chunk with reserved symbol")
            run = chunk & RUN_LENGTH_MAX
            symbols.extend([symbol] * min(run, left))
        elif chunk & 0x4000 == 0:
            for i in range(min(ONE_BIT_VECTOR_SYMBOLS, left)):
                symbols.append((chunk >> (ONE_BIT_VECTOR_SYMBOLS - 1 - i)) & 0x1)
        else:
            for i in range(min(TWO_BIT_VECTOR_SYMBOLS, left)):
                symbol = (chunk >> (2 * (TWO_BIT_VECTOR_SYMBOLS - 1 - i))) & 0x3
                if symbol == RESERVED_SYMBOL:
                    raise TransportFeedbackError(
                        "transport-cc status vector chunk with reserved symbol"
                    )
                symbols.append(symbol)

    # Receive deltas.
    t_ticks = reference_time * (REFERENCE_TICK_US // DELTA_TICK_US)
    arrivals: list[int | None] = []
    for symbol in symbols:
        if symbol == NOT_RECEIVED:
            arrivals.append(None)
            continue
        if symbol == SMALL_DELTA:
            if pos + 1 > n:
                raise TransportFeedbackError(
                    f"transport-cc packet truncated in the receive deltas at byte {pos}"
                )
            t_ticks += data[pos]
            pos += 1
        else:
            if pos + 2 > n:
                raise TransportFeedbackError(
                    f"transport-cc packet truncated in the receive deltas at byte {pos}"
                )
            t_ticks += struct.unpack_from("!h", data, pos)[0]
            pos += 2
        arrivals.append(t_ticks * DELTA_TICK_US)

    rest = data[pos:]
    if len(rest) > 3 or any(rest):
        raise TransportFeedbackError(
            f"transport-cc packet has {len(rest)} unexpected bytes after the receive deltas"
        )
    return TransportCcFeedback(
        sender_ssrc=sender_ssrc,
        media_ssrc=media_ssrc,
        base_seq=base_seq,
        reference_time=reference_time,
        feedback_count=feedback_count,
        arrival_us=tuple(arrivals),
    )


def parse_rtcp(packet: bytes) -> TransportCcFeedback:
    """Parse one whole RTCP transport-cc packet (header included, RFC 3550 padding allowed)."""
    n = len(packet)
    if n < RTCP_HEADER_BYTES:
        raise TransportFeedbackError(f"RTCP packet too short: {n} bytes")
    first, pt, length_words = struct.unpack_from("!BBH", packet, 0)
    if first >> 6 != RTCP_VERSION:
        raise TransportFeedbackError(f"RTCP version {first >> 6}, expected {RTCP_VERSION}")
    if pt != RTCP_RTPFB_PT or first & 0x1F != TRANSPORT_CC_FMT:
        raise TransportFeedbackError(
            f"not a transport-cc packet: PT {pt}, FMT {first & 0x1F} (want 205/15)"
        )
    end = RTCP_HEADER_BYTES + 4 * length_words
    if end > n:
        raise TransportFeedbackError(f"RTCP length field says {end} bytes, packet has {n}")
    body = packet[RTCP_HEADER_BYTES:end]
    if first & 0x20:
        pad = body[-1] if body else 0
        if pad == 0 or pad > len(body):
            raise TransportFeedbackError(f"RTCP padding count {pad} is invalid")
        body = body[:-pad]
    return parse_fci(body)


# -- building ------------------------------------------------------------------------------------
def _encode_chunks(symbols: Sequence[int]) -> bytes:
    """Status chunks for ``symbols``: run-length where a run is long, else the densest vector."""
    out = bytearray()
    i, n = 0, len(symbols)
    while i < n:
        s = symbols[i]
        run = 1
        while i + run < n and symbols[i + run] == s and run < RUN_LENGTH_MAX:
            run += 1
        window14 = symbols[i : i + ONE_BIT_VECTOR_SYMBOLS]
        has_large = LARGE_DELTA in window14
        # A run-length chunk wins when no vector would cover as many symbols.
        if (
            run >= ONE_BIT_VECTOR_SYMBOLS
            or run == n - i
            or (has_large and run >= TWO_BIT_VECTOR_SYMBOLS)
        ):
            chunk = (s << 13) | run
            i += run
        elif not has_large:
            chunk = 0x8000
            for k, sym in enumerate(window14):
                chunk |= sym << (ONE_BIT_VECTOR_SYMBOLS - 1 - k)
            i += len(window14)
        else:
            chunk = 0xC000
            for k, sym in enumerate(symbols[i : i + TWO_BIT_VECTOR_SYMBOLS]):
                chunk |= sym << (2 * (TWO_BIT_VECTOR_SYMBOLS - 1 - k))
            i += TWO_BIT_VECTOR_SYMBOLS
        out += struct.pack("!H", chunk)
    return bytes(out)


def build_rtcp(feedback: TransportCcFeedback) -> bytes:
    """Serialise ``feedback`` into one RTCP packet, padded as libwebrtc pads (P bit set).

    Arrival times are rounded to 250 us ticks against the running rounded time, so rounding
    never accumulates. Raises :class:`TransportFeedbackError` when a delta does not fit the
    format (more than about 8 s apart or negative by more than that): the caller must then
    split its report, as libwebrtc does.
    """
    count = len(feedback.arrival_us)
    if not 0 < count <= MAX_STATUS_COUNT:
        raise TransportFeedbackError(f"a transport-cc packet reports 1..65535 packets, not {count}")
    if not 0 <= feedback.reference_time < REFERENCE_TIME_MOD:
        raise TransportFeedbackError(f"reference time {feedback.reference_time} is not 24-bit")
    ticks_per_ref = REFERENCE_TICK_US // DELTA_TICK_US
    last_ticks = feedback.reference_time * ticks_per_ref
    symbols: list[int] = []
    deltas = bytearray()
    for t_us in feedback.arrival_us:
        if t_us is None:
            symbols.append(NOT_RECEIVED)
            continue
        ticks = (t_us + DELTA_TICK_US // 2) // DELTA_TICK_US
        delta = ticks - last_ticks
        if 0 <= delta <= SMALL_DELTA_MAX_TICKS:
            symbols.append(SMALL_DELTA)
            deltas.append(delta)
        elif LARGE_DELTA_MIN_TICKS <= delta <= LARGE_DELTA_MAX_TICKS:
            symbols.append(LARGE_DELTA)
            deltas += struct.pack("!h", delta)
        else:
            raise TransportFeedbackError(
                f"receive delta of {delta * DELTA_TICK_US} us does not fit in 16 bits of 250 us"
            )
        last_ticks = ticks
    body = (
        struct.pack(
            "!IIHHI",
            feedback.sender_ssrc,
            feedback.media_ssrc,
            feedback.base_seq % SEQ_MOD,
            count,
            (feedback.reference_time << 8) | (feedback.feedback_count % FEEDBACK_COUNT_MOD),
        )
        + _encode_chunks(symbols)
        + bytes(deltas)
    )
    pad = -len(body) % 4
    first = (RTCP_VERSION << 6) | TRANSPORT_CC_FMT
    if pad:
        first |= 0x20
        body += bytes(pad - 1) + bytes([pad])
    return struct.pack("!BBH", first, RTCP_RTPFB_PT, len(body) // 4) + body


def reference_time_for(first_arrival_us: int) -> int:
    """The 24-bit reference time a report whose first received packet arrived then should use."""
    return (first_arrival_us // REFERENCE_TICK_US) % REFERENCE_TIME_MOD


# -- unwrapping ---------------------------------------------------------------------------------
class Unwrapper:
    """Turns a wrapping ``bits``-bit counter into a non-wrapping integer (libwebrtc's
    ``SeqNumUnwrapper``): each value is placed nearest to the previous one, so a step backwards
    of less than half the range is a step backwards, not a wrap."""

    __slots__ = ("_half", "_last", "_mod")

    def __init__(self, bits: int) -> None:
        self._mod = 1 << bits
        self._half = self._mod // 2
        self._last: int | None = None

    def unwrap(self, value: int) -> int:
        if not 0 <= value < self._mod:
            raise ValueError(f"Unwrapper: {value} is outside [0, {self._mod})")
        last = self._last
        if last is None:
            self._last = value
            return value
        diff = (value - last) % self._mod
        if diff >= self._half:
            diff -= self._mod
        self._last = last + diff
        return self._last

    @property
    def last(self) -> int | None:
        return self._last


def sequence_unwrapper() -> Unwrapper:
    """An unwrapper for 16-bit transport-wide (or RTP) sequence numbers."""
    return Unwrapper(16)


def reference_time_unwrapper() -> Unwrapper:
    """An unwrapper for the 24-bit reference time (wraps every 2^24 x 64 ms, about 12.4 days)."""
    return Unwrapper(REFERENCE_TIME_BITS)
