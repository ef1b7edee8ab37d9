"""The emulated WebRTC video receiver: transport-wide feedback, NACK, PLI, frame assembly, render.

Behaviour follows libwebrtc's receive side where it shapes stalls and delays:

* ``RemoteEstimatorProxy``: every feedback interval (100 ms default) report every transport
  sequence number since the last report, received (with its arrival time) or not.
* NACK, playout timing and keyframe requests come from :mod:`loki.receive`, the policies the
  live receiver uses too (``NackRequester``, ``VCMTiming`` + ``JitterEstimator``,
  ``VideoReceiveStream2``).
* Frame buffer (``FrameBuffer`` in ``modules/video_coding``): a frame is decodable when it is
  complete and is a keyframe, or when its predecessor was decoded (VP8 without temporal layers
  references the previous frame). A complete keyframe makes older frames obsolete and clears
  older entries from the NACK list.
* Receiver reports count only first transmissions as received: ``RtpVideoStreamReceiver2``
  keeps recovered (RTX) packets out of the media stream's statistics, so RR loss is the
  network's loss, not the loss left after retransmission.

Frame metadata (packets per frame, keyframe flag, capture time) is read from the sender's
tables; in a real receiver it comes from RTP headers and the payload descriptor.
"""

from __future__ import annotations

from loki.receive import KeyframeRequester, NackRequester, PlayoutTiming


class Receiver:
    """Receive-side state of one emulated video stream."""

    __slots__ = (
        "_fb_arrival_us",
        "_fb_next_seq",
        "_frame_bytes",
        "_frame_capture_us",
        "_frame_first_rtp",
        "_frame_is_key",
        "_frame_npkts",
        "_frames_got",
        "_keyframes",
        "_last_decoded",
        "_max_frame_seen",
        "_nack",
        "_nacked_frames",
        "_rr_expected_base",
        "_rr_received",
        "_timing",
        "frame_bytes_rendered",
        "frame_delay_ms",
        "render_ms",
        "rtt_us",
    )

    def __init__(
        self,
        frame_npkts: list[int],
        frame_is_key: list[bool],
        frame_capture_us: list[int],
        frame_bytes: list[int],
        frame_first_rtp: list[int],
    ) -> None:
        # Sender-side frame tables, shared (read-only here).
        self._frame_npkts = frame_npkts
        self._frame_is_key = frame_is_key
        self._frame_capture_us = frame_capture_us
        self._frame_bytes = frame_bytes
        self._frame_first_rtp = frame_first_rtp
        self._frames_got: dict[int, int] = {}
        self._nacked_frames: set[int] = set()
        self._last_decoded = -1
        self._max_frame_seen = -1
        self._nack = NackRequester()
        self._timing = PlayoutTiming()
        self._keyframes = KeyframeRequester()
        self._fb_next_seq = 0
        self._fb_arrival_us: dict[int, int] = {}
        self._rr_expected_base = 0
        self._rr_received = 0
        self.rtt_us = self._nack.rtt_us
        self.render_ms: list[float] = []
        self.frame_delay_ms: list[float] = []
        self.frame_bytes_rendered = 0

    # -- packets -------------------------------------------------------------------------
    def on_packet(
        self,
        seq: int,
        rtp_seq: int,
        frame_id: int,
        arrival_us: int,
        nacks: list[int],
        is_rtx: bool = False,
    ) -> bool:
        """Take one arriving packet; append newly missing RTP seqs to ``nacks``.

        Returns True when a frame was decoded.
        """
        self._fb_arrival_us[seq] = arrival_us
        if rtp_seq < 0 or not self._nack.on_packet(rtp_seq, arrival_us, nacks):
            return False  # padding, a duplicate, or a packet recovery had given up on
        if not is_rtx:
            self._rr_received += 1
        if frame_id <= self._last_decoded:
            return False
        if self._frame_is_key[frame_id]:
            self._keyframes.on_keyframe_packet(arrival_us)
        if is_rtx:
            self._nacked_frames.add(frame_id)
        self._keyframes.on_frame_waiting()
        got = self._frames_got.get(frame_id, 0) + 1
        self._frames_got[frame_id] = got
        if frame_id > self._max_frame_seen:
            self._max_frame_seen = frame_id
        if got == self._frame_npkts[frame_id]:
            return self._decode_ready(arrival_us)
        return False

    def _decode_ready(self, now_us: int) -> bool:
        decoded = False
        npkts = self._frame_npkts
        got = self._frames_got
        while True:
            nxt = self._last_decoded + 1
            if nxt < len(npkts) and got.get(nxt, 0) == npkts[nxt]:
                self._decode(nxt, now_us)
                decoded = True
                continue
            # A complete keyframe further ahead makes everything before it obsolete.
            key = -1
            for f, n in got.items():
                if f > nxt and n == npkts[f] and self._frame_is_key[f] and f > key:
                    key = f
            if key < 0:
                return decoded
            for f in [f for f in got if f < key]:
                del got[f]
            self._decode(key, now_us)
            decoded = True

    def _decode(self, frame_id: int, now_us: int) -> None:
        self._frames_got.pop(frame_id, None)
        is_key = self._frame_is_key[frame_id]
        if is_key:
            self._nack.clear_up_to(self._frame_first_rtp[frame_id])
        self._last_decoded = frame_id
        self._keyframes.on_decoded(now_us, is_key, self._max_frame_seen > frame_id)
        capture = self._frame_capture_us[frame_id]
        retransmitted = frame_id in self._nacked_frames
        if retransmitted:
            self._nacked_frames.discard(frame_id)
        render = self._timing.render_time_us(capture, now_us, retransmitted, self.rtt_us)
        self.render_ms.append(render / 1000.0)
        self.frame_delay_ms.append((render - capture) / 1000.0)
        self.frame_bytes_rendered += self._frame_bytes[frame_id]

    # -- periodic work ---------------------------------------------------------------------
    def nack_retries(self, now_us: int) -> tuple[list[int], bool]:
        """NACKs due again, and whether a keyframe is needed because recovery gave up."""
        self._nack.rtt_us = self.rtt_us
        return self._nack.retries_due(now_us)

    def wants_keyframe(self, now_us: int, nack_gave_up: bool) -> bool:
        """Whether to send a PLI now (``loki.receive.keyframe_request``)."""
        return self._keyframes.should_request(now_us, nack_gave_up)

    def take_feedback(self) -> tuple[list[int], list[int]]:
        """Transport-wide feedback: every seq since the last report, arrival us or -1.

        The report ends at the highest sequence number received so far; packets after it are
        not yet known to be missing.
        """
        start = self._fb_next_seq
        arrivals = self._fb_arrival_us
        if not arrivals:
            return [], []
        end = max(arrivals)
        seqs = list(range(start, end + 1))
        arr = [arrivals.pop(s, -1) for s in seqs]
        self._fb_next_seq = end + 1
        return seqs, arr

    def take_receiver_report(self) -> tuple[int, int]:
        """RTCP RR figures since the last report: (packets lost, packets expected)."""
        highest = self._nack.highest_seq
        expected = highest + 1 - self._rr_expected_base
        received = self._rr_received
        self._rr_expected_base = highest + 1
        self._rr_received = 0
        return max(0, expected - received), max(0, expected)
