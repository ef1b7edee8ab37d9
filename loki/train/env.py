"""The training environment: a learned controller, driven by an agent, over a drawn link.

One step is one decision of a :class:`~loki.learned.controller.LearnedController` run with
``policy=None``: the very object the emulator and the sender run at inference, so features,
the guard and the action's meaning cannot differ between training and use. The agent's action
goes to ``apply_action``; the session then runs to the next decision report.

The reward (:class:`Reward`) is computed over the step's interval from the session's ground
truth, which the agent never observes; it mirrors how sessions are judged (loki-design.md):

    r = utilisation - W_STALL x frozen share - W_DELAY x excess frame delay (s)
        - W_LOSS x loss - W_CHANGE x |log2 rate change|

* utilisation: video bytes rendered in the interval over the link's capacity in the last
  second (capped at 1): scale-free, so 0.3 Mbps and 30 Mbps links weigh alike;
* frozen share: the part of the interval the receiver spent in a freeze (render gap beyond the
  webrtc-stats threshold at the session's frame rate), counted as it accrues;
* excess frame delay: mean capture-to-render delay of the interval's frames beyond the link's
  one-way delay (with a path change's extra delay while one is in force: no action avoids it)
  plus :data:`DELAY_ALLOWANCE_MS`;
* loss: share of the interval's reported packets that were lost;
* the change term is Loki+'s complaint made a cost: a controller that swings between the ends
  of its action range pays for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import gymnasium as gym
import numpy as np

from loki.emu.session import LinkConfig, Session, SessionConfig
from loki.learned.controller import LearnedController
from loki.qoe import FREEZE_MIN_EXTRA_MS
from loki.train.data import EpisodeSpec, LinkRanges, draw_spec

#: Frame delay above the one-way delay that costs nothing (encode, pacing, a short queue).
DELAY_ALLOWANCE_MS = 150.0
#: Window over which capacity is measured for the utilisation term.
CAPACITY_WINDOW_MS = 1000
#: Capacity floor for the utilisation term (an outage does not divide by zero).
MIN_CAPACITY_BPS = 50_000.0
#: Excess delay beyond this costs no more: a session seconds behind is lost either way, and a
#: bounded reward keeps the critic's targets in a learnable range.
MAX_EXCESS_DELAY_S = 2.0


@dataclass(frozen=True)
class Reward:
    """Weights of the reward's terms (see the module docstring)."""

    stall: float = 8.0
    delay: float = 0.6
    loss: float = 1.0
    change: float = 0.5


@dataclass
class StepStats:
    """What happened in one step's interval; the reward and the logs read it."""

    interval_s: float = 0.0
    utilisation: float = 0.0
    frozen_share: float = 0.0
    excess_delay_s: float = 0.0
    loss: float = 0.0
    change_log2: float = 0.0


class IntervalMeter:
    """Reads one session's receiver and send log incrementally, interval by interval."""

    def __init__(self, session: Session) -> None:
        self.session = session
        frame_ms = 1000.0 / session.config.fps
        self.freeze_gap_ms = max(3.0 * frame_ms, frame_ms + FREEZE_MIN_EXTRA_MS)
        self._render_i = 0
        self._last_render_ms = 0.0
        self._bytes_rendered = 0
        self._pkt_i = 0
        self._t_ms = 0.0

    def measure(self, target_before_bps: int, target_after_bps: int) -> StepStats:
        s = self.session
        rx = s.receiver
        now_ms = s.now_us / 1000.0
        t0 = self._t_ms
        dt_ms = max(now_ms - t0, 1.0)
        self._t_ms = now_ms
        # Utilisation: rendered video bytes over capacity in the last second.
        rendered = rx.frame_bytes_rendered - self._bytes_rendered
        self._bytes_rendered = rx.frame_bytes_rendered
        trace = s.link.trace
        lo = max(0, int(now_ms) - CAPACITY_WINDOW_MS)
        cap_bps = max(trace.capacity_bps(lo, int(now_ms)), MIN_CAPACITY_BPS)
        util = min(rendered * 8000.0 / dt_ms / cap_bps, 1.0)
        # Frozen time in (t0, now]: closed gaps, then the open one since the last render.
        render = rx.render_ms
        frozen = 0.0
        delays = rx.frame_delay_ms
        new_delays = delays[self._render_i :]
        last = self._last_render_ms
        for i in range(self._render_i, len(render)):
            r = render[i]
            if r - last > self.freeze_gap_ms:
                frozen += max(0.0, r - max(last, t0))
            last = r
        self._render_i = len(render)
        self._last_render_ms = last
        if now_ms - last > self.freeze_gap_ms:
            frozen += now_ms - max(last, t0)
        frozen_share = min(frozen / dt_ms, 1.0)
        excess_s = 0.0
        if new_delays:
            mean_delay_ms = sum(new_delays) / len(new_delays)
            path_ms = s.link.delay_ms + path_extra_ms(s.link, now_ms - mean_delay_ms, now_ms)
            excess_s = max(0.0, mean_delay_ms - path_ms - DELAY_ALLOWANCE_MS) / 1000.0
            excess_s = min(excess_s, MAX_EXCESS_DELAY_S)
        # Loss over the packets whose fate the sender learned in this interval.
        arrivals = s.arrival_us
        n = len(arrivals)
        # Packets still in flight are not lost yet: count sent packets older than one RTT only.
        sent = s.send_us
        horizon_us = s.now_us - 2 * s.link.delay_ms * 1000
        j = self._pkt_i
        end = j
        lost = 0
        while end < n and sent[end] <= horizon_us:
            if arrivals[end] < 0:
                lost += 1
            end += 1
        loss = lost / (end - j) if end > j else 0.0
        self._pkt_i = end
        change = abs(float(np.log2(max(target_after_bps, 1) / max(target_before_bps, 1))))
        return StepStats(dt_ms / 1000.0, util, frozen_share, excess_s, loss, change)


