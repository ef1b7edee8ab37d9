"""The live receiver's frame buffer: frame rules, and loki.receive's policies wired as the
emulator wires them (NACK at once and every RTT, PLI after 3 s or NACK give-up, playout timing).
"""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("aiortc")

from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.rtp import RtpPacket

from loki.receive import PlayoutTiming
from loki.receive.keyframe_request import KEYFRAME_WAIT_US, MAX_WAIT_FOR_FRAME_US
from loki.receive.nack_requester import DEFAULT_RTT_US, MAX_NACK_RETRIES
from loki.receive.timing import OS_JITTER_US
from rtc import aiortc_patch
from rtc.aiortc_receiver import AiortcReceiver
from rtc.frame_assembler import FrameAssembler

PT = 96
SSRC = 4242
FRAME_US = 33_333
TICK_US = 20_000
START_US = 5_000_000  # the live clock is far from zero


class Stream:
    """VP8 frames packetised as aiortc's sender does (descriptor, marker, picture id)."""

    def __init__(self, first_seq: int = 1000, first_ts: int = 90_000) -> None:
        self.seq = first_seq
        self.ts = first_ts
        self.pid = 7

    def frame(self, npkts: int = 2, key: bool = False) -> list[RtpPacket]:
        out = []
        for i in range(npkts):
            desc = VpxPayloadDescriptor(partition_start=int(i == 0), partition_id=0)
            desc.picture_id = self.pid
            p = RtpPacket(
                payload_type=PT,
                marker=int(i == npkts - 1),
                sequence_number=self.seq % 65536,
                timestamp=self.ts % (1 << 32),
                ssrc=SSRC,
                payload=bytes(desc) + b"x" * 20,
            )
            # VP8 payload header: bit 0 clear on a keyframe's first packet (RFC 7741 4.3).
            first = b"\x00" if key else b"\x01"
            p._data = (first if i == 0 else b"\x01") + b"v" * 99  # type: ignore[attr-defined]
            out.append(p)
            self.seq += 1
        self.ts += 3000
        self.pid = (self.pid + 1) % (1 << 15)
        return out


class Harness:
    def __init__(self, first_seq: int = 1000) -> None:
        self.now = START_US
        self.nacks: list[list[int]] = []
        self.delivered: list[tuple[int, int]] = []
        self.fa = FrameAssembler(
            lambda: self.now,
            deliver=lambda f, pt: self.delivered.append((f.timestamp, pt)),
            send_nack=self.nacks.append,
        )
        self.stream = Stream(first_seq)
        self.plis: list[int] = []
        self.retries: list[tuple[int, list[int]]] = []
        self._next_tick = START_US + TICK_US

    def advance(self, until_us: int) -> None:
        """Run the 20 ms receiver timer up to ``until_us``."""
        while self._next_tick <= until_us:
            self.now = self._next_tick
            due, pli = self.fa.tick(self.now)
            if due:
                self.retries.append((self.now, due))
            if pli:
                self.plis.append(self.now)
            self._next_tick += TICK_US
        self.now = until_us

    def arrive(self, packets: list[RtpPacket], at_us: int) -> None:
        self.advance(at_us)
        for p in packets:
            self.fa.add(p)


def capture_offset_us(k: int) -> int:
    """Frame ``k``'s capture time after frame 0's, as the receiver derives it (90 kHz)."""
    return k * 3000 * 1_000_000 // 90_000


def test_in_order_frames_are_delivered_at_once_with_the_minimum_playout_delay() -> None:
    h = Harness()
    for k in range(30):
        h.arrive(h.stream.frame(npkts=3, key=(k == 0)), START_US + capture_offset_us(k))
    assert [i for i, _ in h.delivered] == list(range(30))
    assert all(pt == PT for _, pt in h.delivered)
    out = h.fa.outputs
    assert out[0].keyframe and not any(f.keyframe for f in out[1:])
    assert [f.time_us for f in out] == [START_US + capture_offset_us(k) for k in range(30)]
    # No jitter, no retransmission: every frame plays OS_JITTER_US after it is decodable.
    assert all(f.render_us - f.time_us == OS_JITTER_US for f in out)
    assert h.nacks == [] and h.retries == [] and h.plis == []


