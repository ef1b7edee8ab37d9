"""loki.nn: the numpy runtime reads exported arrays and computes what torch computes."""

import itertools
import json

import numpy as np
import pytest

from loki.nn import MIN_STD, Mlp, Normalizer, load_model, sigmoid


def _params(rng, sizes, prefix):
    p = {}
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        p[f"{prefix}.{i}.weight"] = rng.normal(size=(n_out, n_in)).astype(np.float32)
        p[f"{prefix}.{i}.bias"] = rng.normal(size=n_out).astype(np.float32)
    return p


def test_mlp_applies_tanh_except_on_a_linear_last_layer():
    rng = np.random.default_rng(0)
    p = _params(rng, [5, 4, 3], "t")
    x = rng.normal(size=5).astype(np.float32)
    h = np.tanh(p["t.0.weight"] @ x + p["t.0.bias"])
    linear_out = p["t.1.weight"] @ h + p["t.1.bias"]
    np.testing.assert_allclose(Mlp(p, "t", tanh_last=False)(x), linear_out, rtol=1e-5)
    np.testing.assert_allclose(Mlp(p, "t", tanh_last=True)(x), np.tanh(linear_out), rtol=1e-5)
    m = Mlp(p, "t", tanh_last=True)
    assert (m.in_size, m.out_size) == (5, 3)


def test_mlp_missing_prefix_is_an_error():
    with pytest.raises(KeyError, match="nope"):
        Mlp({}, "nope", tanh_last=True)


def test_normalizer_scales_and_guards_zero_spread():
    norm = Normalizer(np.array([1.0, 2.0]), np.array([2.0, 0.0]))
    out = norm(np.array([3.0, 2.5], dtype=np.float32))
    np.testing.assert_allclose(out, [1.0, 0.5 / MIN_STD], rtol=1e-5)


def test_load_model_round_trip_keeps_strings(tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, w=np.arange(3, dtype=np.float64), meta=np.array(json.dumps({"kind": "rl"})))
    got = load_model(path)
    assert got["w"].dtype == np.float32
    assert json.loads(str(got["meta"])) == {"kind": "rl"}


def test_sigmoid_is_bounded_and_symmetric():
    x = np.array([-50.0, -1.0, 0.0, 1.0, 50.0])
    y = sigmoid(x)
    assert np.all((y >= 0) & (y <= 1))
    np.testing.assert_allclose(y + sigmoid(-x), 1.0)
    assert y[2] == 0.5
