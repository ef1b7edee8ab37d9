"""A long ``loki live`` session with its memory watched: issue 6's soak test.

    python bench/soak.py --duration-s 600 --receiver aiortc --builtin cellular \\
        --json soak.json --plot soak.png
    python bench/soak.py --short --json out.json      # about 12 s: the test's run

Runs ``loki live ... --json`` as a child process and every ``--sample-s`` seconds reads from
/proc the resident memory of the sender's process (the ``loki live`` Python process: the aiortc
sender, and the aiortc receiver too when that is the receiver), of the relay process and, with
``--receiver chromium``, of Chromium's processes (summed; the proportional set size too, which
counts the pages they share once). Samples are placed on the session clock read from the live
view's rows, so "warm-up" means the session's 60th second, not the process's.

The report (one JSON object, and ``--plot`` draws RSS over time):

* warm-up RSS (the first sample at or after ``--warmup-s``), final RSS (the last sample while
  the session still streamed), growth in % between them, and whether it is within the 10 % bar;
* exceptions: tracebacks, unretrieved task exceptions and failing hooks in the child's stderr,
  and a non-zero exit;
* feedback parse errors: the sender's malformed transport-cc counter plus feedback naming
  packets it never sent, and the guard's drop counters;
* frames (encoded, sent, rendered), stall rate, freezes and keyframes per minute, from the
  session's own JSON; the load average at the start and the end (the machine may be shared);
* the trace's capacity over the session (per-second min, max, and how often it changed): the
  soak is meant to run over a changing link.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: Issue 6: memory may not grow by more than this after warm-up.
GROWTH_BAR_PCT = 10.0
DEFAULT_SAMPLE_S = 10.0
DEFAULT_WARMUP_S = 60.0
SHORT_DURATION_S = 12.0
SHORT_SAMPLE_S = 2.0
SHORT_WARMUP_S = 4.0
POLL_S = 0.2
#: The child may take this long past the session to compute its QoE and exit.
EXIT_GRACE_S = 120.0
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
#: Each exception Python or asyncio reports on stderr (a failing hook, a task's unretrieved
#: exception, a callback's) prints one traceback.
TRACEBACK_MARKER = "Traceback (most recent call last)"
#: Lines kept to say what the exception was about.
CONTEXT_MARKERS = (
    TRACEBACK_MARKER,
    "exception was never retrieved",
    "Exception in callback",
    "rtc hook",
    "Error",
)
_PROGRESS_ROW = re.compile(r"^\s*(\d+\.\d)\s+-?\d+\s+-?\d+\s+-?\d+\s+")


@dataclass
class Sample:
    """Memory at one moment; ``t_s`` is session time (None before the first frame)."""

    wall_s: float
    t_s: float | None
    sender_rss_mb: float
    relay_rss_mb: float
    chromium_rss_mb: float = 0.0
    chromium_pss_mb: float = 0.0
    chromium_processes: int = 0


@dataclass
class ChildOutput:
    """What the child wrote on stderr, read as it comes (the pipe must never fill up)."""

    session_t_s: float | None = None
    #: When (time.monotonic) the row with :attr:`session_t_s` was read.
    seen_at_s: float = 0.0
    tracebacks: int = 0
    exception_lines: list[str] = field(default_factory=list)
    malformed_feedback_warnings: int = 0
    lines: int = 0


def _children(pid: int) -> list[int]:
    """All descendants of ``pid`` (from /proc's parent links)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE_BYTES / 1e6
    except (OSError, IndexError, ValueError):
        return 0.0


def _pss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except (OSError, ValueError):
        pass
    return 0.0


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def take_sample(pid: int, wall_s: float, t_s: float | None) -> Sample:
    """Memory of the sender (``pid``), its relay child and any Chromium below it."""
    sample = Sample(wall_s, t_s, _rss_mb(pid), 0.0)
    for child in _children(pid):
        cmd = _cmdline(child)
        if "rtc.relay" in cmd:
            sample.relay_rss_mb += _rss_mb(child)
        elif "chrom" in cmd.split(" ")[0].lower():
            sample.chromium_rss_mb += _rss_mb(child)
            sample.chromium_pss_mb += _pss_mb(child)
            sample.chromium_processes += 1
    return sample


def _read_stderr(stream, out: ChildOutput) -> None:  # type: ignore[no-untyped-def]
    for raw in stream:
        line = raw.rstrip("\n")
        out.lines += 1
        m = _PROGRESS_ROW.match(line)
        if m:
            out.session_t_s, out.seen_at_s = float(m.group(1)), time.monotonic()
            continue
        out.tracebacks += TRACEBACK_MARKER in line
        if any(marker in line for marker in CONTEXT_MARKERS):
            out.exception_lines.append(line[:300])
        if "malformed transport-cc feedback" in line:
            out.malformed_feedback_warnings += 1


def session_time(out: ChildOutput, now_s: float) -> float | None:
    """Session time now: the last row's, plus the time since it was read (so a sample taken
    after the last row, while the child computes its QoE, lies after the session's end)."""
    if out.session_t_s is None:
        return None
    return round(out.session_t_s + (now_s - out.seen_at_s), 2)


def growth(samples: list[Sample], key: str, warmup_s: float, duration_s: float) -> dict:
    """Warm-up value (first sample at or after ``warmup_s``), final value (last sample within
    the session) and the growth between them in %."""
    on_clock = [s for s in samples if s.t_s is not None and s.t_s <= duration_s]
    warm = next((s for s in on_clock if s.t_s >= warmup_s), None)  # type: ignore[operator]
    if warm is None or not on_clock:
        return {"warmup_mb": None, "final_mb": None, "growth_pct": None}
    final = on_clock[-1]
    w, f = getattr(warm, key), getattr(final, key)
    return {
        "warmup_mb": round(w, 1),
        "warmup_at_s": warm.t_s,
        "final_mb": round(f, 1),
        "final_at_s": final.t_s,
        "growth_pct": round(100.0 * (f - w) / w, 2) if w > 0 else None,
    }


def trace_capacity(args: argparse.Namespace, duration_s: float) -> dict:
    """Per-second capacity of the link over the session: proof that it changes."""
    if args.trace is not None:
        from traces.load import load_trace

        trace = load_trace(args.trace)
    else:
        from traces.builtin import get_builtin

        trace = get_builtin(args.builtin)
    kbps = [trace.capacity_bps(s * 1000, (s + 1) * 1000) / 1000 for s in range(int(duration_s))]
    changes = sum(1 for a, b in itertools.pairwise(kbps) if abs(b - a) > 1.0)
    return {
        "name": trace.name,
        "period_s": trace.period_ms / 1000,
        "min_kbps": round(min(kbps), 1) if kbps else 0.0,
        "max_kbps": round(max(kbps), 1) if kbps else 0.0,
        "mean_kbps": round(sum(kbps) / len(kbps), 1) if kbps else 0.0,
        "seconds_with_a_change": changes,
    }


def _loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(v) for v in f.read().split()[:3]]


