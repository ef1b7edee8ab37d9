"""Learned controllers: the action's meaning, the GCC fallback, the hybrid's schedule, the
registry, and numpy models built from exported files."""

import json

import numpy as np
import pytest

from loki.api import ControllerConfig, TransportFeedback
from loki.controllers import controller_names, make_controller
from loki.features import OBS_SIZE
from loki.learned import HYBRID_EVERY_REPORTS, HybridController, RatioController
from loki.learned.controller import AnchoredController
from loki.learned.guard import InputGuard
from loki.learned.models import controller_from_model

CFG = ControllerConfig(start_bps=300_000, min_bps=30_000, max_bps=20_000_000)


def _report(k: int, n: int = 10, delay_us: int = 20_000, lost: tuple[int, ...] = ()):
    """Report k: n packets sent evenly over the 100 ms before it, all received after delay_us."""
    t0 = k * 100_000
    send = [t0 + i * (100_000 // n) for i in range(n)]
    arrival = [s + delay_us if i not in lost else -1 for i, s in enumerate(send)]
    seq = list(range(k * n, (k + 1) * n))
    return TransportFeedback.from_lists(t0 + 100_000 + delay_us, seq, send, arrival, [1200] * n)


def _drive(ctl, reports: int, start: int = 1):
    for k in range(start, start + reports):
        ctl.on_rtt(40_000, k * 100_000)
        ctl.on_process_interval(k * 100_000)
        ctl.on_feedback(_report(k))


def test_ratio_action_scales_the_previous_rate():
    ctl = RatioController(CFG, policy=lambda x: 0.5)
    start = ctl.target_bps
    _drive(ctl, 3)
    assert ctl.target_bps == pytest.approx(start * 2**1.5, rel=1e-3)
    assert ctl.decisions == 3 and ctl.fallbacks == 0


def test_actions_are_clipped_and_rates_bounded():
    ctl = RatioController(CFG, policy=lambda x: 7.0)
    start = ctl.target_bps
    _drive(ctl, 1)
    assert ctl.target_bps == pytest.approx(start * 2.0, rel=1e-3)  # +7 acts as +1
    _drive(ctl, 30, start=2)
    assert ctl.target_bps == CFG.max_bps


def test_nan_output_falls_back_to_the_parallel_gcc():
    ctl = RatioController(CFG, policy=lambda x: float("nan"))
    _drive(ctl, 4)
    assert ctl.fallbacks == 4
    assert ctl.target_bps == ctl.gcc.target_bps


def test_out_of_range_input_never_reaches_the_network():
    calls = []

    def policy(x):
        calls.append(x)
        return 0.2

    # A training range that excludes any non-zero queue delay: every report leaves it.
    low = np.full(OBS_SIZE, -1e-6, dtype=np.float32)
    high = np.full(OBS_SIZE, 1e-6, dtype=np.float32)
    ctl = RatioController(CFG, policy=policy, guard=InputGuard(low, high))
    _drive(ctl, 5)
    assert calls == []
    assert ctl.guard.out_of_range == 5 and ctl.fallbacks == 5
    assert ctl.target_bps == ctl.gcc.target_bps


def test_external_mode_waits_for_the_agent():
    ctl = RatioController(CFG)
    _drive(ctl, 1)
    assert ctl.awaiting_action and ctl.obs.shape == (OBS_SIZE,)
    before = ctl.target_bps
    ctl.apply_action(-1.0)
    assert not ctl.awaiting_action
    assert ctl.target_bps == pytest.approx(before / 2, rel=1e-3)


def test_hybrid_decides_every_fourth_report_and_scales_gcc():
    picks = []

    def policy(x):
        picks.append(x.shape[0])
        return 1.0

    ctl = HybridController(CFG, policy=policy)
    _drive(ctl, 2 * HYBRID_EVERY_REPORTS)
    assert len(picks) == 2 and picks[0] == HybridController.obs_size == OBS_SIZE + 2
    assert ctl.target_bps == CFG.clamp(ctl.gcc.target_bps * 2.0)


def test_hybrid_fallback_is_gcc_itself():
    ctl = HybridController(CFG, policy=lambda x: float("inf"))
    _drive(ctl, HYBRID_EVERY_REPORTS)
    assert ctl.fallbacks == 1 and ctl.target_bps == ctl.gcc.target_bps


def test_anchored_scales_gcc_at_every_report_on_the_shared_features():
    picks = []

    def policy(x):
        picks.append(x.shape[0])
        return -0.5

    ctl = AnchoredController(CFG, policy=policy)
    _drive(ctl, 5)
    assert picks == [OBS_SIZE] * 5
    assert ctl.target_bps == CFG.clamp(ctl.gcc.target_bps * 2.0**-0.5)
    # The level is GCC's: a constant action is a constant factor, not a drift.
    _drive(ctl, 20, start=6)
    assert ctl.target_bps == CFG.clamp(ctl.gcc.target_bps * 2.0**-0.5)


def test_anchored_fallback_is_gcc_itself():
    ctl = AnchoredController(CFG, policy=lambda x: float("nan"))
    _drive(ctl, 3)
    assert ctl.fallbacks == 3 and ctl.target_bps == ctl.gcc.target_bps


def test_probes_come_from_the_parallel_gcc():
    ctl = RatioController(CFG, policy=lambda x: 0.0)
    clusters = ctl.pop_probe_clusters()
    assert clusters, "GCC probes at start-up; the learned controller passes its requests on"
    assert ctl.pop_probe_clusters() == []


def _write_model(path, kind: str, obs_size: int, seed: int = 0, **meta):
    rng = np.random.default_rng(seed)

    def lin(prefix, n_in, n_out):
        return {
            f"{prefix}.weight": rng.normal(0, 0.1, (n_out, n_in)).astype(np.float32),
            f"{prefix}.bias": rng.normal(0, 0.1, n_out).astype(np.float32),
        }

    p = {
        "obs_mean": np.zeros(obs_size, np.float32),
        "obs_std": np.ones(obs_size, np.float32),
        "obs_low": np.full(obs_size, -100, np.float32),
        "obs_high": np.full(obs_size, 100, np.float32),
        "meta": np.array(json.dumps({"kind": kind, **meta})),
    }
    if kind == "loki":
        for side in ("clone", "learner"):
            p |= lin(f"{side}.trunk.0", obs_size, 16) | lin(f"{side}.trunk.1", 16, 16)
        p |= lin("fusion.gate_c", 32, 16) | lin("fusion.gate_r", 32, 16) | lin("head.0", 16, 1)
    else:
        prefix = "clone" if kind == "clone" else "actor"
        p |= lin(f"{prefix}.trunk.0", obs_size, 16) | lin(f"{prefix}.trunk.1", 16, 16)
        p |= lin(f"{prefix}.head.0", 16, 1)
    np.savez(path, **p)
    return path


@pytest.mark.parametrize("kind", ["clone", "rl", "loki", "hybrid"])
def test_controllers_from_exported_models_run(tmp_path, kind):
    size = HybridController.obs_size if kind == "hybrid" else OBS_SIZE
    path = _write_model(tmp_path / f"{kind}.npz", kind, size)
    ctl = controller_from_model(path, CFG)
    assert isinstance(ctl, HybridController if kind == "hybrid" else RatioController)
    _drive(ctl, 8)
    assert ctl.fallbacks == 0 and ctl.decisions >= 2
    assert CFG.min_bps <= ctl.target_bps <= CFG.max_bps


def test_a_loki_model_anchored_at_gcc_runs_anchored(tmp_path):
    path = _write_model(tmp_path / "anchored.npz", "loki", OBS_SIZE, anchor="gcc")
    ctl = controller_from_model(path, CFG)
    assert isinstance(ctl, AnchoredController)
    _drive(ctl, 8)
    assert ctl.fallbacks == 0 and ctl.decisions == 8
    assert CFG.clamp(ctl.gcc.target_bps // 2) <= ctl.target_bps <= CFG.clamp(ctl.gcc.target_bps * 2)


def test_unknown_model_kind_is_refused(tmp_path):
    path = _write_model(tmp_path / "m.npz", "rl", OBS_SIZE)
    z = dict(np.load(path))
    z["meta"] = np.array(json.dumps({"kind": "mystery"}))
    np.savez(path, **z)
    with pytest.raises(ValueError, match="mystery"):
        controller_from_model(path)


def test_a_model_of_another_feature_set_is_refused_with_the_reason(tmp_path):
    path = _write_model(tmp_path / "old.npz", "rl", OBS_SIZE - 20)
    with pytest.raises(ValueError, match=f"takes {OBS_SIZE - 20} inputs.*retrain"):
        controller_from_model(path)


def test_learned_controllers_are_registered():
    names = controller_names()
    for n in ("gcc-clone", "rl", "loki", "hybrid"):
        assert n in names


def test_committed_models_load_and_decide():
    for name in ("gcc-clone", "rl", "loki", "hybrid"):
        ctl = make_controller(name, CFG)
        _drive(ctl, 8)
        assert ctl.decisions >= 2, name
        assert CFG.min_bps <= ctl.target_bps <= CFG.max_bps


def test_inference_needs_no_torch():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from loki.controllers import make_controller\n"
        "for n in ('gcc-clone', 'rl', 'loki', 'hybrid'):\n"
        "    make_controller(n)\n"
        "assert 'torch' not in sys.modules and 'stable_baselines3' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
