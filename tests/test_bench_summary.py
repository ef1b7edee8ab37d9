"""Aggregation of per-session records into results.json and report.md, on made-up records."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from bench.lib.sessions import LinkSetting, SessionTask
from bench.lib.summary import (
    AGGREGATES,
    COMPARED,
    aggregate,
    format_change,
    json_safe,
    markdown_report,
    summarize,
    worst_sessions,
)

QOE_FIELDS = {
    "bitrate_kbps",
    "utilization",
    "stall_rate",
    "freezes_per_min",
    "frame_delay_p50_ms",
    "frame_delay_p95_ms",
    "loss_rate",
    "score_mmsys21",
}


def record(controller: str, trace: str, family: str, delay_ms: int = 20, **qoe) -> dict:
    task = SessionTask(controller, trace, family, LinkSetting(delay_ms=delay_ms), 30.0, 0)
    base = dict.fromkeys(QOE_FIELDS, 0.0)
    base.update(qoe)
    return {"key": task.key, "task": task.to_dict(), "trace_name": trace, "qoe": base}


def test_summarize_fields_by_hand() -> None:
    recs = [
        record(
            "gcc",
            f"/t/{i}",
            "f",
            bitrate_kbps=100.0 * (i + 1),
            stall_rate=0.01 * i,
            frame_delay_p50_ms=50.0 + i,
            frame_delay_p95_ms=200.0 * (i + 1),
            utilization=0.5,
            loss_rate=0.02,
            freezes_per_min=float(i),
            score_mmsys21=60.0,
        )
        for i in range(20)
    ]
    s = summarize(recs)
    assert set(s) == {"sessions", *AGGREGATES}
    stall = 0.01 * np.arange(20)
    assert s["sessions"] == 20
    assert s["bitrate_kbps_mean"] == pytest.approx(1050.0)
    assert s["stall_rate_mean"] == pytest.approx(stall.mean())
    assert s["stall_rate_p95"] == pytest.approx(np.percentile(stall, 95))
    assert s["frame_delay_p50_ms"] == pytest.approx(59.5)
    assert s["frame_delay_p95_ms"] == pytest.approx(2100.0)  # mean of per-session p95s
    assert s["utilization_mean"] == pytest.approx(0.5)
    assert s["loss_rate_mean"] == pytest.approx(0.02)
    assert s["freezes_per_min_mean"] == pytest.approx(9.5)
    assert s["score_mmsys21_mean"] == pytest.approx(60.0)


def test_frame_delay_of_sessions_without_frames_is_skipped() -> None:
    recs = [
        record("gcc", "/a", "f", frame_delay_p95_ms=100.0, stall_rate=0.0),
        record("gcc", "/b", "f", frame_delay_p95_ms=float("nan"), stall_rate=1.0),
    ]
    s = summarize(recs)
    assert s["frame_delay_p95_ms"] == 100.0
    assert s["stall_rate_mean"] == 0.5


def make_records(seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    recs = []
    for fam, n in (("cell", 12), ("wired", 8)):
        for i in range(n):
            b = float(rng.lognormal(7, 0.5))
            st = float(rng.uniform(0, 0.1))
            path = f"/traces/{fam}/{i}.mahi"
            recs.append(
                record("gcc", path, fam, bitrate_kbps=b, stall_rate=st, frame_delay_p95_ms=300.0)
            )
            recs.append(
                record(
                    "rl",
                    path,
                    fam,
                    bitrate_kbps=1.1 * b,
                    stall_rate=0.5 * st,
                    frame_delay_p95_ms=330.0,
                )
            )
    return recs


def test_aggregate_structure_and_paired_changes() -> None:
    recs = make_records()
    random.Random(1).shuffle(recs)  # pairing must not depend on record order
    res = aggregate(recs, ["gcc", "rl"], baseline="gcc", seed=0, resamples=500)
    assert set(res["controllers"]) == {"gcc", "rl"}
    gcc = res["controllers"]["gcc"]
    assert gcc["overall"]["sessions"] == 20
    assert set(gcc["families"]) == {"cell", "wired"}
    assert gcc["families"]["cell"]["sessions"] == 12
    assert "links" not in gcc  # one link setting: no per-link split
    assert set(res["vs_baseline"]) == {"rl"}
    rl = res["vs_baseline"]["rl"]
    assert set(rl["overall"]) == set(COMPARED)
    bitrate = rl["overall"]["bitrate_kbps_mean"]
    # rl has 1.1 x the bitrate and half the stall rate on every single trace.
    assert bitrate["estimate"] == pytest.approx(0.1)
    assert bitrate["ci_low"] == pytest.approx(0.1) and bitrate["ci_high"] == pytest.approx(0.1)
    assert rl["overall"]["stall_rate_mean"]["estimate"] == pytest.approx(-0.5)
    assert rl["overall"]["stall_rate_p95"]["estimate"] == pytest.approx(-0.5)
    assert rl["overall"]["frame_delay_p95_ms"]["estimate"] == pytest.approx(0.1)
    assert rl["overall"]["bitrate_kbps_mean"]["pairs"] == 20
    assert rl["families"]["wired"]["stall_rate_mean"]["pairs"] == 8
    json.dumps(json_safe(res), allow_nan=False)  # standard JSON


def test_unpaired_sessions_are_left_out_of_the_comparison() -> None:
    recs = make_records()
    recs = [r for r in recs if not (r["task"]["controller"] == "gcc" and "/0.mahi" in r["key"])]
    res = aggregate(recs, ["gcc", "rl"], resamples=100)
    assert res["vs_baseline"]["rl"]["overall"]["stall_rate_mean"]["pairs"] == 18
    assert res["controllers"]["rl"]["overall"]["sessions"] == 20


def test_link_settings_split_and_pair_separately() -> None:
    recs = [
        record(c, "/t/a", "f", delay_ms=d, bitrate_kbps=(2.0 if c == "rl" else 1.0) * d)
        for c in ("gcc", "rl")
        for d in (10, 100)
    ]
    res = aggregate(recs, ["gcc", "rl"], resamples=50)
    links = res["controllers"]["gcc"]["links"]
    assert set(links) == {"rtt20ms-qinf-loss0", "rtt200ms-qinf-loss0"}
    assert links["rtt200ms-qinf-loss0"]["bitrate_kbps_mean"] == 100.0
    per_link = res["vs_baseline"]["rl"]["links"]["rtt20ms-qinf-loss0"]["bitrate_kbps_mean"]
    assert per_link["pairs"] == 1 and per_link["estimate"] == pytest.approx(1.0)


def test_no_baseline_no_comparison() -> None:
    recs = [r for r in make_records() if r["task"]["controller"] == "rl"]
    res = aggregate(recs, ["rl"], baseline="gcc", resamples=50)
    assert res["vs_baseline"] == {}
    assert "not run" in res["vs_baseline_note"]


def test_worst_sessions_order() -> None:
    recs = [
        record("gcc", "/a", "f", stall_rate=0.1, frame_delay_p95_ms=100.0),
        record("gcc", "/b", "f", stall_rate=0.3, frame_delay_p95_ms=100.0),
        record("gcc", "/c", "f", stall_rate=0.1, frame_delay_p95_ms=900.0),
        record("gcc", "/d", "f", stall_rate=0.0, frame_delay_p95_ms=float("nan")),
        record("rl", "/a", "f", stall_rate=0.9),
    ]
    worst = worst_sessions(recs, ["gcc", "rl"], 3)
    assert [r["trace_name"] for r in worst["gcc"]] == ["/b", "/c", "/a"]
    assert [r["trace_name"] for r in worst["rl"]] == ["/a"]
    assert worst_sessions(recs, ["gcc"], 0) == {"gcc": []}


def test_format_change() -> None:
    sig = {"estimate": -0.1398, "ci_low": -0.2, "ci_high": -0.05, "pairs": 9, "significant": True}
    assert format_change(sig) == "**-14.0 % [-20.0, -5.0]**"
    ns = {"estimate": 0.01, "ci_low": -0.02, "ci_high": 0.04, "pairs": 9, "significant": False}
    assert format_change(ns) == "+1.0 % [-2.0, +4.0]"
    inf = {"estimate": math.inf, "ci_low": 0.0, "ci_high": math.inf, "pairs": 3}
    assert format_change(inf) == "+inf % [+0.0, +inf]"
    assert format_change({"pairs": 0}) == "n/a"


def test_markdown_report_has_the_tables() -> None:
    res = aggregate(make_records(), ["gcc", "rl"], resamples=100)
    res["settings"] = {
        "controllers": ["gcc", "rl"],
        "families": {"cell": 12, "wired": 8},
        "links": [{"label": "rtt40ms-qinf-loss0"}],
        "duration_cap_s": 30.0,
        "max_traces_per_family": None,
        "seed": 0,
        "resamples": 100,
    }
    md = markdown_report(res, ["throughput_delay.png"])
    assert "| gcc | 20 |" in md and "| rl | 20 |" in md
    assert "## Against gcc (paired)" in md
    assert "**+10.0 % [+10.0, +10.0]**" in md  # rl's bitrate change, overall and per family
    assert "## Family `cell`" in md and "## Family `wired`" in md
    assert "| rl | 20 | **" in md
    assert "| rl | 8 (too few for an interval) |" in md  # the wired family's comparison
    assert "![throughput_delay](throughput_delay.png)" in md
    assert md.endswith("\n")
