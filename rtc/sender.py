"""Run any :class:`loki.api.Controller` on a real aiortc video sender: :func:`attach`.

    aiortc_patch.install()             # before any SDP: transport-cc in offers and answers
    warm_up("loki")                    # rtc.session: compile before any packet is sent
    sender = pc.addTrack(track)        # or pc.addTransceiver(track, "sendonly").sender
    live = attach(sender, make_controller("loki"))    # before the first frame
    ... negotiate, stream ...
    live.stop()

Attaching after negotiation is refused, and a remote that does not accept transport-cc is
logged (``live.transport_cc`` is False): either way the controller would hear no transport
feedback. The README's "Embedding it in a sender app" has the whole recipe.

The data path, each stage in its own module: the patch stamps transport-wide sequence numbers
and records each packet (:mod:`rtc.aiortc_patch`), the receiver reports arrivals
(transport-cc), :class:`rtc.feedback_adapter.TransportFeedbackAdapter` joins them into a
:class:`loki.api.TransportFeedback`, the controller decides, and its target drives the encoder
(:class:`rtc.vp8_encoder.LiveVp8Encoder`, no keyframe on a rate change) and the pacer
(:class:`rtc.pacer.LivePacer`, 2.5x the target). RTT and loss come from RTCP SR/RR
(:mod:`rtc.rtcp_reports`); ``on_process_interval`` runs every 25 ms.

The encoder is given the target less packet overhead at full-size packets, exactly as the
emulator does (``loki.emu.session``), so the two split the same target the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiortc import RTCRtpSender, rtp

from loki.api import Controller
from loki.guard import FeedbackGuard, guarded
from rtc import aiortc_patch
from rtc.compact_log import IntRows
from rtc.feedback_adapter import TransportFeedbackAdapter
from rtc.pacer import LivePacer
from rtc.rtcp_reports import LossFromReports, RttFromReports
from rtc.transport_feedback import TransportCcFeedback
from rtc.vp8_encoder import MAX_PAYLOAD_BYTES, EncodedFrameInfo, LiveVp8Encoder

logger = logging.getLogger(__name__)

PROCESS_INTERVAL_MS = 25
#: IP overhead of a media packet the emulator assumes (RTP 12 + TWCC ext 8 + SRTP 10 + UDP/IP 28).
PACKET_OVERHEAD_BYTES = 58
#: Recent media packets kept to be re-sent as RTX probe padding.
RECENT_MEDIA_PACKETS = 32
NOT_NEGOTIATED = (
    "transport-cc was not negotiated for this video sender, so its controller gets no "
    "transport feedback and holds its rate: call rtc.aiortc_patch.install() (attach() does "
    "too) before the SDP that negotiates the sender, that is before createOffer() when the app "
    "offers and before setRemoteDescription(offer) when it answers, and use a receiver that "
    "accepts transport-cc (browsers do; an aiortc receiver needs rtc.aiortc_patch.install())"
)


def _has_transport_cc(sender: RTCRtpSender) -> bool:
    return aiortc_patch.hooks_of(sender.transport).send_extension_id is not None


def _negotiation_problem(sender: RTCRtpSender) -> str | None:
    """Why a started sender cannot work with :func:`attach`, or None. Both faults would
    otherwise pass silently: a controller without feedback holds its rate, and a VP8 stream
    under another codec's payload type is sent in full and decoded by nobody."""
    if not _has_transport_cc(sender):
        return NOT_NEGOTIATED
    codec = aiortc_patch.negotiated_codec(sender)
    if codec is not None and codec.lower() != "video/vp8":
        return (
            f"the video sender negotiated {codec}, but attach() encodes VP8 (libvpx): offer "
            "or answer VP8 first, e.g. transceiver.setCodecPreferences() with the VP8 and RTX "
            "codecs of RTCRtpSender.getCapabilities('video'), before createOffer()/createAnswer()"
        )
    return None


