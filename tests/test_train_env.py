"""The training environment: one step per decision, reward terms from ground truth, seeds."""

import json
from types import SimpleNamespace

import numpy as np
import pytest

from loki.api import ControllerConfig
from loki.features import OBS_SIZE
from loki.learned import HYBRID_EVERY_REPORTS, HybridController, RatioController
from loki.train.data import LinkRanges, training_trace_paths
from loki.train.env import ControllerEnv, IntervalMeter, Reward, StepStats, reward_of
from traces.generators import constant
from traces.mahimahi import write_mahimahi

RANGES = LinkRanges(delay_ms=(20, 20), queue_packets=(100, 100), loss=(0.0, 0.0))


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    d = tmp_path_factory.mktemp("fam")
    (d / "SOURCE.json").write_text(json.dumps({"name": "fam"}))
    write_mahimahi(constant(2e6, 10_000), d / "c2.mahi")
    return training_trace_paths([d])


def _env(paths, cls=RatioController, seed=0):
    return ControllerEnv(
        paths, lambda: cls(ControllerConfig()), episode_s=3.0, ranges=RANGES, seed=seed
    )


def test_steps_are_decisions_until_the_clock_runs_out(paths):
    env = _env(paths)
    obs, _ = env.reset()
    assert obs.shape == (OBS_SIZE,) and np.isfinite(obs).all()
    n, truncated = 0, False
    while not truncated:
        obs, r, terminated, truncated, info = env.step(np.array([0.1]))
        assert not terminated and np.isfinite(r)
        assert set(info["stats"]) >= {"utilisation", "frozen_share", "change_log2"}
        n += 1
    assert 25 <= n <= 30  # 3 s of 100 ms reports


def test_action_moves_the_rate_and_pays_the_change_cost(paths):
    env = _env(paths)
    env.reset()
    before = env.controller.target_bps
    _, _, _, _, info = env.step(np.array([1.0]))
    assert info["target_bps"] == pytest.approx(2 * before, rel=1e-3)
    assert env.last_stats.change_log2 == pytest.approx(1.0, abs=1e-3)


def test_same_seed_same_episode(paths):
    def run(seed):
        env = _env(paths, seed=seed)
        env.reset(seed=seed)
        return [env.step(np.array([0.2]))[1] for _ in range(10)]

    assert run(3) == run(3)


def test_hybrid_steps_span_four_reports(paths):
    env = _env(paths, HybridController)
    obs, _ = env.reset()
    assert obs.shape == (HybridController.obs_size,)
    t0 = env.session.now_us
    env.step(np.array([0.0]))
    assert env.session.now_us - t0 == pytest.approx(HYBRID_EVERY_REPORTS * 100_000, abs=5_000)


def test_reward_combines_the_terms():
    s = StepStats(
        0.1, utilisation=0.8, frozen_share=0.1, excess_delay_s=0.2, loss=0.05, change_log2=0.3
    )
    w = Reward(stall=4.0, delay=1.0, loss=2.0, change=0.5)
    assert reward_of(s, w) == pytest.approx(0.8 - 0.4 - 0.2 - 0.1 - 0.15)


def _fake_session(render_ms, now_ms, path_delay_steps_ms=(), frame_delay_ms=50.0):
    rx = SimpleNamespace(
        render_ms=render_ms,
        frame_delay_ms=[frame_delay_ms] * len(render_ms),
        frame_bytes_rendered=0,
    )
    link = SimpleNamespace(
        trace=constant(1e6, 10_000), delay_ms=20, path_delay_steps_ms=path_delay_steps_ms
    )
    return SimpleNamespace(
        receiver=rx,
        link=link,
        config=SimpleNamespace(fps=30.0),
        now_us=int(now_ms * 1000),
        arrival_us=[],
        send_us=[],
    )


def test_frozen_share_counts_gaps_beyond_the_freeze_threshold_as_they_accrue():
    s = _fake_session([0.0, 33.0, 66.0], 100.0)
    meter = IntervalMeter(s)  # threshold max(3 x 33.3, 33.3 + 150) = 183.3 ms
    assert meter.measure(1, 1).frozen_share == 0.0
    # No frame from 66 ms to 400 ms: the gap is a freeze from 66 ms on; this interval
    # (100, 400] holds 300 ms of it.
    s.now_us = 400_000
    assert meter.measure(1, 1).frozen_share == pytest.approx(1.0)
    # A frame at 450 closes the gap; (400, 450] was frozen, the rest of (400, 500] not.
    s.receiver.render_ms += [450.0, 483.0]
    s.receiver.frame_delay_ms += [50.0, 50.0]
    s.now_us = 500_000
    assert meter.measure(1, 1).frozen_share == pytest.approx(0.5)


def test_windows_that_carry_nothing_are_redrawn(paths, tmp_path, monkeypatch):
    """A trace window without a single report (a long outage) has nothing to decide: reset()
    draws another episode instead of failing the training run."""
    import loki.train.env as env_module
    from loki.train.data import EpisodeSpec
    from traces.trace import Trace

    outage = write_mahimahi(Trace("late", np.array([10_000])), tmp_path / "late.mahi")
    live = EpisodeSpec(paths[0], 0, 20, 100, 0.0, 3.0, seed=1)
    dead = EpisodeSpec(str(outage), 0, 20, 100, 0.0, 3.0, seed=1)  # nothing for 10 s
    env = _env(paths)
    with pytest.raises(env_module.NoDecisionError):
        env.start(dead)
    draws = iter([dead, dead, live])
    monkeypatch.setattr(env_module, "draw_spec", lambda *a: next(draws))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (OBS_SIZE,) and env.spec == live
    monkeypatch.setattr(env_module, "draw_spec", lambda *a: dead)
    with pytest.raises(RuntimeError, match="in a row ended before their first decision"):
        env.reset(seed=0)


def test_delay_a_path_change_adds_is_not_charged_as_excess():
    """Frames 1000 ms late on a 20 ms path: 830 ms beyond the path and the 150 ms allowance;
    while a path change adds 960 ms, nothing (no rate choice avoids that delay)."""
    plain = IntervalMeter(_fake_session([0.0, 33.0, 66.0], 100.0, frame_delay_ms=1000.0))
    assert plain.measure(1, 1).excess_delay_s == pytest.approx(0.83)
    s = _fake_session([0.0, 33.0, 66.0], 100.0, ((0, 5_000, 960),), frame_delay_ms=1000.0)
    assert IntervalMeter(s).measure(1, 1).excess_delay_s == 0.0
    # A change that ended long before the frames were captured is no excuse.
    s = _fake_session([0.0, 33.0, 66.0], 100.0, ((0, 1, 960),), frame_delay_ms=1000.0)
    s.receiver.render_ms = [3000.0, 3033.0, 3066.0]
    s.now_us = 3_100_000
    assert IntervalMeter(s).measure(1, 1).excess_delay_s == pytest.approx(0.83)
