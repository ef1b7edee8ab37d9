"""A real-time, trace-driven UDP relay between two WebRTC peers on this machine.

The relay is the emulator's network in real time: it owns two loopback UDP ports, one the
sender is told the receiver is at (``sender_port``) and one the receiver is told the sender is
at (``receiver_port``); each side's ICE candidate is rewritten to them (:mod:`rtc.signalling`).
It learns the peers' real addresses from their first datagrams (ICE retransmits make that
converge in well under a second) and forwards between them.

What happens to each datagram is decided by the emulator's own stage objects, so the rules are
those of ``loki emulate`` by construction: the media direction is
:func:`loki.emu.path.uplink_path` (random loss, then mm-link on the trace with its optional
drop-tail queue, then the one-way delay), the reverse direction
:func:`loki.emu.path.feedback_path` (delay, optional loss). Trace ms 0 is the arrival of the
first RTP packet from the sender; before it (ICE, DTLS) datagrams only see the delay. Sizes are
IP sizes (UDP payload + 28), as the link charges them.

Every RTP packet from the sender is logged with ground truth: arrival at the relay, the time
it left the link (or -1: dropped by the queue or lost), IP size, SSRC, payload type, RTP and
transport-wide sequence numbers (SRTP leaves headers readable).

Run as a separate process (``python -m rtc.relay``, see :class:`RelayProcess`) so its timers are
not delayed by the peers' Python work; it asks for SCHED_FIFO real-time priority where the
system allows (measured timer lateness drops from 100+ ms under load to under a millisecond).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import json
import os
import selectors
import socket
import struct
import sys
import time
from array import array
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from loki.emu.link import DropTail
from loki.emu.path import feedback_path, uplink_path
from traces.trace import Trace

UDP_IPV4_OVERHEAD_BYTES = 28
REALTIME_PRIORITY = 50
STATS_INTERVAL_US = 500_000
MAX_DATAGRAM_BYTES = 65536
LOOPBACK = "127.0.0.1"
#: The one-byte header-extension profile (RFC 8285).
ONE_BYTE_PROFILE = 0xBEDE
#: Packet-log rows held in memory before they are appended to the log's file (about 230 KB).
LOG_CHUNK_ROWS = 4096


@dataclass(frozen=True)
class RelayConfig:
    """The emulated network, with ``loki emulate``'s meaning for every field."""

    delay_ms: int = 20
    loss: float = 0.0
    queue_packets: int | None = None
    queue_bytes: int | None = None
    feedback_loss: float = 0.0
    seed: int = 0
    #: The trace's deliveries re-timed as a Poisson process within each 200 ms, from ``seed``
    #: (``loki emulate --poisson-delivery``).
    poisson_delivery: bool = False
    #: Header-extension id of the transport-wide sequence number, for the log (0: not logged).
    twcc_extension_id: int = 0


def now_us() -> int:
    return time.monotonic_ns() // 1000


def is_rtp_or_rtcp(data: bytes) -> bool:
    return len(data) >= 12 and 128 <= data[0] <= 191


def is_rtcp(data: bytes) -> bool:
    return len(data) >= 2 and 192 <= data[1] <= 223


def rtp_fields(data: bytes, twcc_id: int) -> tuple[int, int, int, int]:
    """(ssrc, payload type, RTP seq, transport-wide seq or -1) from an (S)RTP header."""
    pt = data[1] & 0x7F
    seq, _ts, ssrc = struct.unpack_from("!HII", data, 2)
    twcc = -1
    if twcc_id and data[0] & 0x10:
        pos = 12 + 4 * (data[0] & 0x0F)
        if pos + 4 <= len(data):
            profile, words = struct.unpack_from("!HH", data, pos)
            pos += 4
            end = min(pos + 4 * words, len(data))
            if profile == ONE_BYTE_PROFILE:
                while pos < end:
                    b = data[pos]
                    if b == 0:
                        pos += 1
                        continue
                    ext_id, length = b >> 4, (b & 0x0F) + 1
                    if ext_id == 15:
                        break
                    if ext_id == twcc_id and length == 2 and pos + 3 <= end:
                        twcc = (data[pos + 1] << 8) | data[pos + 2]
                        break
                    pos += 1 + length
    return ssrc, pt, seq, twcc


