"""One live session: synthetic video -> aiortc sender + controller -> relay -> receiver.

The stages, each in its own module: :class:`rtc.video_source.SyntheticVideoTrack` (camera),
:func:`rtc.sender.attach` (controller, VP8 encoder, pacer, transport-cc), :class:`rtc.relay.
RelayProcess` (the trace-driven link, in its own real-time process), and a receiver:
:class:`rtc.aiortc_receiver.AiortcReceiver` or :class:`rtc.chromium_receiver.ChromiumReceiver`.
Signalling is in-process (:mod:`rtc.signalling`).

The session starts when the first frame is captured (the emulator's t = 0; the relay's trace
clock starts with the first RTP packet, a few ms later) and lasts ``duration_s``. The QoE is
:func:`loki.qoe.compute_qoe` on what really happened: frames decoded at the receiver (render
times, capture-to-render delays, their encoded sizes from the sender's log) and the relay's
per-packet ground truth (delivered bytes, losses, one-way delays), with the capacity the trace
offered over the session, as ``loki emulate`` counts it. With the aiortc receiver, render times
follow :mod:`loki.receive`'s playout rules (as the emulator's do), and a frame counts when it
was decodable within the session, as in the emulator; the receiver's NACK and playout policies
take the sender's RTT from RTCP receiver reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from loki.controllers import make_controller
from loki.guard import FeedbackGuard
from loki.qoe import QoeReport, compute_qoe
from loki.timeline import bin_timeline, bins
from rtc import aiortc_patch
from rtc.aiortc_receiver import AiortcReceiver, ReceiverLog
from rtc.compact_log import IntRows
from rtc.relay import RelayConfig, RelayProcess, load_link_trace
from rtc.sender import LiveController, attach
from rtc.signalling import rewrite_candidates
from rtc.video_source import SyntheticVideoTrack
from traces.trace import BYTES_PER_OPPORTUNITY, Trace

#: The link charges each packet 4 bytes of mahimahi's TUN header (as the emulator counts).
TUN_HEADER_BYTES = 4
CONNECT_TIMEOUT_S = 20.0
RTP_TIMESTAMP_MOD = 1 << 32
PROGRESS_INTERVAL_S = 1.0
RECEIVERS = ("aiortc", "chromium")
#: One row per captured frame: its pts (the encoder's RTP timestamp) and capture time.
CAPTURE_FIELDS = ("pts", "capture_us")


@dataclass
class LiveConfig:
    """One live session; link fields mean what they mean to ``loki emulate``."""

    source: tuple[str, str]  # ("builtin", NAME) or ("trace", PATH)
    controller: str = "gcc"
    duration_s: float = 30.0
    receiver: str = "aiortc"
    width: int = 640
    height: int = 360
    fps: float = 30.0
    delay_ms: int = 20
    queue_packets: int | None = None
    queue_bytes: int | None = None
    loss: float = 0.0
    seed: int = 0
    poisson_delivery: bool = False
    keyframe_interval_s: float = 0.0

    def __post_init__(self) -> None:
        if self.receiver not in RECEIVERS:
            raise ValueError(f"receiver must be one of {RECEIVERS}, got {self.receiver!r}")
        if self.duration_s <= 0:
            raise ValueError(f"duration_s must be > 0, got {self.duration_s}")


@dataclass
class ProgressRow:
    """One line of the live view."""

    t_s: float
    target_kbps: float
    sent_kbps: float
    capacity_kbps: float
    delay_ms: float
    fps: float


@dataclass
class LiveResult:
    qoe: QoeReport
    #: Figures about the sender and the link that QoE does not cover.
    stats: dict = field(default_factory=dict)
    progress: list[ProgressRow] = field(default_factory=list)
    #: Per-decision rows: time_s, target_bps.
    decisions: list[tuple[float, int]] = field(default_factory=list)
    #: ``loki emulate``'s per-second columns (:data:`loki.timeline.COLUMNS`), measured live.
    timeline: dict[str, np.ndarray] = field(default_factory=dict)


def _make_receiver(kind: str):  # type: ignore[no-untyped-def]
    if kind == "aiortc":
        return AiortcReceiver()
    from rtc.chromium_receiver import ChromiumReceiver

    return ChromiumReceiver()


def warm_up(controller: str, trace: Trace | None = None) -> None:
    """Run a throw-away controller of this kind for one emulated second before going live.

    GCC's estimators and the features are compiled (numba) on first use: after a fresh install
    that took 8 s of compiling in the first feedback report (15 s with the first import; 0.06 s
    once numba's cache is written), and in a live session the first report arrives on the
    event loop that also paces and receives. Here it happens before any packet is sent.
    """
    from loki.emu.session import LinkConfig, Session, SessionConfig
    from traces.generators import constant

    link = constant(3e6, 1000)
    ctl = make_controller(controller, trace=trace if trace is not None else link)
    Session(ctl, LinkConfig(trace=link), SessionConfig(duration_s=1.0, seed=0)).run()


async def run_live(
    config: LiveConfig, progress: Callable[[ProgressRow], None] | None = None
) -> LiveResult:
    """Run one session in real time and return its QoE (same rules as ``loki emulate``)."""
    aiortc_patch.install()
    aiortc_patch.use_loopback_host()
    relay_config = RelayConfig(
        delay_ms=config.delay_ms,
        loss=config.loss,
        queue_packets=config.queue_packets,
        queue_bytes=config.queue_bytes,
        seed=config.seed,
        poisson_delivery=config.poisson_delivery,
        twcc_extension_id=aiortc_patch.TRANSPORT_CC_EXTENSION_ID,
    )
    trace = load_link_trace(config.source, relay_config)
    warm_up(config.controller, trace)
    controller = make_controller(config.controller, trace=trace)
    clock = aiortc_patch.now_us
    captures = IntRows(CAPTURE_FIELDS)
    workdir = Path(tempfile.mkdtemp(prefix="loki-live-"))
    relay = RelayProcess(config.source, relay_config, workdir / "packets.npz")
    await relay.start()
    receiver = _make_receiver(config.receiver)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        await receiver.start()
        track = SyntheticVideoTrack(
            config.width,
            config.height,
            clock,
            fps=config.fps,
            on_capture=captures.append,
        )
        transceiver = pc.addTransceiver(track, direction="sendonly")
        caps = RTCRtpSender.getCapabilities("video").codecs
        transceiver.setCodecPreferences(
            [c for c in caps if c.mimeType.lower() in ("video/vp8", "video/rtx")]
        )
        live = attach(
            transceiver.sender, controller, keyframe_interval_s=config.keyframe_interval_s
        )
        if isinstance(receiver, AiortcReceiver):
            receiver.rtt_source = live.latest_rtt_us
        await pc.setLocalDescription(await pc.createOffer())
        offer = rewrite_candidates(pc.localDescription.sdp, relay.receiver_port)
        answer = await receiver.answer(offer)
        answer = rewrite_candidates(answer, relay.sender_port)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while track.start_us is None:
            if time.monotonic() > deadline:
                raise TimeoutError("no video frame was captured: the peers did not connect")
            await asyncio.sleep(0.01)
        t0_us = track.start_us
        end_us = t0_us + round(config.duration_s * 1e6)
        rows = await _watch(live, receiver, relay, t0_us, end_us, progress)
        live.stop()
        packets = await relay.stop()
        rx_log = await receiver.collect()
        receiver_stats = receiver.final_stats
    finally:
        relay.kill()
        shutil.rmtree(workdir, ignore_errors=True)
        with contextlib.suppress(Exception):
            await pc.close()
        with contextlib.suppress(Exception):
            await receiver.close()
    rendered = rendered_frames(config.duration_s, t0_us, captures, live, rx_log)
    qoe = live_qoe(trace, config.duration_s, t0_us, live, rendered, packets)
    stats = sender_stats(live, t0_us, end_us, track.frames_skipped)
    stats["relay"] = relay.summary.to_dict() if relay.summary else {}
    stats["receiver"] = {
        "plis": rx_log.plis,
        "frames_dropped": rx_log.frames_dropped,
        "feedback_packets": rx_log.feedback_packets,
        "nacks_sent": rx_log.nacks_sent,
        "frames_retransmitted": rx_log.frames_retransmitted,
    }
    if receiver_stats:
        stats[config.receiver] = receiver_stats
    decisions = [((t - t0_us) / 1e6, b) for t, b in live.log.targets if t <= end_us]
    origin_us = relay.summary.origin_us if relay.summary else None
    timeline = live_timeline(
        trace, config.duration_s, t0_us, origin_us, decisions, rendered, packets
    )
    return LiveResult(qoe=qoe, stats=stats, progress=rows, decisions=decisions, timeline=timeline)


def live_timeline(
    trace: Trace,
    duration_s: float,
    t0_us: int,
    origin_us: int | None,
    decisions: list[tuple[float, int]],
    rendered: RenderedFrames,
    packets: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """``loki emulate``'s per-second time line (:func:`loki.timeline.bin_timeline`), from the
    relay's ground truth per packet (IP sizes, as the emulator's) and the rendered frames.

    The relay's trace clock starts with the first RTP packet (``origin_us``), some ms after
    t0 (the first frame's encoding): the capacity column is the trace as the link applied it,
    shifted by that much, so a capacity step falls in the second it really came."""
    end_ms = round(duration_s * 1000)
    nb = bins(end_ms)
    shift_ms = 0 if origin_us is None else max(0, (origin_us - t0_us) // 1000)
    edges = np.maximum(np.arange(nb + 1) * 1000 - shift_ms, 0)
    opportunities = [trace.opportunities_between(int(a), int(b)) for a, b in pairwise(edges)]
    in_ms = (packets["in_us"] - t0_us) // 1000
    out = packets["out_us"]
    return bin_timeline(
        end_ms=end_ms,
        send_ms=in_ms,
        arrival_ms=np.where(out >= 0, (out - t0_us) // 1000, -1),
        size_bytes=packets["size_bytes"],  # IP sizes, as the emulator's time line counts
        capacity_kbps=np.asarray(opportunities) * BYTES_PER_OPPORTUNITY * 8 / 1000.0,
        decisions=decisions,
        render_ms=rendered.render_ms,
        frame_delay_ms=rendered.frame_delay_ms,
    )


async def _watch(
    live: LiveController,
    receiver,  # type: ignore[no-untyped-def]
    relay: RelayProcess,
    t0_us: int,
    end_us: int,
    progress: Callable[[ProgressRow], None] | None,
) -> list[ProgressRow]:
    rows: list[ProgressRow] = []
    clock = live.clock_us
    last_bytes, last_frames, last_us = live.sent_bytes, receiver.frames_rendered, clock()
    while True:
        now = clock()
        if now >= end_us:
            break
        await asyncio.sleep(min(PROGRESS_INTERVAL_S, (end_us - now) / 1e6))
        if hasattr(receiver, "poll"):
            with contextlib.suppress(Exception):
                await receiver.poll()
        now = clock()
        dt = max(now - last_us, 1) / 1e6
        sent, frames = live.sent_bytes, receiver.frames_rendered
        latest = relay.latest
        row = ProgressRow(
            t_s=(now - t0_us) / 1e6,
            target_kbps=live.target_bps / 1000,
            sent_kbps=(sent - last_bytes) * 8 / dt / 1000,
            capacity_kbps=float(latest.get("capacity_kbps", 0)),
            delay_ms=float(latest.get("delay_ms", 0.0)),
            fps=(frames - last_frames) / dt,
        )
        last_bytes, last_frames, last_us = sent, frames, now
        rows.append(row)
        if progress is not None:
            progress(row)
    return rows


@dataclass
class RenderedFrames:
    """The frames the receiver rendered within the session, on the session's time line."""

    render_ms: list[float]
    frame_delay_ms: list[float]  # capture to render
    frame_bytes: float  # their encoded sizes, summed
    capture_of: dict[int, int]  # pts (the encoder's RTP timestamp) -> capture time, us


def rendered_frames(
    duration_s: float, t0_us: int, captures: IntRows, live: LiveController, rx: ReceiverLog
) -> RenderedFrames:
    """Match each rendered frame to its capture through the sender's log, in render order."""
    end_us = t0_us + round(duration_s * 1e6)
    capture_of = dict(captures)  # pts (the encoder's RTP timestamp) -> capture time
    by_ts = {f[1]: f for f in live.log.frames}  # encoder ts -> (t, ts, pid, size, key, tgt)
    offset = live.rtp_timestamp_offset or 0
    render_ms: list[float] = []
    delay_ms: list[float] = []
    frame_bytes = 0
    for r in rx.rendered:
        # The emulator counts every frame decoded within the session, even one whose playout
        # time falls just after its end; a receiver that reports no decode time, by render.
        if (r.render_us if r.decoded_us is None else r.decoded_us) > end_us:
            continue
        frame = by_ts.get((r.rtp_timestamp - offset) % RTP_TIMESTAMP_MOD)
        if frame is None:
            continue
        capture = capture_of.get(frame[1])
        if capture is None:
            continue
        render_ms.append((r.render_us - t0_us) / 1000.0)
        delay_ms.append((r.render_us - capture) / 1000.0)
        frame_bytes += frame[3]
    order = np.argsort(render_ms, kind="stable")
    return RenderedFrames(
        render_ms=[render_ms[i] for i in order],
        frame_delay_ms=[delay_ms[i] for i in order],
        frame_bytes=float(frame_bytes),
        capture_of=capture_of,
    )


def live_qoe(
    trace: Trace,
    duration_s: float,
    t0_us: int,
    live: LiveController,
    rendered: RenderedFrames,
    packets: dict[str, np.ndarray],
) -> QoeReport:
    """The emulator's QoE inputs, taken from what the live session really did."""
    duration_ms = duration_s * 1000.0
    end_us = t0_us + round(duration_s * 1e6)
    capture_of = rendered.capture_of
    sent_in = packets["in_us"] <= end_us
    out = packets["out_us"]
    got = sent_in & (out >= 0) & (out <= end_us)
    lost = sent_in & (out < 0)
    decided = got | lost
    size = packets["size_bytes"]
    capacity_bytes = trace.opportunities_between(0, int(duration_ms)) * BYTES_PER_OPPORTUNITY
    return compute_qoe(
        duration_ms=duration_ms,
        capacity_bytes=capacity_bytes,
        link_bytes=float((size[got] + TUN_HEADER_BYTES).sum()),
        # As the emulator counts: frames the encoder produced (not those it dropped).
        frames_sent=sum(1 for f in live.log.frames if t0_us <= capture_of.get(f[1], -1) <= end_us),
        render_ms=rendered.render_ms,
        frame_delay_ms=rendered.frame_delay_ms,
        frame_bytes_rendered=rendered.frame_bytes,
        packets_sent=int(decided.sum()),
        packets_lost=int(lost.sum()),
        packet_delay_ms=((out[got] - packets["in_us"][got]) / 1000.0).tolist(),
    )


def sender_stats(live: LiveController, t0_us: int, end_us: int, frames_skipped: int) -> dict:
    """Keyframes, encoder rate against target, controller cost: the issue's sender figures."""
    frames = [f for f in live.log.frames if t0_us <= f[0] <= end_us]
    minutes = (end_us - t0_us) / 60e6
    keyframes = sum(1 for f in frames if f[4])
    encoded_bps = sum(f[3] for f in frames) * 8 / ((end_us - t0_us) / 1e6)
    targets = [f[5] for f in frames]
    hooks = aiortc_patch.hooks_of(live.sender.transport)
    wall_ns = (end_us - t0_us) * 1000
    guard = live.controller
    return {
        "frames_encoded": len(frames),
        "frames_skipped_by_source": frames_skipped,
        "frames_dropped_by_encoder": live.encoder.frames_dropped,
        "frames_skipped_by_controller": live.encoder.frames_skipped,
        "keyframes": keyframes,
        "keyframes_per_min": keyframes / minutes if minutes > 0 else 0.0,
        "encoder_reconfigurations": live.encoder.reconfigurations,
        "encoded_kbps": encoded_bps / 1000,
        "mean_encoder_target_kbps": float(np.mean(targets)) / 1000 if targets else 0.0,
        "sent_kbps": hooks.sent_bytes * 8 / ((end_us - t0_us) / 1e6) / 1000,
        "transport_cc": live.transport_cc,
        "feedback_reports": live.log.feedback_reports,
        "unknown_feedback_packets": live.adapter.unknown_packets,
        "malformed_feedback": hooks.malformed_feedback,
        "rtt_samples": len(live.log.rtts),
        "controller_calls": live.log.controller_calls,
        "controller_cpu_pct_of_core": 100.0 * live.log.controller_ns / wall_ns,
        "probes_sent": live.pacer.probes_sent if live.pacer else 0,
        "probes_skipped": live.pacer.probes_skipped if live.pacer else 0,
        # What the feedback guard took in and dropped (empty when the sender runs unguarded).
        "guard": guard.stats.to_dict() if isinstance(guard, FeedbackGuard) else {},
        "max_pacer_queue_packets": live.pacer.max_queue_packets if live.pacer else 0,
    }
