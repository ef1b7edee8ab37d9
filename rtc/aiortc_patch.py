"""The one place aiortc (and aioice) is patched: transport-wide congestion control and hooks.

aiortc 1.16 never negotiates transport-cc, never stamps transport-wide sequence numbers, never
sends transport-cc feedback and misreads Chromium's as a NACK (``shared/docs/aiortc-notes.md``).
:func:`install` changes exactly these places, and refuses to run on an aiortc version it was not
checked against:

* ``codecs.HEADER_EXTENSIONS`` / ``codecs.CODECS``: the video header extension
  :data:`TRANSPORT_CC_URI` and ``a=rtcp-fb:<pt> transport-cc`` are offered and accepted, and
  abs-send-time is no longer offered: with send-side estimation the receiver's REMB estimator
  has no job (libwebrtc runs one or the other), and aiortc's costs a 30 ms stall on the first
  packet plus about 60 us per packet;
* ``RtcpRtpfbPacket.parse``: FMT=15 becomes a :class:`TransportCcRtcp` parsed by
  :mod:`rtc.transport_feedback` (a malformed one is kept, marked, so the rest of its compound
  packet still arrives); NACK (FMT=1) parsing is unchanged;
* ``RTCDtlsTransport._send_rtp``: every outgoing RTP packet, retransmissions included, goes
  through :meth:`TransportHooks.transmit` (optionally via a pacer), which stamps the next
  transport-wide sequence number and records (seq, send time, size) in a
  :class:`rtc.feedback_adapter.SendHistory`; outgoing RTCP is shown to observers (SR times for
  RTT);
* ``RTCDtlsTransport._handle_rtcp_data``: transport-cc packets go to feedback listeners instead
  of the router, other RTCP to observers and then the router as before;
* ``RTCDtlsTransport._handle_rtp_data``: on a receiving transport, each packet's transport-wide
  sequence number and arrival time feed a :class:`rtc.feedback_generator.FeedbackGenerator`
  whose reports are sent every :data:`FEEDBACK_INTERVAL_MS`;
* ``RTCDtlsTransport._register_rtp_sender/_receiver``: learn the negotiated extension id (and
  the sender's codec);
* ``RTCRtpSender.setTransport``: tell whoever drives the sender that BUNDLE moved it
  (:func:`on_transport_change`).

The helpers at the end reach private attributes, so that no other module does: the sender's
encoder and RTX numbering (:func:`install_encoder`, :func:`take_rtx_sequence_number`) and the
receiver's jitter buffer, NACK generator, decoder queue and RTCP feedback
(:func:`install_jitter_buffer`, :func:`disable_nack_generator`, :func:`decode_frame`,
:func:`send_nack`, :func:`send_pli`). :func:`use_loopback_host` makes aioice offer 127.0.0.1
(it skips loopback), for sessions confined to one machine.

The clock is :func:`now_us` (``CLOCK_MONOTONIC``), shared by every process of a live session.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiortc
from aiortc import RTCRtpSender, rtcdtlstransport, rtp
from aiortc import codecs as aiortc_codecs
from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpHeaderExtensionParameters

from loki.api import NO_PROBE
from rtc.feedback_adapter import SendHistory
from rtc.feedback_generator import FeedbackGenerator
from rtc.transport_feedback import (
    SEQ_MOD,
    TRANSPORT_CC_FMT,
    TransportCcFeedback,
    TransportFeedbackError,
    parse_fci,
)

logger = logging.getLogger(__name__)

#: aiortc versions whose internals this module was read against and tested with.
TESTED_AIORTC_VERSIONS = frozenset({"1.16.0"})
TRANSPORT_CC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
#: aiortc shares one id space over audio and video (BUNDLE); 1-3 are taken.
TRANSPORT_CC_EXTENSION_ID = 5
#: Receiver report interval: inside libwebrtc's 50-100 ms range, and the emulator's default.
FEEDBACK_INTERVAL_MS = 100
#: UDP + IPv4 headers: the link charges the IP size, as the emulator's packet sizes do.
UDP_IPV4_OVERHEAD_BYTES = 28

_ORIGINAL: dict[str, Any] = {}


class UnsupportedAiortcError(RuntimeError):
    """aiortc is not a version this patch was checked against."""


def now_us() -> int:
    """The live session clock: CLOCK_MONOTONIC in microseconds (the same in every process)."""
    return time.monotonic_ns() // 1000


def check_version(version: str | None = None) -> None:
    """Refuse an aiortc whose internals the patch has not been checked against."""
    v = aiortc.__version__ if version is None else version
    if v not in TESTED_AIORTC_VERSIONS:
        raise UnsupportedAiortcError(
            f"rtc.aiortc_patch was written against aiortc {sorted(TESTED_AIORTC_VERSIONS)}, "
            f"found {v}: check the patched internals (see the module docstring), then add it"
        )


@dataclasses.dataclass
class TransportCcRtcp(rtp.RtcpRtpfbPacket):
    """An RTPFB FMT=15 packet as aiortc's parser now returns it (``lost`` stays empty)."""

    feedback: TransportCcFeedback | None = None
    #: Why the packet could not be parsed, when ``feedback`` is None.
    error: str = ""


