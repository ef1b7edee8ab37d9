"""The QoE benchmark end to end on two generated traces: outputs, resume, refusals, Ray path."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from bench.lib import runner, sessions
from bench.lib.runner import BenchError, BenchOptions
from bench.lib.sessions import SESSIONS_FILE, LinkSetting, SessionLog, subsample_per_family
from loki.bench import add_bench_parser, main
from traces import generators
from traces.mahimahi import write_mahimahi

SESSION_S = 6.0


@pytest.fixture(scope="module")
def trace_dir(tmp_path_factory) -> Path:
    """Two 8 s traces in a folder ``gen`` (their family)."""
    d = tmp_path_factory.mktemp("traces") / "gen"
    d.mkdir()
    write_mahimahi(generators.constant(2e6, 8000, name="c2"), d / "c2.mahi")
    write_mahimahi(generators.markov_modulated(8000, seed=3, name="m3"), d / "m3.mahi")
    return d


def options(trace_dir: Path, out: Path, **kw) -> BenchOptions:
    base = dict(
        traces=[trace_dir],
        controllers=["gcc", "oracle"],
        out=out,
        duration_s=SESSION_S,
        workers=1,
        resamples=200,
        worst=1,
        progress=False,
    )
    base.update(kw)
    return BenchOptions(**base)


def quiet(_msg: str) -> None:
    pass


def test_outputs_and_resume(trace_dir: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    results = runner.run(options(trace_dir, out), echo=quiet)
    names = {p.name for p in out.iterdir()}
    assert {SESSIONS_FILE, "results.json", "report.md", "throughput_delay.png"} <= names
    assert {"stall_rate_cdf.png", "frame_delay_cdf.png", "worst_gcc.png", "worst_oracle.png"} <= (
        names
    )
    assert not [n for n in names if ".tmp" in n]  # no leftovers of atomic writes
    lines = (out / SESSIONS_FILE).read_text().splitlines()
    assert len(lines) == 4
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["controllers"]["gcc"]["overall"]["sessions"] == 2
    assert on_disk["controllers"]["oracle"]["families"]["gen"]["sessions"] == 2
    assert set(on_disk["vs_baseline"]["oracle"]["overall"]) == {
        "stall_rate_mean",
        "stall_rate_p95",
        "bitrate_kbps_mean",
        "frame_delay_p95_ms",
    }
    rec = json.loads(lines[0])
    assert rec["qoe"]["duration_s"] == SESSION_S
    assert rec["task"]["family"] == "gen"
    assert "| oracle |" in (out / "report.md").read_text()

    # A second run finds every session done and runs none.
    def no_session(task, code=""):
        raise AssertionError(f"session rerun: {task}")

    monkeypatch.setattr(runner, "run_task", no_session)
    again = runner.run(options(trace_dir, out, plots=False), echo=quiet)
    assert (out / SESSIONS_FILE).read_text().splitlines() == lines
    assert json.dumps(runner.summary.json_safe(again["controllers"])) == json.dumps(
        runner.summary.json_safe(results["controllers"])
    )


def test_resume_after_a_torn_line(trace_dir: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    runner.run(options(trace_dir, out, controllers=["gcc"], plots=False), echo=quiet)
    log = out / SESSIONS_FILE
    text = log.read_text()
    first, second = text.splitlines()
    log.write_text(first + "\n" + second[: len(second) // 2])  # killed mid-write
    ran = []
    real = runner.run_task
    monkeypatch.setattr(runner, "run_task", lambda t, code: ran.append(t) or real(t, code))
    runner.run(options(trace_dir, out, controllers=["gcc"], plots=False), echo=quiet)
    assert len(ran) == 1
    assert json.loads(second)["key"] == ran[0].key
    assert len(log.read_text().splitlines()) == 2
    assert log.read_text().endswith("\n")


def test_new_settings_are_new_sessions(trace_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    runner.run(options(trace_dir, out, controllers=["gcc"], plots=False), echo=quiet)
    runner.run(
        options(trace_dir, out, controllers=["gcc"], plots=False, duration_s=5.0), echo=quiet
    )
    runner.run(
        options(trace_dir, out, controllers=["gcc"], plots=False, delays_ms=[40]), echo=quiet
    )
    assert len(SessionLog(out).records) == 6


def test_resume_warns_about_sessions_from_other_code(
    trace_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    out = tmp_path / "out"
    runner.run(options(trace_dir, out, controllers=["gcc"], plots=False), echo=quiet)
    assert {r["code"] for r in SessionLog(out).records.values()} == {sessions.code_fingerprint()}
    monkeypatch.setattr(runner, "code_fingerprint", lambda: "edited")
    said: list[str] = []
    runner.run(options(trace_dir, out, controllers=["gcc"], plots=False), echo=said.append)
    assert any("2 finished sessions" in m and "different code" in m for m in said)
    assert len(SessionLog(out).records) == 2  # kept, not rerun


def test_rerun_stale_runs_the_sessions_of_other_code_again(
    trace_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    out = tmp_path / "out"
    runner.run(options(trace_dir, out, controllers=["gcc"], plots=False), echo=quiet)
    monkeypatch.setattr(runner, "code_fingerprint", lambda: "edited")
    said: list[str] = []
    runner.run(
        options(trace_dir, out, controllers=["gcc"], plots=False, rerun_stale=True),
        echo=said.append,
    )
    assert any("running them again" in m for m in said)
    records = SessionLog(out).records
    assert {r["code"] for r in records.values()} == {"edited"}
    # One line per session after the rerun, not the old and the new.
    assert len((out / SESSIONS_FILE).read_text().splitlines()) == len(records) == 2
    # Nothing stale is left: a third run runs nothing.
    said.clear()
    runner.run(
        options(trace_dir, out, controllers=["gcc"], plots=False, rerun_stale=True),
        echo=said.append,
    )
    assert any("2 already done, 0 to run" in m for m in said)


def test_two_workers(trace_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = runner.run(options(trace_dir, out, workers=2, plots=False), echo=quiet)
    assert res["controllers"]["gcc"]["overall"]["sessions"] == 2
    assert len((out / SESSIONS_FILE).read_text().splitlines()) == 4


def test_sessions_are_deterministic(trace_dir: Path) -> None:
    task = sessions.SessionTask("gcc", str(trace_dir / "m3.mahi"), "gen", LinkSetting(), 5.0, 1)
    assert sessions.run_task(task)["qoe"] == sessions.run_task(task)["qoe"]


def test_refuses_unknown_controller(trace_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    rc = main(["--traces", str(trace_dir), "--controllers", "gcc,nope", "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "unknown controller 'nope'" in err and "gcc" in err
    assert not out.exists()


def test_refuses_empty_and_missing_folders(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a trace\n")
    out = tmp_path / "out"
    assert main(["--traces", str(empty), "--out", str(out)]) == 2
    assert "no trace files" in capsys.readouterr().err
    assert main(["--traces", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "no such trace file or folder" in capsys.readouterr().err
    assert not out.exists()


def test_refuses_a_malformed_trace_before_any_session(tmp_path: Path, capsys) -> None:
    traces = tmp_path / "traces"
    traces.mkdir()
    (traces / "good.mahi").write_text("\n".join(str(t) for t in range(1, 1001)) + "\n")
    (traces / "bad.mahi").write_text("1\n2\n7\n5\n")
    out = tmp_path / "out"
    assert main(["--traces", str(traces), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "bad.mahi: line 4" in err and "Traceback" not in err
    assert not out.exists()


def test_refuses_sweep_with_explicit_delays(trace_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(BenchError, match="--sweep"):
        runner.run(options(trace_dir, tmp_path, sweep=True, delays_ms=[10]), echo=quiet)
    sweep = options(trace_dir, tmp_path, sweep=True, losses=[0.0, 0.01]).links()
    assert len(sweep) == 3 * 2 * 2
    assert {link.delay_ms for link in sweep} == {10, 40, 100}


def test_ray_missing_is_a_clear_error(trace_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(BenchError, match=r"pip install 'ray\[default\]'"):
        runner.run(options(trace_dir, tmp_path / "out", ray_address="auto"), echo=quiet)
    assert not (tmp_path / "out").exists()


def fake_ray() -> types.ModuleType:
    """Just enough of Ray's API, run in-process, to drive the Ray code path."""
    ray = types.ModuleType("ray")
    ray.inits = []

    class Ref:
        def __init__(self, fn, arg):
            self.fn, self.arg = fn, arg

    def remote(**_opts):
        def wrap(fn):
            return types.SimpleNamespace(remote=lambda *args: Ref(fn, args))

        return wrap

    ray.init = lambda **kw: ray.inits.append(kw)
    ray.remote = remote
    ray.wait = lambda refs, num_returns=1: (refs[:num_returns], refs[num_returns:])
    ray.get = lambda ref: ref.fn(*ref.arg)
    return ray


