"""The emulated WebRTC video receiver: transport-wide feedback, NACK, PLI, frame assembly, render.

Behaviour follows libwebrtc's receive side where it shapes stalls and delays:

* ``RemoteEstimatorProxy``: every feedback interval (100 ms default) report every transport
  sequence number since the last report, received (with its arrival time) or not. The emulated
  path is FIFO, so the receiver only tracks the highest sequence number it got; the session
  reads the arrival times (or the loss) of the reported range from its send history.
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

Speed: packets are delivered in batches by one compiled function (:func:`deliver_arrivals`)
working on the session's tables and the policies' state arrays (the same compiled functions
the :mod:`loki.receive` classes wrap). Render times go to a table; :attr:`Receiver.render_ms`
and :attr:`Receiver.frame_delay_ms` are lists extended from it when read.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
from numba import njit

from loki.emu.compiled import entry_point
from loki.receive import KeyframeRequester, NackRequester, PlayoutTiming
from loki.receive.keyframe_request import (
    LAST_DECODE_US,
    LAST_KEYFRAME_PACKET_US,
    MAX_WAIT_FOR_FRAME_US,
    REQUIRED,
    WAITING_FRAMES,
    keyframe_on_decoded,
    keyframe_should_request,
)
from loki.receive.nack_requester import (
    COUNT,
    HIGHEST,
    RTT_US,
    nack_clear_up_to,
    nack_on_packet,
    nack_retries_due,
)
from loki.receive.timing import render_time

# Columns of the session's send history (one per transport sequence number).
H_SEND_US = 0
H_SIZE = 1
H_PROBE = 2
H_RTP = 3
H_RTX = 4
H_ARRIVAL_US = 5
H_COLUMNS = 6
# Columns of the session's RTP packet table (one per RTP sequence number).
R_SIZE = 0
R_FRAME = 1
R_LAST_TX_US = 2
R_FIRST_TX_US = 3
R_RETRANSMITTED = 4
R_COLUMNS = 5
# Columns of the frame table (one per encoded frame): the sender's, then the receiver's.
F_NPKTS = 0
F_IS_KEY = 1
F_CAPTURE_US = 2
F_BYTES = 3
F_FIRST_RTP = 4
F_GOT = 5  # packets of the frame received (libwebrtc's frame buffer)
F_NACKED = 6  # a packet of the frame came by retransmission
F_COLUMNS = 7
# Rows of the render table (float64, a column per decoded frame).
D_RENDER_MS = 0
D_FRAME_DELAY_MS = 1
D_ROWS = 2

# Path state shared with the send side (see loki.emu.send_path): counts and delivery pointer.
S_N_HIST = 0
S_N_RTP = 1
S_N_FRAMES = 2
#: The next packet to deliver (transport seq), and its arrival (NO_ARRIVAL_US when none).
S_RX_NEXT_SEQ = 3
S_RX_NEXT_US = 4
#: The highest RTP seq of a lost packet: until the receiver has seen past it, delivering an
#: arrival may make it send a NACK.
S_LOST_RTP_MAX = 5
S_END_US = 6
S_DELAY_MS = 7
S_HAS_LOSS = 8
S_NOW_US = 9
S_OUT_T_US = 10
S_FIELDS = 11
#: ``S_RX_NEXT_US`` when every packet sent so far has been delivered or lost.
NO_ARRIVAL_US = 1 << 62

# Receiver scalars.
FB_NEXT_SEQ = 0
FB_HIGHEST_SEQ = 1
LAST_DECODED = 2
MAX_FRAME_SEEN = 3
RR_EXPECTED_BASE = 4
RR_RECEIVED = 5
RX_RTT_US = 6
BYTES_RENDERED = 7
N_DECODES = 8
N_NACKS = 9  # NACK records written by the last delivery
NEEDED = 10  # room the missing-packet table needs (after DELIVER_NEEDS_NACK_ROOM)
RX_FIELDS = 11

#: :func:`deliver_arrivals` answers, besides the count of NACK records (>= 0) when done.
DELIVER_NEEDS_NACK_ROOM = -1
DELIVER_NEEDS_OUT_ROOM = -2


@njit(cache=True)
def deliver_arrivals(
    path: np.ndarray,
    rx: np.ndarray,
    hist: np.ndarray,
    rtp: np.ndarray,
    frames: np.ndarray,
    nack_state: np.ndarray,
    missing: np.ndarray,
    keyframe_state: np.ndarray,
    timing_ints: np.ndarray,
    timing_floats: np.ndarray,
    renders: np.ndarray,
    nacks: np.ndarray,
    until_us: int,
) -> int:
    """Deliver to the receiver every packet that arrives at or before ``until_us``.

    Packets go in transport order from ``path[S_RX_NEXT_SEQ]``, lost ones skipped. Every NACK
    a packet causes is written to ``nacks`` as (arrival us, first seq, end seq) and counted in
    ``rx[N_NACKS]`` (reset here); the count is returned. Stops early, before the packet that
    needs it, when the missing-packet table or ``nacks`` has no room: returns
    :data:`DELIVER_NEEDS_NACK_ROOM` or :data:`DELIVER_NEEDS_OUT_ROOM`; make room and call again.
    """
    n_hist = path[S_N_HIST]
    n_frames = path[S_N_FRAMES]
    seq = path[S_RX_NEXT_SEQ]
    rx[N_NACKS] = 0
    next_us = NO_ARRIVAL_US
    while seq < n_hist:
        arrival_us = hist[H_ARRIVAL_US, seq]
        if arrival_us > until_us:
            next_us = arrival_us
            break
        if arrival_us >= 0:
            rtp_seq = hist[H_RTP, seq]
            if rtp_seq >= 0:
                gap = rtp_seq - nack_state[HIGHEST] - 1
                if gap > 0 and nack_state[COUNT] + gap > missing.shape[1]:
                    rx[NEEDED] = nack_state[COUNT] + gap
                    path[S_RX_NEXT_SEQ] = seq
                    path[S_RX_NEXT_US] = arrival_us
                    return DELIVER_NEEDS_NACK_ROOM
                if gap > 0 and rx[N_NACKS] == nacks.shape[1]:
                    path[S_RX_NEXT_SEQ] = seq
                    path[S_RX_NEXT_US] = arrival_us
                    return DELIVER_NEEDS_OUT_ROOM
            _on_packet(
                rx, hist, rtp, frames, n_frames, nack_state, missing, keyframe_state,
                timing_ints, timing_floats, renders, nacks, seq, arrival_us,
            )  # fmt: skip
        seq += 1
    path[S_RX_NEXT_SEQ] = seq
    path[S_RX_NEXT_US] = next_us
    return rx[N_NACKS]


@njit(cache=True)
def _on_packet(
    rx: np.ndarray,
    hist: np.ndarray,
    rtp: np.ndarray,
    frames: np.ndarray,
    n_frames: int,
    nack_state: np.ndarray,
    missing: np.ndarray,
    keyframe_state: np.ndarray,
    timing_ints: np.ndarray,
    timing_floats: np.ndarray,
    renders: np.ndarray,
    nacks: np.ndarray,
    seq: int,
    arrival_us: int,
) -> None:
    """Take one arriving packet (transport ``seq``)."""
    if seq > rx[FB_HIGHEST_SEQ]:
        rx[FB_HIGHEST_SEQ] = seq
    rtp_seq = hist[H_RTP, seq]
    if rtp_seq < 0:
        return  # padding
    highest = nack_state[HIGHEST]
    if not nack_on_packet(nack_state, missing, rtp_seq, arrival_us):
        return  # a duplicate, or a packet recovery had given up on
    if rtp_seq > highest + 1:
        k = rx[N_NACKS]
        nacks[0, k] = arrival_us
        nacks[1, k] = highest + 1
        nacks[2, k] = rtp_seq
        rx[N_NACKS] = k + 1
    is_rtx = hist[H_RTX, seq] != 0
    if not is_rtx:
        rx[RR_RECEIVED] += 1
    frame_id = rtp[R_FRAME, rtp_seq]
    if frame_id <= rx[LAST_DECODED]:
        return
    if frames[F_IS_KEY, frame_id]:
        keyframe_state[LAST_KEYFRAME_PACKET_US] = arrival_us
    if is_rtx:
        frames[F_NACKED, frame_id] = 1
    keyframe_state[WAITING_FRAMES] = 1
    got = frames[F_GOT, frame_id] + 1
    frames[F_GOT, frame_id] = got
    if frame_id > rx[MAX_FRAME_SEEN]:
        rx[MAX_FRAME_SEEN] = frame_id
    if got == frames[F_NPKTS, frame_id]:
        _decode_ready(
            rx,
            frames,
            n_frames,
            nack_state,
            missing,
            keyframe_state,
            timing_ints,
            timing_floats,
            renders,
            arrival_us,
        )


@njit(cache=True)
def _decode_ready(
    rx: np.ndarray,
    frames: np.ndarray,
    n_frames: int,
    nack_state: np.ndarray,
    missing: np.ndarray,
    keyframe_state: np.ndarray,
    timing_ints: np.ndarray,
    timing_floats: np.ndarray,
    renders: np.ndarray,
    now_us: int,
) -> None:
    """Decode every frame that has become decodable.

    Frames newer than the last decoded one with packets received are libwebrtc's frame buffer;
    older entries are never looked at again, so nothing is removed from the table.
    """
    while True:
        frame = rx[LAST_DECODED] + 1
        if not (frame < n_frames and frames[F_GOT, frame] == frames[F_NPKTS, frame]):
            # A complete keyframe further ahead makes everything before it obsolete.
            key = -1
            for f in range(frame + 1, rx[MAX_FRAME_SEEN] + 1):
                if frames[F_GOT, f] == frames[F_NPKTS, f] and frames[F_IS_KEY, f]:
                    key = f
            if key < 0:
                return
            frame = key
        _decode(
            rx,
            frames,
            nack_state,
            missing,
            keyframe_state,
            timing_ints,
            timing_floats,
            renders,
            frame,
            now_us,
        )


@njit(cache=True)
def _decode(
    rx: np.ndarray,
    frames: np.ndarray,
    nack_state: np.ndarray,
    missing: np.ndarray,
    keyframe_state: np.ndarray,
    timing_ints: np.ndarray,
    timing_floats: np.ndarray,
    renders: np.ndarray,
    frame_id: int,
    now_us: int,
) -> None:
    is_key = frames[F_IS_KEY, frame_id] != 0
    if is_key:
        nack_clear_up_to(nack_state, missing, frames[F_FIRST_RTP, frame_id])
    rx[LAST_DECODED] = frame_id
    keyframe_on_decoded(keyframe_state, now_us, is_key, rx[MAX_FRAME_SEEN] > frame_id)
    capture_us = frames[F_CAPTURE_US, frame_id]
    retransmitted = frames[F_NACKED, frame_id] != 0
    frames[F_NACKED, frame_id] = 0
    render_us = render_time(
        timing_ints, timing_floats, capture_us, now_us, retransmitted, rx[RX_RTT_US]
    )
    k = rx[N_DECODES]
    renders[D_RENDER_MS, k] = render_us / 1000.0
    renders[D_FRAME_DELAY_MS, k] = (render_us - capture_us) / 1000.0
    rx[N_DECODES] = k + 1
    rx[BYTES_RENDERED] += frames[F_BYTES, frame_id]


@njit(cache=True)
def timer_quiet(
    path: np.ndarray, nack_state: np.ndarray, keyframe_state: np.ndarray, now_us: int
) -> bool:
    """:meth:`Receiver.quiet`, compiled: the session asks it before every 20 ms tick."""
    return (
        nack_state[COUNT] == 0
        and path[S_LOST_RTP_MAX] <= nack_state[HIGHEST]
        and not keyframe_state[REQUIRED]
        and now_us - keyframe_state[LAST_DECODE_US] < MAX_WAIT_FOR_FRAME_US
    )


@njit(cache=True)
def _tick(
    rx: np.ndarray,
    nack_state: np.ndarray,
    missing: np.ndarray,
    keyframe_state: np.ndarray,
    due: np.ndarray,
    now_us: int,
) -> tuple[int, bool]:
    """The receiver's 20 ms timer: NACKs due again (written to ``due``; their count is
    returned) and whether to send a PLI now."""
    nack_state[RTT_US] = rx[RX_RTT_US]
    n_due, gave_up = nack_retries_due(nack_state, missing, now_us, due, 0)
    return n_due, keyframe_should_request(keyframe_state, now_us, gave_up)


class Receiver:
    """Receive-side state of one emulated video stream.

    ``path``, ``hist``, ``rtp`` and ``frames`` are the session's tables (see the column
    constants); :meth:`deliver` reads whichever arrays they are at the time of the call.
    """

    __slots__ = (
        "_args",
        "_deliver",
        "_due",
        "_frame_delay_ms",
        "_keyframes",
        "_nack",
        "_nacks_out",
        "_render_ms",
        "_rendered",
        "_renders",
        "_tables",
        "_timing",
        "state",
    )

    def __init__(self, frame_capacity: int) -> None:
        #: Receiver scalars (see the RX constants).
        self.state = np.zeros(RX_FIELDS, dtype=np.int64)
        self.state[FB_HIGHEST_SEQ] = -1
        self.state[LAST_DECODED] = -1
        self.state[MAX_FRAME_SEEN] = -1
        self._nack = NackRequester()
        self._keyframes = KeyframeRequester()
        self._timing = PlayoutTiming()
        self.state[RX_RTT_US] = self._nack.rtt_us
        self._renders = np.zeros((D_ROWS, frame_capacity))
        self._nacks_out = np.zeros((3, 64), dtype=np.int64)
        self._due = np.zeros(64, dtype=np.int64)
        self._rendered = 0
        self._render_ms: list[float] = []
        self._frame_delay_ms: list[float] = []
        self._tables: tuple[np.ndarray, ...] = ()
        self._args: tuple[np.ndarray, ...] | None = None
        self._deliver = deliver_arrivals

    # -- packets -------------------------------------------------------------------------
    def attach(
        self, path: np.ndarray, hist: np.ndarray, rtp: np.ndarray, frames: np.ndarray
    ) -> None:
        """The session's path state, send history, RTP and frame tables (see the column
        constants), again whenever one of them is replaced."""
        self._tables = (path, hist, rtp, frames)
        self._args = None

    def deliver(self, until_us: int) -> tuple[tuple[int, list[int]], ...]:
        """Take every packet arriving at or before ``until_us``; the NACKs to send, in order,
        as (arrival us, RTP seqs)."""
        out: tuple[tuple[int, list[int]], ...] = ()
        while True:
            args = self._args
            if args is None:
                path, hist, rtp, frames = self._tables
                args = self._args = (
                    path,
                    self.state,
                    hist,
                    rtp,
                    frames,
                    self._nack.state,
                    self._nack.missing,
                    self._keyframes.state,
                    self._timing.ints,
                    self._timing.floats,
                    self._renders,
                    self._nacks_out,
                )
                self._deliver = entry_point(deliver_arrivals, (*args, until_us))
            status = self._deliver(*args, until_us)
            if status == 0:
                return out
            n = int(self.state[N_NACKS])
            if n:
                out += tuple(
                    (arrival_us, list(range(first, end)))
                    for arrival_us, first, end in self._nacks_out[:, :n].T.tolist()
                )
            if status > 0:
                return out
            if status == DELIVER_NEEDS_NACK_ROOM:
                self._nack.reserve(int(self.state[NEEDED]))
            else:
                self._nacks_out = np.zeros((3, 2 * self._nacks_out.shape[1]), dtype=np.int64)
            self._args = None

    def ensure_frames(self, frame_capacity: int) -> None:
        """Room for a render time per frame of a frame table this long."""
        if self._renders.shape[1] < frame_capacity:
            grown = np.zeros((D_ROWS, frame_capacity))
            grown[:, : self._renders.shape[1]] = self._renders
            self._renders = grown
            self._args = None

    # -- outputs --------------------------------------------------------------------------
    def _render_pending(self) -> None:
        """Extend the render lists with the frames decoded since the last call."""
        n = int(self.state[N_DECODES])
        if self._rendered != n:
            self._render_ms.extend(self._renders[D_RENDER_MS, self._rendered : n].tolist())
            self._frame_delay_ms.extend(
                self._renders[D_FRAME_DELAY_MS, self._rendered : n].tolist()
            )
            self._rendered = n

    @property
    def render_ms(self) -> list[float]:
        """Render time of every decoded frame, in order (receiver clock, ms)."""
        self._render_pending()
        return self._render_ms

    @property
    def frame_delay_ms(self) -> list[float]:
        """Capture-to-render delay of every decoded frame, in order."""
        self._render_pending()
        return self._frame_delay_ms

    @property
    def frame_bytes_rendered(self) -> int:
        return int(self.state[BYTES_RENDERED])

    @property
    def rtt_us(self) -> int:
        """The RTT the receiver knows (the sender's last estimate): NACK and playout use it."""
        return int(self.state[RX_RTT_US])

    @rtt_us.setter
    def rtt_us(self, value: int) -> None:
        self.state[RX_RTT_US] = value

    @property
    def nack_state(self) -> np.ndarray:
        """The NACK requester's state array (the send path reads its highest seq)."""
        return self._nack.state

    @property
    def highest_rtp_seq(self) -> int:
        """The highest RTP sequence number received so far (-1 before any)."""
        return self._nack.highest_seq

    # -- periodic work ---------------------------------------------------------------------
    def quiet(self, path: np.ndarray, now_us: int) -> bool:
        """Whether the 20 ms timer has nothing to do at ``now_us``, whatever arrived since the
        last delivery: nothing is missing and no arrival can reveal a loss (``path``'s lost
        RTP seq is not above the highest received), and no keyframe is needed and none can
        become needed (a frame was decoded less than 3 s ago, and decodes only make that
        more recent). Then :meth:`tick` would answer ``([], False)`` and delivery can wait.
        """
        return timer_quiet(path, self._nack.state, self._keyframes.state, now_us)

    def quiet_for(self, path: np.ndarray) -> Callable[[int], bool]:
        """:meth:`quiet` on ``path`` as a function of the time alone, for a caller that asks
        at every tick (the compiled code is resolved once)."""
        args = (path, self._nack.state, self._keyframes.state)
        quiet = entry_point(timer_quiet, (*args, 0))
        return functools.partial(quiet, *args)

    def tick(self, now_us: int) -> tuple[list[int], bool]:
        """The 20 ms timer: NACKs due again, and whether to send a PLI now (a keyframe is
        needed: nothing decodable for long, or NACK gave up on a packet)."""
        nack = self._nack
        if self._due.shape[0] < len(nack):
            self._due = np.zeros(2 * len(nack), dtype=np.int64)
        n_due, pli = _tick(
            self.state, nack.state, nack.missing, self._keyframes.state, self._due, now_us
        )
        return (self._due[:n_due].tolist() if n_due else []), bool(pli)

    def take_feedback(self) -> tuple[int, int]:
        """Transport-wide feedback: the seqs ``[start, end)`` the next report covers.

        The report ends at the highest sequence number received so far; packets after it are
        not yet known to be missing. Empty (``start == end``) when nothing arrived since the
        last report.
        """
        st = self.state
        start = int(st[FB_NEXT_SEQ])
        end = max(start, int(st[FB_HIGHEST_SEQ]) + 1)
        st[FB_NEXT_SEQ] = end
        return start, end

    def take_receiver_report(self) -> tuple[int, int]:
        """RTCP RR figures since the last report: (packets lost, packets expected)."""
        st = self.state
        highest = self._nack.highest_seq
        expected = highest + 1 - int(st[RR_EXPECTED_BASE])
        received = int(st[RR_RECEIVED])
        st[RR_EXPECTED_BASE] = highest + 1
        st[RR_RECEIVED] = 0
        return max(0, expected - received), max(0, expected)
