"""The Gymnasium environment over the emulator: API contract, actions, determinism."""

import math

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from loki.api import ControllerConfig
from loki.emu.gym_env import LinkRandomizer, StreamingEnv
from loki.features import OBS_SIZE
from traces.generators import constant


def env(**kw) -> StreamingEnv:
    kw.setdefault("episode_s", 5.0)
    return StreamingEnv([constant(3e6, 10_000)], seed=0, **kw)


def test_passes_gymnasium_checker():
    check_env(env(), skip_render_check=True)


def test_one_step_per_feedback_report_until_the_episode_ends():
    e = env(episode_s=3.0)
    obs, info = e.reset(seed=1)
    assert obs.shape == (OBS_SIZE,) and obs.dtype == np.float32
    assert info["trace"] == "const-3mbps" or info["trace"]
    steps, done = 0, False
    while not done:
        obs, reward, done, truncated, _ = e.step(np.zeros(1, dtype=np.float32))
        assert np.all(np.isfinite(obs)) and math.isfinite(reward) and not truncated
        steps += 1
    assert steps == pytest.approx(3.0 / 0.1, abs=2)


def test_multiplier_action_halves_and_doubles():
    e = env(action_mode="multiplier")
    assert e.action_to_rate(1.0, 1_000_000) == pytest.approx(2_000_000)
    assert e.action_to_rate(-1.0, 1_000_000) == pytest.approx(500_000)
    assert e.action_to_rate(7.0, 1_000_000) == pytest.approx(2_000_000)  # clipped


def test_absolute_action_spans_the_configured_range():
    cc = ControllerConfig(start_bps=300_000, min_bps=100_000, max_bps=10_000_000)
    e = env(action_mode="absolute", controller_config=cc)
    assert e.action_to_rate(-1.0, 0) == pytest.approx(100_000)
    assert e.action_to_rate(1.0, 0) == pytest.approx(10_000_000)
    assert e.action_to_rate(0.0, 0) == pytest.approx(1_000_000)


def test_the_agent_rate_reaches_the_sender():
    e = env(episode_s=10.0)
    e.reset(seed=2)
    for _ in range(60):
        _, _, done, _, info = e.step(np.array([0.1], dtype=np.float32))
        if done:
            break
    # 60 decisions of x2^0.1 from 300 kbps reach the 3 Mbps link: what was sent follows.
    assert info["target_bps"] > 2_000_000
    tl = e.session.timeline()
    assert np.nanmax(tl["sent_kbps"]) > 2000


def test_reward_penalises_overshoot():
    def total(action: float) -> float:
        e = env(episode_s=8.0, link=LinkRandomizer(delay_ms=(20, 20), queue_packets=None))
        e.reset(seed=3)
        acc, done = 0.0, False
        while not done:
            _, r, done, _, _ = e.step(np.array([action], dtype=np.float32))
            acc += r
        return acc

    # Doubling every 100 ms floods a 3 Mbps link; holding near the start rate does not.
    assert total(1.0) < total(0.0)


def test_same_seed_same_episode():
    def rollout(seed):
        e = env()
        obs, _ = e.reset(seed=seed)
        out = [obs]
        for a in np.linspace(-0.5, 0.5, 20):
            obs, r, _done, _, _ = e.step(np.array([a], dtype=np.float32))
            out.append(np.append(obs, r))
        return out

    a, b = rollout(5), rollout(5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        StreamingEnv([])
    with pytest.raises(ValueError):
        env(action_mode="percent")
