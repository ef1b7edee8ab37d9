"""Packets per second through the emulated link stages, against real time.

    .venv/bin/python bench/link_speed.py [--trace PATH] [--seconds 600] [--repeats 5]

A 2.5 Mbps stream of 1200-byte IP packets (a video call's worth) crosses a cellular trace for
``--seconds`` of emulated time, per packet (``Link.send``, as the emulator calls it) and in one
batch; then the composed uplink path and the raw CBR source end to end. Each figure is the
median of ``--repeats`` runs; the core count is printed because the machine may be shared.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loki.emu import DropTail, Link, run_cbr, uplink_path
from traces.trace import Trace

TRACE_DIR = Path(__file__).resolve().parents[2] / "shared" / "traces" / "mahimahi_cellular_us"
DEFAULT_TRACE = TRACE_DIR / "Verizon-LTE-short_up.mahi"  # 5.96 Mbps mean, 140 s loop
OVERLOAD_TRACE = TRACE_DIR / "ATT-LTE-driving-2016_up.mahi"  # 1.92 Mbps mean, 120 s loop
RATE_BPS = 2_500_000
PACKET_BYTES = 1200
DELAY_MS = 20


def load_trace(path: Path, seed: int) -> Trace:
    """A mahimahi file, or (if the shared traces are absent) a bursty synthetic stand-in."""
    if path.exists():
        return Trace(path.stem, np.loadtxt(path, dtype=np.int64, ndmin=1))
    rng = np.random.default_rng(seed)
    per_ms = rng.poisson(np.repeat(rng.gamma(1.0, 0.5, size=1400), 100))
    ops_ms = np.repeat(np.arange(1, per_ms.size + 1), per_ms)
    return Trace(f"synthetic-{seed}", np.append(ops_ms, per_ms.size))


def median_seconds(run: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median and minimum wall time of ``repeats`` runs (the minimum shows a shared machine's
    noise: other work only ever adds time)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def report(name: str, seconds: tuple[float, float], n_packets: int, emulated_s: float) -> None:
    median_s, min_s = seconds
    print(
        f"{name:<44} {median_s / n_packets * 1e9:6.0f} ns/pkt (min {min_s / n_packets * 1e9:4.0f})"
        f" {n_packets / median_s / 1e6:5.2f} Mpkt/s {emulated_s / median_s:8.0f}x real time"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    parser.add_argument("--seconds", type=int, default=600, help="emulated seconds")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    print(f"cores: {os.cpu_count()}  python {platform.python_version()}  {platform.machine()}")
    trace = load_trace(args.trace, seed=1)
    overload = load_trace(OVERLOAD_TRACE, seed=2)
    interval_us = PACKET_BYTES * 8 * 1_000_000 // RATE_BPS
    send_us = np.arange(0, args.seconds * 1_000_000, interval_us, dtype=np.int64)
    arrival_ms = send_us // 1000
    sizes = np.full(send_us.size, PACKET_BYTES, dtype=np.int64)
    arrivals_list, sizes_list = arrival_ms.tolist(), sizes.tolist()
    n = send_us.size
    print(
        f"{n} packets of {PACKET_BYTES} B at {RATE_BPS / 1e6} Mbps, {args.seconds} s emulated; "
        f"trace {trace.name} ({trace.mean_capacity_bps / 1e6:.2f} Mbps mean), "
        f"overload {overload.name} ({overload.mean_capacity_bps / 1e6:.2f} Mbps)"
    )

    def per_packet(tr: Trace, queue: DropTail | None) -> Callable[[], object]:
        def run() -> None:
            send = Link(tr, queue).send
            for a, s in zip(arrivals_list, sizes_list, strict=True):
                send(a, s)

        return run

    def loop_only() -> None:
        for _a, _s in zip(arrivals_list, sizes_list, strict=True):
            pass

    report("python loop alone (floor)", median_seconds(loop_only, args.repeats), n, args.seconds)
    cases = [
        ("Link.send, infinite queue", trace, None),
        ("Link.send, droptail 100 packets", trace, DropTail(limit_packets=100)),
        ("Link.send, droptail 150 kB", trace, DropTail(limit_bytes=150_000)),
        ("Link.send, overloaded, droptail 100 packets", overload, DropTail(limit_packets=100)),
    ]
    for name, tr, queue in cases:
        report(name, median_seconds(per_packet(tr, queue), args.repeats), n, args.seconds)
    report(
        "Link.send_batch, droptail 100 packets",
        median_seconds(
            lambda: Link(trace, DropTail(limit_packets=100)).send_batch(arrival_ms, sizes),
            args.repeats,
        ),
        n,
        args.seconds,
    )

    def path_per_packet() -> None:
        path = uplink_path(trace, DELAY_MS, loss_rate=0.01, queue=DropTail(limit_packets=100))
        send = path.send
        for a, s in zip(arrivals_list, sizes_list, strict=True):
            send(a, s)

    report(
        "uplink_path.send (loss+link+delay)",
        median_seconds(path_per_packet, args.repeats),
        n,
        args.seconds,
    )
    payload = PACKET_BYTES - 28
    report(
        "run_cbr end to end (uplink path, log)",
        median_seconds(
            lambda: run_cbr(
                uplink_path(trace, DELAY_MS, queue=DropTail(limit_packets=100)),
                RATE_BPS * payload // PACKET_BYTES,
                args.seconds * 1000,
                payload_bytes=payload,
            ),
            args.repeats,
        ),
        n,
        args.seconds,
    )


if __name__ == "__main__":
    main()
