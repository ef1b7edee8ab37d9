"""One emulated streaming session: encoder -> pacer -> uplink -> receiver -> feedback -> controller.

A discrete-event loop over a heap of timed events, with no per-millisecond ticking. Packets do
not get events of their own on the receive side: the uplink tells at send time when a packet
will arrive (FIFO link, constant delay), the arrival is kept in the send history, and the
receiver takes the arrivals up to the time of the next event before that event runs. Anything
the receiver then emits (a NACK) is an event of its own, so order stays exact.

Event kinds (all times in integer microseconds of the sender's clock):

``FRAME``      the encoder produces a frame; it is packetised into the pacer
``PACE``       the pacer may send its next packet(s)
``FB_TX``      the receiver sends transport-wide feedback (every ``feedback_interval_ms``)
``FB_RX``      the sender gets that feedback: the controller decides a new target
``NACK_RX``    the sender gets a NACK and queues retransmissions
``PLI_RX``     the sender gets a keyframe request
``RR_TX``      the receiver sends an RTCP receiver report (loss figures), every second
``RR_RX``      the sender gets it: the controller's loss-based part sees it
``TICK``       the controller's 25 ms process interval and the receiver's 20 ms NACK timer

Speed (GCC in the loop runs well over a thousand times faster than real time on one core): the
work per packet is compiled and never goes through the heap. :func:`loki.emu.send_path.pace`
runs the pace events that would be popped next anyway back to back, straight into the
compiled link stages and the send history (numpy tables, see :mod:`loki.emu.receiver`);
:meth:`Receiver.deliver` hands arrivals to the compiled receiver in batches. Only events that
involve the encoder or the controller, and the periodic ones, go through the Python loop. A
session whose uplink is not the standard loss/link/delay chain (:meth:`Session.use_uplink`, for
fault injection) sends through :meth:`Path.send` packet by packet instead, with the same rules.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from loki.api import Controller, TransportFeedback
from loki.emu.compiled import entry_point
from loki.emu.delay import PathDelaySteps, check_path_delay_steps
from loki.emu.link import Link
from loki.emu.loss import Loss
from loki.emu.pacer import Pacer
from loki.emu.path import Path
from loki.emu.receiver import (
    F_BYTES,
    F_CAPTURE_US,
    F_COLUMNS,
    F_FIRST_RTP,
    F_IS_KEY,
    F_NPKTS,
    H_ARRIVAL_US,
    H_COLUMNS,
    H_PROBE,
    H_RTP,
    H_RTX,
    H_SEND_US,
    H_SIZE,
    NO_ARRIVAL_US,
    R_COLUMNS,
    R_FIRST_TX_US,
    R_FRAME,
    R_LAST_TX_US,
    R_RETRANSMITTED,
    R_SIZE,
    S_DELAY_MS,
    S_END_US,
    S_FIELDS,
    S_HAS_LOSS,
    S_LOST_RTP_MAX,
    S_N_FRAMES,
    S_N_HIST,
    S_N_RTP,
    S_OUT_T_US,
    S_RX_NEXT_US,
    Receiver,
)
from loki.emu.send_path import (
    DELIVER_FIRST,
    IDLE,
    MAX_RTP_PAYLOAD_BYTES,
    NEED_DRAWS,
    NEED_FRAME_ROOM,
    NEED_HISTORY_ROOM,
    NEED_LINK_ROOM,
    NEED_MEDIA_ROOM,
    NEED_RTP_ROOM,
    PACKET_OVERHEAD_BYTES,
    PUSH_PACE,
    SCHEDULE,
    SEND_AT,
    frame_room,
    pace,
    packet_count,
    packetise,
    record_send,
)
from loki.emu.send_path import FRAME as PACKETISE_FRAME
from loki.qoe import QoeReport, compute_qoe
from loki.receive.nack_requester import HIGHEST
from loki.timeline import bin_timeline, bins
from traces.trace import BYTES_PER_OPPORTUNITY, Trace

FRAME, PACE, FB_TX, FB_RX, NACK_RX, PLI_RX, RR_TX, RR_RX, TICK = range(9)

__all__ = [
    "MAX_RTP_PAYLOAD_BYTES",
    "PACKET_OVERHEAD_BYTES",
    "LinkConfig",
    "Session",
    "SessionConfig",
    "SessionResult",
    "make_uplink",
]
TICK_US = 20_000
RR_INTERVAL_US = 1_000_000
#: libwebrtc keeps packets for retransmission for at least this long (RtpPacketHistory).
RTX_HISTORY_US = 1_000_000
#: Retransmissions may use at most the target rate over this window (libwebrtc's
#: ``RateLimiter`` that ``RtpTransportControllerSend`` sets to the target).
RTX_RATE_WINDOW_US = 1_000_000
_FEEDBACK_KINDS = frozenset({FB_RX, NACK_RX, PLI_RX, RR_RX})
#: Events that read the receiver's state (FB_RX sets the RTT it renders frames with): arrivals
#: up to their time are delivered before them. Before the others only while a NACK may result,
#: and before TICK only when the receiver's timer may have something to do (Receiver.quiet).
_RECEIVER_KINDS = frozenset({FB_TX, FB_RX, RR_TX})
#: The compiled send path's answers for a frame it has no room for (see _make_frame_room).
_FRAME_ROOM = frozenset({NEED_FRAME_ROOM, NEED_RTP_ROOM, NEED_MEDIA_ROOM})
#: Rows the send history, RTP and frame tables start with (when full, they grow to what the
#: session is projected to need: Session._rows_wanted).
_INITIAL_ROWS = 4096


@dataclass
class LinkConfig:
    """The emulated network: a trace-driven uplink plus delays, queue and loss."""

    trace: Trace
    delay_ms: int = 20
    queue_packets: int | None = None
    queue_bytes: int | None = None
    loss: float = 0.0
    feedback_loss: float = 0.0
    #: Windows [start_ms, end_ms) in which every receiver-to-sender message (transport
    #: feedback, RTCP RR, NACK, PLI) is lost: a feedback blackout.
    feedback_blackouts_ms: tuple[tuple[int, int], ...] = ()
    #: Windows ``(start_ms, end_ms, extra_ms)`` in which the media path is ``extra_ms`` longer
    #: (a path change: handover, re-route), packets kept in order (loki.emu.delay).
    path_delay_steps_ms: tuple[tuple[int, int, int], ...] = ()

    def __post_init__(self) -> None:
        if self.delay_ms < 0:
            raise ValueError(f"delay_ms must be >= 0, got {self.delay_ms}")
        if not 0.0 <= self.loss < 1.0 or not 0.0 <= self.feedback_loss < 1.0:
            raise ValueError("loss probabilities must be in [0, 1)")
        if self.queue_packets is not None and self.queue_bytes is not None:
            raise ValueError("give queue_packets or queue_bytes, not both")
        for start, end in self.feedback_blackouts_ms:
            if not 0 <= start < end:
                raise ValueError(
                    f"feedback blackout needs 0 <= start_ms < end_ms, got {start, end}"
                )
        check_path_delay_steps(self.path_delay_steps_ms)
        if (self.queue_packets is not None and self.queue_packets <= 0) or (
            self.queue_bytes is not None and self.queue_bytes <= 0
        ):
            raise ValueError("queue limits must be > 0")


@dataclass
class SessionConfig:
    duration_s: float = 60.0
    fps: float = 30.0
    feedback_interval_ms: int = 100
    keyframe_interval_s: float = 0.0  # 0: keyframes only on request (libwebrtc's default)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.duration_s <= 0:
            raise ValueError(f"duration_s must be > 0, got {self.duration_s}")
        if self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if not 10 <= self.feedback_interval_ms <= 1000:
            raise ValueError("feedback_interval_ms must be within [10, 1000]")


@dataclass
class SessionResult:
    qoe: QoeReport
    #: Per-decision rows: time_s, target_bps (after the decision).
    decisions: list[tuple[float, int]] = field(default_factory=list)
    #: Per-second rows for plots and --timeline.
    timeline: dict[str, np.ndarray] = field(default_factory=dict)


def make_uplink(link: LinkConfig, seed: int) -> Path:
    """Build the forward path (loss -> mm-link -> delay) the session sends media through."""
    from loki.emu.link import DropTail
    from loki.emu.path import uplink_path

    queue = None
    if link.queue_packets is not None:
        queue = DropTail(limit_packets=link.queue_packets)
    elif link.queue_bytes is not None:
        queue = DropTail(limit_bytes=link.queue_bytes)
    return uplink_path(link.trace, link.delay_ms, link.loss, queue, seed)


def with_path_delay_steps(uplink: Path, steps: tuple[tuple[int, int, int], ...]) -> Path:
    """``uplink`` with path changes after its last stage (not a compiled chain: packets go
    through it one by one); ``uplink`` itself when there are none."""
    return Path([*uplink.stages, PathDelaySteps(steps)]) if steps else uplink


class Session:
    """Runs one controller over one link; call :meth:`run` (or :meth:`step` for RL)."""

    def __init__(
        self,
        controller: Controller,
        link: LinkConfig,
        config: SessionConfig | None = None,
        encoder_factory: Callable | None = None,
    ) -> None:
        self.controller = controller
        self.link = link
        self.config = config or SessionConfig()
        cfg = self.config
        self._rng = np.random.default_rng(cfg.seed)
        self._uplink = make_uplink(link, seed=int(self._rng.integers(2**31)))
        self._std_uplink = self._uplink
        # With path changes the uplink is no longer the compiled chain: the session then sends
        # packet by packet through it.
        self._uplink = with_path_delay_steps(self._std_uplink, link.path_delay_steps_ms)
        self._loss = self._uplink.stage(Loss)
        self._link = self._uplink.stage(Link)
        self._fb_loss_rng = np.random.default_rng(int(self._rng.integers(2**31)))
        self._delay_us = link.delay_ms * 1000
        self._end_us = round(cfg.duration_s * 1e6)
        if encoder_factory is None:
            from loki.emu.encoder import VideoEncoderModel

            self.encoder = VideoEncoderModel(
                fps=cfg.fps,
                keyframe_interval_s=cfg.keyframe_interval_s,
                seed=int(self._rng.integers(2**31)),
            )
        else:
            self.encoder = encoder_factory(cfg)
        target = controller.target_bps
        self._target_bps = target
        self.encoder.set_target(self._encoder_target(target), 0)
        self.pacer = Pacer(0)
        self.pacer.set_target(target)
        # The send history (a row per transport sequence number), the RTP packet table and the
        # frame table, as numpy columns (see loki.emu.receiver); their used lengths, the
        # receiver's delivery pointer and a few constants of the path are in _path.
        self._hist = np.zeros((H_COLUMNS, _INITIAL_ROWS), dtype=np.int64)
        self._rtp = np.zeros((R_COLUMNS, _INITIAL_ROWS), dtype=np.int64)
        self._frames = np.zeros((F_COLUMNS, _INITIAL_ROWS), dtype=np.int64)
        self._path = path = np.zeros(S_FIELDS, dtype=np.int64)
        path[S_RX_NEXT_US] = NO_ARRIVAL_US
        path[S_LOST_RTP_MAX] = -1
        path[S_END_US] = self._end_us
        path[S_DELAY_MS] = link.delay_ms
        path[S_HAS_LOSS] = self._loss is not None
        self._no_loss_state = np.zeros(2, dtype=np.int64)
        self._no_loss_flags = np.zeros(0, dtype=np.bool_)
        self.receiver = Receiver(_INITIAL_ROWS)
        #: Whether the receiver's timer has nothing to do at a time (Receiver.quiet).
        self._quiet = self.receiver.quiet_for(path)
        #: (time, answer) of the last time step asked it for a tick.
        self._tick_quiet = (-1, False)
        self._pace_args: tuple[np.ndarray, ...] | None = None
        self._pace_call: Callable[..., int] = pace
        self._pace_args_generation = -1
        self._tables_changed()
        self.frames_dropped = 0
        #: Frames the controller asked the sender to skip (Controller.skip_frame).
        self.frames_skipped = 0
        self._asks_skip = controller.skips_frames  # others never skip: not asked per frame
        # Feedback reports cover every transport seq below this; only a controller that reads
        # the bytes in flight is told them (Controller.uses_outstanding_data).
        self._reported_end = 0
        self._tells_outstanding = controller.uses_outstanding_data
        self._rtx_sent: deque[tuple[int, int]] = deque()  # (us, bytes) in the rate window
        self._rtx_window_bytes = 0
        self._blackouts_us = [(a * 1000, b * 1000) for a, b in link.feedback_blackouts_ms]
        self.feedback_blacked_out = 0
        self._events: list[tuple[int, int, int, object]] = []
        self._order = 0
        # The pending pace time (libwebrtc's next process time), NaN when none.
        self._pace_at = np.full(1, np.nan)
        self._rtt_us = 0
        self.decisions: list[tuple[float, int]] = []
        self._last_report: TransportFeedback | None = None
        #: The time of the last event taken off the heap (the pace events that run in between,
        #: never on the heap, do not move it).
        self.now_us = 0
        self._push(0, FRAME, None)
        self._push(cfg.feedback_interval_ms * 1000, FB_TX, None)
        self._push(RR_INTERVAL_US, RR_TX, None)
        self._push(TICK_US, TICK, None)
        self._take_probes(0)

    # -- the tables, as the sequences callers read ----------------------------------------
    @property
    def send_us(self) -> np.ndarray:
        """Send time of every packet, by transport sequence number."""
        return self._hist[H_SEND_US, : self._path[S_N_HIST]]

    @property
    def size_bytes(self) -> np.ndarray:
        return self._hist[H_SIZE, : self._path[S_N_HIST]]

    @property
    def probe_id(self) -> np.ndarray:
        return self._hist[H_PROBE, : self._path[S_N_HIST]]

    @property
    def pkt_rtp(self) -> np.ndarray:
        """RTP sequence number of every packet (-1: padding)."""
        return self._hist[H_RTP, : self._path[S_N_HIST]]

    @property
    def pkt_rtx(self) -> np.ndarray:
        """Whether each packet is a retransmission (a copy)."""
        return self._hist[H_RTX, : self._path[S_N_HIST]].astype(bool)

    @property
    def arrival_us(self) -> np.ndarray:
        """Arrival time of every packet at the receiver, -1 if lost (known at send time)."""
        return self._hist[H_ARRIVAL_US, : self._path[S_N_HIST]]

    @property
    def frame_npkts(self) -> np.ndarray:
        return self._frames[F_NPKTS, : self._path[S_N_FRAMES]]

    @property
    def frame_is_key(self) -> np.ndarray:
        return self._frames[F_IS_KEY, : self._path[S_N_FRAMES]].astype(bool)

    @property
    def frame_capture_us(self) -> np.ndarray:
        return self._frames[F_CAPTURE_US, : self._path[S_N_FRAMES]]

    @property
    def frame_bytes(self) -> np.ndarray:
        return self._frames[F_BYTES, : self._path[S_N_FRAMES]]

    @property
    def frame_first_rtp(self) -> np.ndarray:
        return self._frames[F_FIRST_RTP, : self._path[S_N_FRAMES]]

    # -- plumbing ----------------------------------------------------------------------------
    def _push(self, at_us: float, kind: int, arg: object) -> None:
        self._order += 1
        heapq.heappush(self._events, (int(at_us), self._order, kind, arg))

    @staticmethod
    def _encoder_target(target_bps: int) -> int:
        # The encoder gets the target less per-packet overhead at full-size packets.
        return int(
            target_bps * MAX_RTP_PAYLOAD_BYTES / (MAX_RTP_PAYLOAD_BYTES + PACKET_OVERHEAD_BYTES)
        )

    def _set_target(self, target_bps: int, now_us: int) -> None:
        if target_bps != self._target_bps:
            self._target_bps = target_bps
            self.encoder.set_target(self._encoder_target(target_bps), now_us // 1000)
            self.pacer.set_target(target_bps)
            self._schedule_pace(now_us)

    def _take_probes(self, now_us: int) -> None:
        clusters = self.controller.pop_probe_clusters()
        if clusters:
            for c in clusters:
                self.pacer.add_probe_cluster(c)
            self._schedule_pace(now_us)

    def _tables_changed(self) -> None:
        """A table or stage array was replaced (grown): rebuild the compiled calls' arguments."""
        self._pace_args = None
        self.receiver.attach(self._path, self._hist, self._rtp, self._frames)

    def _rows_wanted(self, rows: int, used: int, now_us: int) -> int:
        """At least ``rows``, and room for the rest of the session at the pace the table's
        ``used`` rows filled so far (plus an eighth): one growth of a table, not a copy of
        it every few seconds."""
        if now_us > 0:
            rows = max(rows, used * self._end_us // now_us + used // 8)
        return rows

    @staticmethod
    def _grown(table: np.ndarray, rows: int) -> np.ndarray:
        """``table`` with room for at least ``rows`` rows (doubling)."""
        cap = table.shape[1]
        if rows <= cap:
            return table
        while cap < rows:
            cap *= 2
        grown = np.zeros((table.shape[0], cap), dtype=table.dtype)
        grown[:, : table.shape[1]] = table
        return grown

    # -- the data path -----------------------------------------------------------------------
    def _schedule_pace(self, now_us: int, run_now: bool = False) -> None:
        """Put the pacer's next send time on the event list, unless one earlier is there.

        With ``run_now`` (only where the caller's handler has nothing left to do), a pace event
        that would be the very next event the loop pops runs here instead, and so on while
        that holds: the packets go out exactly as if the event had gone through the heap.

        Arrivals up to a pace event are delivered before it only while the receiver could
        answer one with a NACK (a lost packet it has not yet seen past): otherwise delivering
        them changes nothing the sender sees until the next event off the heap, and
        :meth:`step` delivers them before that one.
        """
        if not run_now:
            t = self.pacer.next_send_us(now_us)
            pace_at = self._pace_at[0]
            if t is None or (pace_at == pace_at and t >= pace_at):
                return
            self._pace_at[0] = t
            self._push(math.ceil(t), PACE, None)
            return
        self._run_pace(SCHEDULE, now_us)

    def _run_pace(
        self, mode: int, now_us: int, frame_bytes: int = 0, frame_is_key: bool = False
    ) -> None:
        """Pace events through the compiled send path (``mode``: SCHEDULE from ``now_us``,
        SEND_AT: the pace event at ``now_us``, or PACKETISE_FRAME: a frame encoded at
        ``now_us``, then SCHEDULE), doing what it hands back to the loop."""
        if self._uplink is not self._std_uplink:
            if mode == PACKETISE_FRAME:
                self._reserve_frame(frame_bytes, now_us)
                pacer = self.pacer
                packetise(
                    self._path,
                    self._frames,
                    self._rtp,
                    pacer.ints,
                    pacer.floats,
                    pacer.media,
                    frame_bytes,
                    frame_is_key,
                    now_us,
                )
            elif mode == SEND_AT:
                self._send_due_generic(now_us)
            self._schedule_pace_generic(now_us)
            return
        path = self._path
        events = self._events
        while True:
            status = self._pace(mode, now_us, frame_bytes, frame_is_key)
            if status == IDLE:
                break
            if status in _FRAME_ROOM:
                self._make_frame_room(status, frame_bytes, now_us)
                continue  # the frame again: nothing was done
            at_us = int(path[S_OUT_T_US])
            if status == PUSH_PACE:
                self._push(at_us, PACE, None)
                break
            mode, now_us = SEND_AT, at_us
            if status == DELIVER_FIRST:
                # The event's place among same-time events is taken now, before the arrivals
                # are delivered (they may add NACK events after it).
                self._order += 1
                order = self._order
                self._consume_arrivals(at_us)
                if events and events[0][0] < at_us:
                    heapq.heappush(events, (at_us, order, PACE, None))
                    break
            else:
                self._make_room(status)

    def _pace(self, mode: int, now_us: int, frame_bytes: int, frame_is_key: bool) -> int:
        """:func:`loki.emu.send_path.pace` on this session's state."""
        pacer = self.pacer
        args = self._pace_args
        if args is None or self._pace_args_generation != pacer.generation:
            loss = self._loss
            args = self._pace_args = (
                self._path,
                self._pace_at,
                pacer.ints,
                pacer.floats,
                pacer.media,
                pacer.rtx,
                pacer.probes,
                self._no_loss_state if loss is None else loss.state,
                self._no_loss_flags if loss is None else loss.lost_flags,
                *self._link.arrays(),
                self._hist,
                self._rtp,
                self._frames,
                self.receiver.nack_state,
            )
            self._pace_args_generation = pacer.generation
            self._pace_call = entry_point(pace, (mode, now_us, 0, frame_bytes, False, *args))
        events = self._events
        return self._pace_call(
            mode,
            now_us,
            events[0][0] if events else NO_ARRIVAL_US,
            frame_bytes,
            frame_is_key,
            *args,
        )

    def _make_frame_room(self, status: int, frame_bytes: int, now_us: int) -> None:
        """Room for a frame of ``frame_bytes`` encoded at ``now_us`` in the table or ring
        ``status`` names."""
        path = self._path
        if status == NEED_FRAME_ROOM:
            used = int(path[S_N_FRAMES])
            self._frames = self._grown(self._frames, self._rows_wanted(2 * used, used, now_us))
            self.receiver.ensure_frames(self._frames.shape[1])
        elif status == NEED_RTP_ROOM:
            used = int(path[S_N_RTP])
            rows = self._rows_wanted(used + packet_count(frame_bytes), used, now_us)
            self._rtp = self._grown(self._rtp, rows)
        else:
            self.pacer.reserve_media(packet_count(frame_bytes))
        self._tables_changed()

    def _reserve_frame(self, frame_bytes: int, now_us: int) -> None:
        """:meth:`_make_frame_room` until there is room (the compiled path checks by itself)."""
        pacer = self.pacer
        while True:
            status = frame_room(
                self._path, self._frames, self._rtp, pacer.ints, pacer.media, frame_bytes
            )
            if status == IDLE:
                return
            self._make_frame_room(status, frame_bytes, now_us)

    def _make_room(self, status: int) -> None:
        if status == NEED_HISTORY_ROOM:
            used = self._hist.shape[1]
            rows = self._rows_wanted(2 * used, used, int(self._path[S_OUT_T_US]))
            self._hist = self._grown(self._hist, rows)
        elif status == NEED_LINK_ROOM:
            self._link.grow_ring()
        elif status == NEED_DRAWS:
            self._loss.refill()
        self._tables_changed()

    def _schedule_pace_generic(self, now_us: int) -> None:
        """:meth:`_schedule_pace` with ``run_now`` through a Python uplink (see the module
        docstring): the same rules as :func:`loki.emu.send_path.pace`."""
        pacer = self.pacer
        t = pacer.next_send_us(now_us)
        pace_at = self._pace_at[0]
        if t is None or (pace_at == pace_at and t >= pace_at):
            return
        self._pace_at[0] = t
        at_us = math.ceil(t)
        events = self._events
        path = self._path
        while at_us <= self._end_us and not (events and events[0][0] <= at_us):
            self._order += 1
            order = self._order
            if path[S_RX_NEXT_US] <= at_us and path[S_LOST_RTP_MAX] > self.receiver.highest_rtp_seq:
                self._consume_arrivals(at_us)
                if events and events[0][0] < at_us:
                    heapq.heappush(events, (at_us, order, PACE, None))
                    return
            self._pace_at[0] = np.nan
            self._send_due_generic(at_us)
            t = pacer.next_send_us(at_us)
            if t is None:
                return
            self._pace_at[0] = t
            at_us = math.ceil(t)
        self._push(at_us, PACE, None)

    def _send_due_generic(self, now_us: int) -> None:
        """:func:`loki.emu.send_path._send_due` through ``self._uplink.send``."""
        pop_due = self.pacer.pop_due
        path = self._path
        rtp = self._rtp
        while True:
            pkt = pop_due(now_us)
            if pkt is None:
                return
            size, rtp_seq, _frame, probe = pkt
            n = int(path[S_N_HIST])
            if n == self._hist.shape[1]:
                self._hist = self._grown(self._hist, self._rows_wanted(2 * n, n, now_us))
                self._tables_changed()
            hist = self._hist
            record_send(hist, rtp, n, now_us, size, rtp_seq, probe)
            arrival_ms = self._uplink.send(now_us // 1000, size)
            if arrival_ms < 0:
                hist[H_ARRIVAL_US, n] = -1
                if rtp_seq > path[S_LOST_RTP_MAX]:
                    path[S_LOST_RTP_MAX] = rtp_seq
            else:
                hist[H_ARRIVAL_US, n] = arrival_ms * 1000
                if path[S_RX_NEXT_US] == NO_ARRIVAL_US:
                    path[S_RX_NEXT_US] = arrival_ms * 1000
            path[S_N_HIST] = n + 1

    def _on_frame(self, now_us: int) -> None:
        self._push(now_us + 1e6 / self.config.fps, FRAME, None)
        if self._asks_skip and self.controller.skip_frame(now_us):
            self.frames_skipped += 1
            return  # the sender did not hand this frame to the encoder
        size, is_key = self.encoder.encode(now_us // 1000)
        if size <= 0:
            self.frames_dropped += 1
            return  # the encoder dropped this frame
        self._run_pace(PACKETISE_FRAME, now_us, size, bool(is_key))

    def _on_pace(self, now_us: int) -> None:
        # (The compiled path clears the pending pace time itself.)
        if self._uplink is not self._std_uplink:
            self._pace_at[0] = np.nan
        self._run_pace(SEND_AT, now_us)

    def _on_nack(self, rtp_seqs: list[int], now_us: int) -> None:
        rtt = self._rtt_us
        rtp = self._rtp
        queued = False
        for s in rtp_seqs:
            last = int(rtp[R_LAST_TX_US, s])
            if last < 0 or now_us - rtp[R_FIRST_TX_US, s] > max(RTX_HISTORY_US, 3 * rtt):
                continue  # not sent yet, or gone from the history
            if rtp[R_RETRANSMITTED, s] and now_us - last < rtt:
                continue  # already retransmitted less than an RTT ago (RtpPacketHistory)
            size = int(rtp[R_SIZE, s])
            if not self._rtx_allowed(size, now_us):
                continue
            rtp[R_RETRANSMITTED, s] = 1
            rtp[R_LAST_TX_US, s] = now_us
            self.pacer.enqueue_retransmission((size, s, int(rtp[R_FRAME, s]), -1), now_us)
            queued = True
        if queued:
            self._schedule_pace(now_us, run_now=True)

    def _rtx_allowed(self, size_bytes: int, now_us: int) -> bool:
        """Retransmissions share at most the target rate over a 1 s window."""
        sent = self._rtx_sent
        while sent and sent[0][0] <= now_us - RTX_RATE_WINDOW_US:
            self._rtx_window_bytes -= sent.popleft()[1]
        budget = self._target_bps * RTX_RATE_WINDOW_US // 8_000_000
        if self._rtx_window_bytes + size_bytes > budget:
            return False
        sent.append((now_us, size_bytes))
        self._rtx_window_bytes += size_bytes
        return True

    def _consume_arrivals(self, until_us: int) -> None:
        """Deliver to the receiver every packet that arrives at or before ``until_us``."""
        for arrival_us, seqs in self.receiver.deliver(until_us):
            self._push(arrival_us + self._delay_us, NACK_RX, seqs)

    def _on_feedback_rx(self, payload: tuple[int, int, int], now_us: int) -> None:
        tx_us, start, end = payload
        # The report covers transport seqs [start, end): every one of them has arrived or is
        # lost (the path is FIFO), so the send history holds their arrival times already.
        # One copy of the rows (each row of the copy is contiguous).
        rows = self._hist[:, start:end].copy()
        report = TransportFeedback(
            feedback_time_us=now_us,
            seq=np.arange(start, end, dtype=np.int64),
            send_time_us=rows[H_SEND_US],
            arrival_time_us=rows[H_ARRIVAL_US],
            size_bytes=rows[H_SIZE],
            probe_cluster_id=rows[H_PROBE],
        )
        # RTT from the newest received packet in the report, less the receiver's hold time.
        arrivals = report.arrival_time_us
        for i in range(end - start - 1, -1, -1):
            arrival = int(arrivals[i])
            if arrival >= 0:
                rtt = now_us - int(report.send_time_us[i]) - (tx_us - arrival)
                self._rtt_us = rtt
                self.receiver.rtt_us = max(rtt, 1000)
                self.controller.on_rtt(rtt, now_us)
                break
        self._last_report = report
        self._reported_end = max(self._reported_end, end)
        if self._tells_outstanding:
            self.controller.on_outstanding_data(self._outstanding_bytes(), now_us)
        target = self.controller.on_feedback(report)
        self.decisions.append((now_us / 1e6, target))
        self._set_target(target, now_us)
        self._take_probes(now_us)

    def _outstanding_bytes(self) -> int:
        """Bytes sent after the newest packet a received feedback report covered."""
        return int(self._hist[H_SIZE, self._reported_end : self._path[S_N_HIST]].sum())

    def _on_tick(self, now_us: int) -> None:
        at_us, quiet = self._tick_quiet  # asked by step, just before
        if at_us != now_us:
            quiet = self._quiet(now_us)
        if not quiet:
            due, pli = self.receiver.tick(now_us)
            if due:
                self._push(now_us + self._delay_us, NACK_RX, due)
            if pli:
                self._push(now_us + self._delay_us, PLI_RX, None)
        controller = self.controller
        if self._tells_outstanding:
            controller.on_outstanding_data(self._outstanding_bytes(), now_us)
        controller.on_process_interval(now_us)
        target = controller.target_bps
        if target != self._target_bps:
            self._set_target(target, now_us)
        self._take_probes(now_us)
        self._order += 1
        heapq.heappush(self._events, (now_us + TICK_US, self._order, TICK, None))

    def _handle(self, kind: int, arg: object, now_us: int) -> bool:
        """Run one event; True when it was a controller decision (feedback received)."""
        if (
            self._blackouts_us
            and kind in _FEEDBACK_KINDS
            and any(a <= now_us < b for a, b in self._blackouts_us)
        ):
            self.feedback_blacked_out += 1
            return False
        # The most frequent kinds first.
        if kind == TICK:
            self._on_tick(now_us)
        elif kind == FRAME:
            self._on_frame(now_us)
        elif kind == PACE:
            self._on_pace(now_us)
        elif kind == FB_TX:
            start, end = self.receiver.take_feedback()
            if end > start and not (
                self.link.feedback_loss and self._fb_loss_rng.random() < self.link.feedback_loss
            ):
                self._push(now_us + self._delay_us, FB_RX, (now_us, start, end))
            self._push(now_us + self.config.feedback_interval_ms * 1000, FB_TX, None)
        elif kind == FB_RX:
            self._on_feedback_rx(arg, now_us)  # type: ignore[arg-type]
            return True
        elif kind == NACK_RX:
            self._on_nack(arg, now_us)  # type: ignore[arg-type]
        elif kind == PLI_RX:
            self.encoder.request_keyframe()
        elif kind == RR_TX:
            lost, expected = self.receiver.take_receiver_report()
            self._push(now_us + self._delay_us, RR_RX, (lost, expected))
            self._push(now_us + RR_INTERVAL_US, RR_TX, None)
        elif kind == RR_RX:
            lost, expected = arg  # type: ignore[misc]
            self.controller.on_loss_report(lost, expected, now_us)
            self._set_target(self.controller.target_bps, now_us)
        return False

    @property
    def uplink(self) -> Path:
        """The media path the session sends through (see :meth:`use_uplink`)."""
        return self._uplink

    def use_uplink(self, path: Path) -> None:
        """Send media through ``path`` instead of the link's standard chain: fault injection
        wraps :attr:`uplink`'s stages in extra ones (a loss burst, a delay step). Call it
        before the first step. Stages that are not compiled are sent through packet by
        packet (:meth:`Path.send`), with the same rules, more slowly."""
        self._uplink = path

    def step(self) -> bool:
        """Advance to just after the next controller decision; False once the session is over."""
        events = self._events
        end = self._end_us
        path = self._path
        nack_state = self.receiver.nack_state
        quiet = self._quiet
        heappop = heapq.heappop
        handle = self._handle
        while events:
            t, _, kind, _ = events[0]
            if t > end:
                return False
            if kind == TICK:
                # The most frequent event. Arrivals go first only when the receiver's timer
                # may have something to do; it is asked once here for the tick (and again
                # after a delivery), and _on_tick takes the answer.
                tick_quiet = quiet(t)
                if not tick_quiet and path[S_RX_NEXT_US] <= t:
                    self._consume_arrivals(t)
                    if events[0][0] < t:
                        continue
                    tick_quiet = quiet(t)
                self._tick_quiet = (t, tick_quiet)
            elif path[S_RX_NEXT_US] <= t and (
                kind in _RECEIVER_KINDS or path[S_LOST_RTP_MAX] > nack_state[HIGHEST]
            ):
                self._consume_arrivals(t)
                if events[0][0] < t:
                    continue
            t, _, kind, arg = heappop(events)
            self.now_us = t
            if handle(kind, arg, t):
                return True
        return False

    def run(self, progress: Callable[[float], None] | None = None) -> SessionResult:
        """Run to the end of the session and return its QoE."""
        next_progress = 1e6
        while self.step():
            if progress is not None and self.now_us >= next_progress:
                progress(self.now_us / 1e6)
                next_progress += 1e6
        self._consume_arrivals(self._end_us)
        return self.result()

    def refresh_target(self) -> None:
        """Apply the controller's current target now (after an agent changed it between steps)."""
        self._set_target(self.controller.target_bps, self.now_us)

    @property
    def last_report(self) -> TransportFeedback | None:
        return self._last_report

    # -- results -----------------------------------------------------------------------------
    def result(self) -> SessionResult:
        end_us = self._end_us
        duration_ms = end_us / 1000.0
        send = np.asarray(self.send_us, dtype=np.int64)
        arr = np.asarray(self.arrival_us, dtype=np.int64)
        size = np.asarray(self.size_bytes, dtype=np.int64)
        in_session = send <= end_us
        got = (arr >= 0) & (arr <= end_us)
        decided = in_session & ((arr < 0) | (arr <= end_us))
        lost = in_session & (arr < 0)
        delays_ms = (arr[got] - send[got]) / 1000.0
        trace = self.link.trace
        capacity_bytes = trace.opportunities_between(0, int(duration_ms)) * BYTES_PER_OPPORTUNITY
        qoe = compute_qoe(
            duration_ms=duration_ms,
            capacity_bytes=capacity_bytes,
            link_bytes=float((size[got] + 4).sum()),
            frames_sent=int(np.count_nonzero(self.frame_capture_us <= end_us)),
            render_ms=self.receiver.render_ms,
            frame_delay_ms=self.receiver.frame_delay_ms,
            frame_bytes_rendered=float(self.receiver.frame_bytes_rendered),
            packets_sent=int(decided.sum()),
            packets_lost=int(lost.sum()),
            packet_delay_ms=delays_ms,
        )
        return SessionResult(qoe=qoe, decisions=list(self.decisions), timeline=self.timeline())

    def timeline(self, bin_ms: int = 1000) -> dict[str, np.ndarray]:
        """Per-bin series: capacity, sent, delivered rates, target, packet delay, frame delay."""
        end_ms = self._end_us // 1000
        nb = bins(end_ms, bin_ms)
        return bin_timeline(
            end_ms=end_ms,
            send_ms=np.asarray(self.send_us, dtype=np.int64) // 1000,
            arrival_ms=np.asarray(self.arrival_us, dtype=np.int64) // 1000,
            size_bytes=np.asarray(self.size_bytes, dtype=np.float64),
            capacity_kbps=self.link.trace.capacity_series_bps(nb * bin_ms, bin_ms) / 1000.0,
            decisions=self.decisions,
            render_ms=self.receiver.render_ms,
            frame_delay_ms=self.receiver.frame_delay_ms,
            bin_ms=bin_ms,
        )
