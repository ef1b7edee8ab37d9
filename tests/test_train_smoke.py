"""Few-second training runs of all four models on synthetic traces, and export fidelity:
the numpy controllers compute what the torch policies compute."""

import json

import numpy as np
import pytest
import torch

from loki.features import OBS_SIZE
from loki.learned import HybridController, RatioController
from loki.learned.policies import FusionPolicy as NumpyFusionPolicy
from loki.learned.policies import MlpPolicy
from loki.nn import Normalizer, load_model
from loki.train.clone import train as train_clone
from loki.train.env import ControllerEnv
from loki.train.hybrid import HybridArgs
from loki.train.hybrid import train as train_hybrid
from loki.train.loki_fusion import LokiArgs
from loki.train.loki_fusion import train as train_loki
from loki.train.rl import RlArgs
from loki.train.rl import train as train_rl

PPO_SMOKE = {
    "steps": 128,
    "n_steps": 64,
    "batch": 32,
    "epochs": 1,
    "episode_s": 3.0,
    "val_episodes": 2,
    "workers": 1,
}


def _env(family, cls=RatioController):
    return ControllerEnv([str(p) for p in sorted(family.glob("*.mahi"))], cls, episode_s=2.0)


def _random_obs(p, rng):
    return (p["obs_mean"] + rng.normal(size=p["obs_mean"].size) * p["obs_std"]).astype(np.float32)


def _sb3_action(model, obs) -> float:
    with torch.no_grad():
        a = model.policy.get_distribution(torch.as_tensor(obs)[None]).mode()[0, 0]
    return min(max(float(a), -1.0), 1.0)


def test_clone_writes_model_card_and_curves(clone):
    d = clone.parent
    assert "loki train clone --steps 120" in (d / "card.md").read_text()
    curve = (d / "curve.csv").read_text().splitlines()
    assert curve[0].startswith("iteration,epoch") and len(curve) == 1 + 2  # 2 iterations x 1
    assert len((d / "closed_loop.csv").read_text().splitlines()) == 1 + 2
    p = load_model(clone)
    assert json.loads(str(p["meta"]))["kind"] == "clone"
    assert p["clone.trunk.0.weight"].shape == (64, OBS_SIZE)
    assert np.all(p["obs_low"] <= p["obs_high"])


def test_clone_keeps_every_iteration_as_a_model(clone):
    its = sorted((clone.parent / "iterations").glob("iteration-*/model.npz"))
    assert [p.parent.name for p in its] == ["iteration-0", "iteration-1"]
    exported = load_model(clone)
    meta = json.loads(str(exported["meta"]))
    same = load_model(its[meta["exported_iteration"]])
    np.testing.assert_array_equal(same["clone.head.0.weight"], exported["clone.head.0.weight"])
    np.testing.assert_array_equal(same["obs_high"], exported["obs_high"])


def test_state_head_clone_trains_and_drives(family, clone_args, tmp_path):
    from loki.learned.models import controller_from_model

    path = train_clone(clone_args(family, tmp_path, state_head=True))
    p = load_model(path)
    assert p["clone.head.0.weight"].shape == (5, 64)
    ctl = controller_from_model(path)
    assert ctl.policy.state_head  # type: ignore[attr-defined]
    a = ctl.policy(_random_obs(p, np.random.default_rng(0)))  # type: ignore[misc]
    assert -1.0 <= a <= 1.0


def test_clone_is_reproducible_from_its_seed(family, clone, clone_args, tmp_path):
    again = train_clone(clone_args(family, tmp_path))
    a, b = load_model(clone), load_model(again)
    np.testing.assert_array_equal(a["clone.head.0.weight"], b["clone.head.0.weight"])
    np.testing.assert_array_equal(a["obs_low"], b["obs_low"])


def test_rl_trains_and_numpy_actor_matches_sb3(family, clone, tmp_path):
    from stable_baselines3 import PPO

    from loki.train.sb3_policies import NormalizedMlpPolicy, mlp_policy_kwargs

    path = train_rl(RlArgs(traces=[family], clone=clone, out=tmp_path, **PPO_SMOKE))
    p = load_model(path)
    assert json.loads(str(p["meta"]))["kind"] == "rl"
    assert len((tmp_path / "curve.csv").read_text().splitlines()) >= 2
    assert "Closed loop against GCC" in (tmp_path / "card.md").read_text()
    model = PPO(
        NormalizedMlpPolicy,
        _env(family),
        policy_kwargs=mlp_policy_kwargs(p["obs_mean"], p["obs_std"], -1.0),
        device="cpu",
    )
    model.policy.load_actor(p)
    actor, norm = MlpPolicy(p, "actor"), Normalizer.from_params(p)
    rng = np.random.default_rng(0)
    for _ in range(5):
        obs = _random_obs(p, rng)
        assert actor(norm(obs)) == pytest.approx(_sb3_action(model, obs), abs=1e-5)


