"""``python -m loki.train.evaluate``'s placement of controllers against GCC's own curve."""

from __future__ import annotations

import json

import numpy as np
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


def test_replicas_repeat_each_session_with_only_the_seed_changed(tmp_path) -> None:
    from loki.train.evaluate import REPLICA_SEED_STEP, specs_for

    folder = tmp_path / "fam"
    folder.mkdir()
    (folder / "link.mahi").write_text("\n".join(str(t) for t in range(1, 301)) + "\n")
    one = specs_for(folder, None, 0)
    three = specs_for(folder, None, 0, replicas=3)
    assert len(three) == 3 * len(one)
    # The first replica is the session without replicas, bit for bit.
    assert [s for s in three if s.replica == 0] == one
    for r in (1, 2):
        again = [s for s in three if s.replica == r]
        assert [s.seed - REPLICA_SEED_STEP * r for s in again] == [s.seed for s in one]
        assert [(s.trace_path, s.offset_ms, s.delay_ms) for s in again] == [
            (s.trace_path, s.offset_ms, s.delay_ms) for s in one
        ]
    with pytest.raises(ValueError, match="--replicas"):
        specs_for(folder, None, 0, replicas=0)


def _row(controller: str, session: int, replica: int, stall: float) -> dict:
    return {
        "controller": controller,
        "trace": f"t{session}",
        "offset_ms": 0,
        "delay_ms": 20,
        "loss": 0.0,
        "replica": replica,
        "bitrate_kbps": 1000.0,
        "stall_rate": stall,
        "frame_delay_p95_ms": 100.0,
        "change_log2": 0.01,
        "fallbacks": 0,
        "decisions": 10,
    }


def test_replicas_pool_and_the_interval_resamples_whole_sessions() -> None:
    from loki.train.evaluate import summarise

    rng = np.random.default_rng(3)
    rows = []
    # 40 sessions x 4 replicas; "ours" stalls less than gcc by a share that differs from
    # session to session, and the replicas of a session share it (plus a little noise).
    for k in range(40):
        base = rng.uniform(0.01, 0.2)
        share = rng.uniform(0.4, 1.2)
        for r in range(4):
            rows.append(_row("gcc", k, r, base * rng.uniform(0.98, 1.02)))
            rows.append(_row("ours", k, r, base * share * rng.uniform(0.98, 1.02)))
    summary = summarise(rows, ["gcc", "ours"])
    assert summary["ours"]["sessions"] == 160 and summary["ours"]["replicas"] == 4
    gcc = np.array([r["stall_rate"] for r in rows if r["controller"] == "gcc"])
    ours = np.array([r["stall_rate"] for r in rows if r["controller"] == "ours"])
    point, lo, hi = summary["ours"]["vs_gcc_stall_mean"]
    assert point == pytest.approx(ours.mean() / gcc.mean() - 1.0)
    assert lo < point < hi
    # Treating the 160 rows as independent sessions would halve the interval (4 replicas
    # that agree are one session's worth of evidence, not four).
    flat = [{**r, "trace": f"{r['trace']}-{r['replica']}", "replica": 0} for r in rows]
    _, flat_lo, flat_hi = summarise(flat, ["gcc", "ours"])["ours"]["vs_gcc_stall_mean"]
    assert (hi - lo) > 1.5 * (flat_hi - flat_lo)


def test_a_controller_is_paired_on_the_sessions_both_ran() -> None:
    from loki.train.evaluate import summarise

    rows = [_row("gcc", k, 0, 0.1) for k in range(6)]
    # The other controller ran the sessions in another order and lacks one.
    rows += [_row("ours", k, 0, 0.05) for k in (5, 3, 1, 0, 2)]
    rows.append(_row("gcc", 9, 0, 0.9))  # a session only the baseline ran: not paired
    point, _, _ = summarise(rows, ["gcc", "ours"])["ours"]["vs_gcc_stall_mean"]
    assert point == pytest.approx(-0.5)
