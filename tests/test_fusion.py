"""The dual-weight fusion layer: numpy forward, torch module, and that they agree."""

import numpy as np
import pytest
import torch

from fusion.dual_weight import CLONE_GATE_BIAS, LEARNER_GATE_BIAS, DualWeightFusion
from fusion.torch_module import DualWeightFusionModule
from loki.nn import sigmoid

H = 8


def _random_params(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "fusion.gate_c.weight": rng.normal(size=(H, 2 * H)).astype(np.float32),
        "fusion.gate_c.bias": rng.normal(size=H).astype(np.float32),
        "fusion.gate_r.weight": rng.normal(size=(H, 2 * H)).astype(np.float32),
        "fusion.gate_r.bias": rng.normal(size=H).astype(np.float32),
    }


def test_fresh_module_favours_the_clone():
    m = DualWeightFusionModule(H)
    f_c, f_r = torch.rand(3, H) * 2 - 1, torch.rand(3, H) * 2 - 1
    with torch.no_grad():
        w_c, w_r = m.gates(f_c, f_r)
        fused = m(f_c, f_r)
    assert torch.allclose(w_c, torch.full_like(w_c, float(sigmoid(np.float32(CLONE_GATE_BIAS)))))
    assert torch.allclose(w_r, torch.full_like(w_r, float(sigmoid(np.float32(LEARNER_GATE_BIAS)))))
    # The clone's gate is the larger, and the two sum to 1: with equal trunks (the learner
    # starts as a copy of the clone) the fused features are exactly the clone's.
    assert float(w_c.min()) > 0.7 > 0.3 > float(w_r.max())
    assert torch.allclose(w_c + w_r, torch.ones_like(w_c))
    with torch.no_grad():
        assert torch.allclose(m(f_c, f_c), f_c, atol=1e-6)
    assert not torch.allclose(fused, f_c, atol=1e-3)  # a different learner does move it


def test_numpy_forward_is_elementwise_gated_sum():
    rng = np.random.default_rng(1)
    p = _random_params(rng)
    layer = DualWeightFusion(p)
    f_c = rng.uniform(-1, 1, H).astype(np.float32)
    f_r = rng.uniform(-1, 1, H).astype(np.float32)
    z = np.concatenate([f_c, f_r])
    w_c = sigmoid(p["fusion.gate_c.weight"] @ z + p["fusion.gate_c.bias"])
    w_r = sigmoid(p["fusion.gate_r.weight"] @ z + p["fusion.gate_r.bias"])
    np.testing.assert_allclose(layer(f_c, f_r), w_c * f_c + w_r * f_r, rtol=1e-5, atol=1e-6)
    g_c, g_r = layer.gates(f_c, f_r)
    np.testing.assert_allclose(g_c, w_c, rtol=1e-5)
    np.testing.assert_allclose(g_r, w_r, rtol=1e-5)


def test_torch_and_numpy_agree_after_export():
    torch.manual_seed(0)
    m = DualWeightFusionModule(H)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_()
    layer = DualWeightFusion(m.export())
    rng = np.random.default_rng(2)
    for _ in range(5):
        f_c = rng.uniform(-1, 1, H).astype(np.float32)
        f_r = rng.uniform(-1, 1, H).astype(np.float32)
        want = m(torch.as_tensor(f_c)[None], torch.as_tensor(f_r)[None])[0].detach().numpy()
        np.testing.assert_allclose(layer(f_c, f_r), want, rtol=1e-5, atol=1e-6)


def test_gate_shapes_are_checked():
    p = _random_params(np.random.default_rng(3))
    p["fusion.gate_r.weight"] = p["fusion.gate_r.weight"][:, :H]
    with pytest.raises(ValueError, match="shape"):
        DualWeightFusion(p)


def test_gradients_reach_both_gates_and_the_learner_side():
    m = DualWeightFusionModule(H)
    f_c = torch.rand(4, H)
    f_r = torch.rand(4, H, requires_grad=True)
    m(f_c, f_r).sum().backward()
    assert m.gate_c.weight.grad is not None and m.gate_c.weight.grad.abs().sum() > 0
    assert m.gate_r.weight.grad is not None and m.gate_r.weight.grad.abs().sum() > 0
    assert f_r.grad is not None and f_r.grad.abs().sum() > 0
