"""The aiortc receiver's frame buffer, rebuilt with libwebrtc's rules for VP8.

aiortc's ``JitterBuffer`` hands out a frame only when the first packet of the *next* frame
arrives, and after a packet that is never recovered it delivers nothing until about 512 later
packets have arrived (``shared/docs/aiortc-notes.md``): seconds of freeze that describe aiortc,
not the link. This replacement keeps the ``add(packet) -> (pli_flag, frame)`` contract and
follows the rules the emulator's receiver (``loki.emu.receiver``) takes from libwebrtc:

* a frame is the packets of one RTP timestamp from the one whose VP8 descriptor starts
  partition 0 to the one with the marker bit; it is complete when none in between is missing;
* a complete frame is decodable when it is a keyframe or its picture id follows the last
  decoded frame's (VP8 without temporal layers references the previous frame); a complete
  keyframe further ahead makes everything before it obsolete, so the hole is dropped;
* with packets of newer frames waiting but nothing decodable for :data:`KEYFRAME_WAIT_US`, ask
  for a keyframe (PLI), at most once per that interval (``VideoReceiveStream2``).

Frames become decodable as soon as they are complete (the emulator's minimum playout delay).
When several become decodable at once (a retransmission filled a hole), they are handed out
one per call, as the contract allows, which delays the later ones by a packet interarrival.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtp import RtpPacket

from rtc.transport_feedback import sequence_unwrapper

KEYFRAME_WAIT_US = 200_000
PICTURE_ID_MOD = 1 << 15
#: More packets than this waiting means the buffer is hopeless: clear it and ask for a keyframe.
MAX_PENDING_PACKETS = 4096


@dataclass(frozen=True, slots=True)
class OutputFrame:
    """A frame handed to the decoder: when, and which (for mapping to the sender's log)."""

    time_us: int
    rtp_timestamp: int
    picture_id: int | None
    keyframe: bool
    size_bytes: int


@dataclass(slots=True)
class _Packet:
    timestamp: int
    marker: bool
    start: bool
    picture_id: int | None
    data: bytes


class FrameAssembler:
    """Drop-in for aiortc's video ``JitterBuffer``; ``clock_us`` is the session clock."""

    def __init__(self, clock_us: Callable[[], int]) -> None:
        self._clock_us = clock_us
        self._unwrapper = sequence_unwrapper()
        self._packets: dict[int, _Packet] = {}
        self._decoded_through = -1  # last seq of the last decoded frame
        self._last_pid: int | None = None
        self._ready: deque[JitterFrame] = deque()
        self._first_packet_us: int | None = None
        self._last_decode_us: int | None = None
        self._last_pli_us: int | None = None
        self.outputs: list[OutputFrame] = []
        self.frames_dropped = 0
        self.plis = 0

    @property
    def capacity(self) -> int:
        return MAX_PENDING_PACKETS

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        now = self._clock_us()
        if self._first_packet_us is None:
            self._first_packet_us = now
        seq = self._unwrapper.unwrap(packet.sequence_number)
        if seq > self._decoded_through and seq not in self._packets and packet.payload:
            try:
                descriptor, _ = VpxPayloadDescriptor.parse(packet.payload)
            except ValueError:
                descriptor = None
            if descriptor is not None:
                self._packets[seq] = _Packet(
                    timestamp=packet.timestamp,
                    marker=bool(packet.marker),
                    start=bool(descriptor.partition_start and descriptor.partition_id == 0),
                    picture_id=descriptor.picture_id,
                    data=getattr(packet, "_data", b""),
                )
                self._collect(seq, now)
        pli = self._wants_keyframe(now)
        return pli, (self._ready.popleft() if self._ready else None)

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

    def _collect(self, seq: int, now_us: int) -> None:
        """Move every decodable frame to the ready queue, dropping holes a keyframe skips."""
        if len(self._packets) > MAX_PENDING_PACKETS:
            self.frames_dropped += len({p.timestamp for p in self._packets.values()})
            self._packets.clear()
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
                keys = [fl for fl in complete if self._is_key(fl[0])]
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

    def _is_key(self, first: int) -> bool:
        data = self._packets[first].data
        # VP8 payload header: bit 0 of the first byte is 0 for a keyframe (RFC 7741 4.3).
        return bool(data) and (data[0] & 0x01) == 0

    def _output(self, frame: tuple[int, int], now_us: int) -> None:
        first, last = frame
        packets = self._packets
        head = packets[first]
        key = self._is_key(first)
        data = b"".join(packets[s].data for s in range(first, last + 1))
        dropped_ts = {p.timestamp for s, p in packets.items() if s < first}
        self.frames_dropped += len(dropped_ts)
        for s in [s for s in packets if s <= last]:
            del packets[s]
        self._decoded_through = last
        self._last_pid = head.picture_id
        self._last_decode_us = now_us
        self._ready.append(JitterFrame(data=data, timestamp=head.timestamp))
        self.outputs.append(OutputFrame(now_us, head.timestamp, head.picture_id, key, len(data)))

    # -- keyframe requests ---------------------------------------------------------------------
    def _wants_keyframe(self, now_us: int) -> bool:
        if not self._packets:
            return False
        since = self._last_decode_us if self._last_decode_us is not None else 0
        if self._last_decode_us is None and self._first_packet_us is not None:
            since = self._first_packet_us
        if now_us - since < KEYFRAME_WAIT_US:
            return False
        if self._last_pli_us is not None and now_us - self._last_pli_us < KEYFRAME_WAIT_US:
            return False
        self._last_pli_us = now_us
        self.plis += 1
        return True
