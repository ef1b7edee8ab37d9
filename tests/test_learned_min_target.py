"""A model's minimum target (``loki.learned.models.with_min_target``; loki/LEARNING.md,
session 12): below the encoder's floor a sender can starve itself of the feedback it needs to
climb back."""

from __future__ import annotations

import numpy as np
import pytest

from loki.api import ControllerConfig
from loki.cli import main
from loki.emu.session import LinkConfig, Session, SessionConfig, SessionResult
from loki.learned.models import (
    MIN_TARGET_KEY,
    controller_from_model,
    model_path,
    read_meta,
    with_min_target,
    without_risk_layer,
)
from loki.nn import load_model
from traces.generators import steps

LOKI = model_path("loki")
#: Six seconds at 40 kbps (a starved spell: the sender cannot get video through), then a link
#: of 18 Mbps. The shape of a development-set session where GCC and loki sent nothing for 8 s
#: at 18 Mbps after a near-outage.
STARVED = [(6_000, 40_000), (24_000, 18e6)]


@pytest.fixture(scope="module")
def unfloored(tmp_path_factory):
    return with_min_target(LOKI, tmp_path_factory.mktemp("unfloored") / "model.npz", None)


def _run(path) -> tuple[SessionResult, object]:
    ctl = controller_from_model(path)
    link = LinkConfig(trace=steps(STARVED), delay_ms=50, queue_packets=100)
    return Session(ctl, link, SessionConfig(duration_s=30.0, seed=1)).run(), ctl


def test_the_shipped_loki_asks_for_200_kbps_at_least() -> None:
    assert read_meta(load_model(LOKI))[MIN_TARGET_KEY] == 200_000


def test_setting_it_copies_every_array_and_changes_only_its_key(tmp_path, unfloored) -> None:
    src, none = load_model(LOKI), load_model(unfloored)
    assert set(src) == set(none)
    for key in src:
        if key != "meta":
            np.testing.assert_array_equal(none[key], src[key])
    shipped_meta = read_meta(src)
    assert read_meta(none) == {k: v for k, v in shipped_meta.items() if k != MIN_TARGET_KEY}
    back = with_min_target(unfloored, tmp_path / "back.npz", shipped_meta[MIN_TARGET_KEY])
    assert read_meta(load_model(back)) == shipped_meta
    for bad in (10_000, 30_000, 300_001):
        with pytest.raises(ValueError, match="--min-target-kbps"):
            with_min_target(LOKI, tmp_path / "bad.npz", bad)
    assert not (tmp_path / "bad.npz").exists()
    # The network alone (what the stall-risk layer is fitted on) has no minimum of its own.
    assert MIN_TARGET_KEY not in read_meta(load_model(without_risk_layer(LOKI, tmp_path / "n.npz")))


def test_it_is_the_whole_controllers_minimum(unfloored) -> None:
    ctl = controller_from_model(LOKI)
    # The sender's stage, the network beneath and its parallel GCC all have it.
    assert ctl.config.min_bps == ctl.learned.config.min_bps == 200_000
    assert ctl.learned.gcc.config.min_bps == 200_000
    # A caller's higher minimum stands; a model without one keeps the caller's.
    assert controller_from_model(LOKI, ControllerConfig(min_bps=250_000)).config.min_bps == 250_000
    assert controller_from_model(unfloored).config.min_bps == ControllerConfig().min_bps
    # A sender that starts lower starts at the minimum; one whose ceiling is below it is told.
    low_start = controller_from_model(LOKI, ControllerConfig(min_bps=30_000, start_bps=100_000))
    assert low_start.config.start_bps == 200_000 and low_start.target_bps == 200_000
    with pytest.raises(ValueError, match="at least 200 kbps, above the config's max_bps"):
        controller_from_model(LOKI, ControllerConfig(start_bps=100_000, max_bps=150_000))


def test_after_a_starved_spell_the_minimum_lets_the_sender_climb_back(unfloored) -> None:
    floored, ctl = _run(LOKI)
    alone, _ = _run(unfloored)
    # Without it the target sinks to tens of kbps, the encoder (whose own floor is 374 kbps)
    # drops its frames, too little gets through for the target to climb: the receiver sees
    # almost nothing for the whole session although the link carries 18 Mbps after 6 s.
    assert alone.qoe.stall_rate > 0.9 and alone.qoe.bitrate_kbps < 100
    assert min(r for _, r in floored.decisions) >= 200_000
    assert floored.qoe.stall_rate < 0.4 and floored.qoe.bitrate_kbps > 800
    # The network decides throughout: its inputs stay in its training range.
    assert ctl.fallbacks < 10


def test_on_the_command_line(tmp_path, capsys) -> None:
    out = tmp_path / "m150"
    assert (
        main(["train", "risk", "--level-only", "--min-target-kbps", "150", "--out", str(out)]) == 0
    )
    assert read_meta(load_model(out / "model.npz"))[MIN_TARGET_KEY] == 150_000
    assert (
        "Minimum target set to 150 kbps by `loki train risk --level-only"
        in (out / "card.md").read_text()
    )
    zero = tmp_path / "none"
    assert (
        main(["train", "risk", "--level-only", "--min-target-kbps", "0", "--out", str(zero)]) == 0
    )
    assert MIN_TARGET_KEY not in read_meta(load_model(zero / "model.npz"))
    assert "Minimum target removed" in (zero / "card.md").read_text()
    for argv, message in (
        (["train", "risk", "--level-only", "--min-target-kbps", "500"], "at most 300 kbps"),
        (["train", "risk", "--level-only", "--min-target-kbps", "-1"], "must be >= 0"),
        (["train", "risk", "--min-target-kbps", "150", "--sessions", "2"], "with --level-only"),
        (["train", "rl", "--min-target-kbps", "150"], "is for 'loki train risk' only"),
        (["train", "risk", "--level-only"], "--risk-level L and/or --min-target-kbps K"),
    ):
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv
