"""bench/clone_selection.py: its judges and its pick (the full run is a benchmark command)."""

from __future__ import annotations

import pytest

from bench.clone_selection import (
    CONSTANT_HOLD_SHARE,
    Verdict,
    constant_share,
    main,
    pick,
)


def test_gcc_holds_the_constant_link_and_a_fixed_low_rate_does_not() -> None:
    assert constant_share("gcc") >= CONSTANT_HOLD_SHARE
    # 1 Mbps on the 3 Mbps link: a third, far below the bar.
    assert constant_share("fixed:1000") == pytest.approx(1 / 3, rel=0.01)


def _v(name: str, gap: float, misses: list[str], share: float = 0.9) -> Verdict:
    return Verdict(candidate=name, fault_misses=misses, constant_share=share, dev_gap=gap)


def test_pick_is_the_nearest_to_gcc_among_the_robust_ones() -> None:
    verdicts = [
        _v("closest-but-stuck", 0.2, ["rtt-40ms-to-1s"]),
        _v("slides-on-constant", 0.3, [], share=0.5),
        _v("robust-far", 2.0, []),
        _v("robust-near", 0.9, []),
    ]
    chosen = pick(verdicts)
    assert chosen is not None and chosen.candidate == "robust-near"
    assert pick(verdicts[:2]) is None  # nothing robust: nothing picked


def test_missing_candidate_is_one_clear_error(tmp_path, capsys) -> None:
    assert main(["--candidates", str(tmp_path / "nope.npz")]) == 2
    assert "no such model" in capsys.readouterr().err
