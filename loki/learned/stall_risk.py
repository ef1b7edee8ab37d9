"""A stall-risk layer learned from logged sessions: send less where a freeze is likely soon.

Why (loki/LEARNING.md, session 8): on the online demonstration's new network, the update by
advantage-weighted regression did no better than a constant factor on the shipped model's rate:
the logged actions vary too little for their advantages to be told from the network's noise.
What the logs do carry, plainly, is *when freezes happen*: from the observation alone, a
logistic regression tells whether the receiver will freeze within the next two seconds with an
AUC of about 0.8 (0.78 for a freeze's onset, with no freeze in the two seconds before). This
layer turns that into rate: the target the network asks for is multiplied by
``2 ** (-k (p - p_mean))``, where ``p`` is the predicted risk and ``p_mean`` its mean over the
logs, so the rate moves from the risky moments to the safe ones and stays about the same on
average; ``k`` is chosen by the A/B gate (loki train online --method risk, bench/online_demo.py).
A ``level`` multiplies the factor (``level * 2 ** (-k (p - p_mean))``): the network's operating
point is a draw of its PPO run (loki/LEARNING.md, session 4), and the level moves the layer's
output along the network's bitrate-for-stall curve without refitting anything (the shipped
loki's is 0.95, chosen on the development set for issue 4's bitrate and frame-delay bars;
session 11). It keeps the layer's exemption for a path change (never below 1 while the fault
floor holds one), which a constant factor outside the controller would cut: that failed the
RTT-jump fault.

Labels: the receiver's freezes, where a log has them (the emulator's ground truth); a live log,
which lacks them, uses the queueing delay the sender sees going above
:data:`PROXY_DELAY_100MS` within the horizon (a freeze needs a frame late by about that much).

The network beneath is untouched (its guard, fault floor and loss cap still act on its own
target): the layer scales what it asks for, as :class:`loki.controllers.ScaledController` does
with a constant.
"""

from __future__ import annotations

import numpy as np

from loki.api import TransportFeedback, WrappedController
from loki.learned.controller import LearnedController, Policy

#: Freezes within this many decisions (100 ms apart: two seconds) make a decision risky.
HORIZON_DECISIONS = 20
#: The factor stays within [1 / 2, 3 / 2] of the network's target.
MIN_FACTOR = 0.5
MAX_FACTOR = 1.5
#: The level stays within the factor's own bounds.
MIN_LEVEL = MIN_FACTOR
MAX_LEVEL = MAX_FACTOR


def check_level(level: float) -> None:
    """Raises ValueError unless ``level`` is within [MIN_LEVEL, MAX_LEVEL]."""
    if not MIN_LEVEL <= level <= MAX_LEVEL:
        raise ValueError(f"--risk-level must be within [{MIN_LEVEL:g}, {MAX_LEVEL:g}], got {level}")


#: Inverse regularisation of the logistic fit (on standardised inputs), as sklearn's C.
FIT_C = 0.1
FIT_ITERATIONS = 25
#: Live logs: queueing delay above this (100 ms units) within the horizon stands for a freeze.
PROXY_DELAY_100MS = 4.0
#: Names of the layer's arrays in a model file.
PARAM_KEYS = ("risk.mean", "risk.std", "risk.weight", "risk.bias")


def risk_rows(
    records: np.ndarray, horizon: int = HORIZON_DECISIONS
) -> tuple[np.ndarray, np.ndarray]:
    """(observations, labels) of one log: label 1 where a freeze (or, in a live log, its
    proxy) comes within the next ``horizon`` decisions. The last ``horizon`` decisions have no
    full future and are left out."""
    n = records.size - horizon
    if n <= 0:
        return np.zeros((0, records["obs"].shape[1]), np.float32), np.zeros(0, bool)
    frozen = records["frozen_share"].astype(np.float64)
    if np.all(np.isfinite(frozen)):
        bad = frozen > 0
    else:
        bad = records["queue_delay_100ms"].astype(np.float64) > PROXY_DELAY_100MS
    # bad within (k, k + horizon]: a running sum over the shifted window.
    c = np.concatenate([[0], np.cumsum(bad)])
    k = np.arange(n)
    labels = (c[k + 1 + horizon] - c[k + 1]) > 0
    return records["obs"][:n].astype(np.float32), labels


def fit_risk(
    x: np.ndarray, y: np.ndarray, c: float = FIT_C, iterations: int = FIT_ITERATIONS
) -> dict[str, np.ndarray]:
    """L2-regularised logistic regression on standardised inputs, by Newton's method.

    Minimises sum(log-loss) + ||w||^2 / (2 c) (the intercept unpenalised): the objective of
    sklearn's LogisticRegression(C=c), written out so that training needs numpy only.
    """
    if len(y) == 0 or y.min() == y.max():
        raise ValueError("the logs need decisions both followed and not followed by a freeze")
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=0)
    std = x.std(axis=0) + 1e-6
    z = np.concatenate([(x - mean) / std, np.ones((len(x), 1))], axis=1)
    t = np.asarray(y, np.float64)
    w = np.zeros(z.shape[1])
    reg = np.full(z.shape[1], 1.0 / c)
    reg[-1] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(z @ w)))
        grad = z.T @ (p - t) + reg * w
        hess = (z * (p * (1.0 - p))[:, None]).T @ z + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return {
        "risk.mean": mean.astype(np.float32),
        "risk.std": std.astype(np.float32),
        "risk.weight": w[:-1].astype(np.float32),
        "risk.bias": np.array([w[-1]], np.float32),
    }


