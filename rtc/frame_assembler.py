"""The aiortc receiver's frame buffer, with the emulator's receive-side policies.

aiortc's ``JitterBuffer`` hands out a frame only when the first packet of the *next* frame
arrives, and after a packet that is never recovered it delivers nothing until about 512 later
packets have arrived (``shared/docs/aiortc-notes.md``): seconds of freeze that describe aiortc,
not the link. This replacement takes aiortc's ``add(packet)`` call and follows the frame rules
the emulator's receiver (``loki.emu.receiver``) takes from libwebrtc:

* a frame is the packets of one RTP timestamp from the one whose VP8 descriptor starts
  partition 0 to the one with the marker bit; it is complete when none in between is missing;
* a complete frame is decodable when it is a keyframe or its picture id follows the last
  decoded frame's (VP8 without temporal layers references the previous frame); a complete
  keyframe further ahead makes everything before it obsolete, so the hole is dropped.

NACK, playout timing and keyframe requests are :mod:`loki.receive`'s policies, fed the events
the emulator feeds them, in the same order: each packet (unwrapped RTP sequence number, whether
it fills a NACKed gap, whether it belongs to a keyframe), each decodable frame (keyframe flag,
whether newer packets wait), a periodic :meth:`FrameAssembler.tick` (NACK retries, PLI) and the
RTT. A packet counts as retransmitted when it fills a gap the NACK list held: with aiortc's RTX
unwrapped before the buffer sees it, that is every RTX packet that carried news (an RTX probe
copy of a packet already here is a duplicate), as in the emulator.

The policies count time from the first packet, as the emulator's count from the session start
(the keyframe requester's first 3 s wait starts there). The NACK list starts at the first
packet too (libwebrtc's ``NackRequester`` does the same); a packet it overtook still goes into
the frame buffer, or the first keyframe would wait 3 s for a keyframe request. Render time is
:class:`loki.receive.PlayoutTiming`'s, from the time a frame became decodable
and its capture time in the sender's clock: the RTP timestamp (unwrapped, 90 kHz) in
microseconds. The offset between the clocks is irrelevant to the playout rules (only
differences and the minimum transit count). Decodable frames go to ``deliver`` at once, all of
them, instead of one per ``add`` call as aiortc's contract allows, so a retransmission that
completes several frames does not hold the later ones back by packet interarrivals.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import overload

from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtp import RtpPacket

from loki.receive import KeyframeRequester, NackRequester, PlayoutTiming
from rtc.compact_log import IntRows
from rtc.transport_feedback import SEQ_MOD, Unwrapper, sequence_unwrapper

PICTURE_ID_MOD = 1 << 15
VIDEO_CLOCK_HZ = 90_000
RTP_TIMESTAMP_BITS = 32
#: More packets than this waiting means the buffer is hopeless: clear it and ask for a keyframe
#: (libwebrtc's ``PacketBuffer`` clears itself when full and the receiver requests one).
MAX_PENDING_PACKETS = 4096
#: The emulator's floor on the RTT it gives its receiver.
MIN_RTT_US = 1_000


@dataclass(frozen=True, slots=True)
class OutputFrame:
    """A frame handed to the decoder: when, when it is due on screen, and which."""

    #: When the frame became decodable (the frame buffer handed it out).
    time_us: int
    #: :class:`loki.receive.PlayoutTiming`'s render time for it.
    render_us: int
    rtp_timestamp: int
    picture_id: int | None
    keyframe: bool
    size_bytes: int
    retransmitted: bool


#: :class:`OutputFrame`'s fields as :class:`OutputFrames` stores them (None picture id: -1).
OUTPUT_FIELDS = (
    "time_us",
    "render_us",
    "rtp_timestamp",
    "picture_id",
    "keyframe",
    "size_bytes",
    "retransmitted",
)
_NO_PICTURE_ID = -1


class OutputFrames(Sequence[OutputFrame]):
    """Every frame handed out, as a read-only sequence of :class:`OutputFrame`, stored in
    :class:`rtc.compact_log.IntRows` (8 bytes a field instead of an object of Python ints:
    a session keeps one per frame)."""

    def __init__(self) -> None:
        self._rows = IntRows(OUTPUT_FIELDS)

    def append(self, frame: OutputFrame) -> None:
        pid = _NO_PICTURE_ID if frame.picture_id is None else frame.picture_id
        self._rows.append(
            frame.time_us,
            frame.render_us,
            frame.rtp_timestamp,
            pid,
            int(frame.keyframe),
            frame.size_bytes,
            int(frame.retransmitted),
        )

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, index: int) -> OutputFrame: ...
    @overload
    def __getitem__(self, index: slice) -> list[OutputFrame]: ...
    def __getitem__(self, index: int | slice) -> OutputFrame | list[OutputFrame]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        t, render, ts, pid, key, size, rtx = self._rows.row(index)
        return OutputFrame(
            t, render, ts, None if pid == _NO_PICTURE_ID else pid, bool(key), size, bool(rtx)
        )


@dataclass(slots=True)
class _Packet:
    timestamp: int
    marker: bool
    start: bool
    picture_id: int | None
    data: bytes


class FrameAssembler:
    """Stands in for aiortc's video ``JitterBuffer``; ``clock_us`` is the session clock.

    ``deliver(frame, payload_type)`` is given every decodable frame; its ``timestamp`` is the
    frame's index in :attr:`outputs`. ``send_nack(wire_seqs)`` is given newly missing
    sequence numbers at once; :meth:`tick` returns the retries and whether to send a PLI.
    """

    def __init__(
        self,
        clock_us: Callable[[], int],
        deliver: Callable[[JitterFrame, int], None] | None = None,
        send_nack: Callable[[list[int]], None] | None = None,
    ) -> None:
        self._clock_us = clock_us
        self._deliver = deliver
        self._send_nack = send_nack
        self._unwrapper = sequence_unwrapper()
        self._ts_unwrapper = Unwrapper(RTP_TIMESTAMP_BITS)
        self._seq_base: int | None = None
        self._packets: dict[int, _Packet] = {}
        self._decoded_through: int | None = None  # last seq of the last decoded frame
        self._last_pid: int | None = None
        self._key_timestamps: set[int] = set()
        self._nacked_timestamps: set[int] = set()
        self._buffer_cleared = False
        self._origin_us: int | None = None
        self._nack = NackRequester()
        self._timing = PlayoutTiming()
        self._keyframes = KeyframeRequester()
        self.rtt_us = self._nack.rtt_us
        self.media_ssrc: int | None = None
        self.payload_type: int | None = None
        self.outputs = OutputFrames()
        self.frames_dropped = 0
        self.plis = 0
        self.nacks_sent = 0

    @property
    def capacity(self) -> int:
        return MAX_PENDING_PACKETS

    def set_rtt_us(self, rtt_us: int) -> None:
        """The RTT NACK retries and the playout delay use (the emulator floors it at 1 ms)."""
        self.rtt_us = max(rtt_us, MIN_RTT_US)

    # -- packets -----------------------------------------------------------------------------
    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        """aiortc's call for each media packet (RTX already unwrapped)."""
        clock = self._clock_us()
        if self._origin_us is None:
            self._origin_us = clock
        now = clock - self._origin_us
        if not packet.payload:
            return False, None
        try:
            descriptor, _ = VpxPayloadDescriptor.parse(packet.payload)
        except ValueError:
            return False, None
        self.media_ssrc = packet.ssrc
        self.payload_type = packet.payload_type
        unwrapped = self._unwrapper.unwrap(packet.sequence_number)
        if self._seq_base is None:
            self._seq_base = unwrapped  # libwebrtc's NackRequester starts at the first packet
        seq = unwrapped - self._seq_base
        filled_gap = False
        if seq < 0:
            # Overtaken by the first packet: the NACK list starts after it (libwebrtc's
            # NackRequester ignores it too), but the frame buffer still needs it.
            if seq in self._packets:
                return False, None
        else:
            nacks: list[int] = []
            filled_gap = seq < self._nack.highest_seq
            if not self._nack.on_packet(seq, now, nacks):
                return False, None  # a duplicate, or a packet recovery had given up on
            if nacks:
                self._request_retransmission(nacks)
        if self._decoded_through is not None and seq <= self._decoded_through:
            return False, None  # a frame already decoded or skipped by a keyframe
        data = getattr(packet, "_data", b"")
        start = bool(descriptor.partition_start and descriptor.partition_id == 0)
        ts = packet.timestamp
        if start and _is_key(data):
            self._key_timestamps.add(ts)
        if ts in self._key_timestamps:
            self._keyframes.on_keyframe_packet(now)
        if filled_gap:
            self._nacked_timestamps.add(ts)
        self._keyframes.on_frame_waiting()
        self._packets[seq] = _Packet(ts, bool(packet.marker), start, descriptor.picture_id, data)
        self._collect(now)
        return False, None

    def _request_retransmission(self, seqs: list[int]) -> None:
        self.nacks_sent += len(seqs)
        if self._send_nack is not None:
            self._send_nack(self._wire(seqs))

    def _wire(self, seqs: list[int]) -> list[int]:
        base = self._seq_base or 0
        return [(s + base) % SEQ_MOD for s in seqs]

    # -- periodic work -------------------------------------------------------------------------
    def tick(self, now_us: int) -> tuple[list[int], bool]:
        """NACK retries due now (wire sequence numbers) and whether to send a PLI now."""
        if self._origin_us is None:
            return [], False  # nothing received yet
        now = now_us - self._origin_us
        self._nack.rtt_us = self.rtt_us
        due, gave_up = self._nack.retries_due(now)
        gave_up = gave_up or self._buffer_cleared
        self._buffer_cleared = False
        if due:
            self.nacks_sent += len(due)
        pli = self._keyframes.should_request(now, gave_up)
        if pli:
            self.plis += 1
        return self._wire(due), pli

    # -- frames ------------------------------------------------------------------------------
    def _frame_around(self, seq: int) -> tuple[int, int] | None:
        """(first seq, last seq) of the complete frame containing ``seq``, if it is complete."""
        packets = self._packets
        ts = packets[seq].timestamp
        first = seq
        while not packets[first].start:
            prev = packets.get(first - 1)
            if prev is None or prev.timestamp != ts:
                return None
            first -= 1
        last = seq
        while not packets[last].marker:
            nxt = packets.get(last + 1)
            if nxt is None or nxt.timestamp != ts:
                return None
            last += 1
        return first, last

    def _collect(self, now_us: int) -> None:
        """Hand out every decodable frame, dropping holes a keyframe skips."""
        if len(self._packets) > MAX_PENDING_PACKETS:
            self.frames_dropped += len({p.timestamp for p in self._packets.values()})
            self._packets.clear()
            self._buffer_cleared = True
            return
        while True:
            complete = self._complete_frames()
            if not complete:
                return
            first, _ = complete[0]
            pid = self._packets[first].picture_id
            follows = (
                self._last_pid is not None
                and pid is not None
                and pid == (self._last_pid + 1) % PICTURE_ID_MOD
            )
            chosen = complete[0]
            if not follows:
                keys = [fl for fl in complete if _is_key(self._packets[fl[0]].data)]
                if not keys:
                    return
                chosen = keys[-1]
            self._output(chosen, now_us)

    def _complete_frames(self) -> list[tuple[int, int]]:
        starts = sorted(s for s, p in self._packets.items() if p.start)
        out = []
        for s in starts:
            fl = self._frame_around(s)
            if fl is not None:
                out.append(fl)
        return out

    def _output(self, frame: tuple[int, int], now_us: int) -> None:
        first, last = frame
        packets = self._packets
        head = packets[first]
        key = _is_key(head.data)
        data = b"".join(packets[s].data for s in range(first, last + 1))
        dropped_ts = {p.timestamp for s, p in packets.items() if s < first}
        self.frames_dropped += len(dropped_ts)
        for s in [s for s in packets if s <= last]:
            del packets[s]
        self._decoded_through = last
        self._last_pid = head.picture_id
        ts = head.timestamp
        if key:
            self._nack.clear_up_to(first)
            self._key_timestamps.discard(ts)
        self._keyframes.on_decoded(now_us, key, bool(packets))
        retransmitted = ts in self._nacked_timestamps
        self._nacked_timestamps.discard(ts)
        self._nacked_timestamps -= dropped_ts
        self._key_timestamps -= dropped_ts
        capture_us = self._ts_unwrapper.unwrap(ts) * 1_000_000 // VIDEO_CLOCK_HZ
        render_us = self._timing.render_time_us(capture_us, now_us, retransmitted, self.rtt_us)
        index = len(self.outputs)
        origin = self._origin_us or 0
        self.outputs.append(
            OutputFrame(
                now_us + origin,
                render_us + origin,
                ts,
                head.picture_id,
                key,
                len(data),
                retransmitted,
            )
        )
        if self._deliver is not None and self.payload_type is not None:
            self._deliver(JitterFrame(data=data, timestamp=index), self.payload_type)


def _is_key(data: bytes) -> bool:
    # VP8 payload header: bit 0 of the first byte is 0 for a keyframe (RFC 7741 4.3).
    return bool(data) and (data[0] & 0x01) == 0
