"""The controller registry's reference controllers: ``scaled:FACTOR:NAME`` and its refusals."""

from __future__ import annotations

import pytest

from loki.controllers import ScaledController, make_controller
from loki.emu.session import LinkConfig, Session, SessionConfig
from traces.generators import steps


def run(name: str):
    trace = steps([(10_000, 3e6), (10_000, 1e6), (10_000, 4e6)])
    ctl = make_controller(name, trace=trace)
    res = Session(ctl, LinkConfig(trace, delay_ms=20), SessionConfig(duration_s=30.0)).run()
    return ctl, res


def test_factor_one_is_gcc_to_the_last_decision() -> None:
    _, gcc = run("gcc")
    _, same = run("scaled:1:gcc")
    assert same.decisions == gcc.decisions
    assert same.qoe.to_dict() == gcc.qoe.to_dict()


def test_the_target_is_the_factor_times_the_gcc_it_runs() -> None:
    ctl, res = run("scaled:0.8:gcc")
    assert isinstance(ctl, ScaledController)
    assert ctl.target_bps == ctl.config.clamp(0.8 * ctl.inner.target_bps)
    _, gcc = run("gcc")
    # GCC measures the scaled stream, so the factor is not all of the difference, but it sends less.
    assert res.qoe.bitrate_kbps < 0.95 * gcc.qoe.bitrate_kbps


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("scaled:x:gcc", "scaled needs a factor and a controller"),
        ("scaled:0.8", "scaled needs a factor and a controller"),
        ("scaled:", "scaled needs a factor and a controller"),
        ("scaled:0:gcc", "factor > 0"),
        ("scaled:-1:gcc", "factor > 0"),
        ("scaled:nan:gcc", "factor > 0"),
        ("scaled:inf:gcc", "factor > 0"),
        ("scaled:0.8:nope", "unknown controller 'nope'"),
        ("gcc-scaled", "scaled:FACTOR:NAME"),
    ],
)
def test_bad_scaled_names_are_refused_with_what_is_wanted(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_controller(name)


def test_a_model_file_is_a_controller_name_too(tmp_path) -> None:
    from loki.learned.models import model_path

    _, by_name = run("loki")
    _, by_path = run(str(model_path("loki")))
    assert by_path.decisions == by_name.decisions
    with pytest.raises(ValueError, match="no such model file"):
        make_controller(str(tmp_path / "missing.npz"))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"not a usable model: .*junk\.npz is not a model file"):
        make_controller(str(tmp_path / "junk.npz"))


def test_emulate_names_a_model_path_timeline_without_making_folders(tmp_path, monkeypatch) -> None:
    from loki.cli import main
    from loki.learned.models import model_path

    monkeypatch.chdir(tmp_path)
    model = str(model_path("loki"))
    argv = ["emulate", "--builtin", "const-2.5mbps", "--duration-s", "5", "--controller"]
    assert main([*argv, f"gcc,{model}", "--timeline", "{controller}.csv", "--json"]) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    # Compared as sets' sorted forms: the model's file name follows the checkout's path, which
    # may sort before or after "gcc.csv".
    assert written == sorted(["gcc.csv", model.replace("/", "_").lstrip("_") + ".csv"])


def test_any_controller_can_be_scaled_and_keeps_its_guard_counts() -> None:
    ctl, _ = run("scaled:0.9:loki")
    assert isinstance(ctl, ScaledController) and ctl.inner.name == "loki"
    assert ctl.target_bps == ctl.config.clamp(0.9 * ctl.inner.target_bps)
    assert ctl.fallbacks == ctl.inner.fallbacks
    oracle = make_controller("scaled:0.5:oracle", trace=steps([(1_000, 2e6)]))
    assert oracle.target_bps == oracle.config.clamp(0.5 * oracle.inner.target_bps)