def test_loki_starts_as_the_clone_and_numpy_matches_torch(family, clone):
    from stable_baselines3 import PPO

    from loki.train.sb3_policies import FusionPolicy, NormalizeObs

    cp = load_model(clone)
    model = PPO(
        FusionPolicy,
        _env(family),
        device="cpu",
        policy_kwargs={
            "clone_params": cp,
            "features_extractor_class": NormalizeObs,
            "features_extractor_kwargs": {"mean": cp["obs_mean"], "std": cp["obs_std"]},
        },
    )
    norm = Normalizer.from_params(cp)
    clone_policy = MlpPolicy(cp, "clone")
    model.policy.load_learner(cp, "clone.trunk")  # what `loki train loki` does by default
    fresh = NumpyFusionPolicy(model.policy.export_actor())
    rng = np.random.default_rng(1)
    for _ in range(10):
        obs = _random_obs(cp, rng)
        # At the start the fused policy is the clone (gates sum to 1, clone head).
        assert fresh(norm(obs)) == pytest.approx(clone_policy(norm(obs)), abs=1e-5)
        assert fresh(norm(obs)) == pytest.approx(_sb3_action(model, obs), abs=1e-5)
    # With arbitrary trained weights the export still computes what torch computes.
    with torch.no_grad():
        for prm in model.policy.actor_parameters():
            prm.add_(torch.randn_like(prm) * 0.3)
    moved = NumpyFusionPolicy(model.policy.export_actor())
    for _ in range(10):
        obs = _random_obs(cp, rng)
        assert moved(norm(obs)) == pytest.approx(_sb3_action(model, obs), abs=1e-5)


def _train_loki_smoke(family, clone, out, **kw):
    return train_loki(
        LokiArgs(traces=[family], clone=clone, out=out, warmup_steps=64, **PPO_SMOKE, **kw)
    )


def test_loki_training_keeps_the_clone_frozen(family, clone, tmp_path):
    path = _train_loki_smoke(family, clone, tmp_path, learner="random")
    p, cp = load_model(path), load_model(clone)
    assert json.loads(str(p["meta"]))["kind"] == "loki"
    for k in ("clone.trunk.0.weight", "clone.trunk.1.bias"):
        np.testing.assert_array_equal(p[k], cp[k])
    assert "fusion.gate_c.weight" in p and "learner.trunk.1.weight" in p


def test_loki_anchored_at_gcc_trains_and_runs_anchored(family, clone, tmp_path):
    from loki.learned.controller import AnchoredController
    from loki.learned.models import controller_from_model

    path = _train_loki_smoke(family, clone, tmp_path / "base", anchor_gcc=True)
    assert json.loads(str(load_model(path)["meta"]))["anchor"] == "gcc"
    assert isinstance(controller_from_model(path), AnchoredController)
    assert "GCC's estimate x 2^" in (tmp_path / "base" / "card.md").read_text()
    # A fine-tune keeps the action's meaning without being told.
    tuned = train_loki(LokiArgs(traces=[family], init=path, out=tmp_path / "ft", **PPO_SMOKE))
    assert json.loads(str(load_model(tuned)["meta"]))["anchor"] == "gcc"
    assert isinstance(controller_from_model(tuned), AnchoredController)


def test_hybrid_trains(family, clone, tmp_path):
    path = train_hybrid(HybridArgs(traces=[family], clone=clone, out=tmp_path, **PPO_SMOKE))
    p = load_model(path)
    assert json.loads(str(p["meta"]))["kind"] == "hybrid"
    assert p["actor.trunk.0.weight"].shape[1] == HybridController.obs_size


@pytest.mark.parametrize("kind", ["rl", "loki"])
def test_a_fine_tune_starts_from_the_model_and_moves_only_after_the_warm_up(
    family, clone, tmp_path, kind
):
    """``--init``: the actor starts as the given model. While the critic warms up alone the
    actor cannot move, so a run that is all warm-up exports the model it started from; with a
    short warm-up it moves away from it."""
    train, cls = (train_rl, RlArgs) if kind == "rl" else (train_loki, LokiArgs)
    base = train(cls(traces=[family], clone=clone, out=tmp_path / "base", **PPO_SMOKE))
    frozen = train(
        cls(traces=[family], init=base, out=tmp_path / "frozen", warmup_steps=10_000, **PPO_SMOKE)
    )
    moved = train(
        cls(traces=[family], init=base, out=tmp_path / "moved", warmup_steps=0, **PPO_SMOKE)
    )
    b, f, m = load_model(base), load_model(frozen), load_model(moved)
    weights = [k for k in b if k.endswith(("weight", "bias"))]
    for k in weights:
        np.testing.assert_array_equal(f[k], b[k])
    assert json.loads(str(f["meta"]))["init"] == str(base)
    head = "actor.head.0.weight" if kind == "rl" else "head.0.weight"
    assert not np.array_equal(m[head], b[head])


def test_init_refuses_a_model_of_another_kind(family, clone, tmp_path):
    base = train_rl(RlArgs(traces=[family], clone=clone, out=tmp_path / "rl", **PPO_SMOKE))
    with pytest.raises(ValueError, match="'rl' model"):
        train_loki(LokiArgs(traces=[family], init=base, out=tmp_path / "l", **PPO_SMOKE))
