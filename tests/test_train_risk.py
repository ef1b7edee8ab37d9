"""``loki train risk`` (loki/train/risk.py): log the network, fit its stall-risk layer, write."""

from __future__ import annotations

import json

import numpy as np
import pytest

from loki.cli import main
from loki.learned.models import (
    MIN_TARGET_KEY,
    MIN_TARGET_QUEUE_KEY,
    controller_from_model,
    model_path,
    read_meta,
    without_risk_layer,
)
from loki.learned.stall_risk import PARAM_KEYS, RiskAdjustedController
from loki.nn import load_model
from loki.train.risk import CARD_MARKER, train_risk
from traces.generators import markov_modulated
from traces.mahimahi import write_mahimahi


@pytest.fixture(scope="module")
def traces(tmp_path_factory):
    d = tmp_path_factory.mktemp("family")
    for seed in range(2):
        write_mahimahi(markov_modulated(40_000, seed=seed), d / f"mm{seed}.up")
    return d


@pytest.fixture(scope="module")
def made(traces, tmp_path_factory):
    out = tmp_path_factory.mktemp("made")
    (out / "card.md").write_text("# loki\n\nThe network's own card.\n")
    logs = tmp_path_factory.mktemp("kept") / "logs"
    path, figures = train_risk(traces=[traces], sessions=4, seed=3, out=out, logs=logs)
    return path, figures, logs


def test_it_writes_the_shipped_network_with_a_layer_and_keeps_the_card(made) -> None:
    path, figures, logs = made
    params, shipped = load_model(path), load_model(model_path("loki"))
    assert set(PARAM_KEYS) <= set(params)
    for key in shipped:
        if key != "meta" and key not in PARAM_KEYS:
            np.testing.assert_array_equal(params[key], shipped[key])
    assert read_meta(params)["risk"]["k"] == 4.0 and figures["logs"] == 4
    # The logs are the network's alone; the model keeps the source's minimum target.
    for key in (MIN_TARGET_KEY, MIN_TARGET_QUEUE_KEY):
        assert read_meta(params)[key] == read_meta(shipped)[key]
    assert len(list(logs.iterdir())) == 4
    card = (path.parent / "card.md").read_text()
    assert card.startswith("# loki\n\nThe network's own card.") and card.count(CARD_MARKER) == 1
    assert "loki train risk --seed 3 --sessions 4 --risk-k 4" in card
    assert isinstance(controller_from_model(path), RiskAdjustedController)


def test_run_on_its_own_output_it_gives_the_same_layer(made, traces, tmp_path) -> None:
    path, _, _ = made
    again = tmp_path / "again"
    again.mkdir()
    (again / "card.md").write_text((path.parent / "card.md").read_text())
    p2, _ = train_risk(from_model=path, traces=[traces], sessions=4, seed=3, out=again)
    a, b = load_model(path), load_model(p2)
    for key in PARAM_KEYS:
        np.testing.assert_array_equal(a[key], b[key])
    assert (again / "card.md").read_text().count(CARD_MARKER) == 1  # replaced, not stacked


def test_the_network_alone_is_what_gets_logged(made, tmp_path) -> None:
    path, _, _ = made
    net = without_risk_layer(path, tmp_path / "n.npz")
    assert not set(PARAM_KEYS) & set(load_model(net))
    assert not {MIN_TARGET_KEY, MIN_TARGET_QUEUE_KEY} & set(read_meta(load_model(net)))


def test_the_command_line_and_its_refusals(traces, tmp_path, capsys) -> None:
    out = tmp_path / "cli"
    argv = ["train", "risk", "--traces", str(traces), "--sessions", "2", "--seed", "1"]
    assert main([*argv, "--out", str(out), "--risk-smoothing", "0.5", "--session-s", "12"]) == 0
    printed = capsys.readouterr().out
    assert json.loads(printed[: printed.rindex("}") + 1])["smoothing"] == 0.5
    assert read_meta(load_model(out / "model.npz"))["risk"]["smoothing"] == 0.5
    assert "--session-s 12" in (out / "card.md").read_text()
    for bad, says in (
        (["--risk-smoothing", "0"], "--risk-smoothing"),
        (["--risk-k", "-2"], "--risk-k"),
        (["--session-s", "1"], "--session-s"),
        (["--steps", "10"], "--steps"),
        (["--from", str(tmp_path / "none.npz")], "no such model"),
        (["--logs", str(tmp_path / "a"), str(tmp_path / "b")], "one folder"),
    ):
        assert main([*argv, "--out", str(tmp_path / "x"), *bad]) == 2
        assert says in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert main(["train", "rl", "--sessions", "3"]) == 2
    assert "--sessions" in capsys.readouterr().err
    assert main(["train", "rl", "--session-s", "60"]) == 2
    assert "--session-s" in capsys.readouterr().err
