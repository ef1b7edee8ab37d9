"""``--ray-address`` on a real (local) Ray cluster: every trainer and judge that can spread its
work over Ray gets the very same result there as on local processes.

Ray runs here as a two-CPU cluster started by this module (``address="local"``); a remote
cluster differs only in where the tasks and actors run. Each comparison is exact: the jobs
are seeded, so where they run must not change a bit of the outcome.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.lib import runner
from bench.lib.runner import BenchOptions
from bench.lib.sessions import SessionLog
from loki.ab import ab_specs, run_pairs
from loki.experience import log_emulated_session
from loki.learned.models import model_path
from loki.nn import load_model
from loki.train.clone import train as train_clone
from loki.train.data import EpisodeSpec
from loki.train.online import train_online
from loki.train.ray_vec_env import RayVecEnv
from loki.train.rl import RlArgs
from loki.train.rl import train as train_rl
from traces.generators import constant, markov_modulated
from traces.mahimahi import write_mahimahi

ray = pytest.importorskip("ray", reason="Ray is installed by scripts/test.sh (the ray extra)")

ADDRESS = "local"
PPO_SMOKE = {"steps": 128, "n_steps": 64, "batch": 32, "epochs": 1, "episode_s": 3.0}


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(address=ADDRESS, num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def remote_calls(monkeypatch) -> list[str]:
    """Names of what went to ``ray.remote``: proof that the Ray path ran, not the local one."""
    calls: list[str] = []
    original = ray.remote

    def counting(*args, **kwargs):
        target = args[0] if args and callable(args[0]) else None
        calls.append(getattr(target, "__name__", "options"))
        return original(*args, **kwargs)

    monkeypatch.setattr(ray, "remote", counting)
    return calls


def _same_weights(a: Path, b: Path) -> bool:
    pa, pb = load_model(a), load_model(b)
    return pa.keys() == pb.keys() and all(np.array_equal(pa[k], pb[k]) for k in pa if k != "meta")


def test_clone_dagger_episodes_on_ray_tasks_give_the_same_clone(
    family, clone, clone_args, tmp_path, remote_calls
):
    """The shared ``clone`` fixture is the same run on local processes."""
    on_ray = train_clone(clone_args(family, tmp_path / "ray", ray_address=ADDRESS))
    assert _same_weights(on_ray, clone)
    assert remote_calls


def test_ppo_rollouts_on_ray_actors_give_the_same_policy(family, clone, tmp_path, monkeypatch):
    """Two environments in Ray actors (RayVecEnv) against two in subprocesses (SB3's
    SubprocVecEnv): same seeds, same rollouts, same weights."""
    built = []
    original = RayVecEnv.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        built.append(len(self.actors))

    monkeypatch.setattr(RayVecEnv, "__init__", spy)
    common = {"traces": [family], "clone": clone, "workers": 2, **PPO_SMOKE}
    local = train_rl(RlArgs(out=tmp_path / "local", **common))
    on_ray = train_rl(RlArgs(out=tmp_path / "ray", ray_address=ADDRESS, **common))
    assert built == [2], "the Ray run must collect its rollouts from two Ray actors"
    assert _same_weights(on_ray, local)


def test_ab_sessions_on_ray_tasks_are_the_local_sessions(family, remote_calls):
    specs = ab_specs([family], 1, 0, 5.0)
    local = run_pairs(specs, "gcc", "loki", workers=1)
    on_ray = run_pairs(specs, "gcc", "loki", ray_address=ADDRESS)
    assert remote_calls == ["run_session"]
    assert len(on_ray[0]) == len(specs) > 0
    assert on_ray == local


def test_online_update_gathers_logs_on_ray_to_the_same_model(tmp_path, remote_calls):
    trace = tmp_path / "mm.up"
    write_mahimahi(markov_modulated(20_000, seed=4), trace)
    logs = tmp_path / "logs"
    logs.mkdir()
    loki = model_path("loki")
    for k in range(2):
        spec = EpisodeSpec(str(trace), 1000 * k, 30, 100, 0.0, 5.0, seed=k)
        log_emulated_session((spec, str(loki), str(logs / f"{k}.explog"), 0.1, k))
    local = train_online([logs], loki, tmp_path / "local", seed=0, epochs=1)
    assert not remote_calls
    on_ray = train_online([logs], loki, tmp_path / "ray", seed=0, epochs=1, ray_address=ADDRESS)
    assert remote_calls
    assert on_ray["decisions"] == local["decisions"] > 0
    assert _same_weights(tmp_path / "ray" / "model.npz", tmp_path / "local" / "model.npz")


def test_qoe_benchmark_sessions_on_ray_are_the_local_sessions(tmp_path, remote_calls):
    traces = tmp_path / "gen"
    traces.mkdir()
    write_mahimahi(constant(2e6, 8000, name="c2"), traces / "c2.mahi")
    write_mahimahi(markov_modulated(8000, seed=3, name="m3"), traces / "m3.mahi")
    records = {}
    for where, kw in (("local", {"workers": 1}), ("ray", {"ray_address": ADDRESS})):
        opts = BenchOptions(
            traces=[traces],
            controllers=["gcc", "rl"],
            out=tmp_path / where,
            duration_s=6.0,
            resamples=200,
            worst=0,
            progress=False,
            plots=False,
            **kw,
        )
        runner.run(opts, echo=lambda _msg: None)
        records[where] = sorted(
            (json.dumps(r["task"], sort_keys=True), json.dumps(r["qoe"], sort_keys=True))
            for r in SessionLog(opts.out).records.values()
        )
    assert remote_calls == ["options"]  # ray.remote(num_cpus=1)(run_task)
    assert len(records["ray"]) == 4
    assert records["ray"] == records["local"]
