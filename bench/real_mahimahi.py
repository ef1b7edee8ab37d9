"""Measure real mahimahi on this machine with the raw CBR source's traffic (issue 3's check).

    # once, as root (mahimahi is not in Debian 12's archive; bullseye's build runs here):
    #   a bullseye apt source, apt-get install mahimahi, then remove the source again;
    #   sysctl -w net.ipv4.ip_forward=1; useradd -m mm (mahimahi refuses to run as root);
    #   mahimahi's setuid tools call iptables, which exits 111 when the real uid is not root,
    #   so /etc/alternatives/iptables points, while measuring, at a small program that calls
    #   setuid(0) and then execs xtables-nft-multi; put both back afterwards.
    python bench/real_mahimahi.py --user mm --json bench/results/real-mahimahi/rows.json
    python bench/real_mahimahi.py --user mm --trace T.mahi --rate-kbps 1500 --seconds 70 \
        --queue-packets 100 --json bench/results/real-mahimahi/trace.json

The four rows of ``../shared/docs/mahimahi-link.md`` (constant 12 Mbps, ``mm-delay 20``,
1472-byte UDP payloads): a sender inside ``mm-delay 20 mm-link`` stamps each packet with
``CLOCK_REALTIME``, a receiver on the host stamps its arrival (one clock, one machine). Two
senders, because the doc does not say which one measured its figures and pacing matters:

* ``even``: each packet at its exact time (a busy-wait on the clock);
* ``burst1ms``: wakes every millisecond (a 1 ms sleep) and sends what is due, as senders with a
  1 ms pacing timer do (iperf3's default ``--pacing-timer``).

each written twice: in Python (what a measuring script would be) and in C (compiled here with
``cc``; its busy-wait and stamps are tighter). After its last packet the sender waits
:data:`LINGER_S`: mahimahi discards what its queues still hold when the command inside exits
(the 4 s backlog row needs 1.5 s to drain).

Why this exists: the emulator follows mahimahi's link rules and replays its event loops
(``--host-timing mahimahi``), and one figure stayed 0.67 % off (the drop-tail row's median,
120.1 against 120.9 ms). Measured here (bench/results/real-mahimahi/rows.json), real mahimahi
gives 120.8-121.1 ms with every sender, and mm-link's own log (``--uplink-log``, summarised in
the JSON) says why: the kernel sends a few IPv6 packets (76 and 48 bytes) through the new
interface, and once they sit in the full queue every 1504-byte packet straddles two delivery
opportunities, one is always part-sent, and the queue holds 101 packets (in-link delay 101 ms,
not 100). The emulator's host timing now adds those packets
(:data:`loki.emu.host_timing.KERNEL_IPV6_CHATTER`).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PAYLOAD_BYTES = 1472
DELAY_MS = 20
PORT = 9999
LINGER_S = 3.0
C_SENDER = r"""
#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
static int64_t now_ns(void) {
  struct timespec t; clock_gettime(CLOCK_REALTIME, &t);
  return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}