def encoder_target_bps(target_bps: int) -> int:
    """The share of a send target left for video payload at full-size packets."""
    return int(target_bps * MAX_PAYLOAD_BYTES / (MAX_PAYLOAD_BYTES + PACKET_OVERHEAD_BYTES))


#: Fields of :attr:`LiveLog.frames`, one row per encoded frame (keyframe is 0/1).
FRAME_FIELDS = ("time_us", "rtp_timestamp", "picture_id", "size_bytes", "keyframe", "target_bps")


@dataclass
class LiveLog:
    """What a live sender did, for reports and tests (times on the session clock, us).

    Kept as :class:`rtc.compact_log.IntRows`, 8 bytes a value: a log of Python tuples grew a
    long session's memory by about a megabyte a minute."""

    #: (time_us, target_bps) when attached, then after every decision that changed the target.
    targets: IntRows = field(default_factory=lambda: IntRows(("time_us", "target_bps")))
    #: :data:`FRAME_FIELDS` per encoded frame.
    frames: IntRows = field(default_factory=lambda: IntRows(FRAME_FIELDS))
    #: (time_us, rtt_us) per RTT sample.
    rtts: IntRows = field(default_factory=lambda: IntRows(("time_us", "rtt_us")))
    #: (time_us, lost, expected) per receiver report.
    losses: IntRows = field(default_factory=lambda: IntRows(("time_us", "lost", "expected")))
    feedback_reports: int = 0
    #: Time spent inside the controller's methods (perf counter, ns).
    controller_ns: int = 0
    controller_calls: int = 0


