"""The emulated WebRTC video receiver: transport-wide feedback, NACK, PLI, frame assembly, render.

Behaviour follows libwebrtc's receive side where it shapes stalls and delays:

* ``RemoteEstimatorProxy``: every feedback interval (100 ms default) report every transport
  sequence number since the last report, received (with its arrival time) or not.
* ``NackRequester``: a gap in RTP sequence numbers is NACKed at once, then re-NACKed once per
  RTT (100 ms until one is known) up to :data:`MAX_NACK_RETRIES` times; a packet that exhausts
  its retries makes the receiver ask for a keyframe.
* Frame buffer (``FrameBuffer`` in ``modules/video_coding``): a frame is decodable when it is
  complete and is a keyframe, or when its predecessor was decoded (VP8 without temporal layers
  references the previous frame). A complete keyframe makes older frames obsolete.
* Playout (``VCMTiming`` with ``JitterEstimator``): a decoded frame renders at
  ``capture + base transit + current delay`` or when it is decoded, whichever is later, in
  order. The target delay is a jitter estimate (2.33 standard deviations of the frame-delay
  variation plus 10 ms of OS jitter) plus one RTT once :data:`NACK_LIMIT` frames needed a
  retransmission, so that retransmitted packets arrive inside the buffer instead of freezing
  the video; the current delay rises to the target at once and falls by at most
  :data:`DELAY_DECREASE_US_PER_S` per second.
* ``VideoReceiveStream2``: with no decodable frame for :data:`MAX_WAIT_FOR_FRAME_US` (3 s),
  or once NACK gave up on a packet, a keyframe is required: ask for one (PLI), and again every
  :data:`KEYFRAME_WAIT_US` until one decodes — but not while packets of a keyframe are arriving
  (``IsReceivingKeyFrame``), so a keyframe stuck in a long queue does not trigger a storm of
  further keyframes. A decoded keyframe clears older entries from the NACK list
  (``NackRequester::ClearUpTo``).

Frame metadata (packets per frame, keyframe flag, capture time) is read from the sender's
tables; in a real receiver it comes from RTP headers and the payload descriptor.
"""

from __future__ import annotations

MAX_NACK_RETRIES = 10
DEFAULT_RTT_US = 100_000
KEYFRAME_WAIT_US = 200_000
MAX_WAIT_FOR_FRAME_US = 3_000_000
#: Frames that needed a retransmission before the jitter buffer adds an RTT (``kNackLimit``).
NACK_LIMIT = 3
NOISE_STD_DEVS = 2.33
OS_JITTER_US = 10_000
#: ``VCMTiming``: the current delay may fall by this much per second of capture time.
DELAY_DECREASE_US_PER_S = 100_000
#: Weight of a new frame in the frame-delay variance (about one second of frames).
JITTER_ALPHA = 1.0 / 30.0
#: libwebrtc's default upper bound on the playout delay.
MAX_PLAYOUT_DELAY_US = 10_000_000
#: A NACK list longer than this is given up for a keyframe (libwebrtc kMaxNackPackets).
MAX_NACK_PACKETS = 1_000