def test_a_gap_is_nacked_at_once_and_again_every_rtt_until_it_arrives() -> None:
    h = Harness()
    h.fa.set_rtt_us(50_000)
    h.arrive(h.stream.frame(key=True), START_US)
    lost = h.stream.frame()
    lost_seq = lost[0].sequence_number
    h.arrive(lost[1:], START_US + FRAME_US)
    assert h.nacks == [[lost_seq]]
    h.arrive(h.stream.frame(), START_US + 2 * FRAME_US)
    h.advance(START_US + FRAME_US + 45_000)
    assert h.retries == []  # not before an RTT has passed
    h.advance(START_US + 170_000)
    assert [seqs for _, seqs in h.retries] == [[lost_seq], [lost_seq]]
    assert h.retries[1][0] - h.retries[0][0] >= 50_000
    h.arrive(lost[:1], START_US + 200_000)  # the retransmission
    n = len(h.retries)
    h.advance(START_US + 600_000)
    assert len(h.retries) == n
    assert [f.retransmitted for f in h.fa.outputs] == [False, True, False]
    assert h.fa.outputs[1].time_us == START_US + 200_000 == h.fa.outputs[2].time_us
    assert h.plis == []


def test_render_times_are_playout_timing_fed_the_emulators_events() -> None:
    h = Harness()
    rtt = 80_000
    h.fa.set_rtt_us(rtt)
    arrivals: list[tuple[int, int, RtpPacket]] = []
    for k in range(60):
        pkts = h.stream.frame(npkts=3, key=(k == 0))
        t = START_US + capture_offset_us(k) + (k * 7919) % 9_000
        for i, p in enumerate(pkts):
            # One packet of frames 10, 20 and 30 comes back by retransmission an RTT later.
            late = rtt if k in (10, 20, 30) and i == 1 else 0
            arrivals.append((t + late, len(arrivals), p))
    for t, _, p in sorted(arrivals, key=lambda a: (a[0], a[1])):
        h.arrive([p], t)
    out = h.fa.outputs
    assert len(out) == 60
    assert [i for i, f in enumerate(out) if f.retransmitted] == [10, 20, 30]
    timing = PlayoutTiming()
    origin = START_US  # the first packet's arrival: the policies' time zero
    expected = [
        origin
        + timing.render_time_us(capture_offset_us(i), f.time_us - origin, f.retransmitted, rtt)
        for i, f in enumerate(out)
    ]
    assert [f.render_us for f in out] == expected
    # After the third retransmitted frame the playout delay holds an RTT in reserve.
    assert out[40].render_us - out[40].time_us > rtt
    assert out[9].render_us - out[9].time_us < rtt / 2


def test_nack_give_up_asks_for_a_keyframe_every_200ms_until_one_decodes() -> None:
    h = Harness()
    h.arrive(h.stream.frame(key=True), START_US)
    lost = h.stream.frame()
    t = START_US + FRAME_US
    h.arrive(lost[1:], t)
    for _ in range(50):
        t += FRAME_US
        h.arrive(h.stream.frame(), t)
    assert len(h.retries) == MAX_NACK_RETRIES
    # The 11th retry would be due one default RTT after the 10th: recovery gives up then.
    give_up = h.retries[-1][0] + DEFAULT_RTT_US
    assert h.plis and give_up <= h.plis[0] < give_up + TICK_US
    assert h.plis[0] - START_US < MAX_WAIT_FOR_FRAME_US
    gaps = {b - a for a, b in zip(h.plis, h.plis[1:], strict=False)}
    assert min(gaps) >= KEYFRAME_WAIT_US
    # A keyframe arriving packet by packet: no new PLI while it arrives, none once decoded.
    key = h.stream.frame(npkts=8, key=True)
    key_start = h.plis[-1] + 10_000
    for i, p in enumerate(key):
        h.arrive([p], key_start + i * 60_000)
    assert h.fa.outputs[-1].keyframe
    assert h.fa.frames_dropped == 51
    t = key_start + 8 * 60_000
    for _ in range(20):
        t += FRAME_US
        h.arrive(h.stream.frame(), t)
    assert all(p < key_start for p in h.plis)
    assert not h.fa.outputs[-1].keyframe and h.fa.outputs[-1].time_us == t


