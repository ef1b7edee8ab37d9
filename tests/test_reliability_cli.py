"""Bad traces, controllers and values on the command line: one clear error, non-zero exit, and
nothing written (no --timeline, --plot or --packet-log file, finished or half-way)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loki.cli import main

OUTPUTS = ["--timeline", "t.csv", "--plot", "p.png"]

BAD_TRACES = {
    "letters.trace": b"abc\n12\n",
    "decreasing.trace": b"5\n3\n",
    "empty.trace": b"",
    "binary.trace": b"\x00\xff\x10\x80",
    "negative.trace": b"-4\n10\n",
    "zero-period.trace": b"0\n0\n",
    "bad.csv": b"time_s,bandwidth_mbps\n0,abc\n",
    "bad.json": b'{"truncated": [1, 2',
}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, content in BAD_TRACES.items():
        (tmp_path / name).write_bytes(content)
    (tmp_path / "a-folder").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse refuses a value before the command runs
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(
    argv: list[str], workdir: Path, capsys: pytest.CaptureFixture[str], expect: str
) -> None:
    before = _files(workdir)
    code, out, err = run_cli(argv, capsys)
    assert code != 0
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    assert expect in errors[0], errors[0]
    assert out == ""
    assert _files(workdir) == before, "a refused command must write nothing"


@pytest.mark.parametrize(
    ("trace", "expect"),
    [
        ("letters.trace", "letters.trace"),
        ("decreasing.trace", "decreasing.trace"),
        ("empty.trace", "empty"),
        ("binary.trace", "binary.trace"),
        ("negative.trace", "negative.trace"),
        ("zero-period.trace", "zero-period.trace"),
        ("bad.csv", "bad.csv"),
        ("bad.json", "bad.json"),
        ("missing.trace", "missing.trace"),
        ("a-folder", "a-folder"),
    ],
)
def test_malformed_traces(
    trace: str, expect: str, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert_refused(["emulate", "--trace", trace, *OUTPUTS], workdir, capsys, expect)


@pytest.mark.parametrize(
    ("controller", "expect"),
    [
        ("nope", "unknown controller 'nope'"),
        ("gcc,nope", "unknown controller 'nope'"),
        ("fixed:abc", "fixed controller"),
        ("fixed:-5", "fixed controller"),
        ("fixed:nan", "fixed controller"),
        (",", "at least one name"),
    ],
)
def test_unknown_controllers(
    controller: str, expect: str, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["emulate", "--builtin", "const-2.5mbps", "--controller", controller, *OUTPUTS]
    assert_refused(argv, workdir, capsys, expect)


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--delay-ms", "-1"], "--delay-ms"),
        (["--delay-ms", "1.5"], "--delay-ms"),
        (["--loss", "1"], "--loss"),
        (["--loss", "1.5"], "--loss"),
        (["--loss", "-0.1"], "--loss"),
        (["--loss", "nan"], "--loss"),
        (["--queue-packets", "0"], "--queue-packets"),
        (["--queue-bytes", "-5"], "--queue-bytes"),
        (["--queue-packets", "10", "--queue-bytes", "1000"], "not allowed with"),
        (["--duration-s", "0"], "--duration-s"),
        (["--duration-s", "nan"], "--duration-s"),
        (["--duration-s", "inf"], "--duration-s"),
        (["--seed", "x"], "--seed"),
        (["--builtin", "nope"], "unknown built-in link"),
        (["--feedback-interval-ms", "0"], "--feedback-interval-ms"),
        (["--feedback-interval-ms", "5"], "feedback"),
        (["--feedback-interval-ms", "5000"], "feedback"),
        (["--path-change", "10:5"], "AT_S:FOR_S:EXTRA_MS"),
        (["--path-change", "10:x:300"], "AT_S:FOR_S:EXTRA_MS"),
        (["--path-change", "10:5:300:1"], "AT_S:FOR_S:EXTRA_MS"),
        (["--path-change", "10:0:300"], "FOR_S > 0"),
        (["--path-change=-1:5:300"], "AT_S >= 0"),
        (["--path-change", "10:5:-3"], "EXTRA_MS >= 0"),
        (["--path-change", "10:inf:300"], "--path-change"),
    ],
)
def test_bad_values(
    args: list[str], expect: str, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert_refused(["emulate", "--duration-s", "1", *args, *OUTPUTS], workdir, capsys, expect)


@pytest.mark.parametrize(
    "source",
    [
        "cbr",
        "cbr:",
        "cbr:abc",
        "cbr:-1",
        "cbr:0",
        "cbr:inf",
        "tcp:100",
        "cbr:100:20",
        "cbr:100:2000",
        "cbr:1:2:3",
    ],
)
def test_bad_source(source: str, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["emulate", "--duration-s", "1", "--source", source, "--packet-log", "log.csv"]
    assert_refused(argv, workdir, capsys, "--source expects cbr:KBPS")


# Several controllers: a --timeline without '{controller}', and an unknown name among them,
# are refused before anything runs (emulate's sessions take seconds, live's a minute each).
SEVERAL_REFUSED = {
    "timeline needs a pattern": ("gcc,oracle", "{controller}"),
    "unknown name among several": ("gcc,nope", "nope"),
}


@pytest.mark.parametrize("case", sorted(SEVERAL_REFUSED))
@pytest.mark.parametrize("command", ["emulate", "live"])
def test_several_controllers_are_checked_before_running(
    command: str, case: str, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if command == "live":
        pytest.importorskip("aiortc")
    controllers, expect = SEVERAL_REFUSED[case]
    argv = [command, "--duration-s", "1", "--controller", controllers, *OUTPUTS]
    assert_refused(argv, workdir, capsys, expect)


@pytest.mark.parametrize(
    "extra",
    [
        ["--timeline", "a-folder"],
        ["--source", "cbr:500", "--packet-log", "a-folder"],
        ["live", "--plot", "a-folder"],
    ],
)
def test_an_output_path_that_is_a_folder_is_refused_before_running(
    extra: list[str], workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command = "emulate"
    if extra[0] == "live":
        pytest.importorskip("aiortc")
        command, extra = "live", extra[1:]
    argv = [command, "--builtin", "const-2.5mbps", "--duration-s", "1", *extra]
    assert_refused(argv, workdir, capsys, "a-folder")


@pytest.mark.parametrize(
    "argv",
    [
        ["emulate", "--controller", "nope", *OUTPUTS],
        # live's refusals are raised in rtc/cli.py: run as ``-m``, loki/cli.py is __main__ and
        # must still catch the CliError of the imported loki.cli (it printed a traceback).
        ["live", "--builtin", "const-2.5mbps", "--controller", "nope"],
        ["live", "--builtin", "const-2.5mbps", "--controller", "pushback:0:gcc"],
    ],
)
def test_the_installed_entry_point_exits_2_with_one_line(tmp_path: Path, argv: list[str]) -> None:
    """The real process: exit status 2, one error line, no traceback, nothing written."""
    if argv[0] == "live":
        pytest.importorskip("aiortc")
    proc = subprocess.run(
        [sys.executable, "-m", "loki.cli", *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[1]), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        next(line for line in proc.stderr.splitlines() if line.startswith("loki: error:"))
    ]
    assert proc.stdout == "" and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("extra", [["--host-timing", "mahimahi"], ["--packet-log", "log.csv"]])
def test_cbr_only_options_without_a_source_are_refused(
    extra: list[str], workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["emulate", "--builtin", "const-2.5mbps", "--duration-s", "1", *extra]
    assert_refused(argv, workdir, capsys, "go with --source")


def test_cbr_with_mahimahi_host_timing_reports_sub_ms_delays(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["emulate", "--builtin", "const-2.5mbps", "--duration-s", "2", "--delay-ms", "20"]
    argv += ["--source", "cbr:1000", "--json"]
    assert main(argv) == 0
    whole = json.loads(capsys.readouterr().out)
    assert main([*argv, "--host-timing", "mahimahi", "--packet-log", "log.csv"]) == 0
    host = json.loads(capsys.readouterr().out)
    assert (whole["host_timing"], host["host_timing"]) == ("none", "mahimahi")
    # Same link result; the event loops only add sub-ms to ms lateness.
    assert host["goodput_mbps"] == pytest.approx(whole["goodput_mbps"], rel=0.01)
    assert 0.0 < host["delay_p50_ms"] - whole["delay_p50_ms"] < 2.0
    rows = (workdir / "log.csv").read_text().splitlines()
    assert "." in rows[1].split(",")[1]  # receive times to the us


def test_a_path_change_shows_in_the_packet_log(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["emulate", "--builtin", "const-2.5mbps", "--duration-s", "6", "--delay-ms", "20"]
    argv += ["--source", "cbr:1000", "--path-change", "2:2:500", "--packet-log", "log.csv"]
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    # 20 ms + 500 ms + up to one 2.5 Mbps opportunity (4.8 ms) in the link.
    assert out["loss_rate"] == 0.0 and 520.0 <= out["delay_max_ms"] < 526.0
    rows = [r.split(",") for r in (workdir / "log.csv").read_text().splitlines()[1:]]
    owd = {float(s): float(a) - float(s) for s, a, _ in rows}
    assert all(v < 26 for s, v in owd.items() if s < 1900 or s > 4600)
    assert all(520 <= v < 526 for s, v in owd.items() if 2100 < s < 3900)
    # mahimahi's shells have no such stage, so their replay refuses it.
    assert_refused([*argv, "--host-timing", "mahimahi"], workdir, capsys, "no path change")


def test_a_path_change_reaches_a_controlled_session(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["emulate", "--builtin", "const-2.5mbps", "--duration-s", "20", "--json"]
    assert main(argv) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main([*argv, "--path-change", "8:4:960"]) == 0
    changed = json.loads(capsys.readouterr().out)
    assert changed["frame_delay_p95_ms"] > plain["frame_delay_p95_ms"] + 500


@pytest.fixture
def ab_workdir(workdir: Path) -> Path:
    (workdir / "broken").mkdir()
    (workdir / "broken" / "bad.mahi").write_bytes(b"5\n3\n")
    (workdir / "nothing-here").mkdir()
    (workdir / "fine").mkdir()
    (workdir / "fine" / "const.mahi").write_text("\n".join(str(t) for t in range(1, 1001)))
    (workdir / "corrupt.npz").write_bytes(b"not a model")
    return workdir


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--a", "nope", "--b", "loki", "--traces", "fine"], "--a: unknown controller 'nope'"),
        (["--a", "loki", "--b", "missing.npz", "--traces", "fine"], "no such model file"),
        (["--a", "loki", "--b", "corrupt.npz", "--traces", "fine"], "not a usable model"),
        (["--a", "gcc", "--b", "loki", "--traces", "missing"], "no such trace file or folder"),
        (["--a", "gcc", "--b", "loki", "--traces", "broken"], "bad.mahi"),
        (["--a", "gcc", "--b", "loki", "--traces", "nothing-here"], "no trace files"),
        (["--a", "gcc", "--b", "loki", "--traces", "fine", "--sample", "0"], "--sample"),
        (["--a", "gcc", "--b", "loki", "--traces", "fine", "--workers", "-1"], "--workers"),
        (["--a", "gcc", "--b", "loki", "--traces", "fine", "--tol-stall", "x"], "--tol-stall"),
        (["--a", "gcc", "--b", "loki", "--traces", "fine", "--json", "a-folder"], "is a folder"),
        (["--a", "gcc", "--b", "loki", "--traces", "fine", "--logs", "fine"], "'gcc' is not"),
    ],
)
def test_ab_refuses_bad_input_before_running(
    args: list[str], expect: str, ab_workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert_refused(["ab", *args], ab_workdir, capsys, expect)


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["--traces", "fine", "--controllers", "gcc,nope"], "unknown controller 'nope'"),
        (["--traces", "fine", "--controllers", "missing.npz"], "no such model file"),
        (["--traces", "missing"], "no such trace file or folder"),
        (["--traces", "broken"], "bad.mahi"),
        (["--traces", "nothing-here"], "no trace files"),
        (["--traces", "fine", "--sample", "0"], "--sample"),
    ],
)
def test_evaluate_refuses_bad_input_before_running(
    args: list[str], expect: str, ab_workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from loki.train.evaluate import main as evaluate_main

    before = _files(ab_workdir)
    with pytest.raises(SystemExit) as e:
        evaluate_main([*args, "--out", "evaluation"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and expect in err.splitlines()[-1], err
    assert _files(ab_workdir) == before, "a refused evaluation must write nothing"


def test_poisson_delivery_jitters_the_link_reproducibly(capsys: pytest.CaptureFixture[str]) -> None:
    """A 1.5 Mbps CBR stream over a 2.5 Mbps metronome waits at most one gap (about 5 ms) in
    the link; with Poisson-timed deliveries of the same capacity, packets queue behind bursts."""
    argv = ["emulate", "--builtin", "const-2.5mbps", "--duration-s", "10", "--json"]
    argv += ["--source", "cbr:1500"]
    assert main(argv) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main([*argv, "--poisson-delivery"]) == 0
    jittered = json.loads(capsys.readouterr().out)
    assert main([*argv, "--poisson-delivery"]) == 0
    assert json.loads(capsys.readouterr().out) == jittered
    assert main([*argv, "--poisson-delivery", "--seed", "1"]) == 0
    assert json.loads(capsys.readouterr().out) != jittered
    assert jittered["trace"] == "const-2.5mbps~poisson0"
    assert plain["delay_max_ms"] <= 26.0 < jittered["delay_p95_ms"]
    assert jittered["goodput_mbps"] == pytest.approx(1.5, rel=0.01)
