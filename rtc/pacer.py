"""The live sender's pacer: the emulator's pacing rules, driven by a real clock.

aiortc writes every packet of a frame to the socket at once. libwebrtc paces them at 2.5x the
target (``PacingController``), and the emulator does the same with :class:`loki.emu.pacer.Pacer`.
:class:`LivePacer` reuses that very object for every decision (when the next packet may leave,
retransmissions first, probe clusters at their own rate, faster draining of a long queue) and
only adds the real-time part: an asyncio task that sleeps until the pacer's next send time and
hands each packet to ``transmit`` (the patch's stamping send), which is where libwebrtc assigns
the transport-wide sequence number too.

Probe packets are made on demand by ``make_probe`` (RTX copies of recent media, libwebrtc's
"payload padding"); without one, a probe cluster is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from loki.api import NO_PROBE, ProbeCluster
from loki.emu.pacer import Pacer

logger = logging.getLogger(__name__)

#: SRTP tag (16 bytes for AES-GCM, 10 for AES-CM) plus UDP/IPv4: an RTP packet's IP overhead.
#: Only the pacer's byte budget uses it; the send history records the exact size.
IP_OVERHEAD_BYTES = 16 + 28


class LivePacer:
    """Queues RTP packets and sends them at the pacing rate in real time."""

    def __init__(
        self,
        transmit: Callable[[bytes, int], Awaitable[None]],
        clock_us: Callable[[], int],
        initial_target_bps: int,
        *,
        is_retransmission: Callable[[bytes], bool] | None = None,
        make_probe: Callable[[], bytes | None] | None = None,
    ) -> None:
        if initial_target_bps <= 0:
            raise ValueError(f"initial_target_bps must be > 0, got {initial_target_bps}")
        self._transmit = transmit
        self._clock_us = clock_us
        self._is_rtx = is_retransmission
        self._make_probe = make_probe
        self._pacer = Pacer(0)
        self._pacer.set_target(initial_target_bps)
        self._packets: dict[int, bytes] = {}
        # libwebrtc's BitrateProber starts a cluster only once media is flowing.
        self._held_probes: list[ProbeCluster] = []
        self._media_seen = False
        self._next_key = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.packets_sent = 0
        self.probes_sent = 0
        self.probes_skipped = 0
        self.max_queue_packets = 0

    @property
    def pacing_rate_bps(self) -> float:
        return self._pacer.pacing_rate_bps

    @property
    def queue_packets(self) -> int:
        return self._pacer.queue_packets

    def set_target(self, target_bps: int) -> None:
        self._pacer.set_target(target_bps)
        self._wake.set()

    def add_probe_cluster(self, cluster: ProbeCluster) -> None:
        if not self._media_seen:
            self._held_probes.append(cluster)
            return
        self._pacer.add_probe_cluster(cluster)
        self._ensure_running()
        self._wake.set()

    async def enqueue(self, data: bytes) -> None:
        """The patch's egress hook: queue one RTP packet (returns at once)."""
        key = self._next_key
        self._next_key += 1
        self._packets[key] = data
        now = self._clock_us()
        item = (len(data) + IP_OVERHEAD_BYTES, key, -1, NO_PROBE)
        if self._is_rtx is not None and self._is_rtx(data):
            self._pacer.enqueue_retransmission(item, now)
        else:
            self._pacer.enqueue(item, now)
        if not self._media_seen:
            self._media_seen = True
            for c in self._held_probes:
                self._pacer.add_probe_cluster(c)
            self._held_probes.clear()
        q = self._pacer.queue_packets
        if q > self.max_queue_packets:
            self.max_queue_packets = q
        self._ensure_running()
        self._wake.set()

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        pacer = self._pacer
        try:
            while True:
                now = self._clock_us()
                pkt = pacer.pop_due(now)
                if pkt is not None:
                    await self._send(pkt)
                    continue
                t = pacer.next_send_us(now)
                self._wake.clear()
                if t is None:
                    await self._wake.wait()
                else:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), max(0.0, (t - now) / 1e6))
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:
            logger.exception("pacer stopped")

    async def _send(self, pkt: tuple[int, int, int, int]) -> None:
        _, key, _, probe = pkt
        if key < 0:
            data = self._make_probe() if self._make_probe is not None else None
            if data is None:
                self.probes_skipped += 1
                return
            await self._transmit(data, probe)
            self.probes_sent += 1
            return
        data = self._packets.pop(key)
        await self._transmit(data, NO_PROBE)
        self.packets_sent += 1

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
