"""bench/freeze_sources.py: where a session's freeze time sits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.freeze_sources import (
    AFTER_OUTAGE_MS,
    encoder_floor_bps,
    freeze_sources,
    main,
    outage_masks,
    target_per_ms,
)
from traces.generators import steps
from traces.mahimahi import write_mahimahi

FLOOR = 374_000.0
#: 5 s of 12 Mbps, 1 s with no capacity at all, 24 s of 12 Mbps again.
OUTAGE = steps([(5_000, 12e6), (1_000, 0.0), (24_000, 12e6)])


def test_the_floor_is_the_encoder_calibrations() -> None:
    assert encoder_floor_bps() == pytest.approx(373_598, rel=1e-3)


def test_an_outage_is_seen_by_the_receiver_one_way_delay_later() -> None:
    inside, after = outage_masks(OUTAGE, delay_ms=50, duration_ms=30_000)
    on = np.nonzero(inside)[0]
    # The last opportunity before the gap is at most a millisecond before 5 s.
    assert 5_049 <= on[0] <= 5_051 and 6_049 <= on[-1] <= 6_051
    assert inside.sum() == pytest.approx(1_000, abs=2)
    assert after.sum() == AFTER_OUTAGE_MS and not (inside & after).any()


def test_the_target_before_the_first_decision_is_the_start_rate() -> None:
    t = target_per_ms([(0.5, 100_000), (1.0, 900_000)], 2_000, 300_000)
    assert t[0] == t[499] == 300_000 and t[500] == t[999] == 100_000 and t[1999] == 900_000


def test_freeze_time_is_split_by_where_it_falls() -> None:
    freezes = [(5_050.0, 1_500.0), (20_000.0, 3_000.0)]
    # Target 50 kbps (far below the encoder's floor) from 15 s on, on a 12 Mbps link.
    decisions = [(0.1, 2_000_000), (15.0, 50_000)]
    s = freeze_sources(freezes, OUTAGE, decisions, delay_ms=50, duration_ms=30_000, floor_bps=FLOOR)
    assert s.freeze_ms == 4_500
    assert s.in_outage_ms == pytest.approx(1_000, abs=2)
    assert s.after_outage_ms == pytest.approx(500, abs=2)
    assert s.rest_ms == 3_000 and s.in_outage_ms + s.after_outage_ms + s.rest_ms == s.freeze_ms
    assert s.starved_ms == 3_000  # the second freeze, all of it starved
    # The outage's seconds have little capacity but count as outage, not as low capacity:
    # only the bins around the gap (5-6 s carry nothing) fall below twice the floor.
    assert s.low_capacity_ms <= 500


def test_where_the_link_carries_little_freezes_are_low_capacity() -> None:
    thin = steps([(30_000, 500_000)])  # below twice the floor throughout
    s = freeze_sources(
        [(2_000.0, 1_000.0)],
        thin,
        [(0.1, 100_000)],
        delay_ms=20,
        duration_ms=30_000,
        floor_bps=FLOOR,
    )
    assert s.low_capacity_ms == 1_000 and s.starved_ms == 0 and s.rest_ms == 1_000


def test_the_command_runs_sessions_and_writes_its_figures(tmp_path, capsys) -> None:
    family = tmp_path / "family"
    family.mkdir()
    write_mahimahi(OUTAGE, family / "outage.up")
    out, png = tmp_path / "sources.json", tmp_path / "sources.png"
    argv = ["--traces", str(family), "--controllers", "gcc", "--json", str(out), "--plot", str(png)]
    assert main(argv) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "| gcc | 12 |" in printed  # 4 windows x 3 link settings
    data = json.loads(out.read_text())
    assert len(data["sessions"]) == 12
    line = data["summary"][0]
    assert line["freeze_s"] > 0 and line["in_outage"] > 0
    assert line["in_outage"] + line["after_outage"] + line["rest"] == pytest.approx(1.0)


def test_bad_input_is_refused_in_one_line(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--traces", str(tmp_path), "--controllers", "nope"])
    assert "nope" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--traces", str(tmp_path), "--sample", "0"])
    assert "--sample must be > 0" in capsys.readouterr().err
