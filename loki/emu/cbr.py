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
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path as FilePath

import numpy as np

from loki.emu.link import DROPPED
from loki.emu.path import Stage

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
    """One row per packet: send time (us), exit time of the path (ms, -1 if lost), IP size."""

    send_us: np.ndarray
    arrival_ms: np.ndarray
    size_bytes: np.ndarray

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
        """``arrival_ms - send_ms`` of each delivered packet, the send time with its us phase."""
        ok = self.delivered
        return self.arrival_ms[ok] - self.send_us[ok] / US_PER_MS

    def write_csv(self, path: str | FilePath) -> None:
        """``send_ms,arrival_ms,size_bytes``; send_ms to the us, arrival_ms empty if lost."""
        lines = [CSV_HEADER]
        for send_us, arrival_ms, size_bytes in zip(
            self.send_us.tolist(), self.arrival_ms.tolist(), self.size_bytes.tolist(), strict=True
        ):
            arrival = "" if arrival_ms == DROPPED else str(arrival_ms)
            lines.append(f"{send_us // US_PER_MS}.{send_us % US_PER_MS:03d},{arrival},{size_bytes}")
        FilePath(path).write_text("\n".join(lines) + "\n")

    @classmethod
    def read_csv(cls, path: str | FilePath) -> CbrLog:
        """Read a log written by :meth:`write_csv`."""
        rows = FilePath(path).read_text().splitlines()
        if not rows or rows[0] != CSV_HEADER:
            raise ValueError(f"{path}: not a CBR log (header must be {CSV_HEADER!r})")
        send_us, arrival_ms, size_bytes = [], [], []
        for row in rows[1:]:
            send, arrival, size = row.split(",")
            whole, _, frac = send.partition(".")
            send_us.append(int(whole) * US_PER_MS + int(frac.ljust(3, "0")[:3] or 0))
            arrival_ms.append(int(arrival) if arrival else DROPPED)
            size_bytes.append(int(size))
        return cls(
            np.array(send_us, dtype=np.int64),
            np.array(arrival_ms, dtype=np.int64),
            np.array(size_bytes, dtype=np.int64),
        )


def run_cbr(
    path: Stage,
    rate_bps: int,
    duration_ms: int,
    payload_bytes: int = DEFAULT_PAYLOAD_BYTES,
) -> CbrLog:
    """Send a ``rate_bps`` (UDP payload) stream for ``duration_ms`` through ``path``."""
    send_us = cbr_send_times_us(rate_bps, payload_bytes, duration_ms)
    size_bytes = np.full(send_us.size, payload_bytes + IP_UDP_HEADER_BYTES, dtype=np.int64)
    arrival_ms = path.send_batch(send_us // US_PER_MS, size_bytes)
    return CbrLog(send_us, np.asarray(arrival_ms, dtype=np.int64), size_bytes)
