"""A Gymnasium environment over the emulator: one step per controller decision.

Each step the agent sees the observation of :mod:`loki.features` for the newest feedback report
and answers a rate; the session runs until the next report arrives. Links are randomised per
episode (trace, start offset, one-way delay, drop-tail queue, random loss) so a policy does not
learn one network by heart.

Actions (``action_mode``):

* ``"absolute"``: a in [-1, 1] maps log-linearly onto [min_bps, max_bps];
* ``"multiplier"``: the previous rate times ``2 ** a`` (halve to double per decision).

Rewards (``reward``) are computed from the report and from the session's ground truth, which
the agent never observes; see :func:`reward_qoe`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from loki.api import Controller, ControllerConfig, TransportFeedback
from loki.emu.session import LinkConfig, Session, SessionConfig
from loki.features import FEATURE_HIGH, FEATURE_LOW, HISTORY, OBS_SIZE, FeatureBuilder
from traces.trace import Trace


class ExternalController(Controller):
    """A controller whose rate is set from outside (by an agent); it also records features."""

    name = "external"

    def __init__(self, config: ControllerConfig | None = None) -> None:
        super().__init__(config)
        self._rate_bps = self.config.start_bps
        self.features = FeatureBuilder()
        self.last_row: np.ndarray | None = None

    @property
    def target_bps(self) -> int:
        return self._rate_bps

    def set_rate(self, rate_bps: float) -> int:
        self._rate_bps = self.config.clamp(rate_bps)
        return self._rate_bps

    def on_rtt(self, rtt_us: int, at_us: int) -> None:
        self.features.on_rtt(rtt_us)

    def on_feedback(self, report: TransportFeedback) -> int:
        self.last_row = self.features.row(report, self._rate_bps)
        return self._rate_bps


@dataclass
class LinkRandomizer:
    """Ranges an episode's link is drawn from."""

    delay_ms: tuple[int, int] = (10, 80)
    queue_packets: tuple[int, int] | None = (50, 400)
    loss: tuple[float, float] = (0.0, 0.02)

    def draw(self, trace: Trace, rng: np.random.Generator) -> LinkConfig:
        q = None if self.queue_packets is None else int(rng.integers(*self.queue_packets))
        return LinkConfig(
            trace=trace,
            delay_ms=int(rng.integers(self.delay_ms[0], self.delay_ms[1] + 1)),
            queue_packets=q,
            loss=float(rng.uniform(*self.loss)),
        )


def reward_qoe(env: StreamingEnv, report: TransportFeedback, row: np.ndarray) -> float:
    """Delivered rate, less penalties for queueing delay and loss (OnRL/HRCC-style shape).

    ``recv`` in Mbps (log scale of features undone), queue delay in seconds above the session's
    minimum, loss a fraction: r = recv_mbps - 2 * max(0, qdelay_s - 0.05) * 10 - 5 * loss.
    """
    recv_mbps = 2.0 ** float(row[0]) - 1.0
    qdelay_s = float(row[3]) / 10.0
    loss = float(row[6])
    return recv_mbps - 20.0 * max(0.0, qdelay_s - 0.05) - 5.0 * loss


class StreamingEnv(gym.Env):
    """One episode = one emulated session on a randomly drawn link."""

    metadata = {"render_modes": []}  # noqa: RUF012 - gymnasium's convention

    def __init__(
        self,
        traces: Sequence[Trace],
        *,
        episode_s: float = 60.0,
        action_mode: str = "multiplier",
        reward: Callable[[StreamingEnv, TransportFeedback, np.ndarray], float] = reward_qoe,
        link: LinkRandomizer | None = None,
        controller_config: ControllerConfig | None = None,
        seed: int | None = None,
    ) -> None:
        if not traces:
            raise ValueError("StreamingEnv needs at least one trace")
        if action_mode not in ("absolute", "multiplier"):
            raise ValueError(f"action_mode must be 'absolute' or 'multiplier', got {action_mode!r}")
        self.traces = list(traces)
        self.episode_s = episode_s
        self.action_mode = action_mode
        self.reward_fn = reward
        self.link = link or LinkRandomizer()
        self.cc = controller_config or ControllerConfig()
        self.observation_space = gym.spaces.Box(
            np.tile(FEATURE_LOW, HISTORY), np.tile(FEATURE_HIGH, HISTORY), (OBS_SIZE,), np.float32
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self._rng = np.random.default_rng(seed)
        self.session: Session | None = None
        self.controller: ExternalController | None = None

    def action_to_rate(self, action: float, prev_bps: int) -> float:
        a = float(np.clip(action, -1.0, 1.0))
        if self.action_mode == "multiplier":
            return prev_bps * 2.0**a
        lo, hi = math.log(self.cc.min_bps), math.log(self.cc.max_bps)
        return math.exp(lo + (a + 1.0) / 2.0 * (hi - lo))

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        trace = self.traces[int(self._rng.integers(len(self.traces)))]
        link = self.link.draw(trace, self._rng)
        self.controller = ExternalController(self.cc)
        cfg = SessionConfig(duration_s=self.episode_s, seed=int(self._rng.integers(2**31)))
        self.session = Session(self.controller, link, cfg)
        if not self.session.step():
            raise RuntimeError("episode ended before the first feedback report")
        return self.controller.features.observation(), {"trace": trace.name}

    def step(self, action):
        assert self.session is not None and self.controller is not None, "call reset() first"
        ctl = self.controller
        ctl.set_rate(self.action_to_rate(float(np.asarray(action).reshape(-1)[0]), ctl.target_bps))
        self.session.refresh_target()
        alive = self.session.step()
        report = self.session.last_report
        row = ctl.last_row
        obs = ctl.features.observation()
        reward = self.reward_fn(self, report, row) if alive and row is not None else 0.0
        return obs, float(reward), not alive, False, {"target_bps": ctl.target_bps}