class LiveController:
    """The handle :func:`attach` returns: owns the encoder, pacer and feedback plumbing."""

    def __init__(
        self,
        sender: RTCRtpSender,
        controller: Controller,
        *,
        pacing: bool = True,
        keyframe_interval_s: float = 0.0,
        clock_us: Callable[[], int] = aiortc_patch.now_us,
        on_decision: Callable[[int, int], None] | None = None,
    ) -> None:
        if sender.kind != "video":
            raise ValueError("attach() drives a video sender")
        aiortc_patch.install()
        if aiortc_patch.sender_started(sender):
            problem = _negotiation_problem(sender)
            if problem is not None:
                raise RuntimeError(f"{problem} (attach() came after negotiation)")
        self.sender = sender
        self.controller = controller
        self.clock_us = clock_us
        self.log = LiveLog()
        self._on_decision = on_decision
        self._rtt = RttFromReports()
        self._loss = LossFromReports()
        self._target_bps = controller.target_bps
        self.log.targets.append(clock_us(), self._target_bps)
        # A controller that skips frames is asked from the encoding thread too; then every call
        # into it takes this lock (a controller is not thread-safe). Others never take it.
        self._lock: threading.Lock | None = threading.Lock() if controller.skips_frames else None
        self._tells_outstanding = controller.uses_outstanding_data
        self.encoder = LiveVp8Encoder(
            encoder_target_bps(self._target_bps),
            keyframe_interval_s=keyframe_interval_s,
            on_frame=self._on_frame,
            clock_us=clock_us,
            skip_frame=self._skip_frame if self._lock is not None else None,
        )
        aiortc_patch.install_encoder(sender, self.encoder)
        self._recent_media: deque[bytes] = deque(maxlen=RECENT_MEDIA_PACKETS)
        #: Wire RTP timestamp minus the encoder's (aiortc adds a random origin), once known.
        self.rtp_timestamp_offset: int | None = None
        self._probe_pick = 0
        self.pacer: LivePacer | None = None
        if pacing:
            self.pacer = LivePacer(
                self._transmit,
                clock_us,
                self._target_bps,
                is_retransmission=self._is_rtx,
                make_probe=self._make_probe,
            )
        self._bind(aiortc_patch.hooks_of(sender.transport))
        aiortc_patch.on_transport_change(sender, self._follow_transport)
        self._check_negotiation = True
        #: The controller's time zero on ``clock_us``: when the transport came up (None before).
        self._origin_us: int | None = None
        self._origin_lock = threading.Lock()
        self._running = True
        self._process_task = asyncio.ensure_future(self._run_process())

    # -- the transport ---------------------------------------------------------------------------
    def _bind(self, hooks: aiortc_patch.TransportHooks) -> None:
        if hooks.driver is not None:
            raise RuntimeError(
                "this transport already carries a video sender driven by attach(): congestion "
                "control is per transport (as in libwebrtc), one controller each; stop() the "
                "other first"
            )
        hooks.driver = self
        self._hooks = hooks
        self.adapter = TransportFeedbackAdapter(hooks.history)
        if self.pacer is not None:
            hooks.egress = self._egress
        hooks.feedback_listeners.append(self._on_feedback)
        hooks.rtcp_listeners.append(self._on_rtcp)
        hooks.rtcp_sent_listeners.append(self._on_rtcp_sent)

    def _unbind(self) -> None:
        hooks = self._hooks
        if hooks.driver is self:
            hooks.driver = None
        if hooks.egress == self._egress:
            hooks.egress = None
        for lst, fn in (
            (hooks.feedback_listeners, self._on_feedback),
            (hooks.rtcp_listeners, self._on_rtcp),
            (hooks.rtcp_sent_listeners, self._on_rtcp_sent),
        ):
            with contextlib.suppress(ValueError):
                lst.remove(fn)

    def _follow_transport(self) -> None:
        """BUNDLE moved the sender (during negotiation, before it sends): move with it, or the
        controller would listen on a transport that carries nothing."""
        hooks = aiortc_patch.hooks_of(self.sender.transport)
        if hooks is self._hooks:
            return
        self._unbind()
        try:
            self._bind(hooks)
        except RuntimeError as e:
            self._bind(self._hooks)
            logger.error("the video sender moved to another transport: %s", e)

    async def _transmit(self, data: bytes, probe_cluster_id: int) -> None:
        await self._hooks.transmit(data, probe_cluster_id)

    # -- the controller ------------------------------------------------------------------------
    @property
    def target_bps(self) -> int:
        return self._target_bps

    @property
    def transport_cc(self) -> bool | None:
        """Whether transport-cc was negotiated for this sender; None before negotiation ends.

        Without it the controller hears no transport feedback and holds its rate: the one
        misuse of :func:`attach` that would otherwise pass silently."""
        if not aiortc_patch.sender_started(self.sender):
            return None
        return _has_transport_cc(self.sender)

    def latest_rtt_us(self) -> int | None:
        """The newest RTT from RTCP receiver reports, or None before the first."""
        rtts = self.log.rtts
        return rtts.row(-1)[1] if rtts else None

    def _timed(self, fn: Callable[..., Any], *args: Any) -> Any:
        t0 = time.perf_counter_ns()
        try:
            with self._lock or contextlib.nullcontext():
                return fn(*args)
        finally:
            self.log.controller_ns += time.perf_counter_ns() - t0
            self.log.controller_calls += 1

    def _started(self, now_us: int) -> bool:
        """Start the controller's clock when the sender starts (its transport is up); False
        before.

        libwebrtc creates its network controller only once the network is available, and GCC
        starts its probing then. A controller here is made before negotiation, at its own time
        zero: that zero is made to be this moment, and the controller is not called before it.
        Otherwise its first probes' results came long after the probing they answer (the
        clock's zero was machine uptime, or the seconds a connection took), past the 1 s that
        ProbeController waits for them, so it never probed further and GCC crept up from its
        first estimate instead of reaching the link's rate in a few hundred ms, as it does in
        the emulator."""
        if self._origin_us is None:
            if not aiortc_patch.sender_started(self.sender):
                return False
            with self._origin_lock:  # the encoder's thread starts it too (first frame)
                if self._origin_us is None:
                    self._origin_us = now_us
        return True

    def _tell_outstanding(self, now_us: int) -> None:
        if self._tells_outstanding:
            outstanding = self._hooks.history.outstanding_bytes()
            self._timed(self.controller.on_outstanding_data, outstanding, self._at(now_us))

    def _at(self, now_us: int) -> int:
        """``now_us`` on the controller's clock (call only once :meth:`_started`)."""
        assert self._origin_us is not None
        return now_us - self._origin_us

    def _skip_frame(self) -> bool:
        # From the encoder's thread: a frame before the start is never skipped.
        origin = self._origin_us
        if origin is None:
            return False
        return bool(self._timed(self.controller.skip_frame, self.clock_us() - origin))

    def _apply(self, now_us: int) -> None:
        with self._lock or contextlib.nullcontext():
            target = self.controller.target_bps
        if target != self._target_bps:
            self._target_bps = target
            self.encoder.set_target_bps(encoder_target_bps(target))
            if self.pacer is not None:
                self.pacer.set_target(target)
            self.log.targets.append(now_us, target)
            if self._on_decision is not None:
                self._on_decision(now_us, target)
        self._take_probes()

    def _take_probes(self) -> None:
        with self._lock or contextlib.nullcontext():
            clusters = self.controller.pop_probe_clusters()
        if self.pacer is not None:
            for c in clusters:  # the pacer runs on clock_us
                self.pacer.add_probe_cluster(
                    dataclasses.replace(c, at_us=c.at_us + (self._origin_us or 0))
                )

    def _on_feedback(self, feedback: TransportCcFeedback, arrival_us: int) -> None:
        report = self.adapter.on_feedback(feedback, arrival_us)
        if report is None or not self._started(arrival_us):
            return
        self.log.feedback_reports += 1
        self._tell_outstanding(arrival_us)
        origin = self._origin_us
        shifted = dataclasses.replace(
            report,
            feedback_time_us=report.feedback_time_us - origin,
            send_time_us=report.send_time_us - origin,
        )
        self._timed(self.controller.on_feedback, shifted)
        self._apply(arrival_us)

    def _on_rtcp(self, packet: Any, arrival_us: int) -> None:
        if not isinstance(packet, (rtp.RtcpRrPacket, rtp.RtcpSrPacket)):
            return
        if not self._started(arrival_us):
            return
        ssrc = aiortc_patch.media_ssrc(self.sender)
        for block in packet.reports:
            if block.ssrc != ssrc:
                continue
            rtt = self._rtt.on_report_block(block.lsr, block.dlsr, arrival_us)
            if rtt is not None:
                self.log.rtts.append(arrival_us, rtt)
                self._timed(self.controller.on_rtt, rtt, self._at(arrival_us))
            loss = self._loss.on_report_block(block.packets_lost, block.highest_sequence)
            if loss is not None:
                self.log.losses.append(arrival_us, *loss)
                self._timed(self.controller.on_loss_report, loss[0], loss[1], self._at(arrival_us))
            self._apply(arrival_us)

    def _on_rtcp_sent(self, data: bytes, sent_us: int) -> None:
        try:
            packets = rtp.RtcpPacket.parse(data)
        except ValueError:
            return
        for packet in packets:
            if isinstance(packet, rtp.RtcpSrPacket):
                self._rtt.on_sr_sent(packet.sender_info.ntp_timestamp, sent_us)

    async def _run_process(self) -> None:
        interval_s = PROCESS_INTERVAL_MS / 1000.0
        next_s = time.monotonic()
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                next_s += interval_s
                await asyncio.sleep(max(0.0, next_s - time.monotonic()))
                if self.sender.transport.state in ("closed", "failed"):
                    # The call ended without stop(): stop driving the controller (and let
                    # this object go) rather than tick for the life of the process.
                    self._teardown()
                    return
                now = self.clock_us()
                if self._check_negotiation and aiortc_patch.sender_started(self.sender):
                    self._check_negotiation = False
                    problem = _negotiation_problem(self.sender)
                    if problem is not None:
                        logger.error(problem)
                if not self._started(now):
                    continue
                self._tell_outstanding(now)
                self._timed(self.controller.on_process_interval, self._at(now))
                self._apply(now)

    # -- encoder and pacer plumbing -------------------------------------------------------------
    def _on_frame(self, info: EncodedFrameInfo) -> None:
        # Runs in the encoder's thread; IntRows appends a whole row under its lock.
        now = self.clock_us()
        # Before the frame's packets go out, so that no packet is sent before time zero.
        self._started(now)
        self.log.frames.append(
            now,
            info.rtp_timestamp,
            info.picture_id,
            info.size_bytes,
            int(info.keyframe),
            info.target_bps,
        )

    def _is_rtx(self, data: bytes) -> bool:
        pt = aiortc_patch.rtx_payload_type(self.sender)
        return pt is not None and len(data) > 1 and (data[1] & 0x7F) == pt

    async def _egress(self, data: bytes) -> None:
        if not self._is_rtx(data):
            self._recent_media.append(data)
            if self.rtp_timestamp_offset is None and self.log.frames:
                wire_ts = int.from_bytes(data[4:8], "big")
                self.rtp_timestamp_offset = (wire_ts - self.log.frames.row(0)[1]) % (1 << 32)
        assert self.pacer is not None
        await self.pacer.enqueue(data)

    def _make_probe(self) -> bytes | None:
        """An RTX copy of a recent media packet, with its own RTX sequence number."""
        pt = aiortc_patch.rtx_payload_type(self.sender)
        if pt is None or not self._recent_media:
            return None
        self._probe_pick = (self._probe_pick + 1) % len(self._recent_media)
        ext_map = self.sender.transport._rtp_header_extensions_map
        original = rtp.RtpPacket.parse(self._recent_media[self._probe_pick], ext_map)
        packet = rtp.wrap_rtx(
            original,
            payload_type=pt,
            sequence_number=aiortc_patch.take_rtx_sequence_number(self.sender),
            ssrc=aiortc_patch.rtx_ssrc(self.sender),
        )
        return packet.serialize(ext_map)

    # -- figures ---------------------------------------------------------------------------------
    @property
    def sent_bytes(self) -> int:
        """Bytes sent (IP size) on this sender's transport so far."""
        return self._hooks.sent_bytes

    def stop(self) -> None:
        """Stop driving the sender (its encoder stays; it keeps the last target)."""
        self._process_task.cancel()
        self._teardown()

    @property
    def running(self) -> bool:
        """False once stopped, or once the call's transport closed or failed."""
        return self._running

    def _teardown(self) -> None:
        self._running = False
        if self.pacer is not None:
            self.pacer.stop()
        aiortc_patch.on_transport_change(self.sender, None)
        self._unbind()


def attach(
    sender: RTCRtpSender,
    controller: Controller,
    *,
    pacing: bool = True,
    keyframe_interval_s: float = 0.0,
    on_decision: Callable[[int, int], None] | None = None,
    guard: bool = True,
) -> LiveController:
    """Drive ``sender``'s video with ``controller``; call before its first frame.

    The patch (:func:`rtc.aiortc_patch.install`, which this calls too) is what puts
    transport-cc into the SDP, so it must be in place before the SDP that negotiates the
    sender; otherwise the controller gets no feedback: refused when the sender has already
    started without transport-cc, and logged once when negotiation ends without it.

    ``on_decision(time_us, target_bps)`` is told about every change of target. With ``guard``
    (the default) the controller sits behind :class:`loki.guard.FeedbackGuard`: feedback from
    the network is untrusted input, and a bad report must never reach it or stop the stream.
    """
    return LiveController(
        sender,
        controller if isinstance(controller, FeedbackGuard) or not guard else guarded(controller),
        pacing=pacing,
        keyframe_interval_s=keyframe_interval_s,
        on_decision=on_decision,
    )
