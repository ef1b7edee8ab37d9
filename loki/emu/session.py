"""One emulated streaming session: encoder -> pacer -> uplink -> receiver -> feedback -> controller.

A discrete-event loop over a heap of timed events, with no per-millisecond ticking. Packets do
not get events of their own on the receive side: the uplink tells at send time when a packet
will arrive (FIFO link, constant delay), the arrival goes into a time-ordered pending list, and
the receiver consumes pending arrivals up to the time of the next event before that event runs.
Anything the receiver then emits (a NACK) is an event of its own, so order stays exact.

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
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from loki.api import Controller, TransportFeedback
from loki.emu.pacer import Pacer
from loki.emu.path import Path
from loki.emu.receiver import Receiver
from loki.qoe import QoeReport, compute_qoe
from traces.trace import BYTES_PER_OPPORTUNITY, Trace

FRAME, PACE, FB_TX, FB_RX, NACK_RX, PLI_RX, RR_TX, RR_RX, TICK = range(9)

MAX_RTP_PAYLOAD_BYTES = 1200
#: RTP header 12 + transport-wide seq extension 8 + SRTP tag 10 + UDP/IPv4 28.
PACKET_OVERHEAD_BYTES = 58
TICK_US = 20_000
RR_INTERVAL_US = 1_000_000
#: libwebrtc keeps packets for retransmission for at least this long (RtpPacketHistory).
RTX_HISTORY_US = 1_000_000
#: Retransmissions may use at most the target rate over this window (libwebrtc's
#: ``RateLimiter`` that ``RtpTransportControllerSend`` sets to the target).
RTX_RATE_WINDOW_US = 1_000_000
_FEEDBACK_KINDS = frozenset({FB_RX, NACK_RX, PLI_RX, RR_RX})


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
        # Send history, indexed by transport sequence number.
        self.send_us: list[int] = []
        self.size_bytes: list[int] = []
        self.probe_id: list[int] = []
        self.pkt_rtp: list[int] = []
        self.pkt_rtx: list[bool] = []
        self.arrival_us: list[int] = []  # -1 lost
        # RTP packet tables, indexed by RTP sequence number.
        self._rtp_size: list[int] = []
        self._rtp_frame: list[int] = []
        self._rtp_last_tx_us: list[int] = []
        self._rtp_first_tx_us: list[int] = []
        self._rtp_retransmitted: list[bool] = []
        # Frame tables, indexed by frame id.
        self.frame_npkts: list[int] = []
        self.frame_is_key: list[bool] = []
        self.frame_capture_us: list[int] = []
        self.frame_bytes: list[int] = []
        self.frame_first_rtp: list[int] = []
        self.receiver = Receiver(
            self.frame_npkts,
            self.frame_is_key,
            self.frame_capture_us,
            self.frame_bytes,
            self.frame_first_rtp,
        )
        self.frames_dropped = 0
        self._rtx_sent: deque[tuple[int, int]] = deque()  # (us, bytes) in the rate window
        self._rtx_window_bytes = 0
        self._blackouts_us = [(a * 1000, b * 1000) for a, b in link.feedback_blackouts_ms]
        self.feedback_blacked_out = 0
        self._pending: deque[tuple[int, int]] = deque()  # (arrival_us, seq)
        self._events: list[tuple[int, int, int, object]] = []
        self._order = 0
        self._pace_at: float | None = None
        self._rtt_us = 0
        self.decisions: list[tuple[float, int]] = []
        self._last_report: TransportFeedback | None = None
        self.now_us = 0
        self._push(0, FRAME, None)
        self._push(cfg.feedback_interval_ms * 1000, FB_TX, None)
        self._push(RR_INTERVAL_US, RR_TX, None)
        self._push(TICK_US, TICK, None)
        self._take_probes(0)

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

    def _schedule_pace(self, now_us: int) -> None:
        t = self.pacer.next_send_us(now_us)
        if t is None:
            return
        if self._pace_at is None or t < self._pace_at:
            self._pace_at = t
            self._push(math.ceil(t), PACE, None)

    # -- the data path -----------------------------------------------------------------------
    def _send(self, pkt: tuple[int, int, int, int], now_us: int) -> None:
        size, rtp_seq, _frame, probe = pkt
        seq = len(self.send_us)
        self.send_us.append(now_us)
        self.size_bytes.append(size)
        self.probe_id.append(probe)
        self.pkt_rtp.append(rtp_seq)
        self.pkt_rtx.append(rtp_seq >= 0 and self._rtp_last_tx_us[rtp_seq] >= 0)
        arrival_ms = self._uplink.send(now_us // 1000, size)
        if arrival_ms < 0:
            self.arrival_us.append(-1)
        else:
            arr = arrival_ms * 1000
            self.arrival_us.append(arr)
            self._pending.append((arr, seq))
        if rtp_seq >= 0:
            self._rtp_last_tx_us[rtp_seq] = now_us

    def _on_frame(self, now_us: int) -> None:
        self._push(now_us + 1e6 / self.config.fps, FRAME, None)
        size, is_key = self.encoder.encode(now_us // 1000)
        if size <= 0:
            self.frames_dropped += 1
            return  # the encoder dropped this frame
        fid = len(self.frame_npkts)
        n = max(1, -(-size // MAX_RTP_PAYLOAD_BYTES))
        self.frame_npkts.append(n)
        self.frame_is_key.append(bool(is_key))
        self.frame_capture_us.append(now_us)
        self.frame_bytes.append(size)
        self.frame_first_rtp.append(len(self._rtp_size))
        base, extra = divmod(size, n)
        for i in range(n):
            payload = base + (1 if i < extra else 0)
            rtp = len(self._rtp_size)
            ip = payload + PACKET_OVERHEAD_BYTES
            self._rtp_size.append(ip)
            self._rtp_frame.append(fid)
            self._rtp_last_tx_us.append(-1)
            self._rtp_first_tx_us.append(now_us)
            self._rtp_retransmitted.append(False)
            self.pacer.enqueue((ip, rtp, fid, -1), now_us)
        self._schedule_pace(now_us)

    def _on_pace(self, now_us: int) -> None:
        self._pace_at = None
        pacer = self.pacer
        while True:
            pkt = pacer.pop_due(now_us)
            if pkt is None:
                break
            self._send(pkt, now_us)
        self._schedule_pace(now_us)

    def _on_nack(self, rtp_seqs: list[int], now_us: int) -> None:
        rtt = self._rtt_us
        queued = False
        for s in rtp_seqs:
            last = self._rtp_last_tx_us[s]
            if last < 0 or now_us - self._rtp_first_tx_us[s] > max(RTX_HISTORY_US, 3 * rtt):
                continue  # not sent yet, or gone from the history
            if self._rtp_retransmitted[s] and now_us - last < rtt:
                continue  # already retransmitted less than an RTT ago (RtpPacketHistory)
            if not self._rtx_allowed(self._rtp_size[s], now_us):
                continue
            self._rtp_retransmitted[s] = True
            self._rtp_last_tx_us[s] = now_us
            self.pacer.enqueue_retransmission(
                (self._rtp_size[s], s, self._rtp_frame[s], -1), now_us
            )
            queued = True
        if queued:
            self._schedule_pace(now_us)

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
        pending = self._pending
        rx = self.receiver
        nacks: list[int] = []
        pkt_rtp = self.pkt_rtp
        pkt_rtx = self.pkt_rtx
        rtp_frame = self._rtp_frame
        while pending and pending[0][0] <= until_us:
            arr, seq = pending.popleft()
            r = pkt_rtp[seq]
            rx.on_packet(seq, r, rtp_frame[r] if r >= 0 else -1, arr, nacks, pkt_rtx[seq])
            if nacks:
                self._push(arr + self._delay_us, NACK_RX, nacks)
                nacks = []

    def _on_feedback_rx(self, payload: tuple[int, list[int], list[int]], now_us: int) -> None:
        tx_us, seqs, arrivals = payload
        if not seqs:
            return
        send = self.send_us
        report = TransportFeedback.from_lists(
            now_us,
            seqs,
            [send[s] for s in seqs],
            arrivals,
            [self.size_bytes[s] for s in seqs],
            [self.probe_id[s] for s in seqs],
        )
        # RTT from the newest received packet in the report, less the receiver's hold time.
        for i in range(len(seqs) - 1, -1, -1):
            if arrivals[i] >= 0:
                rtt = now_us - send[seqs[i]] - (tx_us - arrivals[i])
                self._rtt_us = rtt
                self.receiver.rtt_us = max(rtt, 1000)
                self.controller.on_rtt(rtt, now_us)
                break
        self._last_report = report
        target = self.controller.on_feedback(report)
        self.decisions.append((now_us / 1e6, target))
        self._set_target(target, now_us)
        self._take_probes(now_us)

    def _handle(self, kind: int, arg: object, now_us: int) -> bool:
        """Run one event; True when it was a controller decision (feedback received)."""
        if (
            self._blackouts_us
            and kind in _FEEDBACK_KINDS
            and any(a <= now_us < b for a, b in self._blackouts_us)
        ):
            self.feedback_blacked_out += 1
            return False
        if kind == PACE:
            self._on_pace(now_us)
        elif kind == FRAME:
            self._on_frame(now_us)
        elif kind == FB_TX:
            seqs, arrivals = self.receiver.take_feedback()
            if seqs and not (
                self.link.feedback_loss and self._fb_loss_rng.random() < self.link.feedback_loss
            ):
                self._push(now_us + self._delay_us, FB_RX, (now_us, seqs, arrivals))
            self._push(now_us + self.config.feedback_interval_ms * 1000, FB_TX, None)
        elif kind == FB_RX:
            self._on_feedback_rx(arg, now_us)  # type: ignore[arg-type]
            return True
        elif kind == NACK_RX:
            self._on_nack(arg, now_us)  # type: ignore[arg-type]
        elif kind == PLI_RX:
            self.encoder.request_keyframe()
        elif kind == TICK:
            due, gave_up = self.receiver.nack_retries(now_us)
            if due:
                self._push(now_us + self._delay_us, NACK_RX, due)
            if self.receiver.wants_keyframe(now_us, gave_up):
                self._push(now_us + self._delay_us, PLI_RX, None)
            self.controller.on_process_interval(now_us)
            self._set_target(self.controller.target_bps, now_us)
            self._take_probes(now_us)
            self._push(now_us + TICK_US, TICK, None)
        elif kind == RR_TX:
            lost, expected = self.receiver.take_receiver_report()
            self._push(now_us + self._delay_us, RR_RX, (lost, expected))
            self._push(now_us + RR_INTERVAL_US, RR_TX, None)
        elif kind == RR_RX:
            lost, expected = arg  # type: ignore[misc]
            self.controller.on_loss_report(lost, expected, now_us)
            self._set_target(self.controller.target_bps, now_us)
        return False

    def step(self) -> bool:
        """Advance to just after the next controller decision; False once the session is over."""
        events = self._events
        end = self._end_us
        while events:
            t = events[0][0]
            if t > end:
                return False
            if self._pending and self._pending[0][0] <= t:
                self._consume_arrivals(t)
                if events[0][0] < t:
                    continue
            t, _, kind, arg = heapq.heappop(events)
            self.now_us = t
            if self._handle(kind, arg, t):
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
            frames_sent=sum(1 for c in self.frame_capture_us if c <= end_us),
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
        nb = max(1, -(-end_ms // bin_ms))
        t = np.arange(nb) * bin_ms / 1000.0
        send = np.asarray(self.send_us, dtype=np.int64) // 1000
        arr = np.asarray(self.arrival_us, dtype=np.int64) // 1000
        size = np.asarray(self.size_bytes, dtype=np.float64)
        scale = 8.0 / bin_ms  # bytes per bin -> kbps
        sb = np.clip(send // bin_ms, 0, nb - 1)
        sent = np.bincount(sb, weights=size, minlength=nb)[:nb] * scale
        ok = (arr >= 0) & (arr < end_ms)
        ab = np.clip(arr[ok] // bin_ms, 0, nb - 1)
        delivered = np.bincount(ab, weights=size[ok], minlength=nb)[:nb] * scale
        dsum = np.bincount(ab, weights=(arr[ok] - send[ok]).astype(np.float64), minlength=nb)
        dcnt = np.bincount(ab, minlength=nb)
        with np.errstate(invalid="ignore", divide="ignore"):
            pdelay = np.where(dcnt[:nb] > 0, dsum[:nb] / dcnt[:nb], np.nan)
        cap = self.link.trace.capacity_series_bps(nb * bin_ms, bin_ms) / 1000.0
        target = np.full(nb, np.nan)
        for ts, tb in self.decisions:
            i = int(ts * 1000 // bin_ms)
            if i < nb:
                target[i] = tb / 1000.0
        # Hold the last decision through bins without one.
        last = float("nan")
        for i in range(nb):
            if np.isnan(target[i]):
                target[i] = last
            else:
                last = target[i]
        r = np.asarray(self.receiver.render_ms, dtype=np.float64)
        fd = np.asarray(self.receiver.frame_delay_ms, dtype=np.float64)
        rb = np.clip((r // bin_ms).astype(np.int64), 0, nb - 1) if r.size else r.astype(np.int64)
        fsum = np.bincount(rb, weights=fd, minlength=nb)[:nb]
        fcnt = np.bincount(rb, minlength=nb)[:nb]
        with np.errstate(invalid="ignore", divide="ignore"):
            fdelay = np.where(fcnt > 0, fsum / fcnt, np.nan)
        return {
            "time_s": t,
            "capacity_kbps": cap,
            "target_kbps": target,
            "sent_kbps": sent,
            "delivered_kbps": delivered,
            "packet_delay_ms": pdelay,
            "frame_delay_ms": fdelay,
            "fps": fcnt * (1000.0 / bin_ms),
        }