class TransportHooks:
    """What the patch adds to one ``RTCDtlsTransport``; get it with :func:`hooks_of`."""

    def __init__(self, transport: rtcdtlstransport.RTCDtlsTransport) -> None:
        self.transport = transport
        # Send side.
        self.send_extension_id: int | None = None
        self.next_seq = 0
        self.history = SendHistory()
        #: A pacer's entry point; when set, media goes through it before :meth:`transmit`.
        self.egress: Callable[[bytes], Awaitable[None]] | None = None
        #: The one :class:`rtc.sender.LiveController` bound here: congestion control is per
        #: transport (libwebrtc has one per call), so a second one is refused.
        self.driver: Any = None
        self.feedback_listeners: list[Callable[[TransportCcFeedback, int], None]] = []
        self.rtcp_listeners: list[Callable[[Any, int], None]] = []
        self.rtcp_sent_listeners: list[Callable[[bytes, int], None]] = []
        self.sent_bytes = 0
        self.sent_packets = 0
        self.malformed_feedback = 0
        # Receive side.
        self.receive_extension_id: int | None = None
        self.generator: FeedbackGenerator | None = None
        self.feedback_packets_sent = 0
        self._feedback_task: asyncio.Task | None = None

    # -- send side ---------------------------------------------------------------------------
    async def transmit(self, data: bytes, probe_cluster_id: int = NO_PROBE) -> None:
        """Stamp, record and send one RTP packet (the pacer's exit, or direct without one)."""
        transport = self.transport
        seq = -1
        if self.send_extension_id is not None:
            ext_map = transport._rtp_header_extensions_map
            packet = rtp.RtpPacket.parse(data, ext_map)
            seq = self.next_seq
            packet.extensions.transport_sequence_number = seq % SEQ_MOD
            data = packet.serialize(ext_map)
        _check_connected(transport)
        protected = transport._tx_srtp.protect(data)
        send_us = now_us()
        await transport.transport._send(protected)
        transport._RTCDtlsTransport__tx_bytes += len(protected)
        transport._RTCDtlsTransport__tx_packets += 1
        size = len(protected) + UDP_IPV4_OVERHEAD_BYTES
        self.sent_bytes += size
        self.sent_packets += 1
        if seq >= 0:
            self.history.add(seq, send_us, size, probe_cluster_id)
            self.next_seq = seq + 1

    def _on_feedback(self, packet: TransportCcRtcp, arrival_us: int) -> None:
        if packet.feedback is None:
            self.malformed_feedback += 1
            logger.warning("malformed transport-cc feedback dropped: %s", packet.error)
            return
        for listener in self.feedback_listeners:
            _call_safely(listener, packet.feedback, arrival_us)

    # -- receive side ------------------------------------------------------------------------
    def _on_rtp_received(self, packet: rtp.RtpPacket, arrival_us: int) -> None:
        seq = packet.extensions.transport_sequence_number
        if seq is None:
            return
        if self.generator is None:
            self.generator = FeedbackGenerator(sender_ssrc=random.getrandbits(32) or 1)
            self._feedback_task = asyncio.ensure_future(self._run_feedback())
        self.generator.on_packet(seq, arrival_us, packet.ssrc)

    async def _run_feedback(self) -> None:
        transport = self.transport
        interval_s = FEEDBACK_INTERVAL_MS / 1000.0
        try:
            while transport.state not in ("closed", "failed"):
                await asyncio.sleep(interval_s)
                assert self.generator is not None
                for packet in self.generator.build_packets():
                    await transport._send_rtp(packet)
                    self.feedback_packets_sent += 1
        except (ConnectionError, asyncio.CancelledError):
            pass


