"""bench/soak.py: its short mode runs a real ~12 s session and reports every soak figure."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("aiortc")

SOAK = Path(__file__).resolve().parents[1] / "bench" / "soak.py"


@pytest.fixture(scope="module")
def soak():
    spec = importlib.util.spec_from_file_location("bench_soak", SOAK)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


def test_short_soak_reports_memory_errors_and_video_figures(soak, tmp_path) -> None:
    out = tmp_path / "soak.json"
    soak.main(["--short", "--json", str(out)])
    r = json.loads(out.read_text())
    for part in ("sender", "relay"):
        g = r[part]
        assert g["warmup_mb"] > 0 and g["final_mb"] > 0 and g["growth_pct"] is not None
        assert g["warmup_at_s"] >= soak.SHORT_WARMUP_S and g["final_at_s"] <= soak.SHORT_DURATION_S
    assert len(r["samples"]) >= 4
    assert r["exit_code"] == 0 and r["exceptions"] == 0
    assert r["feedback_parse_errors"] == 0 and r["malformed_feedback"] == 0
    assert r["unknown_feedback_packets"] == 0 and r["guard_packets_dropped"] == 0
    assert r["feedback_reports"] > 0 and r["frames_encoded"] > 0 and r["frames_rendered"] > 0
    for key in ("stall_rate", "freezes", "keyframes_per_min", "controller_cpu_pct_of_core"):
        assert r[key] is not None
    assert len(r["load_average_start"]) == 3
    # The builtin link changes capacity: the soak runs over a changing trace.
    assert r["trace"]["max_kbps"] > r["trace"]["min_kbps"]
    assert r["trace"]["seconds_with_a_change"] > 0


def test_growth_is_measured_from_the_warmup_sample_to_the_last_in_session(soak) -> None:
    s = soak.Sample
    samples = [
        s(1.0, None, 90.0, 10.0),
        s(11.0, 8.0, 100.0, 10.0),
        s(21.0, 18.0, 104.0, 10.0),
        s(31.0, 28.0, 111.0, 10.0),
        s(41.0, 30.5, 150.0, 10.0),  # after the session: QoE at exit, not counted
    ]
    g = soak.growth(samples, "sender_rss_mb", warmup_s=10.0, duration_s=30.0)
    assert (g["warmup_mb"], g["warmup_at_s"], g["final_mb"], g["final_at_s"]) == (
        104.0,
        18.0,
        111.0,
        28.0,
    )
    assert g["growth_pct"] == pytest.approx(100 * 7 / 104, abs=0.01)
    assert soak.growth(samples[:2], "sender_rss_mb", 10.0, 30.0)["growth_pct"] is None


def test_the_stderr_reader_finds_the_session_clock_and_tracebacks(soak) -> None:
    out = soak.ChildOutput()
    lines = [
        "   t s   target     sent capacity   delay   fps   (kbps, ms)",
        "   1.0      300      250     3000    20.5  29.8",
        "rtc hook <bound method> failed",
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in f',
        "ValueError: boom",
        "malformed transport-cc feedback dropped: truncated",
        "  12.0     1500     1400     3000    21.0  30.0",
    ]
    soak._read_stderr(iter(line + "\n" for line in lines), out)
    assert out.session_t_s == 12.0 and out.tracebacks == 1
    assert soak.session_time(out, out.seen_at_s + 3.0) == 15.0
    assert out.malformed_feedback_warnings == 1
    assert any("boom" in line for line in out.exception_lines)
