"""The stall-risk layer (loki/learned/stall_risk.py) and ``loki train online --method risk``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from loki.cli import main
from loki.controllers import make_controller
from loki.emu.session import LinkConfig, Session, SessionConfig
from loki.experience import log_emulated_session, read_log, record_dtype
from loki.learned.controller import LearnedController
from loki.learned.models import controller_from_model, model_path, read_meta, without_risk_layer
from loki.learned.stall_risk import (
    MAX_FACTOR,
    MIN_FACTOR,
    PARAM_KEYS,
    PROXY_DELAY_100MS,
    RiskAdjustedController,
    StallRisk,
    fit_risk,
    risk_rows,
)
from loki.nn import load_model
from loki.train.data import EpisodeSpec
from loki.train.online import _auc, train_online_risk
from traces.generators import markov_modulated
from traces.load import load_trace
from traces.mahimahi import write_mahimahi

LOKI = model_path("loki")


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    """The shipped loki's network without the stall-risk layer it ships with."""
    return without_risk_layer(LOKI, tmp_path_factory.mktemp("network") / "model.npz")


@pytest.fixture(scope="module")
def trace(tmp_path_factory):
    path = tmp_path_factory.mktemp("risk") / "mm.up"
    write_mahimahi(markov_modulated(30_000, seed=4), path)
    return path


@pytest.fixture(scope="module")
def logs(trace, network, tmp_path_factory):
    d = tmp_path_factory.mktemp("risklogs")
    for k in range(3):
        spec = EpisodeSpec(str(trace), 1000 * k, 30, 100, 0.0, 20.0, seed=k)
        log_emulated_session((spec, str(network), str(d / f"{k}.explog"), 0.02, k))
    return d


@pytest.fixture(scope="module")
def risk_model(logs, network, tmp_path_factory):
    out = tmp_path_factory.mktemp("riskmodel") / "model.npz"
    figures = train_online_risk([logs], network, out, k=4.0)
    return out, figures


def link_of(path) -> LinkConfig:
    return LinkConfig(load_trace(path), delay_ms=30, queue_packets=100)


def records(frozen, qdelay=None):
    r = np.zeros(len(frozen), dtype=record_dtype(3, 0))
    r["frozen_share"] = frozen
    r["queue_delay_100ms"] = 0.0 if qdelay is None else qdelay
    r["obs"] = np.arange(len(frozen))[:, None]
    return r


def test_a_decision_is_risky_when_a_freeze_follows_within_the_horizon() -> None:
    x, y = risk_rows(records([0, 0, 0, 0.3, 0, 0, 0, 0]), horizon=2)
    # Decisions 0..5 have a full future; the freeze at 3 is within (k, k + 2] for k = 1, 2.
    assert y.tolist() == [False, True, True, False, False, False]
    assert x[:, 0].tolist() == [0, 1, 2, 3, 4, 5]


def test_a_live_log_uses_the_queueing_delay_as_the_freeze_proxy() -> None:
    live = records([np.nan] * 6, qdelay=[0, 0, PROXY_DELAY_100MS + 1, 0, 0, 0])
    _, y = risk_rows(live, horizon=2)
    assert y.tolist() == [True, True, False, False]


def test_the_fit_recovers_a_logistic_rule() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 3)) * [1.0, 5.0, 0.1] + [0.0, 10.0, 0.0]
    z = 2.0 * x[:, 0] - 0.4 * (x[:, 1] - 10.0) - 1.0
    y = rng.random(len(z)) < 1.0 / (1.0 + np.exp(-z))
    layer = fit_risk(x, y)
    risk = StallRisk(layer, 1.0, 0.5)
    p = np.array([risk.probability(row) for row in x])
    # The fitted probability follows the generating one (weights in raw units come back).
    truth = 1.0 / (1.0 + np.exp(-z))
    assert np.corrcoef(p, truth)[0, 1] > 0.99
    w_raw = layer["risk.weight"] / layer["risk.std"]
    np.testing.assert_allclose(w_raw[:2], [2.0, -0.4], rtol=0.1)
    with pytest.raises(ValueError, match="both followed and not followed"):
        fit_risk(x, np.zeros(len(x), bool))


def first_input_layer() -> dict[str, np.ndarray]:
    """A layer whose risk is the logistic of the first input alone (0.5 at 0)."""
    return {
        "risk.mean": np.zeros(2, np.float32),
        "risk.std": np.ones(2, np.float32),
        "risk.weight": np.array([1.0, 0.0], np.float32),
        "risk.bias": np.array([0.0], np.float32),
    }


def test_the_factor_is_one_at_the_mean_risk_and_bounded() -> None:
    layer = first_input_layer()
    risk = StallRisk(layer, 4.0, 0.5)
    assert risk.factor(np.array([0.0, 3.0])) == pytest.approx(1.0)  # p = 0.5 = mean
    assert risk.factor(np.array([2.0, 0.0])) < 1.0 < risk.factor(np.array([-2.0, 0.0]))
    assert risk.factor(np.array([100.0, 0.0])) == MIN_FACTOR
    assert StallRisk(layer, 40.0, 0.5).factor(np.array([-100.0, 0.0])) == MAX_FACTOR
    assert risk.factor(np.array([np.nan, 0.0])) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        StallRisk(layer, -1.0, 0.5)