class Receiver:
    """Receive-side state of one emulated video stream."""

    __slots__ = (
        "_current_delay_us",
        "_delay_var_us2",
        "_fb_arrival_us",
        "_fb_next_seq",
        "_frame_bytes",
        "_frame_capture_us",
        "_frame_first_rtp",
        "_frame_is_key",
        "_frame_npkts",
        "_frames_got",
        "_frames_nacked",
        "_highest_rtp",
        "_keyframe_required",
        "_last_capture_us",
        "_last_complete_us",
        "_last_decode_us",
        "_last_decoded",
        "_last_keyframe_packet_us",
        "_last_pli_us",
        "_last_render_us",
        "_max_frame_seen",
        "_min_transit_us",
        "_nack",
        "_nacked_frames",
        "_rr_expected_base",
        "_rr_received",
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
        self._keyframe_required = False
        self._last_keyframe_packet_us = -MAX_WAIT_FOR_FRAME_US
        self._frames_got: dict[int, int] = {}
        self._highest_rtp = -1
        self._nack: dict[int, list[int]] = {}  # rtp_seq -> [last_sent_us, retries]
        self._last_decoded = -1
        self._last_decode_us = 0
        self._last_pli_us = -KEYFRAME_WAIT_US
        self._max_frame_seen = -1
        self._fb_next_seq = 0
        self._fb_arrival_us: dict[int, int] = {}
        self._rr_expected_base = 0
        self._rr_received = 0
        self.rtt_us = DEFAULT_RTT_US
        self.render_ms: list[float] = []
        self.frame_delay_ms: list[float] = []
        self.frame_bytes_rendered = 0
        self._nacked_frames: set[int] = set()
        self._frames_nacked = 0
        self._min_transit_us: int | None = None
        self._delay_var_us2 = 0.0
        self._current_delay_us = 0.0
        self._last_capture_us: int | None = None
        self._last_complete_us = 0
        self._last_render_us = 0

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

        Retransmissions (RTX in libwebrtc) complete frames but do not count as received in the
        receiver report, as ``RtpVideoStreamReceiver2`` keeps recovered packets out of the
        media stream's statistics: RR loss is the network's loss, not the residual loss.

        Returns True when a frame was rendered (the caller may then check for keyframe needs).
        """
        self._fb_arrival_us[seq] = arrival_us
        if rtp_seq < 0:
            return False
        hi = self._highest_rtp
        if rtp_seq > hi:
            if rtp_seq > hi + 1:
                for s in range(hi + 1, rtp_seq):
                    self._nack[s] = [arrival_us, 0]
                    nacks.append(s)
            self._highest_rtp = rtp_seq
        elif self._nack.pop(rtp_seq, None) is None:
            return False  # a duplicate, or a packet recovery had already given up on
        if not is_rtx:
            self._rr_received += 1
        if frame_id <= self._last_decoded:
            return False
        if self._frame_is_key[frame_id]:
            self._last_keyframe_packet_us = arrival_us
        if is_rtx:
            self._nacked_frames.add(frame_id)
        got = self._frames_got.get(frame_id, 0) + 1
        self._frames_got[frame_id] = got
        if frame_id > self._max_frame_seen:
            self._max_frame_seen = frame_id
        if got == self._frame_npkts[frame_id]:
            return self._decode_ready(arrival_us)
        return False

    def _decode_ready(self, now_us: int) -> bool:
        rendered = False
        npkts = self._frame_npkts
        got = self._frames_got
        while True:
            nxt = self._last_decoded + 1
            if nxt < len(npkts) and got.get(nxt, 0) == npkts[nxt]:
                self._render(nxt, now_us)
                rendered = True
                continue
            # A complete keyframe further ahead makes everything before it obsolete.
            key = -1
            for f, n in got.items():
                if f > nxt and n == npkts[f] and self._frame_is_key[f] and f > key:
                    key = f
            if key < 0:
                return rendered
            for f in [f for f in got if f < key]:
                del got[f]
            self._render(key, now_us)
            rendered = True

    def _render(self, frame_id: int, now_us: int) -> None:
        self._frames_got.pop(frame_id, None)
        if self._frame_is_key[frame_id]:
            self._keyframe_required = False
            first = self._frame_first_rtp[frame_id]
            for s in [s for s in self._nack if s < first]:
                del self._nack[s]
        self._last_decoded = frame_id
        self._last_decode_us = now_us
        capture = self._frame_capture_us[frame_id]
        render = self._render_time_us(frame_id, capture, now_us)
        self.render_ms.append(render / 1000.0)
        self.frame_delay_ms.append((render - capture) / 1000.0)
        self.frame_bytes_rendered += self._frame_bytes[frame_id]

    def _render_time_us(self, frame_id: int, capture_us: int, decoded_us: int) -> int:
        """Playout time of a decoded frame (see the module docstring)."""
        retransmitted = frame_id in self._nacked_frames
        if retransmitted:
            self._nacked_frames.discard(frame_id)
            self._frames_nacked += 1
        transit = decoded_us - capture_us
        if self._min_transit_us is None or transit < self._min_transit_us:
            self._min_transit_us = transit
        last_capture = self._last_capture_us
        if last_capture is not None and not retransmitted:
            # Frame-delay variation: how much later than its capture spacing a frame completed;
            # frames delayed by retransmission are left out, as libwebrtc leaves them out.
            d = (decoded_us - self._last_complete_us) - (capture_us - last_capture)
            self._delay_var_us2 += JITTER_ALPHA * (d * d - self._delay_var_us2)
            elapsed = capture_us - last_capture
        else:
            elapsed = 0
        self._last_capture_us = capture_us
        self._last_complete_us = decoded_us
        target = NOISE_STD_DEVS * self._delay_var_us2**0.5 + OS_JITTER_US
        if self._frames_nacked >= NACK_LIMIT:
            target += self.rtt_us
        target = min(target, MAX_PLAYOUT_DELAY_US)
        cur = self._current_delay_us
        if target >= cur:
            cur = target
        else:
            cur = max(target, cur - DELAY_DECREASE_US_PER_S * elapsed / 1e6)
        self._current_delay_us = cur
        render = max(decoded_us, capture_us + self._min_transit_us + int(cur), self._last_render_us)
        self._last_render_us = render
        return render

    # -- periodic work ---------------------------------------------------------------------
    def nack_retries(self, now_us: int) -> tuple[list[int], bool]:
        """NACKs due again, and whether a keyframe is needed because recovery gave up."""
        due: list[int] = []
        give_up = len(self._nack) > MAX_NACK_PACKETS
        if give_up:
            self._nack.clear()
        wait = self.rtt_us
        for s, st in list(self._nack.items()):
            if now_us - st[0] >= wait:
                if st[1] >= MAX_NACK_RETRIES:
                    del self._nack[s]
                    give_up = True
                    continue
                st[0] = now_us
                st[1] += 1
                due.append(s)
        return due, give_up

    def wants_keyframe(self, now_us: int, nack_gave_up: bool) -> bool:
        """PLI policy of ``VideoReceiveStream2`` (see the module docstring)."""
        if nack_gave_up:
            self._keyframe_required = True
        waiting = now_us - self._last_decode_us
        if not self._keyframe_required:
            if waiting < MAX_WAIT_FOR_FRAME_US or self._max_frame_seen < 0:
                return False
            self._keyframe_required = True
        if now_us - self._last_pli_us < KEYFRAME_WAIT_US:
            return False
        if now_us - self._last_keyframe_packet_us < KEYFRAME_WAIT_US:
            return False  # a keyframe is arriving
        self._last_pli_us = now_us
        return True

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
        expected = self._highest_rtp + 1 - self._rr_expected_base
        received = self._rr_received
        self._rr_expected_base = self._highest_rtp + 1
        self._rr_received = 0
        return max(0, expected - received), max(0, expected)