def hooks_of(transport: rtcdtlstransport.RTCDtlsTransport) -> TransportHooks:
    """The patch's state for ``transport``, created on first use."""
    hooks = transport.__dict__.get("_loki_hooks")
    if hooks is None:
        hooks = transport.__dict__["_loki_hooks"] = TransportHooks(transport)
    return hooks


def _call_safely(fn: Callable, *args: Any) -> None:
    # A failing observer must not take aiortc's receive loop down with it.
    try:
        fn(*args)
    except Exception:
        logger.exception("rtc hook %r failed", fn)


def _check_connected(transport: rtcdtlstransport.RTCDtlsTransport) -> None:
    if transport._state != rtcdtlstransport.State.CONNECTED:
        raise ConnectionError("Cannot send encrypted RTP, not connected")


def _transport_cc_extension_id(parameters: Any) -> int | None:
    for ext in parameters.headerExtensions:
        if ext.uri == TRANSPORT_CC_URI:
            return ext.id
    return None


# -- the patched methods ------------------------------------------------------------------------
def _parse_rtpfb(cls: type, data: bytes, fmt: int) -> rtp.RtcpRtpfbPacket:
    if fmt != TRANSPORT_CC_FMT:
        return _ORIGINAL["rtpfb_parse"](data, fmt)
    try:
        feedback = parse_fci(data)
    except TransportFeedbackError as e:
        ssrcs = (int.from_bytes(data[0:4], "big"), int.from_bytes(data[4:8], "big"))
        ok = len(data) >= 8
        return TransportCcRtcp(
            fmt=fmt, ssrc=ssrcs[0] if ok else 0, media_ssrc=ssrcs[1] if ok else 0, error=str(e)
        )
    return TransportCcRtcp(
        fmt=fmt, ssrc=feedback.sender_ssrc, media_ssrc=feedback.media_ssrc, feedback=feedback
    )


async def _send_rtp(self: rtcdtlstransport.RTCDtlsTransport, data: bytes) -> None:
    hooks = hooks_of(self)
    if rtp.is_rtcp(data):
        for listener in hooks.rtcp_sent_listeners:
            _call_safely(listener, data, now_us())
        await _ORIGINAL["send_rtp"](self, data)
    elif hooks.egress is not None:
        _check_connected(self)
        await hooks.egress(data)
    else:
        await hooks.transmit(data)


async def _handle_rtcp_data(self: rtcdtlstransport.RTCDtlsTransport, data: bytes) -> None:
    arrival_us = now_us()
    try:
        packets = rtp.RtcpPacket.parse(data)
    except ValueError as exc:
        logger.debug("RTCP parsing failed: %s", exc)
        return
    hooks = hooks_of(self)
    for packet in packets:
        if isinstance(packet, TransportCcRtcp):
            hooks._on_feedback(packet, arrival_us)
            continue
        for listener in hooks.rtcp_listeners:
            _call_safely(listener, packet, arrival_us)
        for recipient in self._rtp_router.route_rtcp(packet):
            await recipient._handle_rtcp_packet(packet)


async def _handle_rtp_data(
    self: rtcdtlstransport.RTCDtlsTransport, data: bytes, arrival_time_ms: int
) -> None:
    arrival_us = now_us()
    try:
        packet = rtp.RtpPacket.parse(data, self._rtp_header_extensions_map)
    except ValueError as exc:
        logger.debug("RTP parsing failed: %s", exc)
        return
    hooks = hooks_of(self)
    if hooks.receive_extension_id is not None:
        hooks._on_rtp_received(packet, arrival_us)
    receiver = self._rtp_router.route_rtp(packet)
    if receiver is not None:
        await receiver._handle_rtp_packet(packet, arrival_time_ms=arrival_time_ms)


