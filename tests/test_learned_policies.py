"""Numpy policies: folding the normaliser into the first layer changes nothing but speed;
the fused policy is the clone trunk, the learner trunk, the gates and the head."""

import numpy as np
import pytest

from fusion.dual_weight import DualWeightFusion
from loki.learned.models import model_path
from loki.learned.policies import FusionPolicy, MlpPolicy, decode_state_head
from loki.nn import Normalizer

N_IN, H = 12, 8


def _lin(rng, prefix, n_in, n_out):
    return {
        f"{prefix}.weight": rng.normal(0, 0.4, (n_out, n_in)).astype(np.float32),
        f"{prefix}.bias": rng.normal(0, 0.4, n_out).astype(np.float32),
    }


def _mlp(rng, prefix):
    return (
        _lin(rng, f"{prefix}.trunk.0", N_IN, H)
        | _lin(rng, f"{prefix}.trunk.1", H, H)
        | _lin(rng, f"{prefix}.head.0", H, 1)
    )


@pytest.fixture
def rng():
    return np.random.default_rng(4)


def test_folded_normaliser_equals_normalising_first(rng):
    p = _mlp(rng, "actor")
    norm = Normalizer(rng.normal(size=N_IN), rng.uniform(0.1, 3, N_IN))
    plain, folded = MlpPolicy(p, "actor"), MlpPolicy(p, "actor", norm)
    for _ in range(20):
        raw = rng.normal(0, 3, N_IN).astype(np.float32)
        assert folded(raw) == pytest.approx(plain(norm(raw)), abs=1e-5)
        np.testing.assert_allclose(
            folded.features(raw), plain.features(norm(raw)), rtol=1e-4, atol=1e-5
        )


def test_actions_are_clipped_to_the_action_range(rng):
    p = _mlp(rng, "actor")
    p["actor.head.0.bias"][:] = 50.0
    assert MlpPolicy(p, "actor")(np.zeros(N_IN, np.float32)) == 1.0
    p["actor.head.0.bias"][:] = -50.0
    assert MlpPolicy(p, "actor")(np.zeros(N_IN, np.float32)) == -1.0


def test_fusion_policy_composes_trunks_gates_and_head(rng):
    p = {}
    for side in ("clone", "learner"):
        p |= _lin(rng, f"{side}.trunk.0", N_IN, H) | _lin(rng, f"{side}.trunk.1", H, H)
    p |= _lin(rng, "fusion.gate_c", 2 * H, H) | _lin(rng, "fusion.gate_r", 2 * H, H)
    p |= _lin(rng, "head.0", H, 1)
    pol = FusionPolicy(p)
    fusion = DualWeightFusion(p)
    norm = Normalizer(rng.normal(size=N_IN), rng.uniform(0.1, 3, N_IN))
    folded = FusionPolicy(p, norm)
    for _ in range(20):
        x = rng.normal(0, 1, N_IN).astype(np.float32)
        f_c = np.tanh(
            p["clone.trunk.1.weight"]
            @ np.tanh(p["clone.trunk.0.weight"] @ x + p["clone.trunk.0.bias"])
            + p["clone.trunk.1.bias"]
        )
        f_r = np.tanh(
            p["learner.trunk.1.weight"]
            @ np.tanh(p["learner.trunk.0.weight"] @ x + p["learner.trunk.0.bias"])
            + p["learner.trunk.1.bias"]
        )
        want = float(p["head.0.weight"][0] @ fusion(f_c, f_r) + p["head.0.bias"][0])
        assert pol(x) == pytest.approx(np.clip(want, -1, 1), abs=1e-5)
        got_c, got_r = pol.features(x)
        np.testing.assert_allclose(got_c, f_c, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got_r, f_r, rtol=1e-4, atol=1e-5)
        raw = rng.normal(0, 3, N_IN).astype(np.float32)
        assert folded(raw) == pytest.approx(pol(norm(raw)), abs=1e-5)