def test_the_update_writes_the_layer_and_leaves_the_network(risk_model, network) -> None:
    path, figures = risk_model
    params, base = load_model(path), load_model(network)
    assert set(PARAM_KEYS) <= set(params)
    for key, value in base.items():
        if key != "meta":
            np.testing.assert_array_equal(params[key], value)
    meta = read_meta(params)
    assert meta["risk"] == {"k": 4.0, "mean_risk": figures["mean_risk"]}
    assert meta["online"]["method"] == "risk" and figures["logs"] == 3
    assert 0 < figures["freeze_share"] < 1 and figures["auc_in_sample"] > 0.5
    assert (path.parent / "card.md").is_file()


def test_a_model_with_the_layer_scales_its_network(risk_model, trace) -> None:
    path, _ = risk_model
    ctl = controller_from_model(path)
    assert isinstance(ctl, RiskAdjustedController)
    assert isinstance(ctl.learned, LearnedController)
    Session(ctl, link_of(trace), SessionConfig(duration_s=20.0)).run()
    assert ctl.target_bps == ctl.config.clamp(ctl.learned.target_bps * ctl.risk_factor)
    assert ctl.risk_factor == pytest.approx(ctl.risk.factor(ctl.learned.obs))
    assert ctl.decisions == ctl.learned.decisions > 100
    assert make_controller(str(path)).__class__ is RiskAdjustedController


def test_with_k_zero_the_layer_changes_nothing(logs, network, trace, tmp_path) -> None:
    out = tmp_path / "k0.npz"
    train_online_risk([logs], network, out, k=0.0)
    runs = [
        Session(controller_from_model(m), link_of(trace), SessionConfig(duration_s=20.0)).run()
        for m in (out, network)
    ]
    assert runs[0].decisions == runs[1].decisions


def test_sessions_of_a_model_with_the_layer_are_logged(risk_model, trace, tmp_path) -> None:
    path, _ = risk_model
    spec = EpisodeSpec(str(trace), 0, 30, 100, 0.0, 10.0, seed=1)
    log = tmp_path / "s.explog"
    log_emulated_session((spec, str(path), str(log), 0.0, 1))
    recs = read_log(log).records
    assert recs.size > 50 and np.isfinite(recs["frozen_share"]).all()


