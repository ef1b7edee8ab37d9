"""DAgger's relabelling (``loki.train.clone.sync_gcc_rate``): GCC continues from the clone's rate.

The label of a report is the parallel GCC's target after it; after every decision the GCC is
put in the clone's rate state. Two properties make the labels right: on GCC's own trajectory
the sync changes nothing, and after a sync to another rate GCC's target is always re-derived
from its estimators (a facade that kept the synced value whenever its estimator's target
repeated an earlier one labelled those reports "hold at the clone's rate").
"""

from __future__ import annotations

import numpy as np

from loki.emu.session import LinkConfig, Session, SessionConfig
from loki.learned.controller import RatioController
from loki.train.clone import sync_gcc_rate
from traces import generators


def _link() -> LinkConfig:
    steps = generators.steps([(15_000, 3_000_000), (10_000, 1_000_000), (15_000, 2_000_000)])
    return LinkConfig(trace=steps, delay_ms=30, queue_packets=150)


def _drive(rate_of) -> tuple[list[int], list[tuple[int, int]]]:
    """Run a session whose decisions are ``rate_of(ctl)`` (None: GCC's), syncing each time."""
    ctl = RatioController(None)
    session = Session(ctl, _link(), SessionConfig(duration_s=40.0, seed=3))
    targets, mismatches = [], []
    while session.step():
        if not ctl.awaiting_action:
            continue
        gcc = ctl.gcc
        # The facade's target is always its estimator's, clamped, after a report.
        expected = gcc.config.clamp(gcc._bwe.target_rate())
        if gcc.target_bps != expected:
            mismatches.append((gcc.target_bps, expected))
        rate = rate_of(ctl)
        if rate is None:
            ctl.apply_action(None)
        else:
            ctl.apply_action(float(np.log2(rate / ctl.target_bps)))
        sync_gcc_rate(ctl.gcc, ctl.target_bps)
        session.refresh_target()
        targets.append(ctl.target_bps)
    return targets, mismatches


def test_sync_on_gccs_own_trajectory_changes_nothing():
    synced, mismatches = _drive(lambda ctl: None)
    assert not mismatches
    ctl = RatioController(None)
    session = Session(ctl, _link(), SessionConfig(duration_s=40.0, seed=3))
    plain = []
    while session.step():
        if ctl.awaiting_action:
            ctl.apply_action(None)
            session.refresh_target()
            plain.append(ctl.target_bps)
    assert synced == plain and len(plain) > 250


def test_after_a_sync_gccs_target_is_re_derived_every_report():
    rng = np.random.default_rng(0)

    def wander(ctl):  # a clone that is off GCC by up to +-40 %, as DAgger's early clones are
        return max(50_000, int(ctl.gcc.target_bps * rng.uniform(0.6, 1.4)))

    targets, mismatches = _drive(wander)
    assert len(targets) > 250
    assert not mismatches, mismatches[:5]
