"""bench/speed.py: the replay harness and a quick run of every figure (not a benchmark)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

SPEED = Path(__file__).resolve().parents[1] / "bench" / "speed.py"


@pytest.fixture(scope="module")
def speed():
    spec = importlib.util.spec_from_file_location("bench_speed", SPEED)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_recorded_calls_replay_to_the_same_decisions(speed) -> None:
    from loki.controllers import make_controller

    calls, _trace = speed.record_calls(10.0)
    reports = [args[0] for m, args in calls if m == "on_feedback"]
    assert len(reports) > 50  # one report per 100 ms of feedback, less the first RTT
    assert {m for m, _ in calls} >= {"on_feedback", "on_rtt", "on_process_interval"}
    # GCC is deterministic: replaying the calls into a fresh GCC reproduces its decisions.
    a, b = make_controller("gcc"), make_controller("gcc")
    for ctl in (a, b):
        lat = speed.replay_latency_us(ctl, calls)
        assert lat.shape == (len(reports),) and np.all(lat > 0)
    assert a.target_bps == b.target_bps


def test_quick_measure_and_json(speed, capsys) -> None:
    assert speed.main(["--quick", "--repeats", "1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["machine"]["cpu_count"] >= 1
    emu = res["emulator"][0]
    assert emu["emulated_s_per_wall_s"] > 1.0  # faster than real time even on a busy machine
    assert 1000 < emu["bitrate_kbps"] < 3000  # GCC under a 3 Mbps link
    lat = res["decision_latency"]
    assert lat["gcc"]["p50_us"] > 0 and lat["gcc"]["p99_us"] >= lat["gcc"]["p50_us"]
    assert "oracle" in lat and "fixed:2500" in lat
    assert res["training"]["steps_per_s"] > 0
    scaling = res["parallel_scaling"]
    assert set(scaling["wall_s"]) == {"1", "2"} and scaling["speedup"] > 0