int main(int argc, char **argv) {  /* HOST PORT RATE_BPS PAYLOAD SECONDS even|burst1ms */
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in a; memset(&a, 0, sizeof a);
  a.sin_family = AF_INET; a.sin_port = htons(atoi(argv[2]));
  inet_pton(AF_INET, argv[1], &a.sin_addr);
  double gap_ns = atoi(argv[4]) * 8e9 / atof(argv[3]);
  int payload = atoi(argv[4]), burst = strcmp(argv[6], "burst1ms") == 0;
  char buf[2048]; memset(buf, 0, sizeof buf);
  int64_t t0 = now_ns() + 100000000LL, end = t0 + (int64_t)(atof(argv[5]) * 1e9);
  for (uint64_t i = 0;;) {
    int64_t due = t0 + (int64_t)(i * gap_ns);
    if (due >= end) break;
    if (burst) {
      if (now_ns() < due) { struct timespec d = {0, 1000000}; nanosleep(&d, NULL); continue; }
    } else {
      while (now_ns() < due) {}
    }
    int64_t stamp = now_ns();
    memcpy(buf, &stamp, 8); memcpy(buf + 8, &i, 8);
    sendto(s, buf, payload, 0, (struct sockaddr *)&a, sizeof a); i++;
  }
  sleep(3);  /* LINGER_S */
  return 0;
}
"""
#: (name, offered payload rate bps, seconds sent, mm-link queue arguments)
ROWS = (
    ("8mbps", 8_000_000, 5.0, ()),
    ("11mbps", 11_000_000, 5.0, ()),
    ("16mbps-4s", 16_000_000, 4.0, ()),
    (
        "16mbps-droptail-100",
        16_000_000,
        5.0,
        ("--uplink-queue=droptail", "--uplink-queue-args=packets=100"),
    ),
)
MODES = ("python-even", "python-burst1ms", "c-even", "c-burst1ms")
#: What the doc reports (ms) for each row: the figures to compare with.
DOC = {
    "8mbps": {"min": 20.18, "p50": 21.4},
    "11mbps": {"p50": 21.5},
    "16mbps-4s": {"last": 1457.0},
    "16mbps-droptail-100": {"p50": 120.9, "loss": 0.246},
}


def send(host: str, rate_bps: int, seconds: float, mode: str) -> int:
    """The sender (runs inside the mahimahi shell): 16 bytes of (send ns, sequence) + padding."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    gap_ns = PAYLOAD_BYTES * 8 * 1e9 / rate_bps
    pad = bytes(PAYLOAD_BYTES - 16)
    t0 = time.time_ns() + 100_000_000
    end = t0 + int(seconds * 1e9)
    i = 0
    while True:
        due = t0 + int(i * gap_ns)
        if due >= end:
            break
        if mode == "burst1ms":
            if time.time_ns() < due:
                time.sleep(0.001)
                continue
        else:
            while time.time_ns() < due:
                pass
        stamp = time.time_ns()
        sock.sendto(stamp.to_bytes(8, "little") + i.to_bytes(8, "little") + pad, (host, PORT))
        i += 1
    time.sleep(LINGER_S)
    return i


def receive(seconds: float, out: Path, ready: Path) -> None:
    """The receiver (on the host): one line per packet, ``seq,send_ns,recv_ns``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind(("0.0.0.0", PORT))
    sock.settimeout(1.0)
    ready.touch()
    end = time.time() + seconds
    rows = []
    while time.time() < end:
        try:
            data = sock.recv(2048)
        except TimeoutError:
            continue
        now = time.time_ns()
        if len(data) >= 16:
            rows.append(
                f"{int.from_bytes(data[8:16], 'little')},{int.from_bytes(data[:8], 'little')},{now}"
            )
    out.write_text("\n".join(rows) + "\n")


def host_address() -> str:
    """An address of this host that the mahimahi shell reaches through its NAT."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the route's source
        return s.getsockname()[0]


def run_row(user: str, trace: Path, row: tuple, mode: str, work: Path) -> dict:
    name, rate, seconds, queue = row
    out, ready = work / f"{name}-{mode}.csv", work / f"{name}-{mode}.ready"
    recv_s = seconds + LINGER_S + 8.0  # the shells take a second or two to start
    rx = subprocess.Popen(
        [sys.executable, __file__, "--receive", str(recv_s), str(out), str(ready)]
    )
    while not ready.exists():
        time.sleep(0.05)
    lang, pacing = mode.split("-")
    args = [host_address(), str(rate), str(seconds), pacing]
    if lang == "c":
        inner = [str(work / "send"), args[0], str(PORT), args[1], str(PAYLOAD_BYTES), *args[2:]]
    else:  # as --user, with the system's python3 (the sender needs the standard library only)
        inner = ["python3", __file__, "--send", *args]
    link_log = work / "logs" / f"{name}-{mode}.log"
    shell = ["mm-delay", str(DELAY_MS), "mm-link", str(trace), str(trace), *queue]
    shell += [f"--uplink-log={link_log}", "--", *inner]
    subprocess.run(["su", user, "-c", "cd /tmp && " + shlex.join(shell)], check=True)
    rx.wait()
    import numpy as np

    d = np.loadtxt(out, delimiter=",", dtype=np.int64, ndmin=2)
    owd_ms = (d[:, 2] - d[:, 1]) / 1e6
    sent = round(seconds * rate / (PAYLOAD_BYTES * 8))
    figures = {
        "received": len(d),
        "min": float(owd_ms.min()),
        "p50": float(np.median(owd_ms)),
        "max": float(owd_ms.max()),
        "last": float(owd_ms[np.argmax(d[:, 0])]),
        "loss": 1.0 - len(d) / sent,
    }
    if queue:  # the drop-tail row: the median once the queue is full (after 0.6 s)
        full = (d[:, 1] - d[:, 1].min()) > 600_000_000
        figures["p50"] = float(np.median(owd_ms[full]))
    figures.update(link_log_figures(link_log))
    return figures


