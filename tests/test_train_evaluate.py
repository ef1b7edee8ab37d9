"""``python -m loki.train.evaluate``'s placement of controllers against GCC's own curve."""

from __future__ import annotations

import json

import pytest

from loki.train.evaluate import CURVE_FACTORS, curve_name, curve_positions, main


def rel(bitrate: float, stall: float) -> dict:
    return {"vs_gcc_bitrate": (bitrate, 0.0, 0.0), "vs_gcc_stall_mean": (stall, 0.0, 0.0)}


def test_a_controller_is_placed_against_the_curve_at_its_own_bitrate() -> None:
    summary = {
        "gcc": {},
        "scaled:0.8:gcc": rel(-0.20, -0.10),
        "scaled:1.2:gcc": rel(0.40, 0.30),
        "scaled:0.9:loki": rel(-0.10, -0.20),  # a point of another curve: placed, not used
        "better": rel(0.20, 0.05),  # the curve gives +0.15 at +0.20
        "worse": rel(-0.10, 0.00),  # the curve gives -0.05 at -0.10
        "beyond": rel(0.60, 0.10),
    }
    pos = curve_positions(summary)
    assert set(pos) == {"better", "worse", "beyond", "scaled:0.9:loki"}
    assert pos["better"]["curve_stall"] == pytest.approx(0.15)
    assert pos["better"]["below_curve"] == pytest.approx(-0.10)
    assert pos["worse"]["curve_stall"] == pytest.approx(-0.05)
    assert pos["worse"]["below_curve"] == pytest.approx(0.05)
    assert pos["beyond"]["curve_stall"] is None and pos["beyond"]["below_curve"] is None


def test_without_scaled_gcc_there_is_no_curve() -> None:
    assert curve_positions({"gcc": {}, "loki": rel(0.1, 0.1)}) == {}


def test_the_curve_factors_are_controllers_that_build() -> None:
    from loki.controllers import make_controller

    for f in CURVE_FACTORS:
        assert make_controller(curve_name(f)).factor == f


def test_gcc_curve_runs_and_reports_the_placement(tmp_path, capsys) -> None:
    traces = tmp_path / "family"
    traces.mkdir()
    (traces / "const.mahi").write_text("\n".join(str(t) for t in range(1, 301)) + "\n")
    out = tmp_path / "out"
    assert (
        main(
            [
                "--traces",
                str(traces),
                "--controllers",
                "gcc,fixed:2000",
                "--gcc-curve",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "mean stall vs GCC's curve at equal bitrate" in text
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["gcc_curve"]) == {"fixed:2000"}
    assert {curve_name(f) for f in CURVE_FACTORS} <= set(summary)


def test_several_families_run_as_one_evaluation_with_a_summary_per_family(tmp_path) -> None:
    folders = []
    # 12 Mbps and 1 Mbps constant links (one 1504-byte opportunity per ms, per 12 ms).
    for name, rate in (("fast_family", range(1, 301)), ("slow_family", range(1, 301, 12))):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "link.mahi").write_text("\n".join(str(t) for t in rate) + "\n")
        folders.append(str(folder))
    out = tmp_path / "out"
    argv = ["--traces", *folders, "--controllers", "gcc,fixed:1500", "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["families"]) == {"fast_family", "slow_family"}
    per_family = [summary["families"][f]["gcc"]["sessions"] for f in summary["families"]]
    assert per_family[0] > 0 and sum(per_family) == summary["gcc"]["sessions"]
    # A fixed 1.5 Mbps stream fits the fast link and overruns the slow one.
    fast = summary["families"]["fast_family"]["fixed:1500"]["stall_mean"]
    slow = summary["families"]["slow_family"]["fixed:1500"]["stall_mean"]
    assert fast < slow and slow > 0.1


def test_an_empty_family_folder_is_named(tmp_path, capsys) -> None:
    good = tmp_path / "fam"
    good.mkdir()
    (good / "link.mahi").write_text("\n".join(str(t) for t in range(1, 301)) + "\n")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit):
        main(["--traces", str(good), str(empty), "--out", str(tmp_path / "out")])
    assert f"under {empty}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