def test_state_head_decodes_the_likeliest_move_with_its_own_size(rng):
    from loki.learned.policies import decode_state_head

    # (decrease, hold, increase) logits, then the decrease and increase sizes.
    assert decode_state_head(np.array([3.0, 0.0, 0.0, -0.25, 0.5])) == -0.25
    assert decode_state_head(np.array([0.0, 3.0, 0.0, -0.25, 0.5])) == 0.0
    assert decode_state_head(np.array([0.0, 0.0, 3.0, -0.25, 0.011])) == 0.011
    # A size of the wrong sign is no move; sizes stay in the action range.
    assert decode_state_head(np.array([0.0, 0.0, 3.0, -0.25, -0.2])) == 0.0
    assert decode_state_head(np.array([3.0, 0.0, 0.0, 0.3, 0.5])) == 0.0
    assert decode_state_head(np.array([3.0, 0.0, 0.0, -4.0, 0.5])) == -1.0
    params = _mlp(rng, "clone") | _lin(rng, "clone.head.0", H, 5)
    policy = MlpPolicy(params, "clone")
    assert policy.state_head
    x = rng.normal(size=N_IN).astype(np.float32)
    out = params["clone.head.0.weight"] @ policy.features(x) + params["clone.head.0.bias"]
    assert policy(x) == pytest.approx(decode_state_head(out))
    with pytest.raises(ValueError, match="neither an action"):
        MlpPolicy(_mlp(rng, "clone") | _lin(rng, "clone.head.0", H, 3), "clone")


def test_clone_net_state_head_trains_on_moves_and_decodes_like_numpy():
    torch = pytest.importorskip("torch")
    from loki.learned.policies import decode_state_head
    from loki.train.clone import CloneNet, move_of

    y = torch.tensor([-0.2, 0.0, 0.00005, 0.011, 0.3])
    assert move_of(y).tolist() == [0, 1, 1, 2, 2]
    torch.manual_seed(0)
    net = CloneNet(N_IN, state_head=True)
    x = torch.randn(5, N_IN)
    w = torch.ones(5)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    first = float(net.loss(x, y, w).detach())
    for _ in range(300):
        opt.zero_grad()
        loss = net.loss(x, y, w)
        loss.backward()
        opt.step()
    assert float(net.loss(x, y, w).detach()) < 0.05 * first
    with torch.no_grad():
        acts = net.action(x)
        outs = net(x).numpy()
    assert acts.tolist() == pytest.approx([-0.2, 0.0, 0.0, 0.011, 0.3], abs=0.02)
    assert [decode_state_head(o) for o in outs] == pytest.approx(acts.tolist(), abs=1e-6)


def test_creep_decoding_keeps_the_cut_and_weights_the_climb_by_its_odds():
    from loki.learned.policies import decode_state_head_creep, decode_state_head_expected

    # A likeliest cut is the argmax's cut, whatever the other odds.
    assert decode_state_head_creep(np.array([3.0, 2.9, 2.9, -0.25, 0.5])) == -0.25
    # Otherwise the climb times p(increase) / (p(hold) + p(increase)): even odds halve it.
    assert decode_state_head_creep(np.array([-5.0, 1.0, 1.0, -0.25, 0.02])) == pytest.approx(0.01)
    assert decode_state_head_creep(np.array([-5.0, 9.0, 0.0, -0.25, 0.02])) < 1e-5
    assert decode_state_head_creep(np.array([-5.0, 0.0, 0.0, -0.25, -0.3])) == 0.0
    # The expected move mixes the cut in too.
    out = np.array([0.0, 0.0, 0.0, -0.3, 0.03])
    assert decode_state_head_expected(out) == pytest.approx((-0.3 + 0.03) / 3)


def test_a_clone_carries_its_decoding_in_its_meta(tmp_path, rng):
    from loki.learned.models import load_learned, with_decode
    from loki.learned.policies import decode_state_head_creep

    src = model_path("gcc-clone")
    dst = with_decode(src, tmp_path / "creep.npz", "creep")
    shipped, creep = load_learned(str(src)), load_learned(str(dst))
    assert creep.meta["state_head_decode"] == "creep"
    x = rng.normal(size=shipped.policy.obs_size).astype(np.float32)
    f = creep.policy.features(x)
    out = creep.policy._wh @ f + creep.policy._bh
    assert creep.policy(x) == pytest.approx(decode_state_head_creep(out))
    assert shipped.policy(x) == pytest.approx(decode_state_head(out))
    with pytest.raises(ValueError, match="unknown state-head decoding 'mean'"):
        with_decode(src, tmp_path / "x.npz", "mean")
    with pytest.raises(ValueError, match="only a state-head clone"):
        with_decode(model_path("loki"), tmp_path / "y.npz", "creep")
