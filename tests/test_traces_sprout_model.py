"""Sprout's link model as a trace generator: the published constants hold in what it draws."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from traces import sprout_model
from traces.load import find_traces, load_trace, trace_family
from traces.sprout_model import (
    MAX_RATE_PPS,
    OUTAGE_ESCAPE_PER_S,
    RATE_LEVELS,
    TICK_MS,
    VOLATILITY_PPS,
    rate_path_pps,
    sprout_link,
)


def test_same_seed_same_link_other_seed_other_link():
    a = sprout_link(60_000, 3)
    b = sprout_link(60_000, 3)
    c = sprout_link(60_000, 4)
    assert np.array_equal(a.opportunities_ms, b.opportunities_ms)
    assert not np.array_equal(a.opportunities_ms[:1000], c.opportunities_ms[:1000])


def test_rates_stay_in_range_and_outages_are_zero():
    rates = rate_path_pps(2_000_000, np.random.default_rng(0))
    floor = MAX_RATE_PPS / RATE_LEVELS
    assert rates.max() <= MAX_RATE_PPS
    assert np.all((rates == 0.0) | (rates >= floor))
    # The walk reaches both ends of its range over 2000 s.
    assert rates.max() > 0.95 * MAX_RATE_PPS
    assert 0.01 < np.mean(rates == 0.0) < 0.5


def test_outages_end_at_the_published_escape_rate():
    rates = rate_path_pps(4_000_000, np.random.default_rng(1))
    out = rates == 0.0
    in_outage = out[:-1]
    left = in_outage & ~out[1:]
    p_tick = left.sum() / in_outage.sum()
    expected = 1.0 - math.exp(-OUTAGE_ESCAPE_PER_S * TICK_MS / 1000.0)
    # About 1300 escapes: the estimate's standard error is about 0.0025.
    assert p_tick == pytest.approx(expected, abs=0.01)


def test_the_walk_moves_at_the_published_volatility():
    rates = rate_path_pps(4_000_000, np.random.default_rng(2))
    a, b = rates[:-1], rates[1:]
    floor = MAX_RATE_PPS / RATE_LEVELS
    # Steps well inside the range: neither the outage floor nor the reflection at the top.
    inside = (a > floor + 300) & (a < MAX_RATE_PPS - 300)
    steps = (b - a)[inside]
    expected = VOLATILITY_PPS * math.sqrt(TICK_MS / 1000.0)
    assert steps.std() == pytest.approx(expected, rel=0.03)
    assert abs(steps.mean()) < 0.05 * expected


def test_deliveries_are_poisson_at_the_drawn_rate():
    duration_ms, seed = 600_000, 5
    trace = sprout_link(duration_ms, seed)
    rates = rate_path_pps(duration_ms, np.random.default_rng(seed))
    assert trace.period_ms == duration_ms
    expected = rates / 1000.0 * TICK_MS
    ops = trace.opportunities_ms[:-1]
    counts = np.bincount((ops - 1) // TICK_MS, minlength=rates.size)[: rates.size]
    assert counts.sum() == pytest.approx(expected.sum(), rel=0.01)
    # No delivery in an outage; elsewhere counts scatter like Poisson (variance = mean).
    assert counts[rates == 0.0].sum() == 0
    busy = expected > 5
    z = (counts[busy] - expected[busy]) / np.sqrt(expected[busy])
    assert z.var() == pytest.approx(1.0, abs=0.05)


def test_family_on_disk_is_its_own_family(tmp_path):
    out = tmp_path / "proxy"
    assert sprout_model.main(["--out", str(out), "--count", "3", "--seconds", "20"]) == 0
    paths = find_traces(out)
    assert len(paths) == 3
    assert {trace_family(p) for p in paths} == {"proxy"}
    source = json.loads((out / "SOURCE.json").read_text())
    assert source["constants"]["volatility_pps_per_sqrt_s"] == VOLATILITY_PPS
    assert len(source["traces"]) == 3
    again = sprout_link(20_000, 0, name="x")
    assert np.array_equal(load_trace(paths[0]).opportunities_ms, again.opportunities_ms)


@pytest.mark.parametrize("argv", [["--count", "0"], ["--seconds", "0"], ["--seed", "-1"]], ids=str)
def test_cli_refuses_bad_values(tmp_path, argv, capsys):
    with pytest.raises(SystemExit) as exc:
        sprout_model.main(["--out", str(tmp_path / "x"), *argv])
    assert exc.value.code == 2
    assert argv[0] in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_too_short_a_link_is_refused():
    with pytest.raises(ValueError, match="at least one tick"):
        rate_path_pps(TICK_MS - 1, np.random.default_rng(0))