def _register_rtp_sender(self: Any, sender: Any, parameters: Any) -> None:
    _ORIGINAL["register_sender"](self, sender, parameters)
    sender.__dict__["_loki_codec"] = parameters.codecs[0].mimeType if parameters.codecs else None
    ext_id = _transport_cc_extension_id(parameters)
    if ext_id is not None:
        hooks_of(self).send_extension_id = ext_id


def _register_rtp_receiver(self: Any, receiver: Any, parameters: Any) -> None:
    _ORIGINAL["register_receiver"](self, receiver, parameters)
    ext_id = _transport_cc_extension_id(parameters)
    if ext_id is not None:
        hooks_of(self).receive_extension_id = ext_id


def _set_sender_transport(self: Any, transport: Any) -> None:
    _ORIGINAL["sender_set_transport"](self, transport)
    callback = self.__dict__.get("_loki_on_transport")
    if callback is not None:
        _call_safely(callback)


def _negotiate_transport_cc() -> None:
    video_exts = aiortc_codecs.HEADER_EXTENSIONS["video"]
    video_exts[:] = [e for e in video_exts if e.uri != ABS_SEND_TIME_URI]
    if not any(e.uri == TRANSPORT_CC_URI for e in video_exts):
        used = {e.id for kind in aiortc_codecs.HEADER_EXTENSIONS.values() for e in kind}
        if TRANSPORT_CC_EXTENSION_ID in used:
            raise UnsupportedAiortcError(
                f"header extension id {TRANSPORT_CC_EXTENSION_ID} is already used by aiortc"
            )
        video_exts.append(
            RTCRtpHeaderExtensionParameters(id=TRANSPORT_CC_EXTENSION_ID, uri=TRANSPORT_CC_URI)
        )
    for codec in aiortc_codecs.CODECS["video"]:
        if aiortc_codecs.is_rtx(codec):
            continue
        fb = RTCRtcpFeedback(type="transport-cc")
        if fb not in codec.rtcpFeedback:
            codec.rtcpFeedback.append(fb)


def install() -> None:
    """Apply the patch (idempotent). Raises :class:`UnsupportedAiortcError` on an untested
    aiortc."""
    # Keyed on its own entry: `use_loopback_host` keeps its original here too, and a test of
    # the whole dict made `install` a silent no-op after it (no transport-cc, no feedback).
    if "send_rtp" in _ORIGINAL:
        return
    check_version()
    transport_cls = rtcdtlstransport.RTCDtlsTransport
    _ORIGINAL["rtpfb_parse"] = rtp.RtcpRtpfbPacket.parse
    _ORIGINAL["send_rtp"] = transport_cls._send_rtp
    _ORIGINAL["register_sender"] = transport_cls._register_rtp_sender
    _ORIGINAL["register_receiver"] = transport_cls._register_rtp_receiver
    _ORIGINAL["sender_set_transport"] = RTCRtpSender.setTransport
    _negotiate_transport_cc()
    rtp.RtcpRtpfbPacket.parse = classmethod(_parse_rtpfb)  # type: ignore[method-assign]
    transport_cls._send_rtp = _send_rtp  # type: ignore[method-assign]
    transport_cls._handle_rtcp_data = _handle_rtcp_data  # type: ignore[method-assign]
    transport_cls._handle_rtp_data = _handle_rtp_data  # type: ignore[method-assign]
    transport_cls._register_rtp_sender = _register_rtp_sender  # type: ignore[method-assign]
    transport_cls._register_rtp_receiver = _register_rtp_receiver  # type: ignore[method-assign]
    RTCRtpSender.setTransport = _set_sender_transport  # type: ignore[method-assign]


def use_loopback_host() -> None:
    """Make aioice gather 127.0.0.1 only (it drops loopback by default): loopback sessions."""
    import aioice.ice

    if "host_addresses" not in _ORIGINAL:
        _ORIGINAL["host_addresses"] = aioice.ice.get_host_addresses
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


# -- the private attributes other modules need ------------------------------------------------
def install_encoder(sender: Any, encoder: Any) -> None:
    """Give an ``RTCRtpSender`` its encoder before the first frame (aiortc makes one lazily)."""
    if getattr(sender, "_RTCRtpSender__encoder", None) is not None:
        logger.warning("replacing the encoder of a sender that has already encoded frames")
    sender._RTCRtpSender__encoder = encoder


