"""The aiortc patch: version check, SDP negotiation, RTCP parsing with NACK intact."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("aiortc")

from aiortc import RTCConfiguration, RTCPeerConnection, rtp

from rtc import aiortc_patch
from rtc.transport_feedback import TransportCcFeedback, build_rtcp


def test_refuses_an_untested_aiortc_version() -> None:
    with pytest.raises(aiortc_patch.UnsupportedAiortcError, match=r"1\.99\.0"):
        aiortc_patch.check_version("1.99.0")
    aiortc_patch.check_version("1.16.0")


def test_offer_negotiates_transport_cc_and_answer_keeps_it() -> None:
    aiortc_patch.install()
    aiortc_patch.install()  # idempotent

    async def offer_answer() -> tuple[str, str]:
        a = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        b = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        a.addTransceiver("video", direction="sendonly")
        await a.setLocalDescription(await a.createOffer())
        await b.setRemoteDescription(a.localDescription)
        await b.setLocalDescription(await b.createAnswer())
        offer, answer = a.localDescription.sdp, b.localDescription.sdp
        await a.close()
        await b.close()
        return offer, answer

    offer, answer = asyncio.run(offer_answer())
    for sdp in (offer, answer):
        assert f"a=extmap:5 {aiortc_patch.TRANSPORT_CC_URI}" in sdp
        assert "transport-cc" in sdp
        assert "abs-send-time" not in sdp


def test_compound_rtcp_with_transport_cc_nack_and_rr() -> None:
    aiortc_patch.install()
    fb = build_rtcp(TransportCcFeedback(1, 2, 7, 15, 3, (1_000_000, None, 1_002_000)))
    nack = bytes(rtp.RtcpRtpfbPacket(fmt=1, ssrc=1, media_ssrc=2, lost=[10, 12]))
    rr = bytes(rtp.RtcpRrPacket(ssrc=1, reports=[]))
    packets = rtp.RtcpPacket.parse(rr + fb + nack)
    assert isinstance(packets[0], rtp.RtcpRrPacket)
    tcc = packets[1]
    assert isinstance(tcc, aiortc_patch.TransportCcRtcp) and tcc.feedback is not None
    assert tcc.feedback.base_seq == 7 and tcc.feedback.arrival_us == (1_000_000, None, 1_002_000)
    assert packets[2].fmt == 1 and packets[2].lost == [10, 12]


def test_malformed_transport_cc_does_not_drop_the_compound_packet() -> None:
    aiortc_patch.install()
    bad = bytes([0x8F, 205, 0, 3]) + bytes(8) + b"\x00\x07\x00\x05"  # 5 statuses, no chunks
    rr = bytes(rtp.RtcpRrPacket(ssrc=1, reports=[]))
    packets = rtp.RtcpPacket.parse(bad + rr)
    assert isinstance(packets[0], aiortc_patch.TransportCcRtcp)
    assert packets[0].feedback is None and "too short" in packets[0].error
    assert isinstance(packets[1], rtp.RtcpRrPacket)