class RelayLink:
    """The per-datagram decisions: exit time on the session clock, or -1 (no sockets here)."""

    def __init__(self, trace: Trace, config: RelayConfig) -> None:
        queue = None
        if config.queue_packets is not None:
            queue = DropTail(limit_packets=config.queue_packets)
        elif config.queue_bytes is not None:
            queue = DropTail(limit_bytes=config.queue_bytes)
        self.config = config
        self.trace = trace
        self.uplink = uplink_path(trace, config.delay_ms, config.loss, queue, config.seed)
        self.downlink = feedback_path(config.delay_ms, config.feedback_loss, config.seed + 1)
        self.origin_us: int | None = None
        self._delay_us = config.delay_ms * 1000

    def forward(self, arrival_us: int, size_bytes: int, is_media: bool) -> int:
        """Sender -> receiver. The first media packet starts the trace clock."""
        if self.origin_us is None:
            if not is_media:
                return arrival_us + self._delay_us
            self.origin_us = arrival_us
        exit_ms = self.uplink.send((arrival_us - self.origin_us) // 1000, size_bytes)
        return -1 if exit_ms < 0 else self.origin_us + exit_ms * 1000

    def backward(self, arrival_us: int, size_bytes: int) -> int:
        """Receiver -> sender: delay (and optional loss) only."""
        base = self.origin_us if self.origin_us is not None else 0
        exit_ms = self.downlink.send((arrival_us - base) // 1000, size_bytes)
        return -1 if exit_ms < 0 else base + exit_ms * 1000


class PacketLog:
    """Ground truth per forwarded RTP packet, streamed to a raw file next to ``path`` and
    turned into ``path`` (an .npz of int64 columns) by :meth:`save`.

    Only :data:`LOG_CHUNK_ROWS` rows are held in memory: kept whole (as lists of Python ints,
    later even as int64 rows) the log grew the relay's memory with every packet, by megabytes
    over a 10-minute soak at a megabit or two and far more at higher rates.
    """

    FIELDS = ("in_us", "out_us", "size_bytes", "ssrc", "pt", "seq", "twcc_seq")

    def __init__(self, path: Path) -> None:
        self.path = path
        self._raw_path = path.with_name(path.name + ".rows")
        self._raw = open(self._raw_path, "wb")  # noqa: SIM115 - save() closes it
        self._chunk = array("q")
        self.rows = 0

    def add(self, *values: int) -> None:
        self._chunk.extend(values)
        self.rows += 1
        if len(self._chunk) >= LOG_CHUNK_ROWS * len(self.FIELDS):
            self._flush()

    def _flush(self) -> None:
        self._chunk.tofile(self._raw)
        del self._chunk[:]

    def save(self) -> None:
        """Write the .npz and remove the raw file."""
        self._flush()
        self._raw.close()
        flat = np.fromfile(self._raw_path, dtype=np.int64)
        table = flat.reshape(-1, len(self.FIELDS))
        with open(self.path, "wb") as f:
            np.savez(f, **{name: table[:, i] for i, name in enumerate(self.FIELDS)})
        self._raw_path.unlink()


def load_packet_log(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {f: z[f] for f in PacketLog.FIELDS}


def try_realtime_priority() -> bool:
    """SCHED_FIFO for this process where permitted (root or CAP_SYS_NICE)."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(REALTIME_PRIORITY))
    except (AttributeError, OSError):
        return False
    return True


def serve(trace: Trace, config: RelayConfig, log_path: Path, control: int) -> None:
    """The relay loop: runs until a line arrives on (or EOF of) the ``control`` fd."""
    rt = try_realtime_priority()
    link = RelayLink(trace, config)
    toward_sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    toward_receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (toward_sender, toward_receiver):
        s.bind((LOOPBACK, 0))
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    print(
        json.dumps(
            {
                "sender_port": toward_sender.getsockname()[1],
                "receiver_port": toward_receiver.getsockname()[1],
                "realtime": rt,
            }
        ),
        flush=True,
    )
    sender_addr: tuple[str, int] | None = None
    receiver_addr: tuple[str, int] | None = None
    sel = selectors.DefaultSelector()
    sel.register(toward_sender, selectors.EVENT_READ, "from_sender")
    sel.register(toward_receiver, selectors.EVENT_READ, "from_receiver")
    sel.register(control, selectors.EVENT_READ, "control")
    heap: list[tuple[int, int, int, bytes]] = []  # (due_us, order, direction, data)
    log = PacketLog(log_path)
    order = 0
    late_us_max = 0
    late_us_sum = 0
    delivered = 0
    stat_next = now_us() + STATS_INTERVAL_US
    stat_in = stat_out = stat_drop = 0
    last_delay_us = 0
    running = True
    while running:
        now = now_us()
        timeout = None if not heap else max(0.0, (heap[0][0] - now) / 1e6)
        if timeout is None or timeout > STATS_INTERVAL_US / 1e6:
            timeout = STATS_INTERVAL_US / 1e6
        for key, _ in sel.select(timeout):
            if key.data == "control":
                running = False
                continue
            sock = key.fileobj
            while True:
                try:
                    data, addr = sock.recvfrom(MAX_DATAGRAM_BYTES)  # type: ignore[union-attr]
                except (BlockingIOError, InterruptedError):
                    break
                except ConnectionRefusedError:
                    continue
                t = now_us()
                size = len(data) + UDP_IPV4_OVERHEAD_BYTES
                if key.data == "from_sender":
                    sender_addr = addr
                    media = is_rtp_or_rtcp(data) and not is_rtcp(data)
                    due = link.forward(t, size, media)
                    direction = 0
                    if media:
                        ssrc, pt, seq, twcc = rtp_fields(data, config.twcc_extension_id)
                        log.add(t, due, size, ssrc, pt, seq, twcc)
                        stat_in += size
                        if due < 0:
                            stat_drop += 1
                        else:
                            last_delay_us = due - t
                else:
                    receiver_addr = addr
                    due = link.backward(t, size)
                    direction = 1
                if due >= 0:
                    order += 1
                    heapq.heappush(heap, (due, order, direction, data))
        now = now_us()
        while heap and heap[0][0] <= now:
            due, _, direction, data = heapq.heappop(heap)
            target = receiver_addr if direction == 0 else sender_addr
            sock = toward_receiver if direction == 0 else toward_sender
            if target is None:
                continue  # the peer has not spoken yet; ICE will retransmit
            with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
                sock.sendto(data, target)
            late = now - due
            late_us_sum += late
            late_us_max = max(late_us_max, late)
            delivered += 1
            if direction == 0:
                stat_out += len(data) + UDP_IPV4_OVERHEAD_BYTES
        if now >= stat_next:
            origin = link.origin_us
            t_ms = (now - origin) // 1000 if origin is not None else -1
            cap = trace.capacity_bps(t_ms - STATS_INTERVAL_US // 1000, t_ms) if t_ms > 0 else 0
            scale = 8e6 / STATS_INTERVAL_US / 1000.0
            print(
                json.dumps(
                    {
                        "t_ms": t_ms,
                        "in_kbps": round(stat_in * scale),
                        "out_kbps": round(stat_out * scale),
                        "capacity_kbps": round(cap / 1000),
                        "delay_ms": round(last_delay_us / 1000, 1),
                        "drops": stat_drop,
                    }
                ),
                flush=True,
            )
            stat_in = stat_out = stat_drop = 0
            stat_next = now + STATS_INTERVAL_US
    log.save()
    summary = {
        "done": True,
        "origin_us": link.origin_us,
        "delivered": delivered,
        "timer_late_mean_us": round(late_us_sum / delivered, 1) if delivered else 0.0,
        "timer_late_max_us": late_us_max,
        "realtime": rt,
    }
    print(json.dumps(summary), flush=True)


@dataclass
class RelaySummary:
    origin_us: int | None
    delivered: int
    timer_late_mean_us: float
    timer_late_max_us: int
    realtime: bool

    def to_dict(self) -> dict:
        return asdict(self)


class RelayProcess:
    """The relay as a child process, from the session's event loop.

    ``source`` is ``("trace", path)`` or ``("builtin", name)``: the child loads the trace
    itself with the same loaders as ``loki emulate``.
    """

    def __init__(self, source: tuple[str, str], config: RelayConfig, log_path: Path) -> None:
        self.source = source
        self.config = config
        self.log_path = log_path
        self.sender_port = 0
        self.receiver_port = 0
        self.realtime = False
        self.latest: dict = {}
        self.summary: RelaySummary | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task | None = None
        self._done = asyncio.Event()

    async def start(self) -> None:
        kind, value = self.source
        args = [sys.executable, "-m", "rtc.relay", f"--{kind}", value]
        args += ["--config", json.dumps(asdict(self.config)), "--log", str(self.log_path)]
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self._proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            cwd=root,
        )
        assert self._proc.stdout is not None
        line = await asyncio.wait_for(self._proc.stdout.readline(), timeout=30)
        if not line:
            raise RuntimeError("the relay process exited before it started")
        ports = json.loads(line)
        self.sender_port = ports["sender_port"]
        self.receiver_port = ports["receiver_port"]
        self.realtime = ports["realtime"]
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while True:
            line = await self._proc.stdout.readline()
            if not line:
                break
            msg = json.loads(line)
            if msg.get("done"):
                msg.pop("done")
                self.summary = RelaySummary(**msg)
            else:
                self.latest = msg
        self._done.set()

    async def stop(self) -> dict[str, np.ndarray]:
        """Stop the relay and return its packet log."""
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(b"stop\n")
        with contextlib.suppress(ConnectionError):
            await self._proc.stdin.drain()
        self._proc.stdin.close()
        await asyncio.wait_for(self._done.wait(), timeout=30)
        await self._proc.wait()
        return load_packet_log(self.log_path)

    def kill(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()


def load_link_trace(source: tuple[str, str], config: RelayConfig) -> Trace:
    """The trace the link replays: ``source`` is ``("trace", PATH)`` or ``("builtin", NAME)``,
    loaded by ``loki emulate``'s loaders and, with ``poisson_delivery``, re-timed as it does.
    The session reads its capacity from the same call, so both sides see one link."""
    kind, value = source
    if kind == "builtin":
        from traces.builtin import get_builtin

        trace = get_builtin(value)
    else:
        from traces.load import load_trace

        trace = load_trace(value)
    if config.poisson_delivery:
        from traces.poisson_delivery import poisson_delivery

        trace = poisson_delivery(trace, config.seed)
    return trace


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rtc.relay", description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--trace")
    src.add_argument("--builtin")
    p.add_argument("--config", default="{}", help="RelayConfig as JSON")
    p.add_argument("--log", required=True, help="where to write the packet log (.npz)")
    args = p.parse_args(argv)
    config = RelayConfig(**json.loads(args.config))
    source = ("trace", args.trace) if args.trace else ("builtin", args.builtin)
    serve(load_link_trace(source, config), config, Path(args.log), sys.stdin.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