def path_extra_ms(link: LinkConfig, from_ms: float, to_ms: float) -> int:
    """The largest path change (``LinkConfig.path_delay_steps_ms``) in force over the span:
    delay that no rate choice avoids, so the reward does not charge it."""
    return max(
        (
            extra
            for start, end, extra in link.path_delay_steps_ms
            if start < to_ms and end > from_ms
        ),
        default=0,
    )


#: Episodes drawn in a row without a single decision before reset() gives up.
MAX_EMPTY_DRAWS = 100


class NoDecisionError(RuntimeError):
    """The episode's link delivered nothing that produced a feedback report."""


def reward_of(stats: StepStats, w: Reward) -> float:
    return (
        stats.utilisation
        - w.stall * stats.frozen_share
        - w.delay * stats.excess_delay_s
        - w.loss * stats.loss
        - w.change * stats.change_log2
    )


class ControllerEnv(gym.Env):
    """Episodes of a learned controller over links drawn from the training traces."""

    metadata = {"render_modes": []}  # noqa: RUF012 - gymnasium's convention

    def __init__(
        self,
        trace_paths: list[str],
        make_controller: Callable[[], LearnedController],
        *,
        episode_s: float = 30.0,
        ranges: LinkRanges | None = None,
        reward: Reward | None = None,
        seed: int = 0,
    ) -> None:
        if not trace_paths:
            raise ValueError("ControllerEnv needs at least one trace")
        self.trace_paths = list(trace_paths)
        self.make_controller = make_controller
        self.episode_s = episode_s
        self.ranges = ranges or LinkRanges()
        self.weights = reward or Reward()
        probe = make_controller()
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (probe.obs_size,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self._rng = np.random.default_rng(seed)
        self.session: Session | None = None
        self.controller: LearnedController | None = None
        self.meter: IntervalMeter | None = None
        self.spec: EpisodeSpec | None = None
        self.last_stats = StepStats()

    def start(self, spec: EpisodeSpec) -> np.ndarray:
        """Begin the episode ``spec`` (reset() draws one); returns the first observation."""
        self.spec = spec
        self.controller = self.make_controller()
        cfg = SessionConfig(duration_s=spec.duration_s, seed=spec.seed)
        self.session = Session(self.controller, spec.link(), cfg)
        self.meter = IntervalMeter(self.session)
        if not self._advance():
            raise NoDecisionError(f"{spec.trace_path}: no report in the episode")
        self.meter.measure(self.controller.target_bps, self.controller.target_bps)
        return self.controller.agent_observation()

    def _advance(self) -> bool:
        """Run the session to the next report that wants an action; False at the end."""
        assert self.session is not None and self.controller is not None
        while self.session.step():
            if self.controller.awaiting_action:
                return True
        return False

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        # A window of a trace can carry nothing for a whole episode (a long outage): no report
        # ever comes, so there is nothing to decide; draw another one.
        for _ in range(MAX_EMPTY_DRAWS):
            spec = draw_spec(self.trace_paths, self._rng, self.episode_s, self.ranges)
            try:
                return self.start(spec), {"trace": spec.trace_path}
            except NoDecisionError:
                continue
        raise RuntimeError(
            f"{MAX_EMPTY_DRAWS} episodes in a row ended before their first decision: do the "
            "training traces carry any capacity?"
        )

    def step(self, action):
        ctl, session, meter = self.controller, self.session, self.meter
        assert ctl is not None and session is not None and meter is not None, "reset() first"
        before = ctl.target_bps
        fallbacks_before = ctl.fallbacks
        ctl.apply_action(float(np.asarray(action, dtype=np.float64).reshape(-1)[0]))
        after = ctl.target_bps
        session.refresh_target()
        alive = self._advance()
        self.last_stats = meter.measure(before, after)
        reward = reward_of(self.last_stats, self.weights)
        info = {
            "target_bps": after,
            "fallback": ctl.fallbacks - fallbacks_before,
            "stats": asdict(self.last_stats),
        }
        # The session ends on a clock, not in a terminal state: a truncation (the value of the
        # last state is bootstrapped, not taken as zero).
        return ctl.agent_observation(), float(reward), False, not alive, info