def test_no_keyframe_request_for_a_short_hole_but_one_after_3s_of_nothing_decodable() -> None:
    h = Harness()
    key = h.stream.frame(npkts=3, key=True)
    # The keyframe's first packet never comes, and it precedes the first packet received, so
    # no NACK can recover it: only the 3 s rule can.
    t = START_US
    h.arrive(key[1:], t)
    while t < START_US + MAX_WAIT_FOR_FRAME_US + 300_000:
        t += FRAME_US
        h.arrive(h.stream.frame(), t)
    assert h.nacks == [] and h.retries == []
    assert len(h.fa.outputs) == 0
    assert h.plis
    first_allowed = START_US + MAX_WAIT_FOR_FRAME_US
    assert first_allowed <= h.plis[0] < first_allowed + TICK_US


def test_a_packet_overtaken_by_the_first_one_still_completes_its_frame() -> None:
    h = Harness()
    key = h.stream.frame(npkts=3, key=True)
    h.arrive(key[1:2], START_US)
    h.arrive(key[0:1] + key[2:], START_US + 3_000)
    h.arrive(h.stream.frame(), START_US + FRAME_US)
    assert len(h.fa.outputs) == 2 and h.fa.outputs[0].keyframe
    assert h.nacks == []


def test_a_keyframe_ahead_skips_the_hole_and_clears_its_nacks() -> None:
    h = Harness()
    h.arrive(h.stream.frame(key=True), START_US)
    lost = h.stream.frame()
    h.arrive(lost[1:], START_US + FRAME_US)
    h.arrive(h.stream.frame(), START_US + 2 * FRAME_US)
    h.arrive(h.stream.frame(key=True), START_US + 3 * FRAME_US)
    assert [f.keyframe for f in h.fa.outputs] == [True, True]
    assert h.fa.frames_dropped == 2
    n = len(h.retries)
    h.advance(START_US + 1_000_000)
    assert len(h.retries) == n


def test_nacks_across_the_sequence_wrap_use_wire_numbers_and_split_packets() -> None:
    h = Harness(first_seq=65532)
    h.arrive(h.stream.frame(npkts=2, key=True), START_US)  # 65532, 65533
    f = h.stream.frame(npkts=4)  # 65534, 65535, 0, 1
    h.arrive(f[:1] + f[3:], START_US + FRAME_US)
    assert h.nacks == [[65535, 0]]

    class FakeReceiver:
        def __init__(self) -> None:
            self.sent: list[list[int]] = []

        async def _send_rtcp_nack(self, media_ssrc: int, lost: list[int]) -> None:
            assert media_ssrc == SSRC
            self.sent.append(lost)

    rx = FakeReceiver()
    asyncio.run(aiortc_patch.send_nack(rx, SSRC, [65534, 65535, 0, 1, 5]))
    assert rx.sent == [[65534, 65535], [0, 1, 5]]


def test_receiver_timer_sends_retries_and_plis_with_the_rtt_it_is_given() -> None:
    now = [START_US]

    class FakeRtpReceiver:
        def __init__(self) -> None:
            self.nacks: list[list[int]] = []
            self.plis = 0
            self._RTCRtpReceiver__codecs: dict = {}  # no decoder: frames are not decoded

        async def _send_rtcp_nack(self, media_ssrc: int, lost: list[int]) -> None:
            self.nacks.append(lost)

        async def _send_rtcp_pli(self, media_ssrc: int) -> None:
            self.plis += 1

    async def run() -> tuple[FakeRtpReceiver, AiortcReceiver]:
        rx = AiortcReceiver(lambda: now[0], rtt_source=lambda: 30_000)
        fake = FakeRtpReceiver()
        rx._rtp_receiver = fake  # what answer() sets
        s = Stream()
        for p in s.frame(key=True):
            rx.assembler.add(p)
        lost = s.frame()
        now[0] += FRAME_US
        rx.assembler.add(lost[1])
        for step in range(1, 3):
            now[0] = START_US + FRAME_US + step * TICK_US
            rx.tick(now[0])
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        await rx.close()
        return fake, rx

    fake, rx = asyncio.run(run())
    seq = (1000 + 2) % 65536
    # At once on the gap, then once the 30 ms RTT had passed (at the second tick, 40 ms).
    assert fake.nacks == [[seq], [seq]]
    assert rx.assembler.rtt_us == 30_000
    assert fake.plis == 0
