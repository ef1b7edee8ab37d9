"""One emulated session of any controller, as a picklable job for :class:`Executor`.

Used by the clone's closed-loop validation, by the evaluation, and by the benchmarks of the
learned controllers: a controller is named as the registry knows it (``gcc``, ``loki``) or by
the path of an exported model (``out/loki/model.npz``).
"""

from __future__ import annotations

import numpy as np

from loki.api import Controller
from loki.emu.session import Session, SessionConfig, SessionResult
from loki.train.data import EpisodeSpec
from traces.trace import Trace


def build_controller(controller: str, trace: Trace | None = None) -> Controller:
    """A fresh controller; ``trace`` is the uplink the session runs on (only ``oracle``
    reads it: it is the reference that knows future capacity, not a shippable controller)."""
    from loki.controllers import make_controller

    return make_controller(controller, trace=trace)


def check_controller(controller: str) -> None:
    """Raises ValueError, naming the problem, when ``controller`` cannot be built.

    Why: sessions build their controller in a worker; checked up front, a typo in a name or a
    model path fails in a second with one line, not minutes later as a worker's traceback.
    """
    from loki.controllers import make_controller
    from traces.generators import constant

    make_controller(controller, trace=constant(1e6, 1_000))  # the oracle reads a trace


def mean_abs_log2_change(rates_bps: list[int] | np.ndarray) -> float:
    """Mean |log2(rate_k / rate_k-1)| over consecutive decisions: the smoothness figure."""
    r = np.asarray(rates_bps, dtype=np.float64)
    if r.size < 2:
        return 0.0
    return float(np.mean(np.abs(np.diff(np.log2(np.maximum(r, 1.0))))))


def play(spec: EpisodeSpec, controller: str) -> tuple[Session, SessionResult, Controller]:
    """Run a fresh ``controller`` on the episode ``spec``: the finished session (its
    receiver's records), its result and the controller (its guard's counts)."""
    link = spec.link()
    ctl = build_controller(controller, link.trace)
    session = Session(ctl, link, SessionConfig(duration_s=spec.duration_s, seed=spec.seed))
    return session, session.run(), ctl


def run_session(job: tuple[EpisodeSpec, str]) -> dict:
    """QoE of one controller on one episode, plus smoothness and guard figures."""
    spec, controller = job
    _, res, ctl = play(spec, controller)
    row = res.qoe.to_dict()
    row["controller"] = controller
    row["trace"] = spec.trace_path
    row["offset_ms"] = spec.offset_ms
    row["delay_ms"] = spec.delay_ms
    row["queue_packets"] = spec.queue_packets
    row["loss"] = spec.loss
    row["bursty"] = int(spec.bursty)
    row["replica"] = spec.replica
    row["change_log2"] = mean_abs_log2_change([r for _, r in res.decisions])
    row["decisions"] = len(res.decisions)
    row["fallbacks"] = int(getattr(ctl, "fallbacks", 0))
    return row