def live_command(args: argparse.Namespace, duration_s: float) -> list[str]:
    src = ["--trace", str(args.trace)] if args.trace is not None else ["--builtin", args.builtin]
    return [
        sys.executable,
        "-m",
        "loki.cli",
        "live",
        *src,
        "--controller",
        args.controller,
        "--receiver",
        args.receiver,
        "--duration-s",
        str(duration_s),
        "--json",
    ]


def run_soak(args: argparse.Namespace) -> dict:
    duration_s = SHORT_DURATION_S if args.short else args.duration_s
    sample_s = SHORT_SAMPLE_S if args.short else args.sample_s
    warmup_s = SHORT_WARMUP_S if args.short else args.warmup_s
    cmd = live_command(args, duration_s)
    load_start = _loadavg()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out = ChildOutput()
    reader = threading.Thread(target=_read_stderr, args=(proc.stderr, out), daemon=True)
    reader.start()
    stdout_chunks: list[str] = []
    stdout_reader = threading.Thread(
        target=lambda: stdout_chunks.append(proc.stdout.read()),  # type: ignore[union-attr]
        daemon=True,
    )
    stdout_reader.start()
    samples: list[Sample] = []
    start = time.monotonic()
    next_sample = start + sample_s
    deadline = start + duration_s + EXIT_GRACE_S + 60.0
    timed_out = False
    while proc.poll() is None:
        now = time.monotonic()
        if now >= deadline:
            proc.kill()
            timed_out = True
            break
        if now >= next_sample:
            samples.append(take_sample(proc.pid, now - start, session_time(out, now)))
            next_sample += sample_s
        time.sleep(POLL_S)
    proc.wait()
    reader.join(timeout=10)
    stdout_reader.join(timeout=10)
    load_end = _loadavg()
    text = "".join(stdout_chunks).strip()
    result: dict = {}
    if text:
        try:
            result = json.loads(text.splitlines()[-1])
        except json.JSONDecodeError:
            result = {}
    live = result.get("live", {})
    guard = live.get("guard", {})
    malformed = int(live.get("malformed_feedback", 0))
    unknown = int(live.get("unknown_feedback_packets", 0))
    exceptions = out.tracebacks + (proc.returncode != 0) + timed_out
    report = {
        "command": " ".join(cmd[2:]),
        "receiver": args.receiver,
        "duration_s": duration_s,
        "sample_s": sample_s,
        "warmup_s": warmup_s,
        "exit_code": proc.returncode,
        "timed_out": timed_out,
        "exceptions": exceptions,
        "exception_lines": out.exception_lines[:20],
        "sender": growth(samples, "sender_rss_mb", warmup_s, duration_s),
        "relay": growth(samples, "relay_rss_mb", warmup_s, duration_s),
        "feedback_parse_errors": malformed + unknown,
        "malformed_feedback": malformed,
        "malformed_feedback_warnings": out.malformed_feedback_warnings,
        "unknown_feedback_packets": unknown,
        "guard_packets_dropped": guard.get("packets_dropped"),
        "feedback_reports": live.get("feedback_reports"),
        "frames_encoded": live.get("frames_encoded"),
        "frames_sent": result.get("frames_sent"),
        "frames_rendered": result.get("frames_rendered"),
        "stall_rate": result.get("stall_rate"),
        "freezes": result.get("freezes"),
        "keyframes_per_min": live.get("keyframes_per_min"),
        "bitrate_kbps": result.get("bitrate_kbps"),
        "controller_cpu_pct_of_core": live.get("controller_cpu_pct_of_core"),
        "load_average_start": load_start,
        "load_average_end": load_end,
        "trace": trace_capacity(args, duration_s),
        "samples": [asdict(s) for s in samples],
    }
    if args.receiver == "chromium":
        report["chromium"] = growth(samples, "chromium_rss_mb", warmup_s, duration_s)
        report["chromium_pss"] = growth(samples, "chromium_pss_mb", warmup_s, duration_s)
        report["chromium_stats"] = live.get("chromium", {})
    watched = [report["sender"]] + ([report["chromium_pss"]] if args.receiver == "chromium" else [])
    pcts = [g["growth_pct"] for g in watched]
    report["memory_bar_met"] = all(p is not None and p <= GROWTH_BAR_PCT for p in pcts)
    report["bars_met"] = (
        report["memory_bar_met"] and exceptions == 0 and report["feedback_parse_errors"] == 0
    )
    return report


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [s for s in report["samples"] if s["t_s"] is not None]
    t = [s["t_s"] for s in rows]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(t, [s["sender_rss_mb"] for s in rows], label="sender process (RSS)")
    ax.plot(t, [s["relay_rss_mb"] for s in rows], label="relay process (RSS)")
    if report["receiver"] == "chromium":
        ax.plot(t, [s["chromium_pss_mb"] for s in rows], label="Chromium processes (PSS)")
    ax.axvline(report["warmup_s"], color="grey", linestyle=":", label="warm-up")
    ax.set_xlabel("session time (s)")
    ax.set_ylabel("memory (MB)")
    ax.set_title(f"loki live soak: {report['command'].split(' live ')[-1][:70]}", fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--trace", type=Path)
    src.add_argument("--builtin", default="cellular")
    p.add_argument("--receiver", choices=("aiortc", "chromium"), default="aiortc")
    p.add_argument("--controller", default="gcc")
    p.add_argument("--duration-s", type=float, default=600.0)
    p.add_argument("--sample-s", type=float, default=DEFAULT_SAMPLE_S)
    p.add_argument("--warmup-s", type=float, default=DEFAULT_WARMUP_S)
    p.add_argument("--short", action="store_true", help="a 12 s run sampled every 2 s (tests)")
    p.add_argument("--json", type=Path, help="write the report here (else stdout)")
    p.add_argument("--plot", type=Path, help="draw RSS over time (PNG)")
    args = p.parse_args(argv)
    report = run_soak(args)
    text = json.dumps(report, indent=1)
    if args.json is not None:
        args.json.write_text(text + "\n")
    else:
        print(text)
    if args.plot is not None:
        plot(report, args.plot)
    summary = {k: report[k] for k in ("exceptions", "feedback_parse_errors", "bars_met")}
    print(json.dumps({"sender": report["sender"], **summary}), file=sys.stderr)
    return 0 if report["bars_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