def test_the_command_line_and_its_refusals(logs, network, tmp_path, capsys) -> None:
    out = tmp_path / "m"
    argv = ["train", "online", "--method", "risk", "--risk-k", "2", "--logs", str(logs)]
    assert main([*argv, "--from", str(network), "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["k"] == 2.0 and (out / "model.npz").is_file()
    bad_k = ["--out", str(tmp_path / "x"), "--risk-k", "-1"]
    assert main([*argv, "--from", str(network), *bad_k]) == 2
    assert "--risk-k" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = ["train", "online", "--method", "risk", "--logs", str(empty), "--from", str(network)]
    assert main([*bad, "--out", str(tmp_path / "y")]) == 2
    assert "no experience logs" in capsys.readouterr().err


def test_auc_counts_ties_half() -> None:
    assert _auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert _auc(np.array([0.5, 0.5]), np.array([0, 1])) == pytest.approx(0.5)


def test_smoothing_damps_the_factor_and_one_means_none(logs, network, trace, tmp_path) -> None:
    rates = {}
    for a in (1.0, 0.25):
        out = tmp_path / f"a{a}.npz"
        train_online_risk([logs], network, out, k=4.0, smoothing=a)
        meta = read_meta(load_model(out))
        assert meta["risk"].get("smoothing", 1.0) == a
        ctl = controller_from_model(out)
        factors = []
        orig = ctl.on_feedback

        def spy(report, orig=orig, ctl=ctl, factors=factors):
            t = orig(report)
            factors.append(ctl.risk_factor)
            return t

        ctl.on_feedback = spy  # type: ignore[method-assign]
        Session(ctl, link_of(trace), SessionConfig(duration_s=20.0)).run()
        rates[a] = np.abs(np.diff(np.log2(factors))).mean()
    assert rates[0.25] < 0.5 * rates[1.0]
    with pytest.raises(ValueError, match="smoothing"):
        train_online_risk([logs], network, tmp_path / "bad.npz", smoothing=0.0)


def test_without_risk_layer_gives_the_network_alone(risk_model, network, tmp_path) -> None:
    path, _ = risk_model
    stripped = without_risk_layer(path, tmp_path / "n.npz")
    params, base = load_model(stripped), load_model(network)
    assert not set(PARAM_KEYS) & set(params) and "risk" not in read_meta(params)
    assert sorted(params) == sorted(base)
    for key in base:
        if key != "meta":
            np.testing.assert_array_equal(params[key], base[key])
    assert isinstance(controller_from_model(stripped), LearnedController)


def test_the_shipped_loki_carries_a_layer_made_by_its_command() -> None:
    meta = read_meta(load_model(LOKI))
    assert meta["risk"]["k"] > 0 and meta["online"]["method"] == "risk"
    assert "loki train risk" in (LOKI.parent / "card.md").read_text()


def test_the_layer_does_not_scale_down_a_path_changes_floor(risk_model, monkeypatch) -> None:
    path, _ = risk_model
    ctl = controller_from_model(path)
    learned, floor = ctl.learned, ctl.learned.fault_floor
    assert floor is not None

    def decide(report) -> int:
        learned.decisions += 1
        return learned.target_bps

    monkeypatch.setattr(learned, "on_feedback", decide)

    class Risky:  # a layer that always asks for half the rate
        smoothing = 1.0

        def factor(self, obs) -> float:
            return 0.5

    ctl.risk = Risky()  # type: ignore[assignment]
    ctl.on_feedback(None)  # type: ignore[arg-type]
    assert ctl.risk_factor == 0.5
    floor._path_until_us = 10**15  # a path change held (the detector has its own tests)
    ctl.on_feedback(None)  # type: ignore[arg-type]
    assert ctl.risk_factor == 1.0


def test_the_level_multiplies_the_bounded_factor() -> None:
    layer = first_input_layer()
    one, low = StallRisk(layer, 4.0, 0.5), StallRisk(layer, 4.0, 0.5, level=0.8)
    for x in ([0.0, 3.0], [2.0, 0.0], [-2.0, 0.0], [100.0, 0.0], [-100.0, 0.0]):
        assert low.factor(np.array(x)) == pytest.approx(0.8 * one.factor(np.array(x)))
    # At the bounds too: the highest risks are cut below MIN_FACTOR (where the stall is saved).
    assert low.factor(np.array([100.0, 0.0])) == pytest.approx(0.8 * MIN_FACTOR)
    for bad in (MIN_FACTOR - 0.01, MAX_FACTOR + 0.01, float("nan")):
        with pytest.raises(ValueError, match="--risk-level"):
            StallRisk(layer, 4.0, 0.5, level=bad)


def test_a_level_is_set_on_the_fitted_layer_without_touching_an_array(tmp_path, network) -> None:
    from loki.learned.models import with_risk_level

    out = with_risk_level(LOKI, tmp_path / "low.npz", 0.9)
    src, new = load_model(LOKI), load_model(out)
    assert set(src) == set(new)
    for key in src:
        if key != "meta":
            np.testing.assert_array_equal(new[key], src[key])
    assert read_meta(new)["risk"] == {**read_meta(src)["risk"], "level": 0.9}
    back = with_risk_level(out, tmp_path / "back.npz", read_meta(src)["risk"].get("level", 1.0))
    assert read_meta(load_model(back)) == read_meta(src)
    # Level 1 is the layer as fitted: no level in the meta at all.
    one = with_risk_level(out, tmp_path / "one.npz", 1.0)
    assert "level" not in read_meta(load_model(one))["risk"]
    with pytest.raises(ValueError, match="no stall-risk layer"):
        with_risk_level(network, tmp_path / "x.npz", 0.9)
    with pytest.raises(ValueError, match="--risk-level"):
        with_risk_level(LOKI, tmp_path / "y.npz", 0.3)
    assert not (tmp_path / "y.npz").exists()


def test_a_lower_level_sends_that_share_of_the_first_decision(tmp_path) -> None:
    from loki.learned.models import with_risk_level

    one = with_risk_level(LOKI, tmp_path / "one.npz", 1.0)
    low = with_risk_level(LOKI, tmp_path / "low.npz", 0.8)
    trace = markov_modulated(10_000, seed=1)
    firsts = []
    for path in (one, low):
        ctl = controller_from_model(path)
        session = Session(ctl, LinkConfig(trace=trace, delay_ms=20), SessionConfig(duration_s=2.0))
        firsts.append(session.run().decisions[0][1])
    # The same first observation (the start rate is GCC's for both): only the level differs.
    assert firsts[1] == pytest.approx(0.8 * firsts[0], abs=2)


def test_level_only_on_the_command_line(tmp_path, capsys) -> None:
    out = tmp_path / "low"
    assert main(["train", "risk", "--level-only", "--risk-level", "0.9", "--out", str(out)]) == 0
    assert read_meta(load_model(out / "model.npz"))["risk"]["level"] == 0.9
    assert "Level of the stall-risk layer set to 0.9" in (out / "card.md").read_text()
    for argv, message in (
        (["train", "risk", "--level-only"], "needs --risk-level"),
        (["train", "risk", "--level-only", "--risk-level", "0.9", "--sessions", "3"], "--sessions"),
        (["train", "risk", "--level-only", "--risk-level", "2"], "within [0.5, 1.5]"),
        (["train", "loki", "--risk-level", "0.9"], "for 'loki train risk|online'"),
        (["train", "rl", "--level-only"], "--level-only is for 'loki train risk' only"),
    ):
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv
