"""Built-in links: the registry, the default, and that each is what its name says."""

from __future__ import annotations

import pytest

from traces.builtin import DEFAULT_BUILTIN, builtin_names, get_builtin


def mbps(trace, start_ms: int, end_ms: int) -> float:
    return trace.opportunities_between(start_ms, end_ms) * 1500 * 8 / (end_ms - start_ms) / 1000


def test_every_name_builds_a_minute_long_trace() -> None:
    names = builtin_names()
    assert {"const-2.5mbps", "step-down", "outages", "cellular", "walk"} <= set(names)
    for name in names:
        trace = get_builtin(name)
        assert trace.name == name
        assert trace.period_ms == 60_000


def test_default_is_the_cellular_link() -> None:
    assert DEFAULT_BUILTIN in builtin_names()
    trace = get_builtin(DEFAULT_BUILTIN)
    assert trace.meta["generator"] == "markov_modulated"
    per_second = [mbps(trace, s, s + 1000) for s in range(0, 60_000, 1000)]
    assert min(per_second) < 1.0 and max(per_second) > 4.0  # it does swing
    assert 1.5 < mbps(trace, 0, 60_000) < 4.0


def test_step_down_shape() -> None:
    trace = get_builtin("step-down")
    assert mbps(trace, 0, 20_000) == pytest.approx(4.0, abs=0.01)
    assert mbps(trace, 20_000, 40_000) == pytest.approx(1.5, abs=0.01)
    assert mbps(trace, 40_000, 60_000) == pytest.approx(3.0, abs=0.01)


def test_constant_and_outages() -> None:
    assert mbps(get_builtin("const-2.5mbps"), 0, 60_000) == pytest.approx(2.5)
    outages = get_builtin("outages")
    assert outages.opportunities_between(13_000, 15_000) == 0


def test_same_object_every_time_and_unknown_names_listed() -> None:
    assert get_builtin("walk") is get_builtin("walk")
    with pytest.raises(ValueError, match="unknown built-in link 'lte'") as err:
        get_builtin("lte")
    for name in builtin_names():
        assert name in str(err.value)


def test_the_sprout_link_is_packet_level_with_outages() -> None:
    trace = get_builtin("sprout")
    assert trace.meta["source"] == "sprout_model"
    per_100ms = [trace.opportunities_between(t, t + 100) for t in range(0, 60_000, 100)]
    assert 0 in per_100ms  # outages
    assert 2.0 < mbps(trace, 0, 60_000) < 40.0
