"""loki.train.ensemble: several state-head clones exported as one network of the same format."""

from __future__ import annotations

import json

import numpy as np
import pytest

from loki.learned.models import load_learned
from loki.learned.policies import STATE_HEAD_OUTPUTS, MlpPolicy
from loki.nn import Normalizer, load_model
from loki.train.ensemble import ensemble_params, main, write_ensemble

OBS = 12


def _clone(path, seed: int, outputs: int = STATE_HEAD_OUTPUTS, hidden: int = 8):
    rng = np.random.default_rng(seed)

    def lin(prefix, n_in, n_out):
        return {
            f"{prefix}.weight": rng.normal(0, 0.5, (n_out, n_in)).astype(np.float32),
            f"{prefix}.bias": rng.normal(0, 0.5, n_out).astype(np.float32),
        }

    p = (
        lin("clone.trunk.0", OBS, hidden)
        | lin("clone.trunk.1", hidden, hidden)
        | lin("clone.head.0", hidden, outputs)
    )
    # Each seed fits its own normaliser and sees its own range of inputs.
    p["obs_mean"] = rng.normal(0, 1, OBS).astype(np.float32)
    p["obs_std"] = rng.uniform(0.5, 2.0, OBS).astype(np.float32)
    p["obs_low"] = np.full(OBS, -5.0 - seed, np.float32)
    p["obs_high"] = np.full(OBS, 5.0 + seed, np.float32)
    p["meta"] = np.array(json.dumps({"kind": "clone", "seed": seed}))
    np.savez(path, **p)
    return path


def _raw_outputs(policy: MlpPolicy, x: np.ndarray) -> np.ndarray:
    return policy._wh @ policy.features(x) + policy._bh


def test_the_ensemble_outputs_the_mean_of_its_members(tmp_path):
    paths = [_clone(tmp_path / f"m{k}.npz", k) for k in range(3)]
    path = write_ensemble(paths, tmp_path / "ens", "test")
    members = [load_model(p) for p in paths]
    policies = [MlpPolicy(m, "clone", Normalizer.from_params(m)) for m in members]
    ens = load_learned(str(path))
    assert ens.kind == "clone" and ens.policy.state_head
    rng = np.random.default_rng(7)
    for _ in range(50):
        x = rng.normal(0, 2, OBS).astype(np.float32)
        mean = np.mean([_raw_outputs(p, x) for p in policies], axis=0)
        np.testing.assert_allclose(_raw_outputs(ens.policy, x), mean, atol=1e-5)
    # One wider network of the usual shape: 3 x 8 hidden units in each trunk layer.
    params = load_model(path)
    assert params["clone.trunk.0.weight"].shape == (24, OBS)
    assert params["clone.trunk.1.weight"].shape == (24, 24)
    assert params["clone.head.0.weight"].shape == (STATE_HEAD_OUTPUTS, 24)
    # The guard accepts what any member has seen.
    assert ens.guard_low.min() == -7.0 and ens.guard_high.max() == 7.0
    meta = json.loads(str(params["meta"]))
    assert [m["seed"] for m in meta["members"]] == [0, 1, 2]
    assert (tmp_path / "ens" / "card.md").is_file()


def test_one_number_heads_and_single_members_are_refused(tmp_path):
    state = load_model(_clone(tmp_path / "a.npz", 0))
    one = load_model(_clone(tmp_path / "b.npz", 1, outputs=1))
    with pytest.raises(ValueError, match="state-head"):
        ensemble_params([state, one])
    with pytest.raises(ValueError, match="at least two"):
        ensemble_params([state])
    rl = dict(state)
    rl["meta"] = np.array(json.dumps({"kind": "rl"}))
    with pytest.raises(ValueError, match="not a clone"):
        ensemble_params([state, rl])


def test_cli_names_a_missing_member_and_writes_nothing(tmp_path, capsys):
    a = _clone(tmp_path / "a.npz", 0)
    with pytest.raises(SystemExit) as e:
        main(["--members", str(a), str(tmp_path / "nope.npz"), "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    assert "nope.npz" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert (
        main(
            ["--members", str(a), str(_clone(tmp_path / "b.npz", 1)), "--out", str(tmp_path / "o")]
        )
        == 0
    )
    assert (tmp_path / "o" / "model.npz").is_file()


def test_a_file_that_is_not_a_model_is_named_in_one_line(tmp_path) -> None:
    text = tmp_path / "notes.npz"
    text.write_text("not an archive")
    array = tmp_path / "array.npy"
    np.save(array, np.zeros(3))
    for path in (text, array):
        with pytest.raises(ValueError, match=r"is not a model file \(an \.npz archive"):
            load_model(path)
