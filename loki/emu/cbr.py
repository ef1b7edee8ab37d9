"""A raw constant-bit-rate UDP source through an emulated path, with a per-packet log.

It plays the part of ``iperf -u -b RATE`` inside mahimahi: it checks the emulator against the
figures measured on real mahimahi (docs/mahimahi-link.md) and gives a controller-free baseline.

Timing: the rate counts UDP payload bits, as iperf's ``-b`` does (the measured 16 Mbps backlog of
1457 ms after 4 s only fits payload bits). Packet ``i`` is sent at ``floor(i * interval)`` in
whole microseconds, so send times keep their sub-millisecond phase; the path is entered at
``send_us // 1000``, because mahimahi stamps a packet with its millisecond clock, which floors
the time. The link and delay then work in whole ms, so a one-way delay ``arrival_ms - send_ms``
carries the sender's phase: with nothing queued it is ``D + 1 - phase`` in ``(D, D + 1]`` ms.
Real mahimahi measures 0.9 to 1.3 ms more at the median (and a few ms more at the max): its
mm-link and mm-delay processes wake on poll() timeouts counted in whole ms from a floored clock,
so each releases a packet somewhat after the ms it is due, plus OS scheduling noise. Whole-ms
emulation leaves that host latency out; goodput, loss and queueing delay are unaffected.
``run_cbr(..., host=MahimahiHostTiming())`` replays mahimahi's two event loops on the result
(:mod:`loki.emu.host_timing`) and gives receive times to the us, for comparing with measured
figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path as FilePath

import numpy as np

from loki.emu.delay import Delay
from loki.emu.host_timing import MahimahiHostTiming
from loki.emu.link import DROPPED, Link
from loki.emu.path import Path, Stage

#: IPv4 (20) + UDP (8) header bytes on each packet.
IP_UDP_HEADER_BYTES = 28
#: The largest UDP payload of a 1500-byte IP packet, iperf's default datagram on Ethernet.
DEFAULT_PAYLOAD_BYTES = 1472
#: Column header of the CSV log.
CSV_HEADER = "send_ms,arrival_ms,size_bytes"

US_PER_S = 1_000_000
US_PER_MS = 1_000
BITS_PER_BYTE = 8


def cbr_send_times_us(rate_bps: int, payload_bytes: int, duration_ms: int) -> np.ndarray:
    """Send times (us) of the packets a ``rate_bps`` payload stream sends in ``[0, duration)``.

    Exact integer arithmetic: packet ``i`` leaves at ``floor(i * payload_bits * 1e6 / rate)``.
    """
    if rate_bps <= 0 or payload_bytes <= 0 or duration_ms <= 0:
        raise ValueError("cbr_send_times_us: rate, payload and duration must be > 0")
    bits_us_per_packet = payload_bytes * BITS_PER_BYTE * US_PER_S
    duration_us = duration_ms * US_PER_MS
    # floor(i * b / r) < D  <=>  i * b < D * r  <=>  i < ceil(D * r / b)
    n_packets = -(-duration_us * rate_bps // bits_us_per_packet)
    return np.arange(n_packets, dtype=np.int64) * bits_us_per_packet // rate_bps


@dataclass(frozen=True)
class CbrLog:
    """One row per packet: send time (us), exit time of the path (ms, -1 if lost), IP size;
    with host timing also the receive time to the us (``arrival_ms`` is then its floor)."""

    send_us: np.ndarray
    arrival_ms: np.ndarray
    size_bytes: np.ndarray
    arrival_us: np.ndarray | None = None

    @property
    def delivered(self) -> np.ndarray:
        return self.arrival_ms != DROPPED

    def loss_fraction(self) -> float:
        return float(np.count_nonzero(~self.delivered)) / max(1, self.arrival_ms.size)

    def goodput_bps(self) -> float:
        """Payload rate of the delivered stream, as a receiver measures it.

        ``(n - 1)`` packets' payload over the span from the first to the last arrival: the
        inter-arrival intervals of a steady stream, free of where a measuring window starts.
        """
        arrivals_ms = self.arrival_ms[self.delivered]
        if arrivals_ms.size < 2 or arrivals_ms[-1] == arrivals_ms[0]:
            return 0.0
        payload_bytes = self.size_bytes[self.delivered][1:] - IP_UDP_HEADER_BYTES
        span_ms = int(arrivals_ms[-1] - arrivals_ms[0])
        return float(payload_bytes.sum()) * BITS_PER_BYTE * 1000.0 / span_ms

    def one_way_delay_ms(self) -> np.ndarray:
        """``arrival_ms - send_ms`` of each delivered packet, the send time with its us phase
        (and the arrival's, with host timing)."""
        ok = self.delivered
        if self.arrival_us is not None:
            return (self.arrival_us[ok] - self.send_us[ok]) / US_PER_MS
        return self.arrival_ms[ok] - self.send_us[ok] / US_PER_MS

    def write_csv(self, path: str | FilePath) -> None:
        """``send_ms,arrival_ms,size_bytes``; send_ms to the us, arrival_ms empty if lost."""
        lines = [CSV_HEADER]
        arrivals = (self.arrival_us if self.arrival_us is not None else self.arrival_ms).tolist()
        for send_us, arrival_t, size_bytes in zip(
            self.send_us.tolist(), arrivals, self.size_bytes.tolist(), strict=True
        ):
            if arrival_t == DROPPED:
                arrival = ""
            elif self.arrival_us is not None:
                arrival = f"{arrival_t // US_PER_MS}.{arrival_t % US_PER_MS:03d}"
            else:
                arrival = str(arrival_t)
            lines.append(f"{send_us // US_PER_MS}.{send_us % US_PER_MS:03d},{arrival},{size_bytes}")
        FilePath(path).write_text("\n".join(lines) + "\n")

    @classmethod
    def read_csv(cls, path: str | FilePath) -> CbrLog:
        """Read a log written by :meth:`write_csv`."""
        rows = FilePath(path).read_text().splitlines()
        if not rows or rows[0] != CSV_HEADER:
            raise ValueError(f"{path}: not a CBR log (header must be {CSV_HEADER!r})")
        send_us, arrival_us, size_bytes = [], [], []
        sub_ms = False
        for row in rows[1:]:
            send, arrival, size = row.split(",")
            send_us.append(_ms_text_to_us(send))
            sub_ms |= "." in arrival
            arrival_us.append(_ms_text_to_us(arrival) if arrival else DROPPED)
            size_bytes.append(int(size))
        t_us = np.array(arrival_us, dtype=np.int64)
        t_ms = np.where(t_us == DROPPED, DROPPED, t_us // US_PER_MS)
        return cls(
            np.array(send_us, dtype=np.int64),
            t_ms,
            np.array(size_bytes, dtype=np.int64),
            t_us if sub_ms else None,
        )


def _ms_text_to_us(text: str) -> int:
    whole, _, frac = text.partition(".")
    return int(whole) * US_PER_MS + int(frac.ljust(3, "0")[:3] or 0)


def run_cbr(
    path: Stage,
    rate_bps: int,
    duration_ms: int,
    payload_bytes: int = DEFAULT_PAYLOAD_BYTES,
    host: MahimahiHostTiming | None = None,
) -> CbrLog:
    """Send a ``rate_bps`` (UDP payload) stream for ``duration_ms`` through ``path``.

    ``host``: replay mahimahi's event loops on the result (receive times to the us); the path
    must then be an :func:`~loki.emu.path.uplink_path` (loss, link, delays).
    """
    send_us = cbr_send_times_us(rate_bps, payload_bytes, duration_ms)
    size_bytes = np.full(send_us.size, payload_bytes + IP_UDP_HEADER_BYTES, dtype=np.int64)
    if host is None:
        arrival_ms = path.send_batch(send_us // US_PER_MS, size_bytes)
        return CbrLog(send_us, np.asarray(arrival_ms, dtype=np.int64), size_bytes)
    return _run_with_host_timing(path, send_us, size_bytes, host)


def _run_with_host_timing(
    path: Stage, send_us: np.ndarray, size_bytes: np.ndarray, host: MahimahiHostTiming
) -> CbrLog:
    """The stages up to the link in whole ms (entered one hop after sending), then the two
    event loops (:mod:`loki.emu.host_timing`) for when mm-link and mm-delay hand packets on."""
    stages = path.stages if isinstance(path, Path) else (path,)
    kinds = [type(s) for s in stages]
    if kinds.count(Link) != 1 or not all(k is Delay for k in kinds[kinds.index(Link) + 1 :]):
        raise ValueError("host timing needs a path of [loss], link, delay (uplink_path)")
    at = kinds.index(Link)
    # The kernel's own packets share the link with the source's (host.chatter), then leave
    # the log: merged in time order, the source's marked.
    n = send_us.size
    extra_us = np.array([t for t, _ in host.chatter], dtype=np.int64)
    extra_bytes = np.array([b for _, b in host.chatter], dtype=np.int64)
    all_send = np.concatenate([send_us, extra_us])
    order = np.argsort(all_send, kind="stable")
    enter_us = all_send[order] + host.hop_us
    sizes = np.concatenate([size_bytes, extra_bytes])[order]
    exit_ms = np.asarray(enter_us // US_PER_MS, dtype=np.int64)
    for stage in stages[: at + 1]:
        alive = exit_ms != DROPPED
        exit_ms[alive] = stage.send_batch(exit_ms[alive], sizes[alive])
    delay_ms = sum(s.delay_ms for s in stages[at + 1 :])
    link = stages[at]
    merged = host.release_us(enter_us, exit_ms, link.trace, delay_ms)
    release = np.empty(n)
    source = order < n
    release[order[source]] = merged[source]
    arrival_us = np.where(release == DROPPED, DROPPED, np.floor(release)).astype(np.int64)
    arrival_ms = np.where(arrival_us == DROPPED, DROPPED, arrival_us // US_PER_MS)
    return CbrLog(send_us, arrival_ms, size_bytes, arrival_us)