def read_link_log(path: Path) -> tuple[int | None, int | None, list[tuple[int, int]], dict]:
    """mm-link's log (``--uplink-log``): (base ms: where the trace started; the source's first
    packet's arrival ms; [(arrival ms, bytes)] of the other packets, the kernel's own; {in-link
    delay ms: departures}, departure minus arrival on mm-link's own clock)."""
    base = first = None
    stray: list[tuple[int, int]] = []
    delays: dict[int, int] = {}
    for line in path.read_text().splitlines():
        if line.startswith("# base timestamp:"):
            base = int(line.split(":")[1])
        parts = line.split()
        if line.startswith("#") or len(parts) < 3:
            continue
        if parts[1] == "+":
            if parts[2] == "1504":
                first = int(parts[0]) if first is None else first
            else:
                stray.append((int(parts[0]), int(parts[2])))
        elif parts[1] == "-" and len(parts) > 3:
            delays[int(parts[3])] = delays.get(int(parts[3]), 0) + 1
    return base, first, stray, delays


def link_log_figures(path: Path) -> dict:
    """The JSON's summary of mm-link's log: its most common in-link delays and the packets that
    were not the source's (arrival ms after the source's first, bytes)."""
    _, first, stray, delays = read_link_log(path)
    top = sorted(delays.items(), key=lambda kv: -kv[1])[:3]
    return {
        "link_delay_ms_most_common": [[k, v] for k, v in top],
        "stray_packets_ms_bytes": [[t - (first or 0), b] for t, b in stray],
    }


def link_log_times(path: Path) -> tuple[int, int, list[tuple[int, int]]]:
    """(base ms, first source packet ms, the other packets) for replaying a run."""
    base, first, stray, _ = read_link_log(path)
    if base is None or first is None:
        raise ValueError(f"{path}: no base timestamp or no source packet in mm-link's log")
    return base, first, stray


