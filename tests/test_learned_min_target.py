"""A model's gated minimum target (``loki/learned/min_target.py``, ``with_min_target``;
loki/LEARNING.md, session 12): below the encoder's floor a sender can starve itself of the
feedback it needs to climb back, and on a link thinner than the minimum a fixed one fills the
queue."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loki.api import ControllerConfig
from loki.cli import main
from loki.emu.session import LinkConfig, Session, SessionConfig
from loki.learned.min_target import STALE_US, MinTarget
from loki.learned.models import (
    MIN_TARGET_KEY,
    MIN_TARGET_QUEUE_KEY,
    controller_from_model,
    model_path,
    read_meta,
    with_min_target,
    without_risk_layer,
)
from loki.nn import load_model
from traces.generators import constant, steps

LOKI = model_path("loki")
#: Six seconds at 40 kbps (a starved spell: the sender cannot get video through), then a link
#: of 18 Mbps. The shape of a development-set session where GCC and loki sent nothing for 8 s
#: at 18 Mbps after a near-outage.
STARVED = [(6_000, 40_000), (24_000, 18e6)]


@pytest.fixture(scope="module")
def unfloored(tmp_path_factory):
    return with_min_target(LOKI, tmp_path_factory.mktemp("unfloored") / "model.npz", None)


@pytest.fixture(scope="module")
def ungated(tmp_path_factory):
    """The shipped minimum held whatever the queue (the first form tried in session 12)."""
    return with_min_target(LOKI, tmp_path_factory.mktemp("ungated") / "model.npz", 200_000, 1e9)


def _run(path, trace, queue_packets, duration_s, delay_ms=50):
    ctl = controller_from_model(path)
    link = LinkConfig(trace=trace, delay_ms=delay_ms, queue_packets=queue_packets)
    session = Session(ctl, link, SessionConfig(duration_s=duration_s, seed=1))
    below = 0
    while session.step():
        # The layer above the network never sends less than the minimum in force.
        below += ctl.target_bps < ctl.learned.min_bps_now
    return session.result(), ctl, below


def test_the_gate_holds_the_floor_unless_a_recent_report_shows_a_queue() -> None:
    m = MinTarget(200_000, 30_000, queue_limit_ms=200)
    assert m.bps(0) == 200_000  # no report yet: nothing shows a queue
    m.on_report(1_000_000, 1.5)  # 150 ms of queueing delay
    assert m.bps(1_000_000) == 200_000
    m.on_report(1_100_000, 2.5)  # 250 ms: a standing queue
    assert m.bps(1_100_000) == m.bps(1_100_000 + STALE_US) == 30_000
    assert m.bps(1_100_001 + STALE_US) == 200_000  # silent for longer: starved, not queued
    m.on_report(3_000_000, math.nan)  # nothing received in the report: no evidence of a queue
    assert m.bps(3_000_000) == 200_000
    for bad in ((30_000, 30_000, 200), (200_000, 30_000, 0)):
        with pytest.raises(ValueError):
            MinTarget(*bad)


def test_the_shipped_loki_has_one() -> None:
    meta = read_meta(load_model(LOKI))
    assert meta[MIN_TARGET_KEY] == 200_000 and meta[MIN_TARGET_QUEUE_KEY] == 200.0


def test_setting_it_copies_every_array_and_changes_only_its_keys(tmp_path, unfloored) -> None:
    src, none = load_model(LOKI), load_model(unfloored)
    assert set(src) == set(none)
    for key in src:
        if key != "meta":
            np.testing.assert_array_equal(none[key], src[key])
    shipped = read_meta(src)
    mine = (MIN_TARGET_KEY, MIN_TARGET_QUEUE_KEY)
    assert read_meta(none) == {k: v for k, v in shipped.items() if k not in mine}
    back = with_min_target(
        unfloored, tmp_path / "back.npz", shipped[MIN_TARGET_KEY], shipped[MIN_TARGET_QUEUE_KEY]
    )
    assert read_meta(load_model(back)) == shipped
    for bps, queue_ms, says in (
        (10_000, 200, "--min-target-kbps"),
        (30_000, 200, "--min-target-kbps"),
        (300_001, 200, "--min-target-kbps"),
        (200_000, 0, "--min-target-queue-ms"),
    ):
        with pytest.raises(ValueError, match=says):
            with_min_target(LOKI, tmp_path / "bad.npz", bps, queue_ms)
    assert not (tmp_path / "bad.npz").exists()
    # The network alone (what the stall-risk layer is fitted on) has no minimum of its own.
    net = read_meta(load_model(without_risk_layer(LOKI, tmp_path / "n.npz")))
    assert not set(mine) & set(net)


def test_a_callers_own_higher_minimum_makes_it_moot(unfloored) -> None:
    assert controller_from_model(LOKI).learned.min_target is not None
    high = controller_from_model(LOKI, ControllerConfig(min_bps=250_000))
    assert high.learned.min_target is None and high.config.min_bps == 250_000
    assert controller_from_model(unfloored).learned.min_target is None


def test_after_a_starved_spell_the_minimum_lets_the_sender_climb_back(unfloored) -> None:
    floored, ctl, below = _run(LOKI, steps(STARVED), 100, 30.0)
    alone, _, _ = _run(unfloored, steps(STARVED), 100, 30.0)
    # Without it the target sinks to tens of kbps, the encoder (whose own floor is 374 kbps)
    # drops its frames, too little gets through for the target to climb: the receiver sees
    # almost nothing for the whole session although the link carries 18 Mbps after 6 s.
    assert alone.qoe.stall_rate > 0.9 and alone.qoe.bitrate_kbps < 100
    assert floored.qoe.stall_rate < 0.4 and floored.qoe.bitrate_kbps > 800
    assert below == 0
    # The network decides throughout: its inputs stay in its training range.
    assert ctl.fallbacks < 10


def test_on_a_link_thinner_than_the_minimum_the_gate_lets_the_queue_drain(
    unfloored, ungated
) -> None:
    thin = constant(150_000, 60_000)  # below the minimum, with a 300-packet queue (19 s)
    gated, _, below = _run(LOKI, thin, 300, 60.0, delay_ms=30)
    alone, _, _ = _run(unfloored, thin, 300, 60.0, delay_ms=30)
    fixed, _, _ = _run(ungated, thin, 300, 60.0, delay_ms=30)
    # A minimum held whatever the queue keeps sending more than the link carries: seconds of
    # frame delay and a quarter of the session frozen.
    assert fixed.qoe.frame_delay_p95_ms > 8_000 and fixed.qoe.stall_rate > 0.15
    # The gate lets the network cut once the queue shows: a fraction of that delay, within
    # twice the network's own (1.3 x over three seeds, loki/LEARNING.md), and no more stall.
    assert gated.qoe.frame_delay_p95_ms < 0.25 * fixed.qoe.frame_delay_p95_ms
    assert gated.qoe.frame_delay_p95_ms <= 2.0 * alone.qoe.frame_delay_p95_ms
    assert gated.qoe.stall_rate <= alone.qoe.stall_rate + 0.02
    assert below == 0


def test_on_the_command_line(tmp_path, capsys) -> None:
    out = tmp_path / "m150"
    argv = ["train", "risk", "--level-only", "--min-target-kbps", "150", "--out", str(out)]
    assert main([*argv, "--min-target-queue-ms", "400"]) == 0
    meta = read_meta(load_model(out / "model.npz"))
    assert meta[MIN_TARGET_KEY] == 150_000 and meta[MIN_TARGET_QUEUE_KEY] == 400.0
    card = (out / "card.md").read_text()
    assert "Minimum target set to 150 kbps while the queueing delay is below 400 ms" in card
    assert "--min-target-kbps 150 --min-target-queue-ms 400" in card
    zero = tmp_path / "none"
    assert (
        main(["train", "risk", "--level-only", "--min-target-kbps", "0", "--out", str(zero)]) == 0
    )
    assert MIN_TARGET_KEY not in read_meta(load_model(zero / "model.npz"))
    assert "Minimum target removed" in (zero / "card.md").read_text()
    for argv, message in (
        (["train", "risk", "--level-only", "--min-target-kbps", "500"], "at most 300 kbps"),
        (["train", "risk", "--level-only", "--min-target-kbps", "-1"], "must be >= 0"),
        (
            [
                "train",
                "risk",
                "--level-only",
                "--min-target-kbps",
                "150",
                "--min-target-queue-ms",
                "0",
            ],
            "--min-target-queue-ms must be > 0",
        ),
        (
            ["train", "risk", "--level-only", "--min-target-queue-ms", "300", "--risk-level", "1"],
            "goes with a --min-target-kbps",
        ),
        (["train", "risk", "--min-target-kbps", "150", "--sessions", "2"], "with --level-only"),
        (["train", "rl", "--min-target-kbps", "150"], "is for 'loki train risk' only"),
        (["train", "risk", "--level-only"], "--risk-level L and/or --min-target-kbps K"),
    ):
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv
