"""Headless Chromium as the receiving peer: real libwebrtc on the other end.

Debian's ``chromium`` (``apt-get install -y chromium``) driven by ``playwright`` with
``executable_path=shutil.which("chromium")``; a browser is never downloaded. The page is served
from memory through playwright's request routing (no HTTP server). In the page, an
``RTCPeerConnection`` answers the sender's offer, plays the track in a ``<video>`` element and
notes every presented frame with ``requestVideoFrameCallback`` (its RTP timestamp and the time
it was presented): those are the render times the QoE is computed from. ``getStats()`` adds
Chromium's own counters (freezes, frames decoded, keyframes, PLIs, NACKs).

Flags are those found to work here (``shared/docs/aiortc-notes.md``).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from typing import Any

from rtc import aiortc_patch
from rtc.aiortc_receiver import ReceiverLog, RenderedFrame

PAGE_URL = "http://loki-live.localhost/receiver.html"
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
)
ICE_GATHER_TIMEOUT_MS = 5000

PAGE_HTML = (
    """<!doctype html><html><body>
<video id="v" autoplay muted playsinline width="640" height="360"></video>
<script>
const video = document.getElementById('v');
window.frames_log = [];
window.pc = new RTCPeerConnection({iceServers: []});
function onFrame(now, md) {
  window.frames_log.push([performance.timeOrigin + now, md.rtpTimestamp ?? -1,
                          md.presentedFrames]);
  video.requestVideoFrameCallback(onFrame);
}
pc.ontrack = (e) => {
  video.srcObject = e.streams.length ? e.streams[0] : new MediaStream([e.track]);
  video.play().catch(() => {});
  video.requestVideoFrameCallback(onFrame);
};
window.answer = async (offer) => {
  await pc.setRemoteDescription({type: 'offer', sdp: offer});
  await pc.setLocalDescription(await pc.createAnswer());
  if (pc.iceGatheringState !== 'complete') {
    await new Promise((resolve) => {
      const t = setTimeout(resolve, ICE_GATHER_TIMEOUT_MS);
      pc.addEventListener('icegatheringstatechange', () => {
        if (pc.iceGatheringState === 'complete') { clearTimeout(t); resolve(); }
      });
    });
  }
  return pc.localDescription.sdp;
};
window.inboundStats = async () => {
  const out = {};
  (await pc.getStats()).forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'video') Object.assign(out, s);
  });
  return out;
};
</script></body></html>"""
).replace("ICE_GATHER_TIMEOUT_MS", str(ICE_GATHER_TIMEOUT_MS))

#: getStats() inbound-rtp fields reported at the end of a session.
STATS_FIELDS = (
    "framesReceived",
    "framesDecoded",
    "framesDropped",
    "keyFramesDecoded",
    "freezeCount",
    "totalFreezesDuration",
    "pauseCount",
    "totalPausesDuration",
    "framesPerSecond",
    "jitterBufferDelay",
    "jitterBufferEmittedCount",
    "packetsReceived",
    "packetsLost",
    "bytesReceived",
    "nackCount",
    "pliCount",
    "firCount",
)


class ChromiumUnavailableError(RuntimeError):
    """Chromium or playwright is not installed; the message says what to install."""


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise ChromiumUnavailableError("chromium is not installed (apt-get install -y chromium)")
    return path


def check_available() -> None:
    """Raise :class:`ChromiumUnavailableError` unless both chromium and playwright can be used."""
    chromium_path()
    try:
        import playwright.async_api  # noqa: F401
    except ImportError as e:
        raise ChromiumUnavailableError(
            "playwright is not installed (pip install playwright)"
        ) from e


class ChromiumReceiver:
    """Same interface as :class:`rtc.aiortc_receiver.AiortcReceiver`."""

    name = "chromium"

    def __init__(self) -> None:
        check_available()
        self._pw: Any = None
        self._context: Any = None
        self._page: Any = None
        self._profile = tempfile.TemporaryDirectory(prefix="loki-chromium-")
        self.final_stats: dict = {}
        self._frames_seen = 0

    async def start(self) -> None:
        from playwright.async_api import async_playwright

        self._pw = await async_playwright().start()
        self._context = await self._pw.chromium.launch_persistent_context(
            self._profile.name,
            executable_path=chromium_path(),
            headless=True,
            args=list(CHROMIUM_FLAGS),
        )
        self._page = (
            self._context.pages[0] if self._context.pages else await self._context.new_page()
        )
        await self._page.route(
            PAGE_URL, lambda route: route.fulfill(content_type="text/html", body=PAGE_HTML)
        )
        await self._page.goto(PAGE_URL)

    async def answer(self, offer_sdp: str) -> str:
        return await self._page.evaluate("(o) => window.answer(o)", offer_sdp)

    @property
    def frames_rendered(self) -> int:
        return self._frames_seen

    async def poll(self) -> dict:
        """Chromium's inbound-rtp stats now (also updates :attr:`frames_rendered`)."""
        stats = await self._page.evaluate("() => window.inboundStats()")
        self._frames_seen = int(stats.get("framesDecoded", 0))
        return stats

    async def collect(self) -> ReceiverLog:
        """Presented frames on the session clock, and the final getStats() counters."""
        stats = await self.poll()
        self.final_stats = {k: stats[k] for k in STATS_FIELDS if k in stats}
        raw = await self._page.evaluate("() => window.frames_log")
        # performance.timeOrigin + now is wall-clock ms; map it onto the monotonic session clock.
        offset_us = time.time_ns() // 1000 - aiortc_patch.now_us()
        log = ReceiverLog(plis=int(stats.get("pliCount", 0)))
        seen: set[int] = set()
        for epoch_ms, ts, _presented in raw:
            if ts < 0 or ts in seen:
                continue
            seen.add(int(ts))
            log.rendered.append(RenderedFrame(round(epoch_ms * 1000) - offset_us, int(ts)))
        self.final_stats["presented_frames_logged"] = len(log.rendered)
        return log

    async def close(self) -> None:
        if self._context is not None:
            await self._context.close()
        if self._pw is not None:
            await self._pw.stop()
        self._profile.cleanup()