def test_ray_path(trace_dir: Path, tmp_path: Path, monkeypatch) -> None:
    ray = fake_ray()
    monkeypatch.setitem(sys.modules, "ray", ray)
    out = tmp_path / "out"
    res = runner.run(options(trace_dir, out, ray_address="ray://head:10001", plots=False), quiet)
    assert ray.inits[0]["address"] == "ray://head:10001"
    assert res["controllers"]["oracle"]["overall"]["sessions"] == 2
    assert len(SessionLog(out).records) == 4


def test_subsample_is_seeded_per_family() -> None:
    fams = {"a": [Path(f"/a/{i}") for i in range(10)], "b": [Path(f"/b/{i}") for i in range(3)]}
    one = subsample_per_family(fams, 4, seed=0)
    assert len(one["a"]) == 4 and one["b"] == fams["b"]
    assert one == subsample_per_family(fams, 4, seed=0)
    assert subsample_per_family({"a": fams["a"]}, 4, seed=0)["a"] == one["a"]
    assert subsample_per_family(fams, None, seed=0) == fams


def test_loki_bench_subcommand_parses() -> None:
    import argparse

    p = argparse.ArgumentParser(prog="loki")
    sub = p.add_subparsers(dest="command", required=True)
    add_bench_parser(sub)
    args = p.parse_args(
        [
            "bench",
            "--traces",
            "a",
            "b",
            "--controllers",
            "gcc,rl",
            "--queue",
            "50",
            "inf",
            "--delay-ms",
            "10",
            "40",
            "--out",
            "o",
        ]
    )
    assert args.traces == [Path("a"), Path("b")]
    assert args.queue == [50, None] and args.delay_ms == [10, 40]
    assert args.func.__name__ == "cmd_bench"