class StallRisk:
    """The fitted layer: risk of a freeze soon, and the factor it puts on the rate."""

    __slots__ = ("_b", "_w", "k", "level", "mean_risk", "smoothing")

    def __init__(
        self,
        params: dict[str, np.ndarray],
        k: float,
        mean_risk: float,
        smoothing: float = 1.0,
        level: float = 1.0,
    ) -> None:
        if not 0 <= k < float("inf") or not 0 < mean_risk < 1:
            raise ValueError(
                f"stall risk needs k >= 0 and a mean risk in (0, 1), got {k}, {mean_risk}"
            )
        if not 0 < smoothing <= 1:
            raise ValueError(f"stall risk smoothing must be in (0, 1], got {smoothing}")
        check_level(level)
        inv = 1.0 / params["risk.std"].astype(np.float64)
        w = params["risk.weight"].astype(np.float64) * inv
        # w . ((x - mean) / std) + b = (w / std) . x + (b - (w / std) . mean)
        self._w = w
        self._b = float(params["risk.bias"][0]) - float(w @ params["risk.mean"])
        self.k = float(k)
        self.mean_risk = float(mean_risk)
        #: Weight of the newest factor in the running mean of the factor's log2 (1: none).
        #: The factor follows the per-report risk, which jitters; without it the session-8
        #: layer tripled loki's rate change per decision (loki/LEARNING.md, session 9).
        self.smoothing = float(smoothing)
        #: The factor at the mean risk (1: the network's own operating point).
        self.level = float(level)

    def probability(self, obs: np.ndarray) -> float:
        z = float(self._w @ obs) + self._b
        if not np.isfinite(z):
            return self.mean_risk  # a non-finite input says nothing: no change of rate
        return 1.0 / (1.0 + np.exp(-min(max(z, -60.0), 60.0)))

    def probabilities(self, obs: np.ndarray) -> np.ndarray:
        """:meth:`probability` of each row of ``obs`` (the update's figures, all at once)."""
        z = np.clip(np.asarray(obs, np.float64) @ self._w + self._b, -60.0, 60.0)
        return 1.0 / (1.0 + np.exp(-z))

    def factor(self, obs: np.ndarray) -> float:
        f = 2.0 ** (-self.k * (self.probability(obs) - self.mean_risk))
        # The level multiplies the bounded factor, so a level is exactly that constant factor on
        # what the layer sends (inside the bounds it would also lift the deepest cuts).
        return self.level * min(max(f, MIN_FACTOR), MAX_FACTOR)


class RiskAdjustedController(WrappedController):
    """A learned controller whose target is scaled by the stall-risk factor of its latest
    observation. The network, its guard and its fault floor see their own target (as with
    :class:`loki.controllers.ScaledController`); the sender gets the scaled one. The factor is
    at least 1 while the fault floor holds a path change (session 9: the layer read the longer
    path's delay as risk and halved the rate the floor held)."""

    def __init__(self, learned: LearnedController, risk: StallRisk) -> None:
        super().__init__(learned)
        self.learned = learned
        self.risk = risk
        self.risk_factor = 1.0
        self._log2_factor = 0.0
        self.name = learned.name  # type: ignore[misc]

    @property
    def target_bps(self) -> int:
        # Never below the network's minimum in force (its MinTarget, if any).
        low = self.learned.min_bps_now
        return max(self.config.clamp(self.learned.target_bps * self.risk_factor), low)

    # What the experience log and the evaluation read from a learned controller.
    @property
    def policy(self) -> Policy | None:
        """The learned controller's policy (the experience logger wraps it)."""
        return self.learned.policy

    @policy.setter
    def policy(self, value: Policy | None) -> None:
        self.learned.policy = value

    @property
    def decisions(self) -> int:
        return self.learned.decisions

    @property
    def fallbacks(self) -> int:
        return self.learned.fallbacks

    @property
    def obs(self) -> np.ndarray:
        return self.learned.obs

    def on_feedback(self, report: TransportFeedback) -> int:
        before = self.learned.decisions
        self.learned.on_feedback(report)
        if self.learned.decisions != before:
            raw = self.risk.factor(self.learned.obs)
            floor = self.learned.fault_floor
            if floor is not None and floor.path_holds(self.learned.last_report_us):
                raw = max(raw, 1.0)  # through a path change the rate from before it stands
            a = self.risk.smoothing
            if a == 1.0:
                self.risk_factor = raw
            else:
                self._log2_factor += a * (float(np.log2(raw)) - self._log2_factor)
                self.risk_factor = float(2.0**self._log2_factor)
        return self.target_bps