def install_jitter_buffer(receiver: Any, jitter_buffer: Any) -> None:
    """Replace an ``RTCRtpReceiver``'s jitter buffer (same ``add(packet)`` contract)."""
    receiver._RTCRtpReceiver__jitter_buffer = jitter_buffer


def disable_nack_generator(receiver: Any) -> None:
    """Stop an ``RTCRtpReceiver`` from sending its own NACKs (the caller sends them)."""
    receiver._RTCRtpReceiver__nack_generator = None


def decode_frame(receiver: Any, payload_type: int, frame: Any) -> bool:
    """Queue an encoded frame for the receiver's decoder thread, as aiortc does with the frame
    its jitter buffer returns (but without remapping the timestamp: ``frame.timestamp`` comes
    out as the decoded frame's pts). False when there is no decoder (yet, or any more)."""
    codec = receiver._RTCRtpReceiver__codecs.get(payload_type)
    if codec is None or receiver._RTCRtpReceiver__decoder_thread is None:
        return False
    receiver._RTCRtpReceiver__decoder_queue.put((codec, frame))
    return True


async def send_nack(receiver: Any, media_ssrc: int, wire_seqs: list[int]) -> None:
    """Send a generic NACK for ``wire_seqs`` (16-bit, in stream order).

    aiortc packs a list into PID/BLP pairs assuming it never wraps, so a list that wraps
    goes out as one packet per side of the wrap.
    """
    chunk: list[int] = []
    for s in wire_seqs:
        if chunk and s <= chunk[-1]:
            await receiver._send_rtcp_nack(media_ssrc, chunk)
            chunk = []
        chunk.append(s)
    if chunk:
        await receiver._send_rtcp_nack(media_ssrc, chunk)


async def send_pli(receiver: Any, media_ssrc: int) -> None:
    """Send a picture loss indication (keyframe request)."""
    await receiver._send_rtcp_pli(media_ssrc)


def sender_started(sender: Any) -> bool:
    """Whether ``sender`` already has its negotiated parameters (aiortc's ``send()`` ran): from
    then on its header extensions, transport-cc among them or not, are fixed."""
    return bool(sender._RTCRtpSender__started)


def on_transport_change(sender: Any, callback: Callable[[], None] | None) -> None:
    """Call ``callback`` whenever aiortc moves ``sender`` to another transport (None: stop).

    BUNDLE does that during negotiation: every transceiver but the first starts on a transport
    of its own and moves to the first one's, so the video of an app that added its audio first
    leaves the transport it was attached on."""
    if callback is None:
        sender.__dict__.pop("_loki_on_transport", None)
    else:
        sender.__dict__["_loki_on_transport"] = callback


def negotiated_codec(sender: Any) -> str | None:
    """The mime type ``sender`` sends (``"video/VP8"``), once it started with the patch in
    place; None before, or when it started without the patch."""
    return sender.__dict__.get("_loki_codec")


def rtx_payload_type(sender: Any) -> int | None:
    """The RTX payload type the sender negotiated, or None without RTX."""
    return sender._RTCRtpSender__rtx_payload_type


def media_ssrc(sender: Any) -> int:
    """The SSRC of the sender's media stream."""
    return sender._ssrc


def rtx_ssrc(sender: Any) -> int:
    """The SSRC the sender uses for RTX."""
    return sender._rtx_ssrc


def take_rtx_sequence_number(sender: Any) -> int:
    """Take the sender's next RTX sequence number, so probes and retransmissions never clash."""
    seq = sender._RTCRtpSender__rtx_sequence_number
    sender._RTCRtpSender__rtx_sequence_number = (seq + 1) % SEQ_MOD
    return seq


__all__ = [
    "FEEDBACK_INTERVAL_MS",
    "TRANSPORT_CC_URI",
    "TransportCcRtcp",
    "TransportHooks",
    "UnsupportedAiortcError",
    "decode_frame",
    "disable_nack_generator",
    "hooks_of",
    "install",
    "install_encoder",
    "install_jitter_buffer",
    "media_ssrc",
    "negotiated_codec",
    "now_us",
    "on_transport_change",
    "rtx_payload_type",
    "rtx_ssrc",
    "send_nack",
    "send_pli",
    "sender_started",
    "take_rtx_sequence_number",
    "use_loopback_host",
]