def compare_trace(
    user: str, trace_path: Path, rate_bps: int, seconds: float, queue: int | None, work: Path
) -> dict:
    """One row on a real trace, precisely paced (C, even), against the emulator's replay of the
    same run: the trace started where mm-link's log says the source's first packet met it,
    and the kernel's packets the log shows at their times."""
    import numpy as np

    from loki.emu.cbr import run_cbr
    from loki.emu.host_timing import MahimahiHostTiming
    from loki.emu.link import DropTail
    from loki.emu.path import uplink_path
    from loki.train.data import rotate
    from traces.load import load_trace

    local = work / "trace.mahi"
    local.write_bytes(Path(trace_path).read_bytes())
    os.chmod(local, 0o644)
    qargs = ("--uplink-queue=droptail", f"--uplink-queue-args=packets={queue}") if queue else ()
    name = "trace"
    real = run_row(user, local, (name, rate_bps, seconds, qargs), "c-even", work)
    base, first, stray = link_log_times(work / "logs" / f"{name}-c-even.log")
    d = np.loadtxt(work / f"{name}-c-even.csv", delimiter=",", dtype=np.int64, ndmin=2)
    real_ms = np.full(int(d[:, 0].max()) + 1, np.nan)
    real_ms[d[:, 0]] = (d[:, 2] - d[:, 1]) / 1e6
    host = MahimahiHostTiming(chatter=tuple(((t - first) * 1000, b - 4) for t, b in stray))
    path = uplink_path(
        rotate(load_trace(local), first - base),
        DELAY_MS,
        queue=DropTail(limit_packets=queue) if queue else None,
    )
    log = run_cbr(path, rate_bps, round(seconds * 1000), PAYLOAD_BYTES, host=host)
    emu_ms = np.full(log.send_us.size, np.nan)
    emu_ms[log.delivered] = log.one_way_delay_ms()
    n = min(real_ms.size, emu_ms.size)
    both = ~np.isnan(real_ms[:n]) & ~np.isnan(emu_ms[:n])
    diff = real_ms[:n][both] - emu_ms[:n][both]
    lost_real, lost_emu = np.isnan(real_ms[:n]), np.isnan(emu_ms[:n])

    def pct(a: np.ndarray) -> dict:
        return {f"p{q}": float(np.percentile(a, q)) for q in (5, 50, 95, 99)}

    return {
        "trace": str(trace_path),
        "rate_bps": rate_bps,
        "seconds": seconds,
        "queue_packets": queue,
        "trace_offset_ms": first - base,
        "kernel_packets": len(stray),
        "real": {**pct(real_ms[~np.isnan(real_ms)]), "loss": float(lost_real.mean())},
        "emulator": {**pct(emu_ms[~np.isnan(emu_ms)]), "loss": float(lost_emu.mean())},
        "same_packet_lost_or_not": float((lost_real == lost_emu).mean()),
        "per_packet_real_minus_emulator_ms": {
            "median": float(np.median(diff)),
            "abs_p95": float(np.percentile(np.abs(diff), 95)),
        },
        "real_row": real,
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--send":
        send(argv[1], int(argv[2]), float(argv[3]), argv[4])
        return 0
    if argv and argv[0] == "--receive":
        receive(float(argv[1]), Path(argv[2]), Path(argv[3]))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--user", required=True, help="the non-root user that runs mahimahi")
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--trace", type=Path, help="compare one run on this trace with the emulator")
    p.add_argument("--rate-kbps", type=int, default=1500, help="with --trace: the CBR rate")
    p.add_argument("--seconds", type=float, default=70.0, help="with --trace: how long it sends")
    p.add_argument(
        "--queue-packets", type=int, help="with --trace: drop-tail queue (default: none)"
    )
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        p.error("run as root (the receiver binds a port and the sender runs as --user)")
    results: dict = {"doc": DOC, "rows": {}}
    with tempfile.TemporaryDirectory(prefix="real-mahimahi-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)
        (work / "logs").mkdir()
        os.chmod(work / "logs", 0o777)  # mm-link writes its log as --user
        (work / "send.c").write_text(C_SENDER)
        subprocess.run(["cc", "-O2", "-o", str(work / "send"), str(work / "send.c")], check=True)
        os.chmod(work / "send", 0o755)
        if args.trace is not None:
            results = compare_trace(
                args.user,
                args.trace,
                args.rate_kbps * 1000,
                args.seconds,
                args.queue_packets,
                work,
            )
            print(json.dumps({k: v for k, v in results.items() if k != "real_row"}, indent=1))
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(results, indent=1) + "\n")
            return 0
        trace = work / "const-12mbps.mahi"
        trace.write_text("\n".join(str(t) for t in range(1, 1001)) + "\n")
        os.chmod(trace, 0o644)
        for row in ROWS:
            for mode in MODES:
                fig = run_row(args.user, trace, row, mode, work)
                results["rows"].setdefault(row[0], {})[mode] = fig
                shown = {k: round(v, 3) if isinstance(v, float) else v for k, v in fig.items()}
                print(row[0], mode, shown, flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
