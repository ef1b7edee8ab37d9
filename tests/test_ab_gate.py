"""``loki ab``: paired comparison, QoS score and the refusal rules."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from loki.ab import TOL_BITRATE, add_ab_parser, compare, qos_score
from loki.learned.models import model_path
from traces.generators import markov_modulated
from traces.mahimahi import write_mahimahi


def rows(bitrate, stall, fd=300.0, util=0.8):
    return [
        {
            "bitrate_kbps": b,
            "stall_rate": s,
            "frame_delay_p95_ms": fd,
            "utilization": util,
        }
        for b, s in zip(bitrate, stall, strict=True)
    ]


BASE_STALL = np.linspace(0.0, 0.2, 40)
BASE_BITRATE = np.linspace(500, 1500, 40)


def test_identical_models_are_accepted():
    a = rows(BASE_BITRATE, BASE_STALL)
    res = compare(a, a)
    assert res["verdict"] == "accept"
    assert res["changes"]["stall_p95"]["estimate"] == 0.0
    assert res["qos"]["b_minus_a"]["estimate"] == 0.0


def test_higher_p95_stall_is_refused():
    a = rows(BASE_BITRATE, BASE_STALL)
    b = rows(BASE_BITRATE * 1.1, BASE_STALL * 1.2)
    res = compare(a, b)
    assert res["verdict"] == "refuse"
    assert "p95 stall" in res["reasons"][0]


def test_lower_bitrate_is_refused():
    a = rows(BASE_BITRATE, BASE_STALL)
    b = rows(BASE_BITRATE * (1 - 2 * TOL_BITRATE), BASE_STALL * 0.5)
    res = compare(a, b)
    assert res["verdict"] == "refuse" and "bitrate" in res["reasons"][0]


def test_within_tolerance_but_worse_qos_is_held():
    a = rows(BASE_BITRATE, BASE_STALL, util=0.8)
    b = rows(BASE_BITRATE * 0.98, BASE_STALL, util=0.7)
    assert compare(a, b)["verdict"] == "hold"


def test_better_model_is_accepted_with_interval_excluding_zero():
    a = rows(BASE_BITRATE, BASE_STALL)
    b = rows(BASE_BITRATE, BASE_STALL * 0.5)
    res = compare(a, b)
    assert res["verdict"] == "accept"
    ch = res["changes"]["stall_mean"]
    assert ch["ci_high"] < 0 and ch["significant"]


def test_qos_score_charges_stalls_and_late_frames():
    good = {"utilization": 0.9, "stall_rate": 0.0, "frame_delay_p95_ms": 300.0}
    stall = {**good, "stall_rate": 0.05}
    late = {**good, "frame_delay_p95_ms": 1400.0}
    assert qos_score(good) == pytest.approx(0.9)
    assert qos_score(stall) == pytest.approx(0.9 - 0.4)
    assert qos_score(late) == pytest.approx(0.9 - 0.6)


def test_cli_smoke_same_model_accepts(tmp_path, capsys):
    d = tmp_path / "fam"
    d.mkdir()
    write_mahimahi(markov_modulated(20_000, seed=9), d / "a.up")
    p = argparse.ArgumentParser()
    add_ab_parser(p.add_subparsers())
    loki = str(model_path("loki"))
    args = p.parse_args(
        [
            "ab",
            "--a",
            loki,
            "--b",
            loki,
            "--traces",
            str(d),
            "--duration-s",
            "4",
            "--json",
            str(tmp_path / "r.json"),
        ]
    )
    assert args.func(args) == 0
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["verdict"] == "accept" and res["sessions"] == 12
    assert "verdict: accept" in capsys.readouterr().out


def test_logged_sessions_are_summarised_per_model(tmp_path):
    from loki.ab import summarise_logs
    from loki.experience import log_emulated_session
    from loki.train.data import EpisodeSpec

    trace = tmp_path / "t.up"
    write_mahimahi(markov_modulated(20_000, seed=2), trace)
    loki = str(model_path("loki"))
    spec = EpisodeSpec(str(trace), 0, 30, 100, 0.0, 3.0, seed=1)
    log_emulated_session((spec, loki, str(tmp_path / "s.explog"), 0.0, 0))
    res = summarise_logs([tmp_path], loki, str(model_path("rl")))
    assert res["a"]["sessions"] == 1 and res["a"]["decisions"] >= 25
    assert res["a"]["frozen_share_mean"] is not None
    assert res["b"] == {"sessions": 0}
