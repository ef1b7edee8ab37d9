"""Network faults in the emulator, for every controller that can be built (``bench/faults.py``).

Every controller must survive every fault: no exception, every target finite and within its
bounds, and frames rendered again at the end (no silent stall). GCC must also meet bounds set
from its measured figures (seed 0: outage recovery 17 s with 10.8 s of stall; 10x drop cut in
1.1 s, recovery 47 s; 30 % loss cut in 1.0 s, recovery 6 s; RTT jump recovery 0 s) with a
margin, tight enough that a controller that does not react (``fixed``) or never comes back
fails them. Learned controllers must recover no slower than GCC; they run as shipped, with the
fault floor (GCC's target as a floor after a detected fault).
"""

from __future__ import annotations

import functools

import pytest

from bench.faults import (
    SCENARIOS,
    FaultFigures,
    baseline_stall_s,
    constructible,
    run_fault,
    scenario,
)
from loki.controllers import controller_names

NAMES = controller_names()
#: Learned controllers, compared with GCC (whatever the registry holds beyond the fixed ones).
LEARNED = [n for n in NAMES if n not in ("gcc", "oracle", "fixed:KBPS")]
#: RR loss reports come once a second, so a recovery time is only known to about a second.
RECOVERY_SLACK_S = 1.0


@functools.cache
def figures(name: str, fault_name: str) -> FaultFigures:
    ok, skipped = constructible([name])
    if not ok:
        pytest.skip(f"{name}: {skipped[name]}")
    fault = scenario(fault_name)
    fig, _ = run_fault(name, fault)
    if fig.error is None:
        fig.stall_caused_s = max(0.0, fig.stall_s - _baseline(name, fault.session_s))
    return fig


@functools.cache
def _baseline(name: str, session_s: float) -> float:
    fault = next(f for f in SCENARIOS if f.session_s == session_s)
    return baseline_stall_s(name, fault, 0, None)


def survives(fig: FaultFigures) -> None:
    assert fig.error is None, fig.error
    assert fig.bad_targets == 0, f"{fig.bad_targets} targets non-finite or out of bounds"
    assert fig.survived, fig.notes


@pytest.mark.parametrize("name", NAMES)
def test_outage_5s(name: str) -> None:
    fig = figures(name, "outage-5s")
    survives(fig)
    if name == "gcc":
        assert fig.recover_s is not None and fig.recover_s <= 25.0, fig
        assert fig.stall_caused_s <= 12.0, fig


@pytest.mark.parametrize("name", NAMES)
def test_feedback_blackout_2s(name: str) -> None:
    fig = figures(name, "feedback-blackout-2s")
    survives(fig)
    if name == "gcc":
        # Two seconds without feedback is within GCC's patience: it holds its rate.
        assert fig.recover_s is not None and fig.recover_s <= 1.0, fig
        assert fig.stall_caused_s <= 0.5, fig


@pytest.mark.parametrize("name", NAMES)
def test_loss_burst_30pct_3s(name: str) -> None:
    fig = figures(name, "loss-30pct-3s")
    survives(fig)
    if name == "gcc":
        # 30 % loss is above GCC's 10 % threshold: x0.85 per 1 s receiver report takes it below
        # 70 % of capacity by the second report.
        assert fig.cut_s is not None and fig.cut_s <= 2.5, fig
        assert fig.recover_s is not None and fig.recover_s <= 10.0, fig
        assert fig.stall_caused_s <= 1.0, fig


@pytest.mark.parametrize("name", NAMES)
def test_rtt_jump_40ms_to_1s(name: str) -> None:
    fig = figures(name, "rtt-40ms-to-1s")
    survives(fig)
    if name == "gcc":
        assert fig.recover_s is not None and fig.recover_s <= 8.0, fig
        # The 960 ms step itself holds frames back for about a second; nothing more.
        assert fig.stall_caused_s <= 1.5, fig


@pytest.mark.parametrize("name", NAMES)
def test_capacity_drop_10x(name: str) -> None:
    fig = figures(name, "capacity-drop-10x")
    survives(fig)
    if name == "gcc":
        assert fig.cut_s is not None and fig.cut_s <= 2.0, fig
        assert fig.recover_s is not None and fig.recover_s <= 55.0, fig
        assert fig.stall_caused_s <= 6.0, fig


#: (controller, fault) pairs where the shipped models, with the fault floor
#: (loki/learned/fault_floor.py), do not reach issue 7's recovery bar (measured; bench/faults.py
#: prints the table): strict, so a fix shows up as a failure here. None since session 9: the
#: RTT jump, missed by all four learned controllers until then (the networks read the 960 ms as
#: a queue; the guard refused the step back down and fell back to the GCC beside them, which
#: sat lower), is a path change the floor holds the rate through; the hybrid's 10x drop (its
#: policy scaled the climbing GCC by 0.75: 51.0 s vs GCC's 47.4 s) is a capacity-drop fault
#: after which the floor keeps it climbing with GCC (loki/LEARNING.md).
NOT_REACHED: set[tuple[str, str]] = set()


def _recovery_cases() -> list:
    cases = []
    for name in LEARNED:
        for f in SCENARIOS:
            marks = ()
            if (name, f.name) in NOT_REACHED:
                marks = pytest.mark.xfail(
                    strict=True, reason="issue 7 bar not reached: recovers slower than GCC"
                )
            cases.append(pytest.param(name, f.name, marks=marks, id=f"{name}-{f.name}"))
    return cases


@pytest.mark.parametrize(("name", "fault"), _recovery_cases())
def test_learned_recovers_no_slower_than_gcc(name: str, fault: str) -> None:
    ours = figures(name, fault)
    ref = figures("gcc", fault)
    assert ref.recover_s is not None
    assert ours.recover_s is not None, f"{name} never recovers after {fault}; gcc: {ref.recover_s}"
    assert ours.recover_s <= ref.recover_s + RECOVERY_SLACK_S, (name, ours, ref)


def test_the_script_refuses_a_named_controller_it_cannot_build(capsys) -> None:
    from bench.faults import main

    with pytest.raises(SystemExit) as e:
        main(["--controllers", "gcc,nope", "--seeds", "1"])
    assert e.value.code == 2
    assert "unknown controller 'nope'" in capsys.readouterr().err
