"""Embedding the controller in an app's own aiortc sender (README, "Embedding it in a sender").

An app owns its RTCPeerConnection, its camera track and its signalling; all it adds is
:func:`rtc.sender.attach` before the offer. These tests stream between two peer connections in
one process over loopback, with no relay: the receiver is a plain aiortc peer that only reads
the track, as an app's remote would. The misuse that used to pass silently is checked too:
transport-cc not negotiated (attach after negotiation, or a remote that refuses it), where the
controller hears no transport feedback and holds its rate for the whole call.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time

import pytest

pytest.importorskip("aiortc")

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack

from loki.api import ProbeCluster, TransportFeedback, WrappedController
from loki.controllers import make_controller
from rtc import aiortc_patch
from rtc.sender import LiveController, attach
from rtc.session import warm_up
from rtc.video_source import SyntheticVideoTrack

INITIAL_BPS = make_controller("loki").target_bps


def _without_transport_cc(sdp: str) -> str:
    """The answer of a remote that does not do transport-cc (an unpatched aiortc, say)."""
    lines = [
        line
        for line in sdp.splitlines()
        if aiortc_patch.TRANSPORT_CC_URI not in line and "transport-cc" not in line
    ]
    return "\r\n".join(lines) + "\r\n"


class App:
    """A sender app and its remote, in one process: the README's steps, in order."""

    def __init__(self, audio_first: bool = False) -> None:
        aiortc_patch.install()
        aiortc_patch.use_loopback_host()
        self.tx = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.rx = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.frames_received = 0
        self._readers: list[asyncio.Future[None]] = []
        self.rx.on("track", self._consume)
        if audio_first:
            # As most apps do (addTrack(mic), then addTrack(camera)): BUNDLE then moves the
            # video sender onto the audio's transport during negotiation.
            self.tx.addTransceiver(AudioStreamTrack(), direction="sendonly")
        self.track = SyntheticVideoTrack(320, 180, aiortc_patch.now_us)
        self.transceiver = self.tx.addTransceiver(self.track, direction="sendonly")

    def _consume(self, track) -> None:  # type: ignore[no-untyped-def]
        if track.kind != "video":
            return

        async def read() -> None:
            while True:
                try:
                    await track.recv()
                except Exception:
                    return
                self.frames_received += 1

        self._readers.append(asyncio.ensure_future(read()))

    async def negotiate(self, remote_refuses_transport_cc: bool = False) -> None:
        await self.tx.setLocalDescription(await self.tx.createOffer())
        await self.rx.setRemoteDescription(self.tx.localDescription)
        await self.rx.setLocalDescription(await self.rx.createAnswer())
        answer = self.rx.localDescription.sdp
        if remote_refuses_transport_cc:
            answer = _without_transport_cc(answer)
        await self.tx.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

    async def wait_started(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not aiortc_patch.sender_started(self.transceiver.sender):
            assert time.monotonic() < deadline, "the peers did not connect"
            await asyncio.sleep(0.02)

    async def close(self, live: LiveController | None) -> None:
        if live is not None:
            live.stop()
        await self.tx.close()
        await self.rx.close()


@pytest.mark.parametrize("audio_first", [False, True], ids=["video-only", "audio-first"])
async def test_an_app_that_attaches_before_the_offer_gets_feedback_and_ramps_up(
    audio_first: bool,
) -> None:
    # Audio first used to leave the controller on the transport BUNDLE discarded: no
    # feedback, the target held at 300 kbps, and the pacer's counters at zero.
    await asyncio.to_thread(warm_up, "loki")  # the README's steps, in its order
    app = App(audio_first)
    moved_from = app.transceiver.sender.transport
    caps = RTCRtpSender.getCapabilities("video").codecs
    app.transceiver.setCodecPreferences(
        [c for c in caps if c.mimeType.lower() in ("video/vp8", "video/rtx")]
    )
    decisions: list[tuple[int, int]] = []
    live = attach(
        app.transceiver.sender,
        make_controller("loki"),
        on_decision=lambda t_us, bps: decisions.append((t_us, bps)),
    )
    assert live.transport_cc is None  # not negotiated yet
    try:
        await app.negotiate()
        await app.wait_started()
        await asyncio.sleep(5.0)
        assert live.transport_cc is True
        assert (app.transceiver.sender.transport is not moved_from) == audio_first
        # 100 ms reports for about 5 s; a loaded machine gets fewer, none gets none.
        assert live.log.feedback_reports >= 25
        # Loopback has no bottleneck: the estimate climbs from its start (loki's fault floor
        # holds at least GCC's, and GCC's first probe alone lifts it well above 300 kbps).
        assert max(bps for _, bps in decisions) > 1.5 * INITIAL_BPS
        assert live.target_bps > INITIAL_BPS
        assert app.frames_received >= 60  # 30 fps for 5 s, the first frames after connect
        assert live.sent_bytes > 5 * INITIAL_BPS / 8  # paced and counted on the transport used
    finally:
        await app.close(live)


async def test_an_app_that_answers_the_remotes_offer_gets_feedback() -> None:
    # The README's answerer order: patch, read the offer, add the track, attach, answer.
    aiortc_patch.install()
    aiortc_patch.use_loopback_host()
    app = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    remote = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    remote.addTransceiver("video", direction="recvonly")
    await remote.setLocalDescription(await remote.createOffer())
    await app.setRemoteDescription(remote.localDescription)
    sender = app.addTrack(SyntheticVideoTrack(320, 180, aiortc_patch.now_us))
    live = attach(sender, make_controller("gcc"))
    try:
        await app.setLocalDescription(await app.createAnswer())
        await remote.setRemoteDescription(app.localDescription)
        deadline = time.monotonic() + 10.0
        while live.log.feedback_reports < 10:
            assert time.monotonic() < deadline, f"no feedback (transport-cc {live.transport_cc})"
            await asyncio.sleep(0.1)
        assert live.transport_cc is True
    finally:
        live.stop()
        await app.close()
        await remote.close()


async def test_a_second_controller_on_the_same_transport_is_refused() -> None:
    app = App()
    live = attach(app.transceiver.sender, make_controller("gcc"))
    try:
        with pytest.raises(RuntimeError, match="one controller each"):
            attach(app.transceiver.sender, make_controller("loki"))
        live.stop()  # and once the first is stopped, the transport is free again
        live = attach(app.transceiver.sender, make_controller("loki"))
    finally:
        await app.close(live)


def _prefer_h264(app: App) -> None:
    caps = RTCRtpSender.getCapabilities("video").codecs
    app.transceiver.setCodecPreferences(
        [c for c in caps if c.mimeType.lower() in ("video/h264", "video/rtx")]
    )


# What goes wrong, and the message that says so.
MISUSES = {
    "remote refuses transport-cc": (None, "transport-cc was not negotiated"),
    "H264 negotiated": (_prefer_h264, "negotiated video/H264, but attach.. encodes VP8"),
}


@pytest.mark.parametrize("misuse", sorted(MISUSES))
async def test_attach_after_the_sender_started_wrongly_is_refused(misuse: str) -> None:
    prepare, message = MISUSES[misuse]
    app = App()
    if prepare is not None:
        prepare(app)
    try:
        await app.negotiate(remote_refuses_transport_cc=prepare is None)
        await app.wait_started()
        with pytest.raises(RuntimeError, match=message):
            attach(app.transceiver.sender, make_controller("gcc"))
    finally:
        await app.close(None)


async def test_a_remote_that_refuses_transport_cc_is_reported_not_silent(caplog) -> None:  # type: ignore[no-untyped-def]
    app = App()
    live = attach(app.transceiver.sender, make_controller("gcc"))
    try:
        with caplog.at_level(logging.WARNING, logger="rtc.sender"):
            await app.negotiate(remote_refuses_transport_cc=True)
            await app.wait_started()
            await asyncio.sleep(0.5)
        assert live.transport_cc is False
        errors = [r for r in caplog.records if "transport-cc was not negotiated" in r.message]
        assert len(errors) == 1  # once, not every 25 ms
        assert live.log.feedback_reports == 0
    finally:
        await app.close(live)


async def test_a_codec_other_than_vp8_is_reported_not_silent(caplog) -> None:  # type: ignore[no-untyped-def]
    # Before the check, this session sent VP8 under H264's payload type for its whole length:
    # feedback flowed, the target climbed, and the remote decoded not one frame.
    app = App()
    _prefer_h264(app)
    live = attach(app.transceiver.sender, make_controller("gcc"))
    try:
        with caplog.at_level(logging.WARNING, logger="rtc.sender"):
            await app.negotiate()
            await app.wait_started()
            await asyncio.sleep(0.5)
        errors = [r for r in caplog.records if "attach() encodes VP8" in r.message]
        assert len(errors) == 1 and "video/H264" in errors[0].message
    finally:
        await app.close(live)


def test_install_still_patches_after_use_loopback_host() -> None:
    # A fresh interpreter: this process has the patch installed already. Calling
    # use_loopback_host first used to make install() a silent no-op.
    code = (
        "from aiortc import rtcdtlstransport\n"
        "from rtc import aiortc_patch\n"
        "aiortc_patch.use_loopback_host()\n"
        "aiortc_patch.install()\n"
        "assert rtcdtlstransport.RTCDtlsTransport._send_rtp is aiortc_patch._send_rtp\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


class ClockRecorder(WrappedController):
    """GCC, noting the times it is given (and that it is never called before the start)."""

    def __init__(self, sender: RTCRtpSender) -> None:
        super().__init__(make_controller("gcc"))
        self.sender = sender
        self.called_before_start = False
        self.process_at_us: list[int] = []
        self.feedback_times_us: list[int] = []
        self.probe_clusters: list[ProbeCluster] = []

    def on_process_interval(self, at_us: int) -> None:
        self.called_before_start |= not aiortc_patch.sender_started(self.sender)
        self.process_at_us.append(at_us)
        super().on_process_interval(at_us)

    def on_feedback(self, report: TransportFeedback) -> int:
        self.feedback_times_us += [report.feedback_time_us, int(report.send_time_us.min())]
        return super().on_feedback(report)

    def pop_probe_clusters(self) -> list[ProbeCluster]:
        clusters = super().pop_probe_clusters()
        self.probe_clusters += clusters
        return clusters


async def test_the_controller_is_started_with_the_transport_on_its_own_clock() -> None:
    # Before: the controller was called from attach on, with the machine's monotonic clock, so
    # its first probes (made at its time zero) were answered "uptime" later, past the 1 s
    # ProbeController waits, and it never probed further: GCC crept up from its first estimate.
    app = App()
    recorder = ClockRecorder(app.transceiver.sender)
    live = attach(app.transceiver.sender, recorder, guard=False)
    try:
        await asyncio.sleep(0.3)  # attached, not yet negotiated: nothing to drive
        assert recorder.process_at_us == []
        await app.negotiate()
        await app.wait_started()
        await asyncio.sleep(1.5)
        assert not recorder.called_before_start
        # Its clock starts at zero with the transport, as the emulator's does.
        assert 0 <= recorder.process_at_us[0] < 100_000
        # No packet went out before that zero.
        assert all(0 <= t < 2_000_000 for t in recorder.feedback_times_us)
        # And so it probes on after its first results, as in the emulator (clusters 1 and 2 at
        # start, then a third at twice the first estimate).
        assert len(recorder.probe_clusters) >= 3
        assert recorder.probe_clusters[2].target_bps > recorder.probe_clusters[1].target_bps
    finally:
        await app.close(live)


async def test_a_call_closed_without_stop_stops_driving_the_controller() -> None:
    app = App()
    recorder = ClockRecorder(app.transceiver.sender)
    live = attach(app.transceiver.sender, recorder, guard=False)
    await app.negotiate()
    await app.wait_started()
    await asyncio.sleep(0.3)
    assert live.running and recorder.process_at_us
    await app.close(None)  # the app forgets live.stop()
    await asyncio.sleep(0.2)
    assert not live.running
    calls = len(recorder.process_at_us)
    await asyncio.sleep(0.3)
    assert len(recorder.process_at_us) == calls  # no more ticks into the controller
    live.stop()  # and a late stop() is harmless
