"""``loki train online``: reward alignment, the AWR update, reproducibility, what it touches."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest

from loki.experience import log_emulated_session
from loki.learned.models import model_path
from loki.nn import load_model
from loki.train.data import EpisodeSpec
from loki.train.env import Reward
from loki.train.online import (
    PARAM_KEYS,
    Batch,
    discounted_returns,
    rewards_of,
    train_online,
    update,
)
from loki.train.parallel import RayMissingError
from traces.generators import markov_modulated
from traces.mahimahi import write_mahimahi

LOKI = model_path("loki")


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ol")
    trace = root / "mm.up"
    write_mahimahi(markov_modulated(20_000, seed=4), trace)
    d = root / "logs"
    d.mkdir()
    for k in range(2):
        spec = EpisodeSpec(str(trace), 1000 * k, 30, 100, 0.0, 5.0, seed=k)
        log_emulated_session((spec, str(LOKI), str(d / f"{k}.explog"), 0.1, k))
    return d


def test_discounted_returns():
    np.testing.assert_allclose(discounted_returns(np.array([1.0, 0.0, 2.0]), 0.5), [1.5, 1.0, 2.0])


def test_reward_of_a_decision_is_measured_at_the_next():
    from loki.experience import record_dtype

    recs = np.zeros(3, dtype=record_dtype(2, 0))
    recs["target_bps"] = [1e6, 1e6, 2e6]
    recs["utilisation"] = [0.0, 0.5, 0.9]
    recs["frozen_share"] = [0.0, 0.1, 0.0]
    for f in ("excess_delay_s", "loss_truth", "change_log2"):
        recs[f] = 0.0
    w = Reward()
    r = rewards_of(recs, w)
    # Decision 0's interval ends at record 1; decision 1's at record 2 (which doubled the rate).
    np.testing.assert_allclose(r, [0.5 - w.stall * 0.1, 0.9 - w.change * 1.0])


def test_awr_moves_towards_better_actions():
    rng = np.random.default_rng(0)
    params = load_model(LOKI)
    n = 600
    feats = rng.uniform(-1, 1, (n, 128)).astype(np.float32)
    act = rng.choice([-0.4, 0.4], n).astype(np.float32)
    returns = np.where(act > 0, 1.0, -1.0).astype(np.float32)  # raising the rate paid
    new, fig = update(params, Batch(feats, act, returns), seed=0, epochs=20)
    assert fig["mean_abs_action_shift"] > 0.02
    h = 64

    def act_of(p):
        gc = 1 / (1 + np.exp(-(feats @ p["fusion.gate_c.weight"].T + p["fusion.gate_c.bias"])))
        gr = 1 / (1 + np.exp(-(feats @ p["fusion.gate_r.weight"].T + p["fusion.gate_r.bias"])))
        fused = gc * feats[:, :h] + gr * feats[:, h:]
        return (fused @ p["head.0.weight"].T + p["head.0.bias"]).ravel()

    assert act_of(new).mean() > act_of(params).mean() + 0.02


def test_online_update_is_reproducible_and_touches_only_gates_and_head(logs, tmp_path):
    a = train_online([logs], LOKI, tmp_path / "a", seed=3, epochs=2)
    b = train_online([logs], LOKI, tmp_path / "b", seed=3, epochs=2)
    assert a["decisions"] > 50 and a["logs"] == 2 and a["off_policy_logs"] == 0
    pa, pb, p0 = (load_model(p) for p in (a["out"], b["out"], LOKI))
    for k in p0:
        if k == "meta":
            continue
        np.testing.assert_array_equal(pa[k], pb[k])
        if k not in PARAM_KEYS:
            np.testing.assert_array_equal(pa[k], p0[k])  # trunks, normaliser, guard frozen
    assert any(not np.array_equal(pa[k], p0[k]) for k in PARAM_KEYS)
    assert (tmp_path / "a" / "card.md").is_file()


def test_only_loki_models_are_updated(logs, tmp_path):
    with pytest.raises(ValueError, match="loki"):
        train_online([logs], model_path("rl"), tmp_path / "x", seed=0, epochs=1)


def test_no_logs_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no experience logs"):
        train_online([tmp_path], LOKI, tmp_path / "x", seed=0, epochs=1)


def test_ray_address_without_ray_is_a_clear_error(logs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(RayMissingError, match="needs Ray"):
        train_online([logs], LOKI, tmp_path / "r", seed=0, epochs=1, ray_address="auto")


def test_logs_of_another_model_count_as_off_policy(logs, tmp_path):
    other = tmp_path / "other.npz"
    shutil.copy(LOKI, other)
    with open(other, "ab") as f:
        f.write(b"\0")  # a different file (hash), same weights
    fig = train_online([logs], other, tmp_path / "o", seed=0, epochs=1)
    assert fig["off_policy_logs"] == 1


def test_cli_wiring(logs, tmp_path, capsys):
    # The arguments `loki train` already has, plus the online ones (see loki/train/cli.py).
    import argparse
    from pathlib import Path

    from loki.train.online import add_online_arguments, cmd_train_online

    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ray-address")
    p.add_argument("--out", type=Path)
    add_online_arguments(p)
    out = tmp_path / "cli" / "model.npz"
    argv = ["online", "--method", "awr", "--logs", str(logs), "--from", str(LOKI)]
    args = p.parse_args([*argv, "--out", str(out), "--epochs", "1"])
    assert cmd_train_online(args) == 0
    assert out.is_file() and '"decisions"' in capsys.readouterr().out
    with pytest.raises(SystemExit, match="needs --logs"):
        cmd_train_online(p.parse_args(["online", "--out", str(out)]))
